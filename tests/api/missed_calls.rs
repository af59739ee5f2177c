//! A missed call answered by SMS, and the SMS booking dialogue, against the simulator's Twilio
//! (calls driven by our TwiML, signed callbacks, its Messages API) and the real fulfillment
//! module: every dial outcome, Twilio's retries of one callback, forged signatures, the whole
//! dialogue (call → SMS → "2" → appointment → confirmation), an expired hold, free text handed
//! to an agent, and an agent taking over.

use std::time::Duration;

use cpaas_sim::{CallReport, CallSpec, DialOutcome, InboundSpec, SimHandle};
use serde_json::{Value, json};

use crate::fulfillment::berlin_plumber;
use crate::helpers::{TestApp, TestTenant, sim_twilio_sms, spawn_app_with_sim};

pub(crate) const OUR_NUMBER: &str = "+15005550006";
pub(crate) const OWNER: &str = "+4930123456";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

/// A plumbing business: Twilio SMS, a plumber with Berlin hours and one service, missed calls
/// forwarded to the owner's phone, booking at once unless `confirm`.
pub(crate) async fn business(app: &TestApp, confirm: bool) -> (TestTenant, String, String) {
    let tenant = app.create_tenant("plumbing").await;
    app.active_channel(&tenant, sim_twilio_sms()).await;
    let (resource, service) = berlin_plumber(app, &tenant).await;
    let policy = json!({
        "missed_call": {"forward_to": OWNER, "dial_timeout_secs": 15, "short_call_secs": 8},
        "booking": {"confirm": confirm, "slots": 3},
    });
    let response = app.patch_json("/api/v1/messaging-policy", &tenant.api_key, policy).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    (tenant, resource, service)
}

pub(crate) fn call(tenant: &TestTenant, from: &str, outcome: DialOutcome) -> CallSpec {
    CallSpec {
        account_sid: ACCOUNT.into(),
        webhook_id: Some(tenant.id.to_string()),
        from: from.into(),
        to: OUR_NUMBER.into(),
        outcome,
        ..Default::default()
    }
}

