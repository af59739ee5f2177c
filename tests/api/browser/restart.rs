//! The server restarts under an open inbox: the page reconnects by itself and shows what came
//! meanwhile and afterwards, without a reload.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, Uri};
use cpaas_sim::InboundSpec;

use super::{Browser, inbound};
use crate::delivery::{auto_callbacks, whatsapp};
use crate::helpers::spawn_app_with_sim_config;

/// What a reverse proxy answers while the server behind it is down: 502 to everything.
struct BadGateway {
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    streams: Arc<tokio::sync::Notify>,
}

impl BadGateway {
    async fn start(address: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(address).await.expect("the server's port is free");
        let streams = Arc::new(tokio::sync::Notify::new());
        let seen = streams.clone();
        let router = axum::Router::new().fallback(move |uri: Uri| {
            let seen = seen.clone();
            async move {
                if uri.path() == "/api/v1/stream" {
                    seen.notify_one();
                }
                (StatusCode::BAD_GATEWAY, "the server is restarting")
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { stop, server, streams }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.server).await.expect("the stand-in stops").unwrap();
    }
}

fn customer(from: &str, text: &str) -> InboundSpec {
    InboundSpec::Meta { phone_number_id: "106540352242922".into(), from: from.into(), text: text.into() }
}

#[tokio::test]
async fn an_open_inbox_reconnects_after_the_server_restarts_and_shows_new_messages_without_a_reload() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    inbound(&sim, "Before the restart").await;
    app.newest_conversation(&tenant, 1).await;
    let browser = Browser::start().await;
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url("/inbox?view=all")).await;
    browser.wait_for_text("#list", "Before the restart", Duration::from_secs(5)).await;
    browser.find("#live.online").await;
    // Gone after a reload: proves the page stayed.
    browser.script("window.samePage = true; arguments[0](true);").await;

    // A plain restart; a customer writes before the browser has reconnected (it retries every
    // 3 s), so the page must catch up, not only follow.
    app.stop_http().await;
    browser.find("#live:not(.online)").await;
    app.start_http().await;
    sim.post_inbound(customer("4915100000001", "While you were reconnecting")).await.unwrap();
    browser.wait_for_text("#list", "While you were reconnecting", Duration::from_secs(15)).await;
    browser.find("#live.online").await;

    // Down again, behind a proxy answering 502: that ends an EventSource for good, so the page
    // has to open a new stream itself.
    app.stop_http().await;
    let proxy = BadGateway::start(app.address.trim_start_matches("http://")).await;
    tokio::time::timeout(Duration::from_secs(15), proxy.streams.notified())
        .await
        .expect("the browser tried to reconnect through the proxy");
    browser.find("#live:not(.online)").await;
    proxy.stop().await;
    app.start_http().await;
    browser.find("#live.online").await;
    sim.post_inbound(customer("4915100000002", "After the restart")).await.unwrap();
    browser.wait_for_text("#list", "After the restart", Duration::from_secs(10)).await;

    // The counts follow the new server's stream too.
    browser.wait_for_text("#count-unassigned", "3", Duration::from_secs(5)).await;
    let same = browser.script("arguments[0](window.samePage === true);").await;
    assert_eq!(same, true, "the page was reloaded");
    browser.screenshot("after-restart").await;
}
