//! Webhook hardening: signed SNS notifications from topics or AWS accounts nobody configured are
//! refused and kept without effect, bounces suppress only the message's own recipient, Meta's
//! app-level handshake, authentic non-SES notifications kept, and callbacks that overtake the
//! recording of their send applied late.

use std::time::{Duration, Instant};

use cpaas_sim::{CallbackStatus, SimConfig, SimHandle};
use serde_json::{Value, json};
use switchboard::settings::Settings;

use crate::delivery::{email, send, suppressions, wait_for};
use crate::helpers::{TestApp, TestTenant, assert_error, sim_email, spawn_app_with, spawn_app_with_sim};

const ANNA: &str = "anna@example.org";
/// A topic in an AWS account that is not ours.
const FOREIGN_TOPIC: &str = "arn:aws:sns:eu-central-1:210987654321:someone-elses-topic";

fn mail_to(address: &str) -> Value {
    json!({"to": {"email": address}, "channels": "email", "content": {"subject": "Ticket", "text": "Your seat: 4A"}})
}

fn sim_topic() -> String {
    SimConfig::default().ses_events_topic_arn()
}

/// An app whose tenant sent one mail to Anna through the simulated SES, which accepted it.
struct SentMail {
    app: TestApp,
    sim: SimHandle,
    tenant: TestTenant,
    id: String,
    provider_id: String,
}

async fn a_sent_mail(configure: impl FnOnce(&mut Settings)) -> SentMail {
    let (app, sim) = spawn_app_with_sim(configure).await;
    let tenant = app.create_tenant("alpine").await;
    email(&app, &tenant).await;
    let id = send(&app, &tenant, mail_to(ANNA)).await;
    let sent = wait_for(&app, &tenant, &id, "sent").await;
    let provider_id = sent["provider_message_id"].as_str().unwrap().to_owned();
    SentMail { app, sim, tenant, id, provider_id }
}

/// (outcome, body) of every SNS envelope, oldest first.
async fn sns_envelopes(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT outcome, body FROM communications.webhook_envelopes WHERE provider = 'sns' ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

async fn envelope_outcome_becomes(app: &TestApp, marker: &str, outcome: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let envelopes = sns_envelopes(app).await;
        let found = envelopes.iter().find(|(_, body)| body.contains(marker)).map(|(o, _)| o.clone());
        if found.as_deref() == Some(outcome) {
            return;
        }
        assert!(Instant::now() < deadline, "envelope with {marker} is {found:?}, not {outcome}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_signed_notification_from_a_topic_nobody_configured_is_refused_and_kept_without_effect() {
    let SentMail { app, sim, tenant, id, provider_id } = a_sent_mail(|_| {}).await;
    let provider_id = provider_id.as_str();

    // A real complaint about our message, correctly signed, but on a stranger's topic.
    let complaint = sim.ses_event_record(provider_id, CallbackStatus::Complaint).unwrap();
    let refused = sim.post_sns_notification(FOREIGN_TOPIC, &complaint.to_string()).await.unwrap_err();
    assert!(refused.to_string().contains("403") && refused.to_string().contains(FOREIGN_TOPIC), "{refused}");
    assert_eq!(suppressions(&app).await, Vec::<String>::new(), "nothing suppressed");
    let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(message["status"], "sent");
    assert!(message["events"].as_array().unwrap().iter().all(|e| e["source"] != "provider"), "{message:#}");
    let envelopes = sns_envelopes(&app).await;
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0].0, "refused", "kept for audit");
    assert!(envelopes[0].1.contains(FOREIGN_TOPIC));

    // The expected topic, but a record about mail another AWS account sent.
    let mut bounce = sim.ses_event_record(provider_id, CallbackStatus::Bounce).unwrap();
    bounce["mail"]["sendingAccountId"] = json!("210987654321");
    let refused = sim.post_sns_notification(&sim_topic(), &bounce.to_string()).await.unwrap_err();
    assert!(refused.to_string().contains("403") && refused.to_string().contains("210987654321"), "{refused}");
    assert_eq!(suppressions(&app).await, Vec::<String>::new());
    let outcomes: Vec<String> = sns_envelopes(&app).await.into_iter().map(|(outcome, _)| outcome).collect();
    assert!(outcomes.iter().all(|o| o == "refused"), "{outcomes:?}");

    // The same complaint on the expected topic is applied.
    sim.post_sns_notification(&sim_topic(), &complaint.to_string()).await.unwrap();
    assert_eq!(suppressions(&app).await, [ANNA]);
}

