//! Requests with an Idempotency-Key and trigger-rule events share transactions like anonymous
//! sends, and still keep their promises: a key answers its first response (or a 422 for another
//! body), an event is processed once.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, sim_twilio_sms, spawn_app, spawn_app_with_sim};

async fn post_keyed(app: &TestApp, tenant: &TestTenant, key: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/v1/messages"))
        .bearer_auth(&tenant.api_key)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.json().await.expect("json"))
}

/// How many transactions stored these messages (rows written together share their `xmin`).
async fn transactions_of(app: &TestApp, ids: &[uuid::Uuid]) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM communications.messages WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(&app.pool)
        .await
        .expect("xmin")
}

#[tokio::test]
async fn keyed_sends_share_transactions_and_each_key_keeps_its_first_answer() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("keyed").await;
    let body = |n: usize| json!({"to": {"phone": format!("+4915100000{n:03}")}, "channels": "sms", "content": {"text": format!("n {n}")}});
    // Forty keys sent twice each at once (the repeat may land in the same batch or the next),
    // and one request the recipient makes impossible.
    let mut cases: Vec<(String, Value)> = Vec::new();
    for n in 0..40 {
        cases.push((format!("key-{n}"), body(n)));
        cases.push((format!("key-{n}"), body(n)));
    }
    let refused = json!({"to": {"email": "nobody@example.com"}, "channels": "sms", "content": {"text": "no phone"}});
    cases.push(("key-refused".into(), refused));
    let requests: Vec<_> = cases
        .iter()
        .cloned()
        .map(|(key, body)| {
            let (client, url, api_key) = (app.client.clone(), app.url("/api/v1/messages"), tenant.api_key.clone());
            tokio::spawn(async move {
                let response =
                    client.post(url).bearer_auth(api_key).header("idempotency-key", key).json(&body).send().await;
                let response = response.expect("request");
                (response.status().as_u16(), response.json::<Value>().await.expect("json"))
            })
        })
        .collect();
    let mut answers: HashMap<String, Vec<Value>> = HashMap::new();
    for ((key, _), request) in cases.iter().zip(requests) {
        let (status, answer) = request.await.expect("task");
        match (key.as_str(), status) {
            ("key-refused", _) => assert_eq!((status, &answer["error"]["field"]), (422, &json!("to")), "{answer}"),
            (_, 202) => answers.entry(key.clone()).or_default().push(answer),
            _ => panic!("{key}: {status} {answer}"),
        }
    }
    assert_eq!(answers.len(), 40);
    let mut ids = Vec::new();
    for (key, bodies) in &answers {
        assert_eq!(bodies.len(), 2, "{key}");
        assert_eq!(bodies[0], bodies[1], "both requests under {key} get the first response");
        ids.push(bodies[0]["id"].as_str().expect("id").parse::<uuid::Uuid>().expect("uuid"));
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM communications.messages").fetch_one(&app.pool).await.expect("count");
    assert_eq!(stored, 40, "one message per key");
    let transactions = transactions_of(&app, &ids).await;
    assert!(transactions < 40, "keyed requests arriving together share transactions: {transactions} for 40");
    // The refused request left its key free: it can be used again, and then answers as usual.
    let (status, first) = post_keyed(&app, &tenant, "key-refused", &body(500)).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(post_keyed(&app, &tenant, "key-refused", &body(500)).await, (202, first));
    let other = app.create_tenant("other").await;
    let (status, theirs) = post_keyed(&app, &other, "key-1", &body(1)).await;
    assert_eq!(status, 202, "another tenant's key of the same name is its own");
    assert_ne!(theirs["id"], answers["key-1"][0]["id"]);
    let (status, mismatch) = post_keyed(&app, &tenant, "key-2", &body(998)).await;
    assert_eq!((status, &mismatch["error"]["field"]), (422, &json!("Idempotency-Key")), "{mismatch}");
    // A replay is answered even when the request would no longer pass: its template is gone.
    let template = json!({"name": "hello", "default_locale": "en",
        "variants": [{"channel": "sms", "locale": "en", "body": {"text": "Hello {{ name }}"}}]});
    let created: Value = app.post("/api/v1/templates", &tenant.api_key, template).await.json().await.expect("json");
    let templated = json!({"to": {"phone": "+4915100000777"}, "channels": "sms",
        "content": {"template": {"name": "hello", "variables": {"name": "Ada"}}}});
    let (status, first) = post_keyed(&app, &tenant, "templated", &templated).await;
    assert_eq!(status, 202, "{first}");
    let id = created["id"].as_str().expect("template id");
    assert_eq!(app.delete(&format!("/api/v1/templates/{id}"), &tenant.api_key).await.status(), 204);
    assert_eq!(post_keyed(&app, &tenant, "templated", &templated).await, (202, first));
    let (status, gone) = post_keyed(&app, &tenant, "templated-2", &templated).await;
    assert_eq!((status, &gone["error"]["field"]), (422, &json!("content.template.name")), "{gone}");
}

