//! Crash and outage safety: dispatch survives the database going away, a dead process's
//! messages are taken back (sent once if they never left, settled with the provider if they
//! might have), and webhooks during an outage are refused so the provider retries them.
//!
//! Outages are made per test database: `ALLOW_CONNECTIONS false` and every backend terminated
//! refuses the app's connections as a stopped server would, without touching other tests.

use std::time::{Duration, Instant};

use cpaas_sim::{CallbackStatus, SimConfig, SimHandle};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::delivery::{PHONE, email, send, sms, wait_for, wait_for_within, whatsapp};
use crate::helpers::{
    RunningServer, TestApp, TestTenant, sim_sns_sms, spawn_app_with_sim, spawn_app_with_sim_config, url_for,
};

/// Cuts the app's database off until [`restore`].
async fn cut_off(app: &TestApp) {
    let database = database_name(app);
    let admin = PgPool::connect(&url_for("postgres")).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false")))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
}

async fn restore(app: &TestApp) {
    let admin = PgPool::connect(&url_for("postgres")).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", database_name(app))))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

fn database_name(app: &TestApp) -> String {
    app.pool.connect_options().get_database().unwrap().to_owned()
}

async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn wait_until_ready(app: &TestApp, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readiness(app).await;
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "not ready after {within:?}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(app: &TestApp, prefix: &str) -> f64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests the sim received for `text`, whatever the provider.
pub(crate) fn sends_of(sim: &SimHandle, text: &str) -> usize {
    sim.ledger()
        .iter()
        .filter(|entry| entry.outcome.starts_with("accepted") && entry.body.to_string().contains(text))
        .count()
}

#[tokio::test]
async fn dispatch_survives_a_database_outage_and_resumes_when_it_returns() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("outage").await;
    sms(&app, &tenant).await;
    let body = wait_until_ready(&app, Duration::from_secs(10)).await;
    assert_eq!(body["dispatch"], "ok", "{body}");
    let before =
        send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "before"}})).await;
    wait_for(&app, &tenant, &before, "sent").await;

    cut_off(&app).await;
    let refused = app
        .post(
            "/api/v1/messages",
            &tenant.api_key,
            json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "x"}}),
        )
        .await;
    assert_eq!(refused.status(), 503, "a client is told to try again");
    assert_eq!(refused.headers()["retry-after"], "1");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unavailable", "{error}");
    let (status, body) = readiness(&app).await;
    assert_eq!(status, 503, "{body}");
    // Long enough for every worker to hit the outage in its fetch or heartbeat and die.
    tokio::time::sleep(Duration::from_secs(3)).await;
    restore(&app).await;

    let restored_at = Instant::now();
    let body = wait_until_ready(&app, Duration::from_secs(10)).await;
    assert_eq!(body["dispatch"], "ok", "{body}");
    let after =
        send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "after"}})).await;
    wait_for(&app, &tenant, &after, "sent").await;
    assert!(restored_at.elapsed() < Duration::from_secs(8), "dispatch resumed in {:?}", restored_at.elapsed());
    assert!(metric(&app, "background_task_restarts_total{task=\"dispatch-").await >= 1.0, "the lanes were restarted");
    assert_eq!(sends_of(&sim, "after"), 1);
    assert_eq!(sends_of(&sim, "before"), 1);
}

#[tokio::test]
async fn a_webhook_during_an_outage_is_refused_so_the_provider_retries_it() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("refused").await;
    sms(&app, &tenant).await;
    let id = send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "hi"}})).await;
    let sent = wait_for(&app, &tenant, &id, "sent").await;
    let provider_id = sent["provider_message_id"].as_str().unwrap().to_owned();

    cut_off(&app).await;
    let error = sim.post_status_callbacks(&provider_id, &[CallbackStatus::Delivered]).await.unwrap_err();
    assert!(error.to_string().contains("503"), "never a 200 without the envelope stored: {error}");
    restore(&app).await;
    wait_until_ready(&app, Duration::from_secs(10)).await;
    sim.post_status_callbacks(&provider_id, &[CallbackStatus::Delivered]).await.unwrap();
    wait_for(&app, &tenant, &id, "delivered").await;
}