#[tokio::test]
async fn a_tenants_own_topic_only_touches_that_tenants_messages() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let alpine = app.create_tenant("alpine").await;
    let bravo = app.create_tenant("bravo").await;
    email(&app, &alpine).await;
    // Bravo publishes its SES events on a topic of its own (in the account that sends its mail).
    let bravo_topic = "arn:aws:sns:eu-central-1:123456789012:bravo-ses-events";
    let mut bravo_mail = sim_email();
    bravo_mail["config"]["domain"] = json!("mail.bravo.example");
    bravo_mail["config"]["from_address"] = json!("hello@mail.bravo.example");
    bravo_mail["config"]["sns_topic_arns"] = json!([bravo_topic]);
    app.active_channel(&bravo, bravo_mail).await;

    let alpine_id = send(&app, &alpine, mail_to(ANNA)).await;
    let alpine_sent = wait_for(&app, &alpine, &alpine_id, "sent").await;
    let bravo_id = send(&app, &bravo, mail_to("ben@example.org")).await;
    let bravo_sent = wait_for(&app, &bravo, &bravo_id, "sent").await;

    // Whoever controls Bravo's topic cannot reach Alpine's messages through it.
    let alpine_pid = alpine_sent["provider_message_id"].as_str().unwrap();
    let complaint = sim.ses_event_record(alpine_pid, CallbackStatus::Complaint).unwrap();
    sim.post_sns_notification(bravo_topic, &complaint.to_string()).await.unwrap();
    let alpine_now: Value =
        app.get(&format!("/api/v1/messages/{alpine_id}"), &alpine.api_key).await.json().await.unwrap();
    assert_eq!(alpine_now["status"], "sent");
    assert_eq!(suppressions(&app).await, Vec::<String>::new());

    // Its own messages, yes.
    let bravo_pid = bravo_sent["provider_message_id"].as_str().unwrap();
    let bounce = sim.ses_event_record(bravo_pid, CallbackStatus::Bounce).unwrap();
    sim.post_sns_notification(bravo_topic, &bounce.to_string()).await.unwrap();
    wait_for(&app, &bravo, &bravo_id, "failed").await;
    assert_eq!(suppressions(&app).await, ["ben@example.org"]);
}