fn booking_event(id: &str, n: usize) -> Value {
    json!({
        "event": {
            "session_variables": {"x-hasura-role": "admin"},
            "op": "INSERT",
            "data": {"old": null, "new": {"id": n, "status": "CONFIRMED", "guest_name": format!("Guest {n}"), "guest_phone": format!("+4915200000{:03}", n % 50)}}
        },
        "created_at": "2026-11-22T14:00:00.123456",
        "id": id,
        "delivery_info": {"max_retries": 3, "current_retry": 0},
        "trigger": {"name": "booking_confirmed"},
        "table": {"schema": "public", "name": "bookings"}
    })
}

#[tokio::test]
async fn events_arriving_together_share_transactions_and_each_is_processed_once() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("events").await;
    events_are_processed_once(&app, &tenant).await;
}

/// As above with this process's dispatcher: batches of events are stored by the reads and one
/// statement (`messages/single_write.rs`); one with a refused draft goes the careful way.
#[tokio::test]
async fn events_sent_by_this_process_are_one_write_and_each_is_processed_once() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("events").await;
    app.active_channel(&tenant, sim_twilio_sms()).await;
    events_are_processed_once(&app, &tenant).await;
    // Whether the burst's batches went the single write's way depends on how they formed (one
    // larger than the free dispatch permits goes the careful way); a lone event, once the
    // burst's messages have left, always does.
    let sent = |count: usize| {
        let sim = sim.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let sent = sim.ledger().iter().filter(|entry| entry.operation == "create_message").count();
                if sent == count {
                    break;
                }
                assert!(sent < count && std::time::Instant::now() < deadline, "{sent} of {count} messages sent");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    sent(60).await;
    let single_writes = "messages_accept_batches_total{api=\"events\",path=\"single_write\"}";
    let before = metric(&app, single_writes).await;
    let lone: Value =
        app.post("/api/v1/events", &tenant.api_key, booking_event("ev-lone", 61)).await.json().await.expect("json");
    assert_eq!(lone["messages"].as_array().map(Vec::len), Some(1), "{lone}");
    assert_eq!(metric(&app, single_writes).await, before + 1.0, "the lone event was one write");
    // A delivery after the first: the event id is taken, the statement stores nothing, and the
    // careful way answers what the first made.
    let again: Value =
        app.post("/api/v1/events", &tenant.api_key, booking_event("ev-3", 3)).await.json().await.expect("json");
    assert_eq!(again["duplicate"], true, "{again}");
    // An event no rule answers is processed once too.
    let mut other = booking_event("ev-other", 1);
    other["trigger"]["name"] = json!("booking_cancelled");
    let first: Value = app.post("/api/v1/events", &tenant.api_key, other.clone()).await.json().await.expect("json");
    assert_eq!((&first["duplicate"], &first["messages"]), (&json!(false), &json!([])), "{first}");
    let repeat: Value = app.post("/api/v1/events", &tenant.api_key, other).await.json().await.expect("json");
    assert_eq!(repeat["duplicate"], true, "{repeat}");
    sent(61).await;
}

