//! Delivery tracking from the providers' signed callbacks (posted by the simulator to the real
//! webhook routes): statuses move forward only, duplicates and any order converge, forged
//! callbacks are refused, bounces suppress the address, a failed delivery falls back.

use std::time::{Duration, Instant};

use cpaas_sim::{CallbackStatus, FailureKind, FailureRule, SimConfig};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestTenant, assert_error, sim_email, sim_twilio_sms, sim_whatsapp, spawn_app_with_sim,
    spawn_app_with_sim_config,
};

pub(crate) const PHONE: &str = "+4915112345678";

pub(crate) fn auto_callbacks() -> SimConfig {
    SimConfig { auto_callbacks: Some(Duration::from_millis(50)), ..SimConfig::default() }
}

pub(crate) async fn whatsapp(app: &TestApp, tenant: &TestTenant) {
    app.active_channel(tenant, sim_whatsapp()).await;
}

pub(crate) async fn sms(app: &TestApp, tenant: &TestTenant) {
    app.active_channel(tenant, sim_twilio_sms()).await;
}

pub(crate) async fn email(app: &TestApp, tenant: &TestTenant) {
    app.active_channel(tenant, sim_email()).await;
}

pub(crate) async fn send(app: &TestApp, tenant: &TestTenant, body: Value) -> String {
    let accepted: Value = app.post("/api/v1/messages", &tenant.api_key, body).await.json().await.unwrap();
    accepted["id"].as_str().unwrap_or_else(|| panic!("{accepted}")).to_owned()
}

pub(crate) async fn wait_for(app: &TestApp, tenant: &TestTenant, id: &str, status: &str) -> Value {
    wait_for_within(app, tenant, id, status, Duration::from_secs(10)).await
}

