//! Consent in the domain: every opt-out keyword and the opt-ins, HELP, Twilio's 21610, sends
//! to a suppressed number refused before any provider call, the audit of every change, quiet
//! hours across daylight-saving changes, and the messaging policy's API.

use std::time::Duration;

use cpaas_sim::{FailureKind, FailureRule};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, assert_error, sim_twilio_sms, spawn_app_with_sim};
use crate::missed_calls::{reply, wait_for_texts};

async fn sms_tenant(app: &TestApp) -> TestTenant {
    let tenant = app.create_tenant("alpine").await;
    app.active_channel(&tenant, sim_twilio_sms()).await;
    tenant
}

async fn suppressed(app: &TestApp, tenant: &TestTenant, phone: &str) -> Option<String> {
    sqlx::query_scalar("SELECT reason FROM communications.suppressions WHERE tenant_id = $1 AND address = $2")
        .bind(tenant.id)
        .bind(phone)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

async fn wait_until_suppressed(app: &TestApp, tenant: &TestTenant, phone: &str, wanted: bool) {
    for _ in 0..200 {
        if suppressed(app, tenant, phone).await.is_some() == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{phone} suppressed: {:?}, wanted {wanted}", suppressed(app, tenant, phone).await);
}

fn text_to(phone: &str, lane: &str) -> Value {
    json!({"to": {"phone": phone}, "channels": "sms", "content": {"text": "Spring offer: 20% off"}, "lane": lane})
}

#[tokio::test]
async fn every_opt_out_keyword_suppresses_the_number_until_start_yes_or_unstop_and_each_change_is_audited() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = sms_tenant(&app).await;
    let phone = "+4915112345678";
    let opt_out = ["STOP", "stopall", "Unsubscribe", "CANCEL", "end", "QUIT", "revoke", "OptOut."];
    let opt_in = ["START", "yes", "Unstop"];
    for (i, word) in opt_out.iter().enumerate() {
        reply(&sim, &tenant, phone, word).await;
        wait_until_suppressed(&app, &tenant, phone, true).await;
        let refused = app.post("/api/v1/messages", &tenant.api_key, text_to(phone, "bulk")).await;
        let error = assert_error(refused, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], "to", "{word}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("opted out by replying"), "{word}: {message}");
        reply(&sim, &tenant, phone, opt_in[i % opt_in.len()]).await;
        wait_until_suppressed(&app, &tenant, phone, false).await;
    }
    // Opted in again, the number takes messages.
    let accepted = app.post("/api/v1/messages", &tenant.api_key, text_to(phone, "urgent")).await;
    assert_eq!(accepted.status(), 202);
    // "STOP PLEASE" is not a keyword.
    reply(&sim, &tenant, phone, "STOP PLEASE").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(suppressed(&app, &tenant, phone).await.is_none());

    let history: Value = app
        .get(&format!("/api/v1/consent-events?address=%2B{}", &phone[1..]), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 16, "{history}");
    assert!(items.iter().all(|e| e["source"] == "keyword" && e["message_id"].is_string()));
    let outs = items.iter().filter(|e| e["action"] == "opt_out").count();
    assert_eq!(outs, 8);
    // Newest first: the last change was the eighth opt-in.
    assert_eq!(items[0]["action"], "opt_in");
}

#[tokio::test]
async fn help_gets_the_tenants_help_text() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = sms_tenant(&app).await;
    let help = json!({"help_text": "Alpine Tours: call +41 44 000 00 00. Reply STOP to opt out."});
    assert_eq!(app.patch_json("/api/v1/messaging-policy", &tenant.api_key, help).await.status(), 200);
    reply(&sim, &tenant, "+4915100000042", "help").await;
    let texts = wait_for_texts(&sim, "+4915100000042", 1).await;
    assert_eq!(texts, ["Alpine Tours: call +41 44 000 00 00. Reply STOP to opt out."]);
}

