//! The queue page: an admin sees a failed message with its reason, replays it and it reaches
//! the simulated provider; an agent may not open the page.

use std::time::Duration;

use cpaas_sim::{FailureKind, FailureRule};
use serde_json::{Value, json};

use super::Browser;
use crate::helpers::{sim_twilio_sms, spawn_app_with_sim};

#[tokio::test]
async fn an_admin_replays_a_failed_message_from_the_queue_page_and_it_reaches_the_provider() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    app.active_channel(&tenant, sim_twilio_sms()).await;
    let admin = app.create_agent(&tenant, "ops@alpine.example", "admin").await;
    let phone = "+4915100000801";
    sim.add_failure(FailureRule {
        provider: Some("twilio".into()),
        recipient: Some(phone.into()),
        kind: FailureKind::InvalidRecipient,
        probability: 1.0,
        remaining: Some(1),
    });
    let body = json!({"to": {"phone": phone}, "channels": "sms", "content": {"text": "Your pickup is at 9:15"}});
    let sent: Value = app.post("/api/v1/messages", &tenant.api_key, body).await.json().await.unwrap();
    let id = sent["id"].as_str().unwrap().to_owned();
    for _ in 0..200 {
        let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        if message["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let browser = Browser::start().await;
    browser.login(&app, &tenant, &admin.email, &admin.password).await;
    browser.goto(&app.url("/inbox")).await;
    browser.click("a.queues-link").await;
    browser.wait_for_text("table.lanes tr[data-lane='urgent'] td.failed", "1", Duration::from_secs(5)).await;
    browser.wait_for_text(&format!("tr[data-id='{id}'] .reason"), "21211", Duration::from_secs(5)).await;
    browser.screenshot("queues").await;
    browser.click(&format!("button.replay[data-id='{id}']")).await;
    browser.wait_for_text(&format!("button.replay[data-id='{id}']"), "Queued again", Duration::from_secs(5)).await;
    let mut status = Value::Null;
    for _ in 0..200 {
        let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        status = message["status"].clone();
        if status == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, "sent");
    let accepted = sim
        .ledger()
        .into_iter()
        .filter(|e| e.recipient.as_deref() == Some(phone) && e.outcome.starts_with("accepted"))
        .count();
    assert_eq!(accepted, 1, "the replay reached the provider");

    // An agent who is not an admin gets no queue page.
    let agent = app.create_agent(&tenant, "mia@alpine.example", "agent").await;
    let (client, _) = app.session_client(&tenant, &agent).await;
    assert_eq!(client.get(app.url("/queues")).send().await.unwrap().status(), 403);
}