pub(crate) async fn wait_for_within(
    app: &TestApp,
    tenant: &TestTenant,
    id: &str,
    status: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        if message["status"] == status {
            return message;
        }
        assert!(Instant::now() < deadline, "still {} (waiting for {status}): {message:#}", message["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn provider_events(message: &Value) -> Vec<String> {
    message["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "provider")
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn whatsapp_reaches_read_from_signed_callbacks() {
    let (app, _sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let id = send(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE}, "channels": "whatsapp", "content": {"text": "Bus delayed"}}),
    )
    .await;
    let read = wait_for(&app, &tenant, &id, "read").await;
    assert!(read["delivered_at"].is_string() && read["read_at"].is_string(), "{read}");
    let events = read["events"].as_array().unwrap();
    let from_provider: Vec<&Value> = events.iter().filter(|e| e["source"] == "provider").collect();
    assert!(
        from_provider.iter().all(|e| e["payload"]["object"] == "whatsapp_business_account"),
        "the raw payload is kept"
    );
}

#[tokio::test]
async fn sms_and_email_reach_delivered() {
    let (app, _sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    sms(&app, &tenant).await;
    email(&app, &tenant).await;
    let sms_id =
        send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Hi"}})).await;
    let email_id = send(&app, &tenant, json!({"to": {"email": "ann@example.org"}, "channels": "email", "content": {"subject": "Ticket", "text": "Hi"}})).await;
    wait_for(&app, &tenant, &sms_id, "delivered").await;
    let delivered = wait_for(&app, &tenant, &email_id, "delivered").await;
    assert!(
        delivered["events"].as_array().unwrap().iter().any(|e| e["payload"]["Type"] == "Notification"),
        "SES event via SNS kept raw"
    );
}

#[tokio::test]
async fn callbacks_in_any_order_and_repeated_converge() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    use CallbackStatus::{Delivered, Read, Sent};
    let orders: [&[CallbackStatus]; 6] = [
        &[Sent, Delivered, Read],
        &[Read, Delivered, Sent],
        &[Delivered, Sent, Read],
        &[Read, Read, Sent, Sent, Delivered],
        &[Delivered, Delivered, Delivered, Sent, Read, Read],
        &[Sent, Read, Delivered, Sent],
    ];
    for (index, order) in orders.iter().enumerate() {
        let to = format!("+49151000000{index:02}");
        let id =
            send(&app, &tenant, json!({"to": {"phone": to}, "channels": "whatsapp", "content": {"text": "x"}})).await;
        let sent = wait_for(&app, &tenant, &id, "sent").await;
        let provider_id = sent["provider_message_id"].as_str().unwrap();
        sim.post_status_callbacks(provider_id, order).await.unwrap();
        let read = wait_for(&app, &tenant, &id, "read").await;
        let events = provider_events(&read);
        let mut distinct = events.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(events.len(), distinct.len(), "a duplicate callback was recorded twice: {events:?} for {order:?}");
        // A late `sent` or `delivered` never moved it back.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        assert_eq!(after["status"], "read", "{order:?}");
    }
}

#[tokio::test]
async fn forged_callbacks_are_refused_and_nothing_is_stored() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let body = r#"{"object":"whatsapp_business_account","entry":[]}"#;
    let unsigned =
        app.client.post(app.url(&format!("/api/webhooks/meta/{}", tenant.id))).body(body).send().await.unwrap();
    assert_error(unsigned, 401, "invalid_credentials").await;
    let forged = app
        .client
        .post(app.url(&format!("/api/webhooks/meta/{}", tenant.id)))
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(forged, 403, "forbidden").await;
    let twilio = app
        .client
        .post(app.url(&format!("/api/webhooks/twilio/{}/status", tenant.id)))
        .header("x-twilio-signature", "bm9wZQ==")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("MessageSid=SM1&MessageStatus=delivered")
        .send()
        .await
        .unwrap();
    assert!(matches!(twilio.status().as_u16(), 401 | 403), "{}", twilio.status());
    let sns = app
        .client
        .post(app.url("/api/webhooks/aws/sns"))
        .body(json!({"Type": "Notification", "MessageId": "m", "TopicArn": "arn", "Message": "{}", "Timestamp": "2026-01-01T00:00:00Z",
                     "SignatureVersion": "1", "Signature": "AAAA", "SigningCertURL": "https://evil.example/cert.pem"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(sns.status(), 403);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM communications.webhook_envelopes").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_bounce_suppresses_the_address() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    email(&app, &tenant).await;
    let first = send(
        &app,
        &tenant,
        json!({"to": {"email": "gone@example.org"}, "channels": "email", "content": {"subject": "S", "text": "x"}}),
    )
    .await;
    let sent = wait_for(&app, &tenant, &first, "sent").await;
    sim.post_status_callbacks(sent["provider_message_id"].as_str().unwrap(), &[CallbackStatus::Bounce]).await.unwrap();
    let bounced = wait_for(&app, &tenant, &first, "failed").await;
    assert!(bounced["status_reason"].is_string(), "{bounced}");
    // The next send is refused when it is accepted, naming why.
    let again =
        json!({"to": {"email": "gone@example.org"}, "channels": "email", "content": {"subject": "S", "text": "again"}});
    let refused =
        assert_error(app.post("/api/v1/messages", &tenant.api_key, again).await, 422, "validation_failed").await;
    assert_eq!(refused["error"]["field"], "to");
    assert!(refused["error"]["message"].as_str().unwrap().contains("suppressed: bounced"), "{refused}");
    let attempts = sim.ledger().iter().filter(|e| e.operation == "SendEmail").count();
    assert_eq!(attempts, 1, "the suppressed address was not sent to again");
}

#[tokio::test]
async fn a_failed_delivery_falls_back_to_the_next_channel() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    sms(&app, &tenant).await;
    accepted_then_undelivered(&sim, "meta");
    let id = send(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE}, "channels": ["whatsapp", "sms"], "content": {"text": "Pickup moved"}}),
    )
    .await;
    let superseded = wait_for(&app, &tenant, &id, "superseded").await;
    let successor = superseded["superseded_by"].as_str().unwrap().to_owned();
    let fallback = wait_for(&app, &tenant, &successor, "delivered").await;
    assert_eq!(fallback["channel"], "sms");
}

/// Twilio accepted the SMS, then reported it undelivered (30003, the handset unreachable): the
/// message is lost, the number is not, and the next channel of the chain takes over.
#[tokio::test]
async fn an_undelivered_sms_falls_back_to_email() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    sms(&app, &tenant).await;
    email(&app, &tenant).await;
    accepted_then_undelivered(&sim, "twilio");
    let id = send(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE, "email": "anna@example.org"}, "channels": ["sms", "email"],
               "content": {"subject": "Pickup", "text": "Pickup moved to 7:40"}}),
    )
    .await;
    let superseded = wait_for(&app, &tenant, &id, "superseded").await;
    assert!(provider_events(&superseded).contains(&"failed".to_owned()), "{superseded:#}");
    let successor = superseded["superseded_by"].as_str().unwrap().to_owned();
    let fallback = wait_for(&app, &tenant, &successor, "delivered").await;
    assert_eq!(fallback["channel"], "email");
    assert!(suppressions(&app).await.is_empty(), "an unreachable handset is not a bad number");
}