#[tokio::test]
async fn twilio_21610_suppresses_the_number_and_a_later_campaign_skips_it_with_the_reason() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = sms_tenant(&app).await;
    let phone = "+4915100000077";
    sim.add_failure(FailureRule {
        provider: Some("twilio".into()),
        recipient: Some(phone.into()),
        kind: FailureKind::OptedOut,
        probability: 1.0,
        remaining: Some(1),
    });
    let sent: Value =
        app.post("/api/v1/messages", &tenant.api_key, text_to(phone, "urgent")).await.json().await.unwrap();
    let id = sent["id"].as_str().unwrap();
    let mut message = Value::Null;
    for _ in 0..200 {
        message = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        if message["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(message["status"], "failed", "{message}");
    let reason = suppressed(&app, &tenant, phone).await.expect("suppressed");
    assert!(reason.contains("21610"), "{reason}");
    let history: Value = app.get("/api/v1/consent-events?channel=sms", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(history["items"][0]["source"], "provider");
    assert_eq!(history["items"][0]["message_id"], id);
    // A later campaign skips it before any provider call, saying why.
    let before = sim.ledger().len();
    let error = assert_error(
        app.post("/api/v1/messages", &tenant.api_key, text_to(phone, "bulk")).await,
        422,
        "validation_failed",
    )
    .await;
    assert!(error["error"]["message"].as_str().unwrap().contains("21610"), "{error}");
    assert_eq!(sim.ledger().len(), before, "no provider call");
}

#[tokio::test]
async fn a_suppressed_address_is_refused_whether_the_request_names_it_or_its_contact_holds_it() {
    // The acceptance reads the suppressions of the addresses requests name together with the
    // contacts, and those of addresses only a stored contact holds on their own.
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = sms_tenant(&app).await;
    app.active_channel(&tenant, crate::helpers::sim_email()).await;
    let phone = "+4915100000099";
    let first: Value =
        app.post("/api/v1/messages", &tenant.api_key, text_to(phone, "urgent")).await.json().await.unwrap();
    let message: Value = app
        .get(&format!("/api/v1/messages/{}", first["id"].as_str().unwrap()), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    let contact = message["contact_id"].as_str().unwrap().to_owned();
    let body = json!({"channel": "sms", "address": phone});
    assert_eq!(app.post("/api/v1/suppressions", &tenant.api_key, body).await.status(), 201);

    for to in [json!({"phone": phone}), json!({"contact_id": contact})] {
        let body = json!({"to": to, "channels": "sms", "content": {"text": "x"}});
        let refused =
            assert_error(app.post("/api/v1/messages", &tenant.api_key, body).await, 422, "validation_failed").await;
        assert_eq!(refused["error"]["field"], "to", "{to}: {refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("suppressed"), "{to}: {refused}");
    }
    // With another channel in its chain the message goes there, the suppressed step left out.
    let body = json!({"to": {"phone": phone, "email": "Someone@Example.org"}, "channels": ["sms", "email"],
                      "content": {"text": "x", "subject": "S"}});
    let accepted = app.post("/api/v1/messages", &tenant.api_key, body).await;
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    let message: Value = app
        .get(&format!("/api/v1/messages/{}", accepted["id"].as_str().unwrap()), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(message["channel"], "email", "{message}");
    // Only the first message, sent before the suppression, ever reached the SMS provider.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts = sim
        .ledger()
        .into_iter()
        .filter(|e| e.operation == "create_message" && e.recipient.as_deref() == Some(phone))
        .count();
    assert_eq!(texts, 1, "no SMS after the suppression");
}

#[tokio::test]
async fn suppressions_can_be_managed_through_the_api_and_stay_in_their_tenant() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = sms_tenant(&app).await;
    let other = app.create_tenant("other").await;
    let body = json!({"channel": "sms", "address": "+4915100000088"});
    let created = app.post("/api/v1/suppressions", &tenant.api_key, body).await;
    assert_eq!(created.status(), 201);
    let list: Value = app.get("/api/v1/suppressions", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(list["items"][0]["address"], "+4915100000088");
    let theirs: Value = app.get("/api/v1/suppressions", &other.api_key).await.json().await.unwrap();
    assert!(theirs["items"].as_array().unwrap().is_empty());
    assert_eq!(app.delete("/api/v1/suppressions/sms/+4915100000088", &other.api_key).await.status(), 404);
    let bad = app.post("/api/v1/suppressions", &tenant.api_key, json!({"channel": "sms", "address": "12"})).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "address");
    assert_eq!(app.delete("/api/v1/suppressions/sms/+4915100000088", &tenant.api_key).await.status(), 204);
    let history: Value = app.get("/api/v1/consent-events", &tenant.api_key).await.json().await.unwrap();
    let sources: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|e| e["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["api", "api"]);
}

async fn scheduled(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    let response = app.post("/api/v1/messages", &tenant.api_key, body).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    app.get(&format!("/api/v1/messages/{id}?include=events"), &tenant.api_key).await.json().await.unwrap()
}

#[tokio::test]
async fn quiet_hours_defer_bulk_messages_to_the_local_morning_across_daylight_saving_changes() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = sms_tenant(&app).await;
    let berlin = json!({"time_zone": "Europe/Berlin", "quiet_hours": {"start": "21:00", "end": "08:00"}});
    assert_eq!(app.patch_json("/api/v1/messaging-policy", &tenant.api_key, berlin).await.status(), 200);
    let at = |phone: &str, lane: &str, when: &str| json!({"to": {"phone": phone}, "channels": "sms", "content": {"text": "Offer"}, "lane": lane, "scheduled_at": when});
    // Saturday 27 March 2027, 22:30 in Berlin (CET); the clocks go forward that night, so the
    // morning's 08:00 is 06:00Z.
    let bulk = scheduled(&app, &tenant, at("+4915100000101", "bulk", "2027-03-27T21:30:00Z")).await;
    assert_eq!(bulk["scheduled_at"], "2027-03-28T06:00:00Z", "{bulk}");
    assert!(bulk.to_string().contains("quiet hours 21:00–08:00 in Europe/Berlin"), "{bulk}");
    // Transactional messages go at any hour (by default).
    let urgent = scheduled(&app, &tenant, at("+4915100000102", "urgent", "2027-03-27T21:30:00Z")).await;
    assert_eq!(urgent["scheduled_at"], "2027-03-27T21:30:00Z");
    // Autumn: Saturday 30 October 2027, 23:00 CEST; back to CET overnight: 08:00 is 07:00Z.
    let autumn = scheduled(&app, &tenant, at("+4915100000101", "bulk", "2027-10-30T21:00:00Z")).await;
    assert_eq!(autumn["scheduled_at"], "2027-10-31T07:00:00Z");
    // Outside the window nothing moves.
    let noon = scheduled(&app, &tenant, at("+4915100000101", "bulk", "2027-03-29T10:00:00Z")).await;
    assert_eq!(noon["scheduled_at"], "2027-03-29T10:00:00Z");

    // A contact in New York: 21:30 EST on 13 March 2027; DST starts that night: 08:00 EDT = 12:00Z.
    let first = scheduled(&app, &tenant, at("+12125550123", "urgent", "2027-03-13T12:00:00Z")).await;
    let contact = first["contact_id"].as_str().unwrap();
    let zone = app
        .patch_json(&format!("/api/v1/contacts/{contact}"), &tenant.api_key, json!({"time_zone": "America/New_York"}))
        .await;
    assert_eq!(zone.status(), 200);
    let ny = scheduled(&app, &tenant, at("+12125550123", "bulk", "2027-03-14T02:30:00Z")).await;
    assert_eq!(ny["scheduled_at"], "2027-03-14T12:00:00Z", "{ny}");
    let bad = app
        .patch_json(&format!("/api/v1/contacts/{contact}"), &tenant.api_key, json!({"time_zone": "Mars/Olympus"}))
        .await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "time_zone");

    // Transactional too, when the policy says so; no quiet hours at all, when it says so.
    let strict = json!({"quiet_hours_transactional": true});
    assert_eq!(app.patch_json("/api/v1/messaging-policy", &tenant.api_key, strict).await.status(), 200);
    let urgent = scheduled(&app, &tenant, at("+4915100000103", "urgent", "2027-03-27T21:30:00Z")).await;
    assert_eq!(urgent["scheduled_at"], "2027-03-28T06:00:00Z");
    let off = json!({"quiet_hours": null});
    assert_eq!(app.patch_json("/api/v1/messaging-policy", &tenant.api_key, off).await.status(), 200);
    let bulk = scheduled(&app, &tenant, at("+4915100000104", "bulk", "2027-03-27T21:30:00Z")).await;
    assert_eq!(bulk["scheduled_at"], "2027-03-27T21:30:00Z");
}

#[tokio::test]
async fn the_messaging_policy_names_bad_fields_and_belongs_to_its_tenant() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = sms_tenant(&app).await;
    let other = app.create_tenant("other").await;
    let defaults: Value = app.get("/api/v1/messaging-policy", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(defaults["quiet_hours"], json!({"start": "21:00", "end": "08:00"}));
    assert_eq!(defaults["quiet_hours_transactional"], false);
    assert_eq!(defaults["missed_call"]["enabled"], true);
    for (patch, field) in [
        (json!({"time_zone": "Berlin"}), "time_zone"),
        (json!({"quiet_hours": {"start": "25:00", "end": "08:00"}}), "quiet_hours.start"),
        (json!({"missed_call": {"forward_to": "030 123"}}), "missed_call.forward_to"),
        (json!({"missed_call": {"dial_timeout_secs": 2}}), "missed_call.dial_timeout_secs"),
        (json!({"booking": {"slots": 12}}), "booking.slots"),
        (json!({"help_text": null}), "help_text"),
        (json!({"surprise": 1}), "surprise"),
    ] {
        let response = app.patch_json("/api/v1/messaging-policy", &tenant.api_key, patch.clone()).await;
        let error = assert_error(response, 422, "validation_failed").await;
        let named = error["error"]["field"].as_str().unwrap_or_default().to_owned();
        assert!(named.contains(field) || error.to_string().contains(field), "{patch}: {error}");
    }
    let set = json!({"time_zone": "Europe/Berlin", "booking": {"confirm": true}});
    let changed: Value = app.patch_json("/api/v1/messaging-policy", &tenant.api_key, set).await.json().await.unwrap();
    assert_eq!(changed["booking"]["confirm"], true);
    assert_eq!(changed["booking"]["slots"], 3, "untouched fields stay");
    let theirs: Value = app.get("/api/v1/messaging-policy", &other.api_key).await.json().await.unwrap();
    assert_eq!(theirs["time_zone"], "UTC");
    assert_eq!(theirs["booking"]["confirm"], false);
    // Agents read it; only admins change it.
    let agent = app.create_agent(&tenant, "mia@alpine.example", "agent").await;
    let (client, csrf) = app.session_client(&tenant, &agent).await;
    let refused = client
        .patch(app.url("/api/v1/messaging-policy"))
        .header("X-CSRF-Token", csrf)
        .json(&json!({"help_text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}
