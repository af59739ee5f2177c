//! The send API and the dispatch pipeline against the provider simulator.

use std::time::{Duration, Instant};

use cpaas_sim::{FailureKind, FailureRule, SimHandle};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, assert_error, sim_twilio_sms, sim_whatsapp, spawn_app, spawn_app_with_sim};

const PHONE: &str = "+4915112345678";

async fn twilio_sms(app: &TestApp, tenant: &TestTenant) -> Value {
    app.active_channel(tenant, sim_twilio_sms()).await
}

async fn whatsapp(app: &TestApp, tenant: &TestTenant) -> Value {
    app.active_channel(tenant, sim_whatsapp()).await
}

async fn send(app: &TestApp, tenant: &TestTenant, body: Value) -> String {
    let response = app.post("/api/v1/messages", &tenant.api_key, body).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    accepted["id"].as_str().unwrap().to_owned()
}

async fn message(app: &TestApp, tenant: &TestTenant, id: &str) -> Value {
    app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap()
}

/// Polls until the message is in one of `statuses` (10 s at most).
async fn wait_for(app: &TestApp, tenant: &TestTenant, id: &str, statuses: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let current = message(app, tenant, id).await;
        if statuses.iter().any(|s| current["status"] == *s) {
            return current;
        }
        assert!(Instant::now() < deadline, "still {} after 10 s: {current:#}", current["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sends_to(sim: &SimHandle, recipient: &str) -> Vec<cpaas_sim::LedgerEntry> {
    sim.ledger()
        .into_iter()
        .filter(|e| matches!(e.operation.as_str(), "send_message" | "create_message" | "Publish" | "SendEmail"))
        .filter(|e| e.recipient.as_deref() == Some(recipient))
        .collect()
}

fn fail(sim: &SimHandle, provider: &str, kind: FailureKind, remaining: Option<u32>) {
    sim.add_failure(FailureRule {
        provider: Some(provider.into()),
        recipient: None,
        kind,
        probability: 1.0,
        remaining,
    });
}

#[tokio::test]
async fn an_sms_goes_out_once_and_its_history_is_recorded() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    twilio_sms(&app, &tenant).await;
    let id = send(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Your bus leaves at 9:00"}}),
    )
    .await;
    let sent = wait_for(&app, &tenant, &id, &["sent"]).await;
    assert_eq!(sent["provider"], "twilio");
    let ledger = sends_to(&sim, PHONE);
    assert_eq!(ledger.len(), 1, "exactly one provider request: {ledger:#?}");
    assert_eq!(ledger[0].body["Body"], "Your bus leaves at 9:00");
    assert_eq!(ledger[0].provider_message_id.as_deref(), sent["provider_message_id"].as_str());
    let statuses: Vec<&str> =
        sent["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "sent"]);
    assert_eq!(sent["events"][0]["source"], "api");
    assert_eq!(sent["events"][1]["source"], "worker");
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_give_the_first_response() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let body = json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Hi"}});
    let post = |body: Value, key: &'static str| {
        app.client
            .post(app.url("/api/v1/messages"))
            .bearer_auth(&tenant.api_key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first: Value = post(body.clone(), "order-42").await.unwrap().json().await.unwrap();
    let again = post(body.clone(), "order-42").await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let other = post(json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Other"}}), "order-42")
        .await
        .unwrap();
    assert_eq!(assert_error(other, 422, "validation_failed").await["error"]["field"], "Idempotency-Key");
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM communications.messages").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn concurrent_duplicates_create_one_message() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let mut requests = Vec::new();
    for _ in 0..10 {
        let (client, url, key) = (app.client.clone(), app.url("/api/v1/messages"), tenant.api_key.clone());
        requests.push(tokio::spawn(async move {
            let body = json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Once"}});
            let response =
                client.post(url).bearer_auth(key).header("idempotency-key", "same").json(&body).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap()["id"].clone())
        }));
    }
    let mut ids = Vec::new();
    for request in requests {
        let (status, id) = request.await.unwrap();
        assert_eq!(status, 202);
        ids.push(id);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM communications.messages").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 1);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs").fetch_one(&app.pool).await.unwrap();
    assert_eq!(jobs, 1, "one dispatch job");
}

#[tokio::test]
async fn concurrent_sends_share_transactions_and_each_gets_its_own_answer() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("crowd").await;
    let other = app.create_tenant("elsewhere").await;
    let theirs = send(&app, &other, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "x"}})).await;
    let foreign_contact = message(&app, &other, &theirs).await["contact_id"].clone();
    let phone = |n: usize| format!("+49151000000{:02}", n % 10);
    // (body, expected status, the field a 422 names)
    let mut cases: Vec<(Value, u16, Option<&str>)> = Vec::new();
    for n in 0..30 {
        cases.push((
            json!({"to": {"phone": phone(n)}, "channels": "sms", "content": {"text": format!("sms {n}")}}),
            202,
            None,
        ));
    }
    for n in 0..4 {
        let to = json!({"phone": phone(n), "email": format!("person{n}@example.com")});
        cases.push((json!({"to": to, "channels": "email", "content": {"text": "mail", "subject": "S"}}), 202, None));
    }
    for n in 0..8 {
        let to = json!({"email": format!("nobody{n}@example.com")});
        cases.push((json!({"to": to, "channels": "sms", "content": {"text": "no phone"}}), 422, Some("to")));
    }
    for _ in 0..4 {
        let to = json!({"contact_id": foreign_contact});
        cases.push((json!({"to": to, "channels": "sms", "content": {"text": "not ours"}}), 422, Some("to.contact_id")));
    }
    let requests: Vec<_> = cases
        .iter()
        .map(|(body, _, _)| {
            let (client, url, key, body) =
                (app.client.clone(), app.url("/api/v1/messages"), tenant.api_key.clone(), body.clone());
            tokio::spawn(async move {
                let response = client.post(url).bearer_auth(key).json(&body).send().await.unwrap();
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for ((_, status, field), request) in cases.iter().zip(requests) {
        let (got, body) = request.await.unwrap();
        assert_eq!(got, *status, "{body}");
        match field {
            Some(field) => assert_eq!(body["error"]["field"], *field, "{body}"),
            None => accepted.push(body["id"].as_str().unwrap().to_owned()),
        }
    }
    assert_eq!(accepted.len(), 34);
    let ids: Vec<uuid::Uuid> = accepted.iter().map(|id| id.parse().unwrap()).collect();
    let (messages, events, jobs, transactions): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM communications.messages WHERE id = ANY($1)),
                (SELECT count(*) FROM communications.message_events WHERE message_id = ANY($1)),
                (SELECT count(*) FROM apalis.jobs j JOIN communications.messages m
                    ON convert_from(j.job, 'UTF8')::jsonb->>'message_id' = m.id::text WHERE m.id = ANY($1)),
                (SELECT count(DISTINCT xmin::text) FROM communications.messages WHERE id = ANY($1))",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((messages, events, jobs), (34, 34, 34), "each message with its first event and its job");
    assert!(transactions < 34, "concurrent requests share transactions: {transactions} for 34 messages");
    let (contacts, identifiers): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM communications.contacts WHERE tenant_id = $1),
                (SELECT count(*) FROM communications.contact_identifiers WHERE tenant_id = $1)",
    )
    .bind(tenant.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // Ten phones, four of them with an email too; the refused requests created nothing.
    assert_eq!((contacts, identifiers), (10, 14));
    let mut by_phone = std::collections::HashMap::new();
    for id in &accepted {
        let view = message(&app, &tenant, id).await;
        if view["channel"] == "sms" {
            let contact =
                by_phone.entry(view["recipient"].as_str().unwrap().to_owned()).or_insert(view["contact_id"].clone());
            assert_eq!(*contact, view["contact_id"], "one contact per phone");
        }
    }
    assert_eq!(by_phone.len(), 10);
}

#[tokio::test]
async fn invalid_requests_are_422_naming_the_field_and_store_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let cases = [
        (json!({"to": {"phone": PHONE}, "channels": ["sms", "email"], "content": {"text": "Hi"}}), "content.subject"),
        (json!({"to": {"phone": PHONE}, "channels": "email", "content": {"text": "Hi", "subject": "S"}}), "to"),
        (json!({"to": {"phone": "0151"}, "channels": "sms", "content": {"text": "Hi"}}), "to.phone"),
        (json!({"to": {}, "channels": "sms", "content": {"text": "Hi"}}), "to"),
        (json!({"to": {"phone": PHONE}, "channels": [], "content": {"text": "Hi"}}), "channels"),
        (json!({"to": {"phone": PHONE}, "channels": ["sms", "sms"], "content": {"text": "Hi"}}), "channels"),
        (json!({"to": {"phone": PHONE}, "channels": "fax", "content": {"text": "Hi"}}), "channels"),
        (json!({"to": {"phone": PHONE}, "channels": "sms", "content": {}}), "content.text"),
        (
            json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"template": {"name": "nope"}}}),
            "content.template.name",
        ),
        (json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Hi"}, "metadata": [1]}), "metadata"),
        (
            json!({"to": {"contact_id": uuid::Uuid::now_v7()}, "channels": "sms", "content": {"text": "Hi"}}),
            "to.contact_id",
        ),
    ];
    for (body, field) in cases {
        let error =
            assert_error(app.post("/api/v1/messages", &tenant.api_key, body.clone()).await, 422, "validation_failed")
                .await;
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let not_json =
        app.client.post(app.url("/api/v1/messages")).bearer_auth(&tenant.api_key).body("to=1").send().await.unwrap();
    assert_error(not_json, 415, "unsupported_media_type").await;
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM communications.messages), (SELECT count(*) FROM communications.contacts)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(counts, (0, 0));
}