/// A failure whose class says "later" (Twilio 30008) sends the same SMS again, within the retry
/// budget the send-time retries share; once it is spent, the next channel takes over.
#[tokio::test]
async fn a_reported_failure_worth_retrying_sends_again_then_falls_back() {
    let (app, sim) = spawn_app_with_sim(|settings| settings.dispatch.max_attempts = 2).await;
    let tenant = app.create_tenant("alpine").await;
    sms(&app, &tenant).await;
    email(&app, &tenant).await;
    let id = send(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE, "email": "anna@example.org"}, "channels": ["sms", "email"],
               "content": {"subject": "Pickup", "text": "Pickup moved to 7:40"}}),
    )
    .await;
    let sent = wait_for(&app, &tenant, &id, "sent").await;
    sim.post_status_callbacks(sent["provider_message_id"].as_str().unwrap(), &[CallbackStatus::Failed]).await.unwrap();
    let first = wait_for(&app, &tenant, &id, "superseded").await;
    let retry_id = first["superseded_by"].as_str().unwrap().to_owned();
    let retry = wait_for(&app, &tenant, &retry_id, "sent").await;
    assert_eq!(retry["channel"], "sms", "the same channel again: {retry:#}");
    assert!(retry["events"][0]["reason"].as_str().unwrap().contains("sending again"), "{retry:#}");

    sim.post_status_callbacks(retry["provider_message_id"].as_str().unwrap(), &[CallbackStatus::Failed]).await.unwrap();
    let spent = wait_for(&app, &tenant, &retry_id, "superseded").await;
    let fallback = wait_for(&app, &tenant, spent["superseded_by"].as_str().unwrap(), "sent").await;
    assert_eq!(fallback["channel"], "email", "two attempts spent: {fallback:#}");
    let sms_sends = sim.ledger().iter().filter(|e| e.operation == "create_message").count();
    assert_eq!(sms_sends, 2);
}

/// Every send through `provider` is accepted and then reported undelivered.
fn accepted_then_undelivered(sim: &cpaas_sim::SimHandle, provider: &str) {
    let kind = FailureKind::Undeliverable;
    sim.add_failure(FailureRule {
        provider: Some(provider.into()),
        recipient: None,
        kind,
        probability: 1.0,
        remaining: None,
    });
}

/// The suppressed addresses of every tenant, in order.
pub(crate) async fn suppressions(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT address FROM communications.suppressions ORDER BY address")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn inbound_and_unmatched_callbacks_are_kept_and_acknowledged() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    sim.post_inbound(cpaas_sim::InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: "Where is my bus?".into(),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stored: Option<(String, Option<uuid::Uuid>)> =
            sqlx::query_as("SELECT outcome, tenant_id FROM communications.webhook_envelopes WHERE provider = 'meta'")
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        if let Some((outcome, tenant_id)) = stored {
            assert_eq!(outcome, "applied", "inbound messages go to the inbox at once");
            assert_eq!(tenant_id, Some(tenant.id));
            break;
        }
        assert!(Instant::now() < deadline, "the inbound envelope was not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker that died after the provider accepted a send never recorded the provider's id; the
/// correlation id the provider echoes (Meta's `biz_opaque_callback_data`, SES's tag) still
/// matches its callbacks to the message, which leaves `unknown` for its real status.
#[tokio::test]
async fn callbacks_settle_a_send_whose_answer_was_lost_by_our_correlation_id() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    email(&app, &tenant).await;
    let cases = [
        (
            json!({"to": {"phone": PHONE}, "channels": "whatsapp", "content": {"text": "x"}}),
            CallbackStatus::Delivered,
            "delivered",
        ),
        (
            json!({"to": {"email": "anna@example.org"}, "channels": "email", "content": {"subject": "S", "text": "x"}}),
            CallbackStatus::Delivered,
            "delivered",
        ),
    ];
    for (body, callback, settled) in cases {
        let id = send(&app, &tenant, body).await;
        let sent = wait_for(&app, &tenant, &id, "sent").await;
        let provider_id = sent["provider_message_id"].as_str().unwrap().to_owned();
        // As if the worker died between the provider's answer and recording it.
        sqlx::query(
            "UPDATE communications.messages SET status = 'unknown', provider = NULL, provider_message_id = NULL,
                    status_reason = 'interrupted while sending' WHERE id = $1::uuid",
        )
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
        sim.post_status_callbacks(&provider_id, &[callback]).await.unwrap();
        let message = wait_for(&app, &tenant, &id, settled).await;
        assert_eq!(message["provider_message_id"], provider_id.as_str(), "{message}");
        assert!(message["status_reason"].is_null(), "settled, the outcome is no longer unknown: {message}");
    }
}