async fn events_are_processed_once(app: &TestApp, tenant: &TestTenant) {
    let template = json!({
        "name": "booking_ok",
        "default_locale": "en",
        "variants": [{"channel": "sms", "locale": "en", "body": {"text": "Hi {{ data.new.guest_name }}, booking {{ data.new.id }} is confirmed."}}]
    });
    assert_eq!(app.post("/api/v1/templates", &tenant.api_key, template).await.status(), 201);
    let rule = json!({
        "name": "Confirm bookings",
        "event": "booking_confirmed",
        "template_name": "booking_ok",
        "audience": [{"phone": "data.new.guest_phone"}, {"phone": "data.new.missing_phone"}],
        "channels": ["sms"]
    });
    assert_eq!(app.post("/api/v1/trigger-rules", &tenant.api_key, rule).await.status(), 201);
    // Sixty events, each delivered twice at once (Hasura retries), plus one whose recipient
    // cannot be served.
    let mut bodies: Vec<Value> = Vec::new();
    for n in 0..60 {
        bodies.push(booking_event(&format!("ev-{n}"), n));
        bodies.push(booking_event(&format!("ev-{n}"), n));
    }
    let mut bad = booking_event("ev-bad", 7);
    bad["event"]["data"]["new"]["guest_phone"] = json!("not a phone");
    bodies.push(bad);
    // And one to a number that opted out: drafted, then refused when stored.
    let stop = json!({"channel": "sms", "address": "+4915200000999"});
    assert_eq!(app.post("/api/v1/suppressions", &tenant.api_key, stop).await.status(), 201);
    let mut stopped = booking_event("ev-stopped", 8);
    stopped["event"]["data"]["new"]["guest_phone"] = json!("+4915200000999");
    bodies.push(stopped);
    let requests: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|body| {
            let (client, url, api_key) = (app.client.clone(), app.url("/api/v1/events"), tenant.api_key.clone());
            tokio::spawn(async move {
                let response = client.post(url).bearer_auth(api_key).json(&body).send().await.expect("request");
                (response.status().as_u16(), response.json::<Value>().await.expect("json"))
            })
        })
        .collect();
    let mut by_event: HashMap<String, Vec<Value>> = HashMap::new();
    for request in requests {
        let (status, outcome) = request.await.expect("task");
        assert_eq!(status, 202, "{outcome}");
        by_event.entry(outcome["event_id"].as_str().expect("event_id").to_owned()).or_default().push(outcome);
    }
    let mut ids = Vec::new();
    for n in 0..60 {
        let outcomes = &by_event[&format!("ev-{n}")];
        let firsts: Vec<&Value> = outcomes.iter().filter(|o| o["duplicate"] == false).collect();
        assert_eq!(firsts.len(), 1, "ev-{n} processed once: {outcomes:?}");
        let first = firsts[0];
        let repeat = outcomes.iter().find(|o| o["duplicate"] == true).expect("the repeat is a duplicate");
        assert_eq!(first["messages"].as_array().expect("messages").len(), 1, "{first}");
        assert_eq!(first["skipped"][0]["reason"], "the event has no value at the audience paths", "{first}");
        assert_eq!(repeat["messages"][0]["id"], first["messages"][0]["id"], "the repeat names what the first made");
        assert_eq!(repeat["messages"][0]["rule_id"], first["messages"][0]["rule_id"], "and the rule that made it");
        ids.push(first["messages"][0]["id"].as_str().expect("id").parse::<uuid::Uuid>().expect("uuid"));
    }
    let bad = &by_event["ev-bad"][0];
    assert_eq!(bad["messages"], json!([]), "{bad}");
    assert!(
        bad["skipped"]
            .as_array()
            .expect("skipped")
            .iter()
            .any(|s| s["reason"].as_str().expect("reason").starts_with("to")),
        "{bad}"
    );
    // What each event is recorded to have made (a later delivery's answer): the messages stored,
    // not the ones planned before a draft was refused.
    let recorded = |event: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, Vec<uuid::Uuid>>(
                "SELECT message_ids FROM communications.processed_events WHERE tenant_id = $1 AND event_id = $2",
            )
            .bind(tenant.id)
            .bind(event)
            .fetch_one(&pool)
            .await
            .expect("processed event")
        }
    };
    assert_eq!(recorded("ev-bad").await, Vec::<uuid::Uuid>::new());
    let stopped = &by_event["ev-stopped"][0];
    assert_eq!(stopped["messages"], json!([]), "{stopped}");
    assert_eq!(recorded("ev-stopped").await, Vec::<uuid::Uuid>::new(), "planned, then refused: not recorded");
    assert_eq!(recorded("ev-0").await, vec![ids[0]]);
    let (messages, texts): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE content->>'text' LIKE 'Hi Guest % is confirmed.')
         FROM communications.messages WHERE tenant_id = $1",
    )
    .bind(tenant.id)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!((messages, texts), (60, 60), "one rendered message per event");
    let transactions = transactions_of(app, &ids).await;
    assert!(transactions < 60, "events arriving together share transactions: {transactions} for 60");
    // Each event's snapshot is kept for the inbox's booking context.
    let snapshots: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM communications.entity_snapshots WHERE tenant_id = $1 AND kind = 'booking'",
    )
    .bind(tenant.id)
    .fetch_one(&app.pool)
    .await
    .expect("snapshots");
    assert_eq!(snapshots, 60);
}

