//! The webchat widget in Chromium: a visitor on the operator's website (another origin) chats
//! with an agent in the inbox, both live; a site the operator did not list cannot show it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Browser;
use crate::helpers::{TestApp, TestTenant, spawn_app_with_sim};

const WAIT: Duration = Duration::from_secs(10);

impl Browser {
    /// Moves into the first iframe of the page (found within 10 s).
    async fn enter_frame(&self) {
        let frame = self.find("iframe").await;
        self.command(
            reqwest::Method::POST,
            "/frame",
            Some(json!({"id": {"element-6066-11e4-a52e-4f735466cecf": frame}})),
        )
        .await;
    }

    async fn leave_frame(&self) {
        self.command(reqwest::Method::POST, "/frame", Some(json!({"id": null}))).await;
    }

    /// Whether `css` matches anything now (no waiting).
    async fn has(&self, css: &str) -> bool {
        self.script(&format!("const done = arguments[0]; done(document.querySelector({css:?}) !== null);")).await
            == Value::Bool(true)
    }
}

/// An operator's website on its own origin, listening already (so the channel can list it).
async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    (listener, origin)
}

/// Serves the website: a page that includes the widget's script.
fn website(app: &TestApp, listener: tokio::net::TcpListener, channel: &str) -> tokio::task::JoinHandle<()> {
    let page = format!(
        "<!doctype html><html><head><title>Alpine Tours</title></head><body><h1>Alpine Tours</h1>\
         <p>Day trips from Munich.</p><script src=\"{}\" data-channel=\"{channel}\" async></script></body></html>",
        app.url("/webchat.js")
    );
    let router = axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(page) }));
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    })
}

async fn webchat_allowing(app: &TestApp, tenant: &TestTenant, origin: &str) -> String {
    let body = json!({"channel_type": "webchat", "display_name": "Alpine Tours",
                      "config": {"allowed_origins": [origin], "greeting": "Hello! Ask us anything."}});
    app.active_channel(tenant, body).await["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_visitor_on_the_operators_website_chats_with_an_agent_both_live() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    let (listener, site) = listen().await;
    let channel = webchat_allowing(&app, &tenant, &site).await;
    let _server = website(&app, listener, &channel);

    let agent_browser = Browser::start().await;
    agent_browser.login(&app, &tenant, &agent.email, &agent.password).await;
    agent_browser.goto(&app.url("/inbox?view=unassigned")).await;
    agent_browser.find("#live.online").await;

    let visitor = Browser::start().await;
    visitor.goto(&site).await;
    visitor.enter_frame().await;
    visitor.click("#launcher").await;
    visitor.wait_for_text("#greeting", "Hello! Ask us anything.", WAIT).await;
    visitor.click("#about summary").await;
    visitor.type_into("#name", "Vera Visitor").await;
    // \u{E007} is WebDriver's Enter key: Enter sends.
    visitor.type_into("#text", "Do you have <b>two seats</b> tomorrow?\u{E007}").await;
    visitor.wait_for_text("#messages", "Do you have <b>two seats</b> tomorrow?", WAIT).await;

    // The agent sees the new conversation arrive and answers.
    agent_browser.wait_for_text("#list", "Vera Visitor", WAIT).await;
    agent_browser.click("a.conversation").await;
    agent_browser.wait_for_text("#thread .messages", "Do you have <b>two seats</b> tomorrow?", WAIT).await;
    agent_browser.click("button[data-action=claim]").await;
    agent_browser.wait_for_text(".thread-head .meta", "you", WAIT).await;
    agent_browser.type_into("#reply", "Yes, two seats are free on the 9:15.\u{E007}").await;

    // The visitor gets it live, as text; the open chat reads it and the agent's tick says so.
    visitor.wait_for_text("#messages .from-agent", "Yes, two seats are free on the 9:15.", WAIT).await;
    assert!(!visitor.has("#messages b").await, "the visitor's own markup stays text");
    visitor.screenshot("webchat-visitor").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let status = agent_browser
            .script("const done = arguments[0]; const t = [...document.querySelectorAll('.tick')].pop(); done(t ? t.dataset.status : '');")
            .await;
        if status == "read" {
            break;
        }
        assert!(Instant::now() < deadline, "the webchat tick never reached read: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent_browser.screenshot("webchat-agent").await;

    // The visitor comes back later (a reload): the chat is still theirs.
    visitor.leave_frame().await;
    visitor.goto(&site).await;
    visitor.enter_frame().await;
    visitor.click("#launcher").await;
    visitor.wait_for_text("#messages", "Yes, two seats are free on the 9:15.", WAIT).await;
    visitor.wait_for_text("#messages", "Do you have <b>two seats</b> tomorrow?", WAIT).await;
}

#[tokio::test]
async fn a_site_the_operator_did_not_list_cannot_show_the_chat() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let (listener, site) = listen().await;
    let channel = webchat_allowing(&app, &tenant, "https://alpine.example").await;
    let _server = website(&app, listener, &channel);
    let visitor = Browser::start().await;
    visitor.goto(&site).await;
    visitor.enter_frame().await;
    // Chromium refuses the frame (frame-ancestors): no chat inside, whatever we wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!visitor.has("#launcher").await, "the chat showed on a site that is not listed");
    let visitors: (i64,) =
        sqlx::query_as("SELECT count(*) FROM communications.contact_identifiers WHERE kind = 'webchat'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(visitors.0, 0);
}