/// A message accepted for later, then put in the state a process leaves behind when it dies
/// after claiming it: `sending`, claimed by a lease nobody renews, requested or not.
async fn left_behind_by_a_dead_process(
    app: &TestApp,
    tenant: &TestTenant,
    body: Value,
    provider: &str,
    requested: bool,
) -> String {
    let mut body = body;
    body["scheduled_at"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    let id = send(app, tenant, body).await;
    sqlx::query(
        "UPDATE communications.messages SET status = 'sending', attempts = attempts + 1, claimed_by = $2,
             requested_at = CASE WHEN $3 THEN now() - interval '30 seconds' END, provider = $4,
             updated_at = now() - interval '30 seconds'
         WHERE id = $1",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .bind(Uuid::now_v7())
    .bind(requested)
    .bind(provider)
    .execute(&app.pool)
    .await
    .unwrap();
    id
}

fn quick_recovery(settings: &mut switchboard::settings::Settings) {
    settings.dispatch.lease_secs = 2;
    settings.dispatch.unknown_settle_secs = 3;
    settings.providers.request_timeout_secs = 1;
}

#[tokio::test]
async fn a_claimed_message_that_never_left_goes_back_to_the_queue_and_is_sent_once() {
    let (app, sim) = spawn_app_with_sim(quick_recovery).await;
    let tenant = app.create_tenant("requeue").await;
    sms(&app, &tenant).await;
    let body = json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "claimed, never sent"}});
    let id = left_behind_by_a_dead_process(&app, &tenant, body, "twilio", false).await;
    let message = wait_for(&app, &tenant, &id, "sent").await;
    assert_eq!(sends_of(&sim, "claimed, never sent"), 1);
    let reasons: Vec<&str> =
        message["events"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("stopped before sending")), "{reasons:?}");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM communications.messages WHERE id = $1")
        .bind(Uuid::parse_str(&id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "the claim that never sent is not an attempt");
}

#[tokio::test]
async fn an_interrupted_twilio_send_the_provider_has_is_found_not_sent_again() {
    let (app, sim) = spawn_app_with_sim(quick_recovery).await;
    let tenant = app.create_tenant("found").await;
    sms(&app, &tenant).await;
    let id =
        send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "reached twilio"}}))
            .await;
    let sent = wait_for(&app, &tenant, &id, "sent").await;
    let sid = sent["provider_message_id"].as_str().unwrap().to_owned();
    // As if the process died after Twilio accepted it but before the answer was recorded.
    sqlx::query(
        "UPDATE communications.messages SET status = 'sending', provider_message_id = NULL, claimed_by = $2,
             requested_at = now() - interval '30 seconds', updated_at = now() - interval '30 seconds' WHERE id = $1",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .bind(Uuid::now_v7())
    .execute(&app.pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = loop {
        let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        if message["status"] != "sending" && message["status"] != "unknown" {
            break message;
        }
        assert!(Instant::now() < deadline, "not settled: {message:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(settled["provider_message_id"], sid.as_str(), "{settled:#}");
    assert_eq!(sends_of(&sim, "reached twilio"), 1, "found at Twilio, not sent again");
}

#[tokio::test]
async fn an_interrupted_twilio_send_the_provider_never_got_is_sent_once() {
    let (app, sim) = spawn_app_with_sim(quick_recovery).await;
    let tenant = app.create_tenant("notfound").await;
    sms(&app, &tenant).await;
    let body = json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "lost on the way"}});
    let id = left_behind_by_a_dead_process(&app, &tenant, body, "twilio", true).await;
    let message = wait_until_settled(&app, &tenant, &id, Duration::from_secs(30)).await;
    assert_eq!(message["status"], "sent", "{message:#}");
    assert_eq!(sends_of(&sim, "lost on the way"), 1);
    let reasons: Vec<&str> =
        message["events"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("no such message")), "{reasons:?}");
}

#[tokio::test]
async fn an_interrupted_send_to_a_provider_that_calls_back_waits_for_the_callback_then_is_sent_once() {
    let config = SimConfig { auto_callbacks: Some(Duration::from_millis(50)), ..SimConfig::default() };
    let (app, sim) = spawn_app_with_sim_config(quick_recovery, config).await;
    let tenant = app.create_tenant("awaits").await;
    whatsapp(&app, &tenant).await;
    email(&app, &tenant).await;
    let wa = left_behind_by_a_dead_process(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE}, "channels": "whatsapp", "content": {"text": "wa never arrived"}}),
        "meta",
        true,
    )
    .await;
    let mail = left_behind_by_a_dead_process(
        &app,
        &tenant,
        json!({"to": {"email": "guest@example.com"}, "channels": "email",
               "content": {"subject": "s", "text": "mail never arrived"}}),
        "ses",
        true,
    )
    .await;
    for id in [&wa, &mail] {
        let message = wait_until_settled(&app, &tenant, id, Duration::from_secs(40)).await;
        assert!(["sent", "delivered", "read"].contains(&message["status"].as_str().unwrap()), "{message:#}");
        let reasons: Vec<&str> =
            message["events"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("no callback")), "{reasons:?}");
    }
    assert_eq!(sends_of(&sim, "wa never arrived"), 1);
    assert_eq!(sends_of(&sim, "mail never arrived"), 1);
}