/// A message stored claimed whose local dispatch failed with an error it could not record is
/// given back at once: queued again with a job if its request never started, `unknown` (for
/// settlement) if it did — and only while that claim still holds it.
#[tokio::test]
async fn a_claimed_message_whose_dispatch_failed_is_given_back_by_what_its_request_did() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("given-back").await;
    let body = json!({"to": {"phone": "+4915100000001"}, "channels": "sms", "content": {"text": "hi"}});
    let (status, accepted) = post_keyed(&app, &tenant, "k", &body).await;
    assert_eq!(status, 202, "{accepted}");
    let id: uuid::Uuid = accepted["id"].as_str().expect("id").parse().expect("uuid");
    let claim = |requested: bool| {
        let pool = app.pool.clone();
        async move {
            let claim = uuid::Uuid::now_v7();
            sqlx::query(
                "UPDATE communications.messages SET status = 'sending', attempts = attempts + 1, claim = $2,
                        requested_at = CASE WHEN $3 THEN now() END, requested_via = CASE WHEN $3 THEN 'twilio' END
                 WHERE id = $1",
            )
            .bind(id)
            .bind(claim)
            .bind(requested)
            .execute(&pool)
            .await
            .expect("claim");
            claim
        }
    };
    let state = || async {
        let row: (String, Option<String>, i32, i64) = sqlx::query_as(
            "SELECT status, provider, attempts,
                    (SELECT count(*) FROM apalis.jobs WHERE convert_from(job, 'UTF8')::jsonb->>'message_id' = $1::text)
             FROM communications.messages WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("state");
        row
    };
    let jobs_before = state().await.3;
    // Never requested: back to the queue with a job of its own, the claim not counted.
    let first = claim(false).await;
    communications::dispatch::lease::give_back(&app.pool, id, uuid::Uuid::now_v7()).await.expect("other claim");
    assert_eq!(state().await.0, "sending", "another claim's give-back changes nothing");
    communications::dispatch::lease::give_back(&app.pool, id, first).await.expect("give back");
    assert_eq!(state().await, ("queued".into(), None, 0, jobs_before + 1));
    // Requested: the provider may have it, so settlement decides.
    let second = claim(true).await;
    communications::dispatch::lease::give_back(&app.pool, id, second).await.expect("give back");
    let (status, provider, attempts, _) = state().await;
    assert_eq!((status.as_str(), provider.as_deref(), attempts), ("unknown", Some("twilio"), 1));
}