#[tokio::test]
async fn contacts_are_matched_by_their_identifiers() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let a = send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "1"}})).await;
    let b = send(&app, &tenant, json!({"to": {"phone": PHONE, "email": "Ann@Example.org"}, "channels": ["sms", "email"], "content": {"text": "2", "subject": "S"}})).await;
    let c = send(
        &app,
        &tenant,
        json!({"to": {"email": "ann@example.org"}, "channels": "email", "content": {"text": "3", "subject": "S"}}),
    )
    .await;
    let (ca, cb, cc) = (
        message(&app, &tenant, &a).await["contact_id"].clone(),
        message(&app, &tenant, &b).await["contact_id"].clone(),
        message(&app, &tenant, &c).await["contact_id"].clone(),
    );
    assert_eq!(ca, cb);
    assert_eq!(cb, cc, "the email joined the contact found by phone");
    let d = send(
        &app,
        &tenant,
        json!({"to": {"contact_id": ca}, "channels": "email", "content": {"text": "4", "subject": "S"}}),
    )
    .await;
    assert_eq!(message(&app, &tenant, &d).await["recipient"], "ann@example.org");
}

#[tokio::test]
async fn a_scheduled_message_waits_and_can_be_canceled_until_it_leaves() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    twilio_sms(&app, &tenant).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let id = send(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Later"}, "scheduled_at": later}),
    )
    .await;
    let canceled = app.post(&format!("/api/v1/messages/{id}/cancel"), &tenant.api_key, json!({})).await;
    assert_eq!(canceled.status(), 200);
    assert_eq!(canceled.json::<Value>().await.unwrap()["status"], "canceled");

    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let id = send(&app, &tenant, json!({"to": {"phone": "+4915199999999"}, "channels": "sms", "content": {"text": "Soon"}, "scheduled_at": soon})).await;
    assert_eq!(message(&app, &tenant, &id).await["status"], "queued");
    assert!(sends_to(&sim, "+4915199999999").is_empty(), "not before its time");
    let sent = wait_for(&app, &tenant, &id, &["sent"]).await;
    assert!(sent["sent_at"].as_str().unwrap() >= soon.as_str(), "{} before {soon}", sent["sent_at"]);
    assert_error(app.post(&format!("/api/v1/messages/{id}/cancel"), &tenant.api_key, json!({})).await, 409, "conflict")
        .await;
    assert!(sends_to(&sim, PHONE).is_empty(), "the canceled one never left");
}