/// The SMS bodies the simulated Twilio accepted for `to`, in order.
pub(crate) fn texts_to(sim: &SimHandle, to: &str) -> Vec<String> {
    sim.ledger()
        .into_iter()
        .filter(|e| e.provider == "twilio" && e.operation == "create_message" && e.recipient.as_deref() == Some(to))
        .filter(|e| e.outcome.starts_with("accepted"))
        .map(|e| e.body["Body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub(crate) async fn wait_for_texts(sim: &SimHandle, to: &str, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let texts = texts_to(sim, to);
        if texts.len() >= count {
            return texts;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{to} received {:?}, expected {count} texts", texts_to(sim, to));
}

pub(crate) async fn reply(sim: &SimHandle, tenant: &TestTenant, from: &str, body: &str) {
    sim.post_inbound(InboundSpec::Twilio {
        account_sid: tenant.id.to_string(),
        from: from.into(),
        to: OUR_NUMBER.into(),
        body: body.into(),
    })
    .await
    .unwrap();
}

async fn dialogue_state(app: &TestApp, tenant: &TestTenant) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM communications.dialogues WHERE tenant_id = $1")
        .bind(tenant.id)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

async fn wait_for_state(app: &TestApp, tenant: &TestTenant, state: &str) {
    for _ in 0..200 {
        if dialogue_state(app, tenant).await.as_deref() == Some(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the dialogue is {:?}, not {state}", dialogue_state(app, tenant).await);
}

async fn booked(app: &TestApp, tenant: &TestTenant) -> Vec<Value> {
    let response = app.get("/api/v1/appointments?status=booked", &tenant.api_key).await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
}

fn placed_ok(report: &CallReport) {
    assert_eq!(report.answer, "twiml", "{report:?}");
    assert!(report.action_deliveries.iter().all(|d| d.status == Some(200)), "{report:?}");
}

#[tokio::test]
async fn a_missed_call_gets_one_sms_with_slots_however_often_twilio_calls_back_and_2_books_the_second() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, resource, _) = business(&app, false).await;
    let caller = "+4915112345678";
    let report = sim
        .place_call(CallSpec {
            repeat_action: 2,
            status_callback: true,
            ..call(&tenant, caller, DialOutcome::NoAnswer)
        })
        .await
        .unwrap();
    placed_ok(&report);
    assert_eq!(report.dialed.as_deref(), Some(OWNER), "the call rings the owner first");
    assert_eq!(report.dial_timeout, Some(15));
    assert_eq!(report.action_deliveries.len(), 3, "Twilio delivered the outcome three times");
    assert!(report.action_verbs.iter().any(|v| v == "Say"), "{report:?}");
    let texts = wait_for_texts(&sim, caller, 1).await;
    assert!(texts[0].starts_with("Sorry we missed your call! Reply 1 for "), "{texts:?}");
    assert!(texts[0].contains(", 2 for ") && texts[0].contains(" or 3 for "), "{texts:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(texts_to(&sim, caller).len(), 1, "one SMS per call, whatever Twilio retries");
    // The SLI is exported as a histogram (buckets aggregate across replicas).
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("missed_call_sms_seconds_bucket{le=\"0.1\"}"), "{metrics}");
    assert!(metrics.contains("missed_calls_total{outcome=\"no-answer\"} 1"), "{metrics}");

    // The call is in the caller's SMS conversation, which is open.
    let conversation = app.newest_conversation(&tenant, 1).await;
    let thread: Value =
        app.get(&format!("/api/v1/conversations/{conversation}/messages"), &tenant.api_key).await.json().await.unwrap();
    let items = thread["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the call and the auto-reply: {thread}");
    // Newest first: the auto-reply answers the call.
    assert_eq!(items[1]["content"]["type"], "call", "{thread}");
    assert_eq!(items[1]["content"]["outcome"], "no-answer");
    assert_eq!(items[1]["direction"], "inbound");
    assert_eq!(items[0]["direction"], "outbound");
    // The process that took the call sent the answer itself: stored claimed, handed over in
    // memory after the commit, never a job for the workers to fetch.
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE convert_from(job, 'UTF8')::jsonb->>'message_id' = $1",
    )
    .bind(items[0]["id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(jobs, 0, "the missed call's answer went without a job");

    let proposals: Value =
        sqlx::query_scalar("SELECT proposals FROM communications.dialogues WHERE conversation_id = $1::uuid")
            .bind(&conversation)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let second = proposals[1]["start"].as_str().unwrap().to_owned();
    reply(&sim, &tenant, caller, "2").await;
    let texts = wait_for_texts(&sim, caller, 2).await;
    assert!(texts[1].starts_with("You're booked for "), "{texts:?}");
    let appointments = booked(&app, &tenant).await;
    assert_eq!(appointments.len(), 1, "{appointments:?}");
    assert_eq!(appointments[0]["resource_id"], resource.as_str());
    assert_eq!(appointments[0]["source"], "sms");
    let start = chrono::DateTime::parse_from_rfc3339(appointments[0]["start"].as_str().unwrap()).unwrap();
    assert_eq!(start, chrono::DateTime::parse_from_rfc3339(&second).unwrap());
    assert!(texts[1].ends_with("What's the address for the visit?"), "{texts:?}");
    // The dialogue's answer, too, went without a job.
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs j JOIN communications.messages m
             ON convert_from(j.job, 'UTF8')::jsonb->>'message_id' = m.id::text
         WHERE m.conversation_id = $1::uuid AND m.content->>'text' LIKE 'You''re booked for %'",
    )
    .bind(&conversation)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(jobs, 0, "the dialogue's answer went without a job");
    wait_for_state(&app, &tenant, "address").await;

    // The address becomes the appointment's location (its calendars follow).
    reply(&sim, &tenant, caller, "Invalidenstr. 117, 10115 Berlin").await;
    let texts = wait_for_texts(&sim, caller, 3).await;
    assert_eq!(texts[2], "Thanks! We'll come to Invalidenstr. 117, 10115 Berlin. Reply here if anything changes.");
    wait_for_state(&app, &tenant, "booked").await;
    assert_eq!(booked(&app, &tenant).await[0]["location"], "Invalidenstr. 117, 10115 Berlin");

    // A second "2" (or the same webhook again) books nothing more.
    reply(&sim, &tenant, caller, "2").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(booked(&app, &tenant).await.len(), 1);
    assert_eq!(texts_to(&sim, caller).len(), 3);
}

#[tokio::test]
async fn every_unanswered_outcome_and_a_short_call_are_missed_and_a_real_conversation_is_not() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, _, _) = business(&app, false).await;
    let cases = [
        ("+4915100000001", DialOutcome::NoAnswer, 0, true),
        ("+4915100000002", DialOutcome::Busy, 0, true),
        ("+4915100000003", DialOutcome::Failed, 0, true),
        ("+4915100000004", DialOutcome::Canceled, 0, true),
        // Voicemail picked up and hung up: shorter than `short_call_secs`.
        ("+4915100000005", DialOutcome::Completed, 3, true),
        ("+4915100000006", DialOutcome::Completed, 95, false),
    ];
    for (caller, outcome, seconds, _) in &cases {
        let spec = CallSpec { dial_duration_secs: *seconds, ..call(&tenant, caller, *outcome) };
        placed_ok(&sim.place_call(spec).await.unwrap());
    }
    for (caller, outcome, _, missed) in &cases {
        if *missed {
            let texts = wait_for_texts(&sim, caller, 1).await;
            assert_eq!(texts.len(), 1, "{outcome:?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(texts_to(&sim, "+4915100000006").is_empty(), "an answered call gets no SMS");
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT content->>'outcome' FROM communications.messages WHERE tenant_id = $1 AND content->>'type' = 'call' ORDER BY 1",
    )
    .bind(tenant.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(outcomes, ["busy", "canceled", "failed", "no-answer", "short"]);
}

#[tokio::test]
async fn without_a_forwarding_number_the_call_is_refused_and_missed_at_once() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, _, _) = business(&app, false).await;
    let off = json!({"missed_call": {"forward_to": null}, "booking": {"enabled": false}});
    assert_eq!(app.patch_json("/api/v1/messaging-policy", &tenant.api_key, off).await.status(), 200);
    let report = sim.place_call(call(&tenant, "+4915100000009", DialOutcome::NoAnswer)).await.unwrap();
    assert_eq!(report.rejected.as_deref(), Some("busy"), "{report:?}");
    assert!(report.dialed.is_none());
    let texts = wait_for_texts(&sim, "+4915100000009", 1).await;
    assert_eq!(texts, ["Sorry we missed your call!"], "no slots when booking is off");
}

#[tokio::test]
async fn a_forged_voice_webhook_is_refused_and_changes_nothing() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, _, _) = business(&app, false).await;
    let form = [
        ("AccountSid", ACCOUNT),
        ("CallSid", "CA00000000000000000000000000000042"),
        ("CallStatus", "completed"),
        ("DialCallStatus", "no-answer"),
        ("From", "+4915112340000"),
        ("To", OUR_NUMBER),
    ];
    for signature in [None, Some("bm90IGEgc2lnbmF0dXJl")] {
        let mut request =
            reqwest::Client::new().post(app.url(&format!("/api/webhooks/twilio/{}/voice-dial", tenant.id))).form(&form);
        if let Some(signature) = signature {
            request = request.header("X-Twilio-Signature", signature);
        }
        let response = request.send().await.unwrap();
        assert!(matches!(response.status().as_u16(), 401 | 403), "{}", response.status());
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM communications.webhook_envelopes WHERE kind LIKE 'voice%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(texts_to(&sim, "+4915112340000").is_empty());
}

#[tokio::test]
async fn a_hold_that_lapsed_before_yes_gets_fresh_slots_and_yes_then_books() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, _, _) = business(&app, true).await;
    let caller = "+4915112345679";
    placed_ok(&sim.place_call(call(&tenant, caller, DialOutcome::Busy)).await.unwrap());
    wait_for_texts(&sim, caller, 1).await;
    reply(&sim, &tenant, caller, "1").await;
    let texts = wait_for_texts(&sim, caller, 2).await;
    assert!(texts[1].starts_with("Reply YES to book "), "{texts:?}");
    assert!(texts[1].contains("We hold it for you until "), "{texts:?}");
    wait_for_state(&app, &tenant, "confirming").await;
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM fulfillment.appointments WHERE status = 'held'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(held, 1);
    // The customer answers after the hold's time.
    sqlx::query("UPDATE fulfillment.appointments SET expires_at = now() - interval '1 second' WHERE status = 'held'")
        .execute(&app.pool)
        .await
        .unwrap();
    reply(&sim, &tenant, caller, "YES").await;
    let texts = wait_for_texts(&sim, caller, 3).await;
    assert!(texts[2].starts_with("Sorry, we could not hold that time any longer. Reply 1 for "), "{texts:?}");
    wait_for_state(&app, &tenant, "proposing").await;
    assert!(booked(&app, &tenant).await.is_empty());
    reply(&sim, &tenant, caller, "1").await;
    wait_for_texts(&sim, caller, 4).await;
    reply(&sim, &tenant, caller, "yes").await;
    let texts = wait_for_texts(&sim, caller, 5).await;
    assert!(texts[4].starts_with("You're booked for "), "{texts:?}");
    assert_eq!(booked(&app, &tenant).await.len(), 1);
}