/// A dispatch records its outcome only while its own claim holds the message: one that waited
/// out a database outage may find the message taken back by recovery and claimed by another
/// dispatch, whose request is not its to undo.
#[tokio::test]
async fn a_dispatch_records_its_outcome_only_under_its_own_claim() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("claims").await;
    let body = json!({"to": {"phone": "+4915100000002"}, "channels": "sms", "content": {"text": "hi"}});
    let (status, accepted) = post_keyed(&app, &tenant, "k", &body).await;
    assert_eq!(status, 202, "{accepted}");
    let id: uuid::Uuid = accepted["id"].as_str().expect("id").parse().expect("uuid");
    let set = |status: &'static str, claim: uuid::Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query("UPDATE communications.messages SET status = $2, claim = $3 WHERE id = $1")
                .bind(id)
                .bind(status)
                .bind(claim)
                .execute(&pool)
                .await
                .expect("set");
        }
    };
    let held = |claim: uuid::Uuid| {
        let pool = app.pool.clone();
        async move {
            let mut tx = pool.begin().await.expect("begin");
            communications::dispatch::lease::lock_if_held(&mut tx, id, claim).await.expect("lock")
        }
    };
    let (first, second) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    set("sending", first).await;
    assert!(held(first).await, "the claim that holds it records");
    // Recovery took it back and another dispatch claimed it.
    set("sending", second).await;
    assert!(!held(first).await, "the first dispatch's outcome is no longer its to record");
    assert!(held(second).await);
    set("sent", second).await;
    assert!(!held(second).await, "recorded already");
}

#[tokio::test]
async fn a_slot_that_is_now_marks_its_message_in_flight_under_its_own_claim_only() {
    use communications::dispatch::slots::{Premark, Wanted, reserve_and_mark};
    use communications::messages::model::{Channel, Lane};
    use communications::rate_limit::RateDefaults;

    let app = spawn_app().await;
    let tenant = app.create_tenant("slots").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({"to": {"phone": format!("+491510000001{n}")}, "channels": "sms", "content": {"text": "hi"}});
        let (status, accepted) = post_keyed(&app, &tenant, &format!("slot-{n}"), &body).await;
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["id"].as_str().expect("id").parse::<uuid::Uuid>().expect("uuid"));
    }
    let claim = uuid::Uuid::now_v7();
    // As a dispatch holds them: claimed, not requested yet.
    sqlx::query(
        "UPDATE communications.messages SET status = 'sending', claim = $2, requested_at = NULL WHERE id = ANY($1)",
    )
    .bind(&ids)
    .bind(claim)
    .execute(&app.pool)
    .await
    .expect("claim");
    let requested = |id: uuid::Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>("SELECT requested_via FROM communications.messages WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("requested_via")
        }
    };
    let (account, verification) = (uuid::Uuid::now_v7(), json!({}));
    let wanted = |id: uuid::Uuid, claim: uuid::Uuid, provider: Option<&'static str>| Wanted {
        tenant_id: tenant.id,
        account_id: account,
        verification: &verification,
        channel: Channel::Sms,
        lane: Lane::Urgent,
        message_id: id,
        claim,
        provider,
    };
    let roomy = RateDefaults { sms_per_second: 1000.0, burst: 10, ..RateDefaults::default() };
    let kept = kernel::kept::KeptConnections::new(app.pool.clone());

    // Another claim holds the first message now: its slot is taken, but it is not marked.
    let slots =
        reserve_and_mark(&kept, &roomy, &[wanted(ids[0], uuid::Uuid::now_v7(), Some("twilio"))]).await.expect("slots");
    assert_eq!(slots, vec![(std::time::Duration::ZERO, Premark::TakenBack)]);
    assert_eq!(requested(ids[0]).await, None);
    // Under its own claim it is marked in flight to its first provider.
    let slots = reserve_and_mark(&kept, &roomy, &[wanted(ids[0], claim, Some("twilio"))]).await.expect("slots");
    assert_eq!(slots, vec![(std::time::Duration::ZERO, Premark::Marked)]);
    assert_eq!(requested(ids[0]).await.as_deref(), Some("twilio"));

    // One a second, burst one (a new account's key): the first slot is now, the next two a
    // second apart; only the first is marked. Without a provider nothing is marked.
    let (account, _) = (uuid::Uuid::now_v7(), ());
    let tight = RateDefaults { sms_per_second: 1.0, burst: 1, ..RateDefaults::default() };
    let wanted =
        |id: uuid::Uuid, provider: Option<&'static str>| Wanted { account_id: account, ..wanted(id, claim, provider) };
    let slots = reserve_and_mark(
        &kept,
        &tight,
        &[wanted(ids[1], Some("twilio")), wanted(ids[2], Some("twilio")), wanted(ids[0], None)],
    )
    .await
    .expect("slots");
    assert_eq!(slots[0], (std::time::Duration::ZERO, Premark::Marked));
    for (n, (wait, premark)) in slots[1..].iter().enumerate() {
        let expected = std::time::Duration::from_secs(n as u64 + 1);
        assert!(wait.abs_diff(expected) < std::time::Duration::from_millis(100), "slot {n}: {wait:?}");
        assert_eq!(*premark, Premark::NotAsked);
    }
    assert_eq!(requested(ids[1]).await.as_deref(), Some("twilio"));
    assert_eq!(requested(ids[2]).await, None, "its slot is a second away");
}