#[tokio::test]
async fn a_permanent_whatsapp_failure_falls_back_to_sms() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    twilio_sms(&app, &tenant).await;
    fail(&sim, "meta", FailureKind::InvalidRecipient, None);
    let id = send(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE}, "channels": ["whatsapp", "sms"], "content": {"text": "Delayed by 20 min"}}),
    )
    .await;
    let original = wait_for(&app, &tenant, &id, &["superseded"]).await;
    let statuses: Vec<&str> =
        original["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "failed", "superseded"]);
    assert!(original["status_reason"].as_str().unwrap().contains("100"), "the provider's code is kept: {original}");
    let successor = original["superseded_by"].as_str().expect("a successor").to_owned();
    let fallback = wait_for(&app, &tenant, &successor, &["sent"]).await;
    assert_eq!(fallback["channel"], "sms");
    assert_eq!(fallback["supersedes"], id.as_str());
    assert_eq!(fallback["provider"], "twilio");
    assert_eq!(sends_to(&sim, PHONE).len(), 2, "one WhatsApp attempt, one SMS");
}

#[tokio::test]
async fn a_failing_provider_hands_over_to_the_next_by_priority() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let account = twilio_sms(&app, &tenant).await;
    let id = account["id"].as_str().unwrap();
    // A second SMS provider (SNS with its own credentials) behind Twilio.
    let backup = app
        .post(
            &format!("/api/v1/channel-accounts/{id}/providers"),
            &tenant.api_key,
            json!({"provider": "sns", "config": {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "secret", "origination_number": "+18005550199"}}),
        )
        .await;
    assert_eq!(backup.status(), 201);
    fail(&sim, "twilio", FailureKind::ServerError, None);
    let message_id =
        send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Failover"}})).await;
    let sent = wait_for(&app, &tenant, &message_id, &["sent"]).await;
    assert_eq!(sent["provider"], "sns");
}

