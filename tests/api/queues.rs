//! The queue view: counts per lane, failed, dead and unknown messages with their reasons,
//! replay (the same message, a new attempt, audited) and bulk replay with a dry run; a sent
//! message is never replayed, an unknown one only when confirmed, and other tenants see nothing.

use std::time::Duration;

use cpaas_sim::{FailureKind, FailureRule, SimHandle};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, assert_error, sim_twilio_sms, spawn_app_with_sim};

async fn wait_status(app: &TestApp, tenant: &TestTenant, id: &str, status: &str) -> Value {
    let mut message = Value::Null;
    for _ in 0..200 {
        message =
            app.get(&format!("/api/v1/messages/{id}?include=events"), &tenant.api_key).await.json().await.unwrap();
        if message["status"] == status {
            return message;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{id} is not {status}: {message}");
}

fn fail_once(sim: &SimHandle, phone: &str) {
    sim.add_failure(FailureRule {
        provider: Some("twilio".into()),
        recipient: Some(phone.into()),
        kind: FailureKind::InvalidRecipient,
        probability: 1.0,
        remaining: Some(1),
    });
}

async fn send(app: &TestApp, tenant: &TestTenant, phone: &str, key: Option<&str>) -> String {
    let mut request = app
        .client
        .post(app.url("/api/v1/messages"))
        .bearer_auth(&tenant.api_key)
        .json(&json!({"to": {"phone": phone}, "channels": "sms", "content": {"text": "Your pickup is at 9:15"}}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_failed_message_is_listed_with_its_reason_and_a_replay_sends_it_as_the_same_message() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    app.active_channel(&tenant, sim_twilio_sms()).await;
    let phone = "+4915100000501";
    fail_once(&sim, phone);
    let id = send(&app, &tenant, phone, Some("pickup-501")).await;
    wait_status(&app, &tenant, &id, "failed").await;

    let overview: Value = app.get("/api/v1/queues", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(overview["lanes"][0]["lane"], "urgent");
    assert_eq!(overview["lanes"][0]["failed"], 1, "{overview}");
    let failed: Value = app.get("/api/v1/queues/messages?status=failed", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["items"][0]["id"], id.as_str());
    assert!(failed["items"][0]["status_reason"].as_str().unwrap().contains("21211"), "{failed}");

    let replayed = app.post(&format!("/api/v1/messages/{id}/replay"), &tenant.api_key, json!({})).await;
    assert_eq!(replayed.status(), 200, "{}", replayed.text().await.unwrap());
    let sent = wait_status(&app, &tenant, &id, "sent").await;
    let events = sent["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("replayed by an operator key"))),
        "the replay is on the message's record: {sent}"
    );
    let requests = sim.ledger().into_iter().filter(|e| e.recipient.as_deref() == Some(phone)).count();
    assert_eq!(requests, 2, "the failed attempt and the replay");
    // The idempotency key still answers with the same message.
    assert_eq!(send(&app, &tenant, phone, Some("pickup-501")).await, id);

    // A sent message is never replayed.
    let again = app.post(&format!("/api/v1/messages/{id}/replay"), &tenant.api_key, json!({})).await;
    let error = assert_error(again, 409, "conflict").await;
    assert!(error["error"]["message"].as_str().unwrap().contains("sent"), "{error}");
}

#[tokio::test]
async fn bulk_replay_counts_first_and_other_tenants_and_agents_cannot_touch_the_queue() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let other = app.create_tenant("other").await;
    app.active_channel(&tenant, sim_twilio_sms()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let phone = format!("+491510000060{i}");
        fail_once(&sim, &phone);
        ids.push(send(&app, &tenant, &phone, None).await);
    }
    for id in &ids {
        wait_status(&app, &tenant, id, "failed").await;
    }
    let dry = app.post("/api/v1/queues/replay", &tenant.api_key, json!({"status": "failed", "dry_run": true})).await;
    let dry: Value = dry.json().await.unwrap();
    assert_eq!(dry, json!({"matched": 3, "replayed": 0, "dry_run": true}));
    wait_status(&app, &tenant, &ids[0], "failed").await;
    // Another tenant sees nothing and replays nothing.
    let theirs: Value = app.get("/api/v1/queues", &other.api_key).await.json().await.unwrap();
    assert_eq!(theirs["lanes"][0]["failed"], 0);
    let foreign = app.post(&format!("/api/v1/messages/{}/replay", ids[0]), &other.api_key, json!({})).await;
    assert_eq!(foreign.status(), 404);
    let none: Value =
        app.post("/api/v1/queues/replay", &other.api_key, json!({"status": "failed"})).await.json().await.unwrap();
    assert_eq!(none["matched"], 0);
    // Agents cannot; a bad filter names its field.
    let agent = app.create_agent(&tenant, "mia@alpine.example", "agent").await;
    let (client, csrf) = app.session_client(&tenant, &agent).await;
    let refused = client.get(app.url("/api/v1/queues")).header("X-CSRF-Token", &csrf).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let bad = app.post("/api/v1/queues/replay", &tenant.api_key, json!({"status": "sent"})).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "status");

    let done: Value =
        app.post("/api/v1/queues/replay", &tenant.api_key, json!({"status": "failed"})).await.json().await.unwrap();
    assert_eq!(done, json!({"matched": 3, "replayed": 3, "dry_run": false}));
    for id in &ids {
        wait_status(&app, &tenant, id, "sent").await;
    }
}

#[tokio::test]
async fn an_unknown_message_is_replayed_only_when_confirmed() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    app.active_channel(&tenant, sim_twilio_sms()).await;
    let id = send(&app, &tenant, "+4915100000701", None).await;
    wait_status(&app, &tenant, &id, "sent").await;
    // As if the provider's answer had been lost.
    sqlx::query("UPDATE communications.messages SET status = 'unknown' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    let unconfirmed = app.post(&format!("/api/v1/messages/{id}/replay"), &tenant.api_key, json!({})).await;
    assert_eq!(assert_error(unconfirmed, 409, "conflict").await["error"]["field"], "confirm_unknown");
    let listed: Value = app.get("/api/v1/queues/messages?status=unknown", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(listed["total"], 1);
    let confirmed =
        app.post(&format!("/api/v1/messages/{id}/replay"), &tenant.api_key, json!({"confirm_unknown": true})).await;
    assert_eq!(confirmed.status(), 200);
    wait_status(&app, &tenant, &id, "sent").await;
}
