//! A message stored claimed for this process's dispatcher gets its rate-limit slot — and, when
//! the slot is now, its in-flight mark — in the statement that stores it
//! (`messages/single_write.rs`, `dispatch::local::LocalDispatch::slots_to_reserve`), not in a
//! statement of the dispatcher's after the acceptance's commit. The rate limit holds as before,
//! each message takes one slot, and a provider that cannot be asked after a crash whether it has
//! a message (SNS SMS) still has its messages marked just before their requests.
//!
//! The mark's time tells which statement set it: a message marked by the statement that stored
//! it has `requested_at = created_at` (both that statement's `now()`); any later statement marks
//! it later.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestTenant, sim_sns_sms, sim_twilio_sms, spawn_app_with_sim};

const RATE: f64 = 20.0;
const BURST: u32 = 4;

fn slow_sms(settings: &mut switchboard::settings::Settings) {
    settings.dispatch.sms_rate_per_sec = RATE;
    settings.dispatch.rate_burst_max = BURST;
}

/// Sends `count` SMS at once, their texts `{prefix} {n}`; answers the messages' ids.
async fn send_at_once(app: &TestApp, tenant: &TestTenant, count: usize, prefix: &str) -> Vec<Uuid> {
    let requests: Vec<_> = (0..count)
        .map(|n| {
            let (client, url, key) = (app.client.clone(), app.url("/api/v1/messages"), tenant.api_key.clone());
            let body = json!({"to": {"phone": format!("+49151000{n:05}")}, "channels": "sms",
                              "content": {"text": format!("{prefix} {n}")}});
            tokio::spawn(async move {
                let response = client.post(url).bearer_auth(key).json(&body).send().await.expect("request");
                assert_eq!(response.status(), 202);
                let answer: Value = response.json().await.expect("json");
                Uuid::parse_str(answer["id"].as_str().expect("id")).expect("uuid")
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(count);
    for request in requests {
        ids.push(request.await.expect("task"));
    }
    ids
}

/// Waits until every message of `ids` is `sent`; answers how many of them the statement that
/// stored them marked in flight.
async fn sent_and_marked_at_acceptance(app: &TestApp, ids: &[Uuid], within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let (sent, marked): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'sent'),
                    count(*) FILTER (WHERE status = 'sent' AND requested_at = created_at)
             FROM communications.messages WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_one(&app.pool)
        .await
        .expect("messages");
        if sent == ids.len() as i64 {
            return marked;
        }
        assert!(Instant::now() < deadline, "{sent} of {} sent", ids.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sends_of(sim: &cpaas_sim::SimHandle, prefix: &str) -> Vec<cpaas_sim::LedgerEntry> {
    sim.ledger()
        .into_iter()
        .filter(|e| e.operation == "create_message" && e.outcome.starts_with("accepted"))
        .filter(|e| e.body.to_string().contains(prefix))
        .collect()
}

#[tokio::test]
async fn acceptance_reserves_each_slot_once_and_marks_in_flight_the_messages_whose_slot_is_now() {
    let (app, sim) = spawn_app_with_sim(slow_sms).await;
    let tenant = app.create_tenant("early-slots").await;
    let account = app.active_channel(&tenant, sim_twilio_sms()).await;
    let account = Uuid::parse_str(account["id"].as_str().expect("id")).expect("uuid");

    // A lone send, its slot free: stored in flight by the statement that stored it.
    let lone = send_at_once(&app, &tenant, 1, "lone").await;
    assert_eq!(sent_and_marked_at_acceptance(&app, &lone, Duration::from_secs(20)).await, 1);

    // Wait for the bucket to fill again, then forty at once against a burst of four.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let burst = send_at_once(&app, &tenant, 40, "burst").await;
    let marked = sent_and_marked_at_acceptance(&app, &burst, Duration::from_secs(30)).await;
    assert!((1..=i64::from(BURST)).contains(&marked), "{marked} marked at acceptance; the burst is {BURST}");

    // Each sent once, and never faster than the rate: after the burst, one per 50 ms.
    let sends = sends_of(&sim, "burst ");
    assert_eq!(sends.len(), 40, "each message sent once");
    let mut times: Vec<_> = sends.iter().map(|e| e.received_at).collect();
    times.sort();
    let span = (times[39] - times[0]).to_std().unwrap_or_default();
    let least = Duration::from_secs_f64(f64::from(40 - BURST) / RATE * 0.9);
    assert!(span >= least, "40 sends in {span:?}: faster than {RATE}/s after a burst of {BURST}");

    // Each message took one slot on the account's key: its `tat` moved by 41 intervals (the lone
    // send's and the burst's) from the first reservation — 82 if anything reserved twice.
    let key = communications::rate_limit::channel_account_key(tenant.id, account);
    let ahead: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM r.tat - (SELECT min(created_at) FROM communications.messages WHERE tenant_id = $2))::float8
         FROM communications.rate_limits r WHERE r.key = $1",
    )
    .bind(&key)
    .bind(tenant.id)
    .fetch_one(&app.pool)
    .await
    .expect("the account's key");
    // The lone send's slot was reserved at its acceptance; the burst's 40 from a bucket that had
    // refilled (`tat` no later than then), so `tat` is the burst's start plus 40 intervals.
    let burst_start: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM min(created_at) - (SELECT min(created_at) FROM communications.messages
                                                      WHERE tenant_id = $2))::float8
         FROM communications.messages WHERE id = ANY($1)",
    )
    .bind(&burst)
    .bind(tenant.id)
    .fetch_one(&app.pool)
    .await
    .expect("burst start");
    let taken = (ahead - burst_start) * RATE;
    assert!((39.0..42.0).contains(&taken), "the burst moved the key by {taken:.1} slots, not 40");
}

#[tokio::test]
async fn an_sns_message_is_marked_just_before_its_request_as_it_cannot_be_settled_after_a_crash() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("sns-late-mark").await;
    app.active_channel(&tenant, sim_sns_sms()).await;
    let ids = send_at_once(&app, &tenant, 5, "sns").await;
    let marked = sent_and_marked_at_acceptance(&app, &ids, Duration::from_secs(20)).await;
    assert_eq!(marked, 0, "an SNS message is marked by the dispatcher, after its acceptance");
    let sends = sim.ledger().into_iter().filter(|e| e.provider == "sns" && e.body.to_string().contains("sns ")).count();
    assert_eq!(sends, 5, "each sent once");
}