#[tokio::test]
async fn a_retryable_failure_is_retried_with_backoff_then_succeeds() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    twilio_sms(&app, &tenant).await;
    fail(&sim, "twilio", FailureKind::ServerError, Some(2));
    let id =
        send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Retry me"}})).await;
    let sent = wait_for(&app, &tenant, &id, &["sent"]).await;
    let reasons: Vec<String> =
        sent["events"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str().map(str::to_owned)).collect();
    assert_eq!(reasons.iter().filter(|r| r.starts_with("retrying in")).count(), 2, "{reasons:?}");
    let ledger = sends_to(&sim, PHONE);
    assert_eq!(ledger.len(), 3);
    assert_eq!(ledger.iter().filter(|e| e.outcome == "accepted").count(), 1, "delivered once");
}

#[tokio::test]
async fn bad_credentials_suspend_the_channel_instead_of_burning_retries() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let account = twilio_sms(&app, &tenant).await;
    fail(&sim, "twilio", FailureKind::AuthFailed, None);
    let id = send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "x"}})).await;
    let failed = wait_for(&app, &tenant, &id, &["failed"]).await;
    assert!(failed["status_reason"].as_str().unwrap().contains("20003"), "{failed}");
    let account: Value = app
        .get(&format!("/api/v1/channel-accounts/{}", account["id"].as_str().unwrap()), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(account["status"], "suspended");
    assert!(account["status_reason"].as_str().unwrap().contains("20003"));
    assert_eq!(sends_to(&sim, PHONE).len(), 1, "no retries");
}

#[tokio::test]
async fn a_channel_change_made_elsewhere_reaches_the_next_send_at_once() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let account = twilio_sms(&app, &tenant).await;
    let account = account["id"].as_str().unwrap().to_owned();
    let sms = json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "x"}});
    // The dispatcher now keeps this account and its provider.
    let first = send(&app, &tenant, sms.clone()).await;
    wait_for(&app, &tenant, &first, &["sent"]).await;
    // As another process (or an operator in psql) would: in the database, not through our API.
    // The notification reaches this process's listener a moment after the commit, on its own
    // connection (a CI run once sent the next message within those milliseconds); the kept
    // entry would live 10 s without it.
    let set_status = |status: &'static str| {
        let (pool, account) = (app.pool.clone(), account.clone());
        async move {
            sqlx::query("UPDATE communications.channel_accounts SET status = $2 WHERE id = $1::uuid")
                .bind(account)
                .bind(status)
                .execute(&pool)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    set_status("suspended").await;
    let second = send(&app, &tenant, sms.clone()).await;
    let failed = wait_for(&app, &tenant, &second, &["failed", "sent"]).await;
    assert_eq!(failed["status"], "failed", "the suspension was seen by the next batch: {failed}");
    assert!(failed["status_reason"].as_str().unwrap().contains("not active"), "{failed}");
    set_status("active").await;
    let third = send(&app, &tenant, sms).await;
    wait_for(&app, &tenant, &third, &["sent"]).await;
    assert_eq!(sends_to(&sim, PHONE).len(), 2, "the first and the third");
}

