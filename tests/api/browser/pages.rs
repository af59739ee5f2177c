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