#[tokio::test]
async fn a_bounce_or_complaint_naming_a_stranger_suppresses_nobody() {
    let SentMail { app, sim, tenant, id, provider_id } = a_sent_mail(|_| {}).await;
    let provider_id = provider_id.as_str();

    let mut bounce = sim.ses_event_record(provider_id, CallbackStatus::Bounce).unwrap();
    bounce["bounce"]["bouncedRecipients"][0]["emailAddress"] = json!("stranger@example.org");
    sim.post_sns_notification(&sim_topic(), &bounce.to_string()).await.unwrap();
    let mut complaint = sim.ses_event_record(provider_id, CallbackStatus::Complaint).unwrap();
    complaint["complaint"]["complainedRecipients"][0]["emailAddress"] = json!("Other.Stranger@example.org");
    sim.post_sns_notification(&sim_topic(), &complaint.to_string()).await.unwrap();

    assert_eq!(suppressions(&app).await, Vec::<String>::new(), "we never mailed them");
    let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(message["status"], "sent", "a report about someone else does not fail our message");
    let noted: Vec<&str> = message["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "provider")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(noted.len(), 2, "both reports are on the record: {message:#}");
    assert!(noted.iter().all(|reason| reason.contains("not a recipient of this message")), "{noted:?}");

    // A bounce for the recipient herself still counts.
    let bounce = sim.ses_event_record(provider_id, CallbackStatus::Bounce).unwrap();
    sim.post_sns_notification(&sim_topic(), &bounce.to_string()).await.unwrap();
    wait_for(&app, &tenant, &id, "failed").await;
    assert_eq!(suppressions(&app).await, [ANNA]);
}

#[tokio::test]
async fn an_authentic_notification_that_is_no_ses_record_is_kept_and_acknowledged() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    // AWS's own example, and a console test publish of JSON that is no SES record.
    sim.post_sns_notification(&sim_topic(), "Hello world!").await.unwrap();
    sim.post_sns_notification(&sim_topic(), r#"{"default": "test publish from the console"}"#).await.unwrap();
    let envelopes = sns_envelopes(&app).await;
    assert_eq!(envelopes.len(), 2, "{envelopes:?}");
    assert!(envelopes.iter().all(|(outcome, _)| outcome == "ignored"), "{envelopes:?}");
    assert!(envelopes[0].1.contains("Hello world!"));
}

#[tokio::test]
async fn metas_app_level_callback_passes_the_subscription_handshake() {
    let app =
        spawn_app_with(|settings| settings.providers.meta_verify_token = "app-verify-7f3a".to_owned().into()).await;
    let handshake = |token: &str| {
        app.client
            .get(app.url("/api/webhooks/meta"))
            .query(&[("hub.mode", "subscribe"), ("hub.challenge", "1158201444"), ("hub.verify_token", token)])
            .send()
    };
    let echoed = handshake("app-verify-7f3a").await.unwrap();
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.text().await.unwrap(), "1158201444");
    assert_error(handshake("wrong-token").await.unwrap(), 403, "forbidden").await;
    let no_token =
        app.client.get(app.url("/api/webhooks/meta?hub.mode=subscribe&hub.challenge=1")).send().await.unwrap();
    assert_error(no_token, 401, "invalid_credentials").await;

    // Without a configured token every handshake is refused, an empty one included.
    let unconfigured = spawn_app_with(|_| {}).await;
    let refused = unconfigured
        .client
        .get(unconfigured.url("/api/webhooks/meta?hub.mode=subscribe&hub.challenge=1&hub.verify_token="))
        .send()
        .await
        .unwrap();
    let body = assert_error(refused, 403, "forbidden").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("providers.meta_verify_token"), "{body}");
}

/// The provider's answer and its callback race: the callback can arrive before our worker has
/// written the provider's id. It is acknowledged, kept, and applied once the id is known.
#[tokio::test]
async fn a_callback_that_overtakes_the_recording_of_its_send_is_applied_late() {
    let SentMail { app, sim, tenant, id, provider_id } = a_sent_mail(|_| {}).await;
    // As if the worker had not recorded the provider's answer yet.
    sqlx::query(
        "UPDATE communications.messages SET status = 'sending', provider = NULL, provider_message_id = NULL
         WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    // Without our correlation tag, only the provider's id can match it.
    let mut delivery = sim.ses_event_record(&provider_id, CallbackStatus::Delivered).unwrap();
    delivery["mail"]["tags"].as_object_mut().unwrap().remove("sb_correlation");
    sim.post_sns_notification(&sim_topic(), &delivery.to_string()).await.unwrap();
    envelope_outcome_becomes(&app, &provider_id, "unmatched").await;

    sqlx::query(
        "UPDATE communications.messages SET status = 'sent', provider = 'ses', provider_message_id = $2
         WHERE id = $1::uuid",
    )
    .bind(&id)
    .bind(&provider_id)
    .execute(&app.pool)
    .await
    .unwrap();
    wait_for(&app, &tenant, &id, "delivered").await;
    envelope_outcome_becomes(&app, &provider_id, "applied").await;
}

#[tokio::test]
async fn a_callback_that_never_matches_expires_after_its_window() {
    let SentMail { app, sim, tenant, id, provider_id } =
        a_sent_mail(|settings| settings.webhooks.unmatched_retry_secs = 2).await;
    let mut delivery = sim.ses_event_record(&provider_id, CallbackStatus::Delivered).unwrap();
    delivery["mail"]["messageId"] = json!("0100018f-never-sent-by-us");
    delivery["mail"]["tags"].as_object_mut().unwrap().remove("sb_correlation");
    sim.post_sns_notification(&sim_topic(), &delivery.to_string()).await.unwrap();
    envelope_outcome_becomes(&app, "0100018f-never-sent-by-us", "unmatched").await;
    envelope_outcome_becomes(&app, "0100018f-never-sent-by-us", "expired").await;
    let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(message["status"], "sent");
}