#[tokio::test]
async fn a_timeout_after_sending_is_unknown_never_resent() {
    let (app, sim) = spawn_app_with_sim(|settings| settings.providers.request_timeout_secs = 1).await;
    let tenant = app.create_tenant("alpine").await;
    twilio_sms(&app, &tenant).await;
    fail(&sim, "twilio", FailureKind::Timeout, None);
    let id = send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "x"}})).await;
    wait_for(&app, &tenant, &id, &["unknown"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sends_to(&sim, PHONE).len(), 1, "no blind resend");
}

#[tokio::test]
async fn messages_are_listed_filtered_and_isolated_per_tenant() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let sms = send(&app, &a, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "1"}})).await;
    send(
        &app,
        &a,
        json!({"to": {"email": "x@example.org"}, "channels": "email", "content": {"text": "2", "subject": "S"}}),
    )
    .await;
    let page: Value = app.get("/api/v1/messages?channel=sms", &a.api_key).await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], sms.as_str());
    let page: Value = app.get("/api/v1/messages?limit=1", &a.api_key).await.json().await.unwrap();
    assert!(page["next_cursor"].is_string());
    let bad = app.get("/api/v1/messages?status=lost", &a.api_key).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "status");

    assert_error(app.get(&format!("/api/v1/messages/{sms}"), &b.api_key).await, 404, "not_found").await;
    assert_error(app.post(&format!("/api/v1/messages/{sms}/cancel"), &b.api_key, json!({})).await, 404, "not_found")
        .await;
    let theirs: Value = app.get("/api/v1/messages", &b.api_key).await.json().await.unwrap();
    assert_eq!(theirs["items"], json!([]));
    let b_message = send(&app, &b, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "b"}})).await;
    let b_view: Value = app.get(&format!("/api/v1/messages/{b_message}"), &b.api_key).await.json().await.unwrap();
    let a_view: Value = app.get(&format!("/api/v1/messages/{sms}"), &a.api_key).await.json().await.unwrap();
    assert_ne!(a_view["contact_id"], b_view["contact_id"], "contacts are per tenant");
}

