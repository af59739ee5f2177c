//! Whole pages: they load without a console error (the icon included).

use std::time::Duration;

use super::Browser;
use crate::delivery::{auto_callbacks, whatsapp};
use crate::helpers::spawn_app_with_sim_config;

#[tokio::test]
async fn the_login_and_inbox_pages_load_without_console_errors_and_have_our_icon() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    super::inbound(&sim, "Any icon?").await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/login")).await;
    browser.find("#login-form").await;
    // Both the linked icon and the path browsers ask for by themselves answer our SVG.
    let icons = browser
        .script(
            "const done = arguments[0]; const link = document.querySelector('link[rel=icon]'); \
             Promise.all([link.href, '/favicon.ico'].map(u => fetch(u).then(r => [r.status, r.headers.get('content-type')]))) \
             .then(done, e => done(String(e)));",
        )
        .await;
    assert_eq!(icons, serde_json::json!([[200, "image/svg+xml"], [200, "image/svg+xml"]]));
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url("/inbox?view=all")).await;
    browser.wait_for_text("#list", "Any icon?", Duration::from_secs(5)).await;
    browser.click("a.conversation").await;
    browser.wait_for_text("#thread .messages", "Any icon?", Duration::from_secs(5)).await;
    browser.find("#live.online").await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let response = app.client.get(app.url("/favicon.ico")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().starts_with("<svg"), "the icon is our SVG");
}

/// What a browser preferring `languages` reads on the login page, then in the inbox with a
/// conversation open: the submit button, the views, the claim button and the status.
async fn words_seen(
    languages: &str,
    app: &crate::helpers::TestApp,
    tenant: &crate::helpers::TestTenant,
    id: &str,
) -> Vec<String> {
    let agent = app.create_agent(tenant, &format!("{}@alpine.example", &languages[..2]), "agent").await;
    let browser = Browser::start_in(languages).await;
    browser.goto(&app.url("/login")).await;
    let mut seen = vec![
        browser.script("arguments[0](document.documentElement.lang);").await.as_str().unwrap_or_default().to_owned(),
        browser.text("#login-form button[type=submit]").await,
    ];
    browser.login(app, tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url(&format!("/inbox?view=all&c={id}"))).await;
    browser.find("button[data-action=claim]").await;
    for css in
        ["nav.views [data-view=unassigned]", "button[data-action=claim]", ".thread-head .status", "time[data-day]"]
    {
        seen.push(browser.text(css).await.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    browser.screenshot(&format!("inbox-{}", &languages[..2])).await;
    seen
}

#[tokio::test]
async fn a_german_browser_gets_german_pages_and_an_english_one_english() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    super::inbound(&sim, "Sprechen Sie Deutsch?").await;
    let id = app.newest_conversation(&tenant, 1).await;
    let (german, english) =
        tokio::join!(words_seen("de-DE,de", &app, &tenant, &id), words_seen("en-GB,en", &app, &tenant, &id));
    // The count after the view's name is a number: only the words are compared.
    let words = |seen: Vec<String>| -> Vec<String> {
        seen.into_iter().map(|s| s.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ').to_owned()).collect()
    };
    let (mut german, mut english) = (words(german), words(english));
    // The day heading is today's, in the page's language.
    let (german_day, english_day) = (german.pop().unwrap(), english.pop().unwrap());
    let weekday = |day: &str, names: &[&str]| names.iter().any(|name| day.starts_with(name));
    let wochentage = ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"];
    let weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    assert!(weekday(&german_day, &wochentage), "{german_day}");
    assert!(weekday(&english_day, &weekdays), "{english_day}");
    assert_eq!(german, ["de", "Anmelden", "Nicht zugewiesen", "Übernehmen", "Offen"]);
    assert_eq!(english, ["en", "Log in", "Unassigned", "Claim", "Open"]);
}
