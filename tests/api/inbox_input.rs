//! Bad input on the inbox's routes gets a 4xx naming the field, never a 500; another tenant's
//! conversation is a 404 on every route that names one.

use std::time::{Duration, Instant};

use cpaas_sim::InboundSpec;
use serde_json::{Value, json};

use crate::delivery::whatsapp;
use crate::helpers::{TestApp, TestTenant, assert_error, spawn_app_with_sim};

async fn a_conversation(app: &TestApp, sim: &cpaas_sim::SimHandle, tenant: &TestTenant) -> String {
    whatsapp(app, tenant).await;
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: "Hi".into(),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = app.get("/api/v1/conversations", &tenant.api_key).await.json().await.unwrap();
        if let Some(id) = page["items"][0]["id"].as_str() {
            return id.to_owned();
        }
        assert!(Instant::now() < deadline, "no conversation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bad_input_on_inbox_routes_names_the_field() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let id = a_conversation(&app, &sim, &tenant).await;
    let key = &tenant.api_key;
    let field = |body: Value| body["error"]["field"].as_str().unwrap_or_default().to_owned();

    let reply = format!("/api/v1/conversations/{id}/messages");
    let huge = "x".repeat(3 * 1024 * 1024);
    let too_big = app.post(&reply, key, json!({"content": {"text": huge}})).await;
    assert_eq!(too_big.status(), 413, "a body over the limit");
    assert!(too_big.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let nul = app.post(&reply, key, json!({"content": {"text": "a\u{0}b"}})).await;
    assert_eq!(field(assert_error(nul, 422, "validation_failed").await), "content.text");
    let long = app.post(&reply, key, json!({"content": {"text": "y".repeat(5000)}})).await;
    assert_eq!(field(assert_error(long, 422, "validation_failed").await), "content.text");
    let empty = app.post(&reply, key, json!({"content": {}})).await;
    assert_eq!(field(assert_error(empty, 422, "validation_failed").await), "content.text");

    let bad_cursor = app.get("/api/v1/conversations?cursor=%00", key).await;
    assert_eq!(field(assert_error(bad_cursor, 422, "validation_failed").await), "cursor");
    let bad_status = app.get("/api/v1/conversations?status=closed", key).await;
    assert_eq!(field(assert_error(bad_status, 422, "validation_failed").await), "status");
    let bad_assignee = app.get("/api/v1/conversations?assignee=someone", key).await;
    assert_eq!(field(assert_error(bad_assignee, 422, "validation_failed").await), "assignee");
    let two_links = app.get("/api/v1/conversations?booking_id=a&invoice_id=b", key).await;
    assert_eq!(field(assert_error(two_links, 422, "validation_failed").await), "invoice_id");
    // A malformed id names no object: the project's answer is a 404, as for an unknown one.
    assert_error(app.get("/api/v1/conversations/not-a-uuid", key).await, 404, "not_found").await;
    let snooze = format!("/api/v1/conversations/{id}/snooze");
    let bad_time = app.post(&snooze, key, json!({"until": "tomorrow"})).await;
    assert_eq!(field(assert_error(bad_time, 422, "validation_failed").await), "until");
    let link = format!("/api/v1/conversations/{id}/link");
    let nul_link = app.put(&link, key, json!({"booking_id": "B\u{0}1"})).await;
    assert_eq!(field(assert_error(nul_link, 422, "validation_failed").await), "booking_id");
    let long_link = app.put(&link, key, json!({"booking_id": "B".repeat(201)})).await;
    assert_eq!(field(assert_error(long_link, 422, "validation_failed").await), "booking_id");
    let unknown_field = app.put(&link, key, json!({"trip_id": "T1"})).await;
    assert_eq!(unknown_field.status(), 422);
    let nul_search = app.get("/api/v1/conversations/search?q=a%00b", key).await;
    assert_eq!(field(assert_error(nul_search, 422, "validation_failed").await), "q");
    let nul_filter = app.get("/api/v1/conversations?booking_id=%00", key).await;
    assert_eq!(field(assert_error(nul_filter, 422, "validation_failed").await), "booking_id");

    let unknown = uuid::Uuid::now_v7();
    for path in ["claim", "release", "resolve", "reopen", "read"] {
        let response = app.post(&format!("/api/v1/conversations/{unknown}/{path}"), key, json!({})).await;
        assert!(matches!(response.status().as_u16(), 404 | 422), "{path}: {}", response.status());
    }
    assert_error(app.get(&format!("/api/v1/conversations/{unknown}"), key).await, 404, "not_found").await;
}

#[tokio::test]
async fn another_tenants_conversation_is_not_found_on_every_inbox_route() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let id = a_conversation(&app, &sim, &tenant).await;
    let other = app.create_tenant("other").await;
    let agent = app.create_agent(&other, "x@other.example", "admin").await;
    let (client, csrf) = app.session_client(&other, &agent).await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let posts = [
        ("claim", json!({})),
        ("release", json!({})),
        ("assign", json!({"agent_id": null})),
        ("snooze", json!({"until": until})),
        ("resolve", json!({})),
        ("reopen", json!({})),
        ("read", json!({})),
        ("messages", json!({"content": {"text": "hi"}})),
        ("notes", json!({"text": "hi"})),
    ];
    for (path, body) in posts {
        let url = app.url(&format!("/api/v1/conversations/{id}/{path}"));
        let response = client.post(url).header("x-csrf-token", &csrf).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 404, "POST {path}");
    }
    for (path, body) in [("link", json!({})), ("labels", json!({"labels": []}))] {
        let url = app.url(&format!("/api/v1/conversations/{id}/{path}"));
        let response = client.put(url).header("x-csrf-token", &csrf).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 404, "PUT {path}");
    }
    for path in ["", "/messages", "/notes"] {
        let response = client.get(app.url(&format!("/api/v1/conversations/{id}{path}"))).send().await.unwrap();
        assert_eq!(response.status(), 404, "GET {path}");
    }
    let theirs: Value = client.get(app.url("/api/v1/conversations")).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0);
    let summary: Value =
        client.get(app.url("/api/v1/conversations/summary")).send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["unread"], 0);
    // And nothing of theirs changed.
    let ours: Value = app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(ours["status"], "open");
    assert_eq!(ours["assignee_id"], Value::Null);
}