#[tokio::test]
async fn free_text_goes_to_a_human_and_the_dialogue_stops_there() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, _, _) = business(&app, false).await;
    let caller = "+4915112345680";
    placed_ok(&sim.place_call(call(&tenant, caller, DialOutcome::NoAnswer)).await.unwrap());
    wait_for_texts(&sim, caller, 1).await;
    reply(&sim, &tenant, caller, "Can you come tomorrow evening? The boiler leaks").await;
    let texts = wait_for_texts(&sim, caller, 2).await;
    assert_eq!(texts[1], "Thanks! Someone from our team will get back to you shortly.");
    wait_for_state(&app, &tenant, "handed_off").await;
    let conversation = app.newest_conversation(&tenant, 2).await;
    let view: Value =
        app.get(&format!("/api/v1/conversations/{conversation}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(view["assignee_id"], Value::Null);
    assert_eq!(view["status"], "open");
    assert!(view["labels"].as_array().unwrap().iter().any(|l| l["name"] == "needs agent"), "{view}");
    reply(&sim, &tenant, caller, "1").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(booked(&app, &tenant).await.is_empty(), "the dialogue no longer books");
    assert_eq!(texts_to(&sim, caller).len(), 2);
}

#[tokio::test]
async fn an_agent_who_claims_the_conversation_takes_over_from_the_dialogue() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, _, _) = business(&app, false).await;
    let agent = app.create_agent(&tenant, "mia@plumbing.example", "agent").await;
    let (client, csrf) = app.session_client(&tenant, &agent).await;
    let caller = "+4915112345681";
    placed_ok(&sim.place_call(call(&tenant, caller, DialOutcome::NoAnswer)).await.unwrap());
    wait_for_texts(&sim, caller, 1).await;
    let conversation = app.newest_conversation(&tenant, 1).await;
    let claimed = client
        .post(app.url(&format!("/api/v1/conversations/{conversation}/claim")))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 200);
    assert_eq!(dialogue_state(&app, &tenant).await.as_deref(), Some("agent"));
    reply(&sim, &tenant, caller, "1").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(booked(&app, &tenant).await.is_empty());
    assert_eq!(texts_to(&sim, caller).len(), 1, "the agent answers, not the dialogue");
}
