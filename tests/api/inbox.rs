//! The inbox's inbound path: verified inbound webhooks become contacts, conversations and
//! inbound messages, once per provider message id, with a change for the live stream.

use std::time::{Duration, Instant};

use cpaas_sim::{InboundSpec, SimHandle};
use uuid::Uuid;

use crate::delivery::{sms, whatsapp};
use crate::helpers::{TestApp, TestTenant, spawn_app_with_sim};

const META_NUMBER: &str = "106540352242922";

async fn post_meta(sim: &SimHandle, from: &str, text: &str) {
    sim.post_inbound(InboundSpec::Meta { phone_number_id: META_NUMBER.into(), from: from.into(), text: text.into() })
        .await
        .unwrap();
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    conversation_id: Uuid,
    contact_id: Uuid,
    channel: String,
    status: String,
    direction: String,
    text: Option<String>,
    conversation_status: String,
}

/// The tenant's inbound messages with their conversations, oldest first.
async fn inbound(app: &TestApp, tenant: &TestTenant) -> Vec<Row> {
    sqlx::query_as(
        "SELECT m.conversation_id, m.contact_id, m.channel, m.status, m.direction, m.content->>'body' AS text,
                c.status AS conversation_status
         FROM communications.messages m JOIN communications.conversations c ON c.id = m.conversation_id
         WHERE m.tenant_id = $1 AND m.direction = 'inbound' ORDER BY m.id",
    )
    .bind(tenant.id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn wait_for_inbound(app: &TestApp, tenant: &TestTenant, count: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = inbound(app, tenant).await;
        if rows.len() >= count {
            return rows;
        }
        assert!(Instant::now() < deadline, "{} of {count} inbound messages: {rows:?}", rows.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn changes(app: &TestApp, tenant: &TestTenant) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM communications.changes WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant.id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_inbound_whatsapp_message_opens_a_conversation_with_a_new_contact() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    post_meta(&sim, "4915112345678", "Where is my bus?").await;
    let rows = wait_for_inbound(&app, &tenant, 1).await;
    let first = &rows[0];
    assert_eq!(
        (first.channel.as_str(), first.status.as_str(), first.direction.as_str()),
        ("whatsapp", "received", "inbound")
    );
    assert_eq!(first.text.as_deref(), Some("Where is my bus?"));
    assert_eq!(first.conversation_status, "open");
    let phone: String = sqlx::query_scalar(
        "SELECT value FROM communications.contact_identifiers WHERE contact_id = $1 AND kind = 'phone'",
    )
    .bind(first.contact_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(phone, "+4915112345678", "the WhatsApp id is the contact's phone in E.164");
    assert_eq!(changes(&app, &tenant).await, ["conversation.created"]);
    // The messages API shows it for what it is.
    let listed: serde_json::Value = app.get("/api/v1/messages", &tenant.api_key).await.json().await.unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["status"], "received");
    assert_eq!(items[0]["conversation_id"], first.conversation_id.to_string());

    // The same person writes again: same contact, same conversation, newer activity.
    post_meta(&sim, "4915112345678", "Hello?").await;
    let rows = wait_for_inbound(&app, &tenant, 2).await;
    assert_eq!(rows[1].conversation_id, first.conversation_id);
    assert_eq!(rows[1].contact_id, first.contact_id);
    assert_eq!(changes(&app, &tenant).await, ["conversation.created", "message.created"]);
    let (last_message_at, last_inbound_at): (chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT last_message_at, last_inbound_at FROM communications.conversations WHERE id = $1")
            .bind(first.conversation_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(Some(last_message_at), last_inbound_at);
}

#[tokio::test]
async fn a_redelivered_inbound_message_is_stored_once() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    post_meta(&sim, "4915112345678", "Only once").await;
    wait_for_inbound(&app, &tenant, 1).await;
    // Meta delivers the very same body again (its retries do): signed as Meta signs it.
    let body: String =
        sqlx::query_scalar("SELECT body FROM communications.webhook_envelopes WHERE provider = 'meta' LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.post_meta_signed(&tenant, body).await;
    assert_eq!(inbound(&app, &tenant).await.len(), 1);
    assert_eq!(changes(&app, &tenant).await, ["conversation.created"]);
}

#[tokio::test]
async fn an_inbound_sms_opens_its_own_conversation_and_a_new_one_reopens_it_once_resolved() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    sms(&app, &tenant).await;
    // The simulator posts to `/api/webhooks/twilio/{account_sid}/inbound`; the number's webhook
    // URL an operator configures carries our tenant id in that place.
    let post = |body: &'static str| {
        sim.post_inbound(InboundSpec::Twilio {
            account_sid: tenant.id.to_string(),
            from: "+4915112345678".into(),
            to: "+15005550006".into(),
            body: body.into(),
        })
    };
    post("Is the 9:15 on time?").await.unwrap();
    let rows = wait_for_inbound(&app, &tenant, 1).await;
    assert_eq!(rows[0].channel, "sms");
    assert_eq!(rows[0].text.as_deref(), Some("Is the 9:15 on time?"));
    sqlx::query("UPDATE communications.conversations SET status = 'resolved' WHERE id = $1")
        .bind(rows[0].conversation_id)
        .execute(&app.pool)
        .await
        .unwrap();
    post("Another question").await.unwrap();
    let rows = wait_for_inbound(&app, &tenant, 2).await;
    assert_eq!(rows[1].conversation_id, rows[0].conversation_id, "the resolved conversation is reopened");
    assert_eq!(rows[1].contact_id, rows[0].contact_id);
    assert_eq!(rows[1].conversation_status, "open");
}

#[tokio::test]
async fn a_snoozed_conversation_wakes_up_on_a_new_inbound_message() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    post_meta(&sim, "4915112345678", "first").await;
    let rows = wait_for_inbound(&app, &tenant, 1).await;
    sqlx::query(
        "UPDATE communications.conversations SET status = 'snoozed', snoozed_until = now() + interval '1 day' WHERE id = $1",
    )
    .bind(rows[0].conversation_id)
    .execute(&app.pool)
    .await
    .unwrap();
    post_meta(&sim, "4915112345678", "are you there?").await;
    let rows = wait_for_inbound(&app, &tenant, 2).await;
    assert_eq!(rows[1].conversation_id, rows[0].conversation_id);
    assert_eq!(rows[1].conversation_status, "open");
    let woke: bool = sqlx::query_scalar("SELECT snoozed_until IS NULL FROM communications.conversations WHERE id = $1")
        .bind(rows[0].conversation_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(woke, "no longer snoozed until a later time");
}

#[tokio::test]
async fn envelopes_stored_before_the_inbox_are_processed_once() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    post_meta(&sim, "4915112345678", "Sent before the upgrade").await;
    wait_for_inbound(&app, &tenant, 1).await;
    // As the envelope was left by the release before the inbox: kept, never processed.
    for statement in [
        "DELETE FROM communications.changes",
        "DELETE FROM communications.messages WHERE direction = 'inbound'",
        "DELETE FROM communications.conversations",
        "UPDATE communications.webhook_envelopes SET outcome = 'stored' WHERE provider = 'meta'",
    ] {
        sqlx::query(statement).execute(&app.pool).await.unwrap();
    }
    let rows = wait_for_inbound(&app, &tenant, 1).await;
    assert_eq!(rows[0].text.as_deref(), Some("Sent before the upgrade"));
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM communications.webhook_envelopes WHERE provider = 'meta'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(outcome, "applied");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(inbound(&app, &tenant).await.len(), 1, "processed once");
}
