//! The conversations API: list, claim with one winner, release, snooze and its wake-up, resolve,
//! reopen; isolation and bad input.

use std::time::{Duration, Instant};

use cpaas_sim::{InboundSpec, SimHandle};
use reqwest::Client;
use serde_json::{Value, json};

use crate::delivery::whatsapp;
use crate::helpers::{TestApp, TestTenant, assert_error, spawn_app_with_sim};

/// A tenant with a WhatsApp account and one conversation opened by an inbound message.
pub(crate) async fn with_conversation(app: &TestApp, sim: &SimHandle, slug: &str) -> (TestTenant, String) {
    let tenant = app.create_tenant(slug).await;
    whatsapp(app, &tenant).await;
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: "Hello".into(),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page: Value = app.get("/api/v1/conversations", &tenant.api_key).await.json().await.unwrap();
        if let Some(id) = page["items"][0]["id"].as_str() {
            return (tenant, id.to_owned());
        }
        assert!(Instant::now() < deadline, "no conversation: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn agent_post(app: &TestApp, (client, csrf): &(Client, String), path: &str, body: Value) -> reqwest::Response {
    client.post(app.url(path)).header("x-csrf-token", csrf).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn of_many_concurrent_claims_exactly_one_wins_and_the_others_learn_who_holds_it() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, id) = with_conversation(&app, &sim, "alpine").await;
    let listed: Value =
        app.get("/api/v1/conversations?assignee=unassigned&status=open", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["items"][0]["last_message"]["body"], "Hello");

    let a = app.create_agent(&tenant, "a@alpine.example", "agent").await;
    let b = app.create_agent(&tenant, "b@alpine.example", "agent").await;
    let (session_a, session_b) = (app.session_client(&tenant, &a).await, app.session_client(&tenant, &b).await);
    let path = format!("/api/v1/conversations/{id}/claim");
    let mut claims = tokio::task::JoinSet::new();
    for n in 0..50 {
        let (client, csrf) = if n % 2 == 0 { session_a.clone() } else { session_b.clone() };
        let url = app.url(&path);
        claims.spawn(async move {
            client.post(url).header("x-csrf-token", csrf).json(&json!({})).send().await.unwrap().status().as_u16()
        });
    }
    let statuses: Vec<u16> = claims.join_all().await;
    let (won, lost): (Vec<u16>, Vec<u16>) = statuses.iter().partition(|status| **status == 200);
    assert!(lost.iter().all(|status| *status == 409), "{statuses:?}");
    // The winner's own later claims are no-ops (200), so count winners by agent, not by answer.
    assert!(!won.is_empty() && !lost.is_empty(), "{statuses:?}");
    let conversation: Value =
        app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    let holder = conversation["assignee_id"].as_str().unwrap().to_owned();
    let (loser_session, winner_session) =
        if holder == a.id { (&session_b, &session_a) } else { (&session_a, &session_b) };
    let refused = agent_post(&app, loser_session, &path, json!({})).await;
    let body = assert_error(refused, 409, "conflict").await;
    assert!(body["error"]["message"].as_str().unwrap().contains(&holder), "names the holder: {body}");

    let mine: Value =
        winner_session.0.get(app.url("/api/v1/conversations?assignee=me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(mine["items"][0]["id"], id.as_str());
    let forbidden = agent_post(&app, loser_session, &format!("/api/v1/conversations/{id}/release"), json!({})).await;
    assert_eq!(forbidden.status(), 403, "only the holder or an admin releases");
    let released = agent_post(&app, winner_session, &format!("/api/v1/conversations/{id}/release"), json!({})).await;
    assert_eq!(released.status(), 200);
    assert_eq!(agent_post(&app, loser_session, &path, json!({})).await.status(), 200, "free again");
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM communications.changes WHERE conversation_id = $1::uuid ORDER BY id")
            .bind(&id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(kinds.first().map(String::as_str), Some("conversation.created"));
    assert!(kinds.iter().filter(|k| *k == "conversation.assigned").count() >= 3, "{kinds:?}");
}

#[tokio::test]
async fn a_snoozed_conversation_wakes_up_when_its_time_comes() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, id) = with_conversation(&app, &sim, "alpine").await;
    let path = format!("/api/v1/conversations/{id}/snooze");
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    assert_error(app.post(&path, &tenant.api_key, json!({"until": past})).await, 422, "validation_failed").await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let snoozed: Value = app.post(&path, &tenant.api_key, json!({"until": soon})).await.json().await.unwrap();
    assert_eq!(snoozed["status"], "snoozed", "{snoozed}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: Value = app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
        if now["status"] == "open" {
            assert_eq!(now["snoozed_until"], Value::Null);
            break;
        }
        assert!(Instant::now() < deadline, "never woke: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let woke: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM communications.changes WHERE conversation_id = $1::uuid AND payload->>'woke' = 'true'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(woke, 1, "woken once");
}

#[tokio::test]
async fn resolve_and_reopen_and_one_unresolved_conversation_per_contact() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, id) = with_conversation(&app, &sim, "alpine").await;
    let resolved: Value = app
        .post(&format!("/api/v1/conversations/{id}/resolve"), &tenant.api_key, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resolved["status"], "resolved");
    // A new message of the contact opens it again.
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: "Me again".into(),
    })
    .await
    .unwrap();
    let open: Value = app.get("/api/v1/conversations?status=open", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(open["items"].as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open["items"][0]["id"], id.as_str());
    // An older conversation of the contact on the same account cannot be reopened beside it.
    let older = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO communications.conversations (id, tenant_id, contact_id, channel, channel_account_id, status, last_message_at)
         SELECT $1, tenant_id, contact_id, channel, channel_account_id, 'resolved', now() - interval '1 day'
         FROM communications.conversations WHERE id = $2::uuid",
    )
    .bind(older)
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let refused = app.post(&format!("/api/v1/conversations/{older}/reopen"), &tenant.api_key, json!({})).await;
    assert_error(refused, 409, "conflict").await;
    app.post(&format!("/api/v1/conversations/{id}/resolve"), &tenant.api_key, json!({})).await;
    let reopened: Value = app
        .post(&format!("/api/v1/conversations/{older}/reopen"), &tenant.api_key, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reopened["status"], "open");
    let all: Value = app.get("/api/v1/conversations", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(all["items"][0]["id"], id.as_str(), "newest activity first: {all}");
}

#[tokio::test]
async fn another_tenants_conversation_is_not_found_and_bad_input_names_the_field() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (_, id) = with_conversation(&app, &sim, "alpine").await;
    let other = app.create_tenant("other").await;
    assert_error(app.get(&format!("/api/v1/conversations/{id}"), &other.api_key).await, 404, "not_found").await;
    let claim = app.post(&format!("/api/v1/conversations/{id}/resolve"), &other.api_key, json!({})).await;
    assert_error(claim, 404, "not_found").await;
    let listed: Value = app.get("/api/v1/conversations", &other.api_key).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);
    for (query, field) in [("status=closed", "status"), ("assignee=someone", "assignee"), ("cursor=nope", "cursor")] {
        let body = assert_error(
            app.get(&format!("/api/v1/conversations?{query}"), &other.api_key).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let body =
        assert_error(app.get("/api/v1/conversations?assignee=me", &other.api_key).await, 422, "validation_failed")
            .await;
    assert_eq!(body["error"]["field"], "assignee", "an API key is nobody's `me`");
}