#[tokio::test]
async fn messages_needing_review_wait_until_approved_or_rejected() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    twilio_sms(&app, &tenant).await;
    let body = |text: &str| json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": text}, "require_review": true});
    let accepted: Value = app.post("/api/v1/messages", &tenant.api_key, body("Approve me")).await.json().await.unwrap();
    assert_eq!(accepted["status"], "pending_review");
    let approve_me = accepted["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(sends_to(&sim, PHONE).is_empty(), "nothing leaves before review");

    let approved = app.post(&format!("/api/v1/messages/{approve_me}/approve"), &tenant.api_key, json!({})).await;
    assert_eq!(approved.status(), 200);
    let sent = wait_for(&app, &tenant, &approve_me, &["sent"]).await;
    assert!(
        sent["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("approved by")))
    );
    assert_error(
        app.post(&format!("/api/v1/messages/{approve_me}/approve"), &tenant.api_key, json!({})).await,
        409,
        "conflict",
    )
    .await;

    let reject_me = send_for_review(&app, &tenant, body("Reject me")).await;
    let rejected: Value = app
        .post(&format!("/api/v1/messages/{reject_me}/reject"), &tenant.api_key, json!({"reason": "wrong tone"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rejected["status"], "canceled");
    assert!(rejected["status_reason"].as_str().unwrap().ends_with("wrong tone"));

    let agent = app.create_agent(&tenant, "agent@alpine.test", "agent").await;
    let (client, csrf) = app.session_client(&tenant, &agent).await;
    let waiting = send_for_review(&app, &tenant, body("Agents may not approve")).await;
    let refused = client
        .post(app.url(&format!("/api/v1/messages/{waiting}/approve")))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_error(refused, 403, "forbidden").await;
    assert_eq!(sends_to(&sim, PHONE).len(), 1, "only the approved message went out");
}

async fn send_for_review(app: &TestApp, tenant: &TestTenant, body: Value) -> String {
    let accepted: Value = app.post("/api/v1/messages", &tenant.api_key, body).await.json().await.unwrap();
    assert_eq!(accepted["status"], "pending_review");
    accepted["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn templated_messages_are_rendered_per_channel_at_accept_time() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    twilio_sms(&app, &tenant).await;
    let template = json!({
        "name": "departure_delayed",
        "default_locale": "en",
        "variants": [
            {"channel": "sms", "locale": "en", "body": {"text": "Hi {{ passenger.first_name }}, departure {{ trip.ref }} is delayed to {{ trip.new_time }}."}},
            {"channel": "sms", "locale": "de", "body": {"text": "Hallo {{ passenger.first_name }}, Abfahrt {{ trip.ref }} verschiebt sich auf {{ trip.new_time }}."}},
            {"channel": "whatsapp", "locale": "de", "body": {"meta_template": {"name": "departure_delayed", "language": "de",
                "body_parameters": ["{{ passenger.first_name }}", "{{ trip.ref }}", "{{ trip.new_time }}"]}}}
        ]
    });
    let created = app.post("/api/v1/templates", &tenant.api_key, template).await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let variables = json!({"passenger": {"first_name": "Anna"}, "trip": {"ref": "BX-204", "new_time": "09:40"}});

    let missing = json!({"to": {"phone": PHONE}, "channels": "sms",
                         "content": {"template": {"name": "departure_delayed", "locale": "de", "variables": {"passenger": {"first_name": "Anna"}}}}});
    let error =
        assert_error(app.post("/api/v1/messages", &tenant.api_key, missing).await, 422, "validation_failed").await;
    assert!(error["error"]["field"].as_str().unwrap().starts_with("content.template.variables.trip"), "{error}");

    let id = send(
        &app,
        &tenant,
        json!({"to": {"phone": PHONE}, "channels": ["whatsapp", "sms"],
               "content": {"template": {"name": "departure_delayed", "locale": "de-AT", "variables": variables}}}),
    )
    .await;
    let sent = wait_for(&app, &tenant, &id, &["sent"]).await;
    assert_eq!(sent["content"]["type"], "whatsapp_template");
    let request = sends_to(&sim, PHONE).pop().expect("sent to Meta");
    assert_eq!(request.body["type"], "template");
    assert_eq!(request.body["template"]["name"], "departure_delayed");
    let parameters: Vec<&str> = request.body["template"]["components"][0]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(parameters, ["Anna", "BX-204", "09:40"]);
    // The SMS fallback step was rendered too, in German (de-AT → de).
    let stored: Value = sqlx::query_scalar("SELECT fallback FROM communications.messages WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored[0]["content"]["text"], "Hallo Anna, Abfahrt BX-204 verschiebt sich auf 09:40.");
}

#[tokio::test]
async fn idempotency_keys_are_kept_for_the_retention_then_forgotten() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let post = || {
        app.client
            .post(app.url("/api/v1/messages"))
            .bearer_auth(&tenant.api_key)
            .header("idempotency-key", "k-1")
            .json(&json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Hi"}}))
            .send()
    };
    let first: Value = post().await.unwrap().json().await.unwrap();
    let retention = Duration::from_secs(48 * 3600);
    let purged = communications::dispatch::sweeper::purge_idempotency_keys(&app.pool, retention).await.unwrap();
    assert_eq!(purged, 0, "a fresh key is kept");
    assert_eq!(post().await.unwrap().json::<Value>().await.unwrap(), first);
    sqlx::query("UPDATE communications.idempotency_keys SET created_at = now() - interval '49 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(communications::dispatch::sweeper::purge_idempotency_keys(&app.pool, retention).await.unwrap(), 1);
    let after: Value = post().await.unwrap().json().await.unwrap();
    assert_ne!(after["id"], first["id"], "after the retention the key is new again");
}

#[tokio::test]
async fn nul_characters_are_422_naming_the_field_not_a_server_error() {
    // Valid JSON, but PostgreSQL cannot store a NUL in text or jsonb.
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    for (body, field) in [
        (json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "a\u{0}b"}}), "content.text"),
        (
            json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "ok"}, "metadata": {"tags": ["x", "\u{0}"]}}),
            "metadata.tags[1]",
        ),
        (
            json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "ok"}, "metadata": {"a\u{0}": 1}}),
            "metadata.a\u{0}",
        ),
    ] {
        let response = app.post("/api/v1/messages", &tenant.api_key, body).await;
        assert_eq!(assert_error(response, 422, "validation_failed").await["error"]["field"], field);
    }
    // An escaped backslash before "u0000" is only text.
    let literal = json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "C:\\u0000"}});
    assert_eq!(app.post("/api/v1/messages", &tenant.api_key, literal).await.status(), 202);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM communications.messages").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored, 1);
}