#[tokio::test]
async fn the_batch_statements_run_on_connections_that_keep_their_generic_plans() {
    // The API's other queries keep PostgreSQL's default, where a plan for the filter at hand
    // matters; the hot path's batch statements are planned once (`Communications::with_batch_pool`).
    let url = crate::helpers::fresh_database().await;
    let settings = crate::helpers::test_settings(&url);
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let module = switchboard::app::communications_module(&settings, pool.clone(), "127.0.0.1:9".parse().expect("addr"))
        .expect("module");
    let mode = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>("SHOW plan_cache_mode").fetch_one(&pool).await.expect("show")
    };
    assert_eq!(mode(module.batch_pool().clone()).await, "force_generic_plan");
    assert_eq!(
        mode(module.kept.pool().clone()).await,
        "force_generic_plan",
        "the kept connections are the batch pool's"
    );
    assert_eq!(mode(module.pool.clone()).await, "auto");
    assert_eq!(module.batch_pool().options().get_max_connections(), switchboard::database::BATCH_CONNECTIONS);
}

async fn metric(app: &TestApp, prefix: &str) -> f64 {
    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With this process's dispatcher, a batch is stored by a read and one statement
/// (`messages/single_write.rs`); a key or a new recipient's identifier taken meanwhile makes
/// that statement store nothing, and the batch goes the careful way: every promise holds.
#[tokio::test]
async fn a_batch_sent_by_this_process_is_one_write_and_taken_keys_or_contacts_go_the_careful_way() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("single").await;
    app.active_channel(&tenant, sim_twilio_sms()).await;
    let body = |n: usize| json!({"to": {"phone": format!("+4915100000{n:03}")}, "channels": "sms", "content": {"text": format!("n {n}")}});
    let send = |key: Option<String>, body: Value| {
        let (client, url, api_key) = (app.client.clone(), app.url("/api/v1/messages"), tenant.api_key.clone());
        tokio::spawn(async move {
            let mut request = client.post(url).bearer_auth(api_key).json(&body);
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            let response = request.send().await.expect("request");
            (response.status().as_u16(), response.json::<Value>().await.expect("json"))
        })
    };
    // Thirty sends at once, ten of them to one new recipient, each twice under its key.
    let mut cases: Vec<(String, Value)> = Vec::new();
    for n in 0..30 {
        let body = if n < 10 { body(999) } else { body(n) };
        cases.push((format!("key-{n}"), body.clone()));
        cases.push((format!("key-{n}"), body));
    }
    let requests: Vec<_> = cases.iter().map(|(key, body)| send(Some(key.clone()), body.clone())).collect();
    let mut answers: HashMap<&str, Vec<Value>> = HashMap::new();
    for ((key, _), request) in cases.iter().zip(requests) {
        let (status, answer) = request.await.expect("task");
        assert_eq!(status, 202, "{key}: {answer}");
        answers.entry(key.as_str()).or_default().push(answer);
    }
    for (key, bodies) in &answers {
        assert_eq!(bodies[0], bodies[1], "both requests under {key} get the first response");
    }
    // Whether the burst's batches went the single write's way depends on how they formed (each
    // key's twin in the other batch in flight sends one the careful way); a lone send always does.
    let single_writes = "messages_accept_batches_total{api=\"send\",path=\"single_write\"}";
    let before = metric(&app, single_writes).await;
    assert_eq!(send(None, body(12)).await.expect("task").0, 202);
    assert_eq!(metric(&app, single_writes).await, before + 1.0, "the lone send was one write");
    // Unkeyed sends to another new recipient at once: one contact, whichever batch made it.
    let requests: Vec<_> = (0..10).map(|_| send(None, body(888))).collect();
    for request in requests {
        assert_eq!(request.await.expect("task").0, 202);
    }
    let careful = metric(&app, "messages_accept_batches_total{api=\"send\",path=\"transaction\"}").await;
    // A retried request: its key is taken, so the statement stores nothing and the careful way
    // answers the first response.
    let replay = send(Some("key-12".into()), body(12)).await.expect("task");
    assert_eq!(replay, (202, answers["key-12"][0].clone()));
    assert!(metric(&app, "messages_accept_batches_total{api=\"send\",path=\"transaction\"}").await > careful);
    let mismatch = send(Some("key-12".into()), body(13)).await.expect("task");
    assert_eq!((mismatch.0, &mismatch.1["error"]["field"]), (422, &json!("Idempotency-Key")), "{mismatch:?}");
    let per_recipient: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT i.value, count(DISTINCT m.contact_id), count(*) FROM communications.messages m
         JOIN communications.contact_identifiers i ON i.contact_id = m.contact_id
         WHERE i.value IN ('+4915100000999', '+4915100000888') GROUP BY i.value ORDER BY i.value",
    )
    .fetch_all(&app.pool)
    .await
    .expect("recipients");
    assert_eq!(
        per_recipient,
        vec![("+4915100000888".into(), 1, 10), ("+4915100000999".into(), 1, 10)],
        "one contact per new recipient, one message per key"
    );
    let contacts: i64 = sqlx::query_scalar("SELECT count(*) FROM communications.contacts WHERE tenant_id = $1")
        .bind(tenant.id)
        .fetch_one(&app.pool)
        .await
        .expect("contacts");
    assert_eq!(contacts, 22, "20 recipients plus the two shared ones");
    // Every message stored goes out once, with its trail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let sent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM communications.messages WHERE tenant_id = $1 AND status = 'sent'")
                .bind(tenant.id)
                .fetch_one(&app.pool)
                .await
                .expect("sent");
        if sent == 41 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{sent} of 41 sent");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let requests = sim
        .ledger()
        .iter()
        .filter(|entry| entry.operation == "create_message" && entry.outcome.starts_with("accepted"))
        .count();
    assert_eq!(requests, 41, "each message sent once");
    let trails: Vec<String> = sqlx::query_scalar(
        "SELECT string_agg(e.status, ',' ORDER BY e.id) FROM communications.messages m
         JOIN communications.message_events e ON e.message_id = m.id WHERE m.tenant_id = $1 GROUP BY m.id",
    )
    .bind(tenant.id)
    .fetch_all(&app.pool)
    .await
    .expect("trails");
    assert!(trails.iter().all(|trail| trail == "queued,sent"), "{trails:?}");
}