#[tokio::test]
async fn an_interrupted_sns_sms_is_unknowable_and_stays_unknown() {
    let (app, sim) = spawn_app_with_sim(quick_recovery).await;
    let tenant = app.create_tenant("unknowable").await;
    app.active_channel(&tenant, sim_sns_sms()).await;
    let body = json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "sns in doubt"}});
    let id = left_behind_by_a_dead_process(&app, &tenant, body, "sns", true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        if message["status_reason"].as_str().is_some_and(|r| r.starts_with("unknowable")) {
            break message;
        }
        assert!(Instant::now() < deadline, "not marked unknowable: {message:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(message["status"], "unknown", "never guessed: {message:#}");
    assert_eq!(sends_of(&sim, "sns in doubt"), 0, "and never resent blindly");
}

async fn wait_until_settled(app: &TestApp, tenant: &TestTenant, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        if !["queued", "sending", "unknown"].contains(&message["status"].as_str().unwrap_or_default()) {
            return message;
        }
        assert!(Instant::now() < deadline, "not settled: {message:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_worker_command_exits_with_an_error_when_dispatch_cannot_recover() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let url = app.database_url();
    let mut worker = RunningServer::start_worker(&[
        ("DATABASE_URL", url.as_str()),
        ("SWITCHBOARD__DISPATCH__GIVE_UP_AFTER_SECS", "2"),
    ]);
    cut_off(&app).await;
    let status = worker.wait_for_exit(Duration::from_secs(30));
    restore(&app).await;
    assert!(status.is_some_and(|s| !s.success()), "exit status {status:?}; logs: {}", worker.logs());
    assert!(worker.logs().contains("giving up"), "{}", worker.logs());
}

#[tokio::test]
async fn a_twilio_status_lost_in_an_outage_is_caught_up_by_asking_twilio() {
    let (app, sim) = spawn_app_with_sim(|settings| settings.dispatch.twilio_confirm_after_secs = 1).await;
    let tenant = app.create_tenant("catchup").await;
    sms(&app, &tenant).await;
    let id = send(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "delivered unseen"}}),
    )
    .await;
    let sent = wait_for(&app, &tenant, &id, "sent").await;
    let sid = sent["provider_message_id"].as_str().unwrap().to_owned();

    cut_off(&app).await;
    // Twilio delivers it and calls back, with its few quick retries, while we are away.
    assert!(sim.post_status_callbacks(&sid, &[CallbackStatus::Delivered]).await.is_err());
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.pending_webhook_retries() > 0 {
        assert!(Instant::now() < deadline, "Twilio's retries never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    restore(&app).await;

    let message = wait_for_within(&app, &tenant, &id, "delivered", Duration::from_secs(20)).await;
    let asked: i64 = sqlx::query_scalar("SELECT count(*) FROM communications.webhook_envelopes WHERE kind = 'lookup'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(asked, 1, "the status came from asking Twilio: {message:#}");
}

#[tokio::test]
async fn a_claim_whose_dispatch_lost_track_of_it_is_taken_back_from_a_live_process() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("lost-track").await;
    sms(&app, &tenant).await;
    let body = json!({"to": {"phone": PHONE}, "scheduled_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
                      "channels": "sms", "content": {"text": "claim answer lost"}});
    let id = send(&app, &tenant, body).await;
    // The claim committed, but its answer never reached the dispatch (the connection broke): the
    // message is claimed by this live process, under a token nobody holds, and never requested.
    sqlx::query(
        "UPDATE communications.messages SET status = 'sending', attempts = attempts + 1,
             claimed_by = (SELECT owner FROM communications.dispatch_leases ORDER BY heartbeat_at DESC LIMIT 1),
             claim = $2, updated_at = now() - interval '40 seconds'
         WHERE id = $1",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .bind(Uuid::now_v7())
    .execute(&app.pool)
    .await
    .unwrap();
    wait_for(&app, &tenant, &id, "sent").await;
    assert_eq!(sends_of(&sim, "claim answer lost"), 1);
}
