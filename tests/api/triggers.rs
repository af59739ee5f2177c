//! Upstream events (domain events and Hasura event triggers) through trigger rules to messages.

use std::time::{Duration, Instant};

use cpaas_sim::SimConfig;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, assert_error, sim_whatsapp, spawn_app, spawn_app_with_sim_config};

async fn whatsapp(app: &TestApp, tenant: &TestTenant) {
    app.active_channel(tenant, sim_whatsapp()).await;
}

async fn template(app: &TestApp, tenant: &TestTenant) {
    let body = json!({
        "name": "leg_delayed",
        "default_locale": "de",
        "variants": [
            {"channel": "whatsapp", "locale": "de", "body": {"text": "Hallo {{ data.new.passenger_name }}, Ihre Fahrt {{ data.new.leg_ref }} ist verspätet: neue Abfahrt {{ data.new.departure_at }}."}},
            {"channel": "sms", "locale": "de", "body": {"text": "Fahrt {{ data.new.leg_ref }} verspätet."}}
        ]
    });
    let response = app.post("/api/v1/templates", &tenant.api_key, body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

fn delayed_rule() -> Value {
    json!({
        "name": "Tell passengers about delays",
        "event": "service_leg_status",
        "conditions": [{"path": "data.new.status", "equals": "DELAYED", "changed": true}],
        "template_name": "leg_delayed",
        "audience": [{"phone": "data.new.passenger_phone"}],
        "channels": ["whatsapp", "sms"]
    })
}

/// A Hasura event-trigger payload, shaped exactly as Hasura posts it.
fn hasura_event(id: &str, old_status: &str, new_status: &str) -> Value {
    json!({
        "event": {
            "session_variables": {"x-hasura-role": "admin"},
            "op": "UPDATE",
            "data": {
                "old": {"id": 42, "leg_ref": "BX-204", "status": old_status, "passenger_name": "Anna", "passenger_phone": "+4915112345678", "departure_at": "2026-11-23T09:00:00"},
                "new": {"id": 42, "leg_ref": "BX-204", "status": new_status, "passenger_name": "Anna", "passenger_phone": "+4915112345678", "departure_at": "2026-11-23T09:40:00"}
            },
            "trace_context": {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}
        },
        "created_at": "2026-11-22T14:00:00.123456",
        "id": id,
        "delivery_info": {"max_retries": 3, "current_retry": 0},
        "trigger": {"name": "service_leg_status"},
        "table": {"schema": "operations", "name": "service_legs"}
    })
}

async fn post_event(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    let response = app.post("/api/v1/events", &tenant.api_key, body).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_hasura_event_becomes_a_rendered_whatsapp_message_that_reaches_read() {
    let (app, sim) = spawn_app_with_sim_config(
        |_| {},
        SimConfig { auto_callbacks: Some(Duration::from_millis(50)), ..SimConfig::default() },
    )
    .await;
    let tenant = app.create_tenant("busflow").await;
    whatsapp(&app, &tenant).await;
    template(&app, &tenant).await;
    let rule = app.post("/api/v1/trigger-rules", &tenant.api_key, delayed_rule()).await;
    assert_eq!(rule.status(), 201, "{}", rule.text().await.unwrap());

    let outcome =
        post_event(&app, &tenant, hasura_event("85558393-c75d-4d2f-9c15-e80591b83894", "ON_TIME", "DELAYED")).await;
    assert_eq!(outcome["duplicate"], false);
    let id = outcome["messages"][0]["id"].as_str().expect("a message").to_owned();

    let deadline = Instant::now() + Duration::from_secs(10);
    let message = loop {
        let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        if message["status"] == "read" {
            break message;
        }
        assert!(Instant::now() < deadline, "{message:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(message["metadata"]["event_id"], "85558393-c75d-4d2f-9c15-e80591b83894");
    let request = sim.ledger().into_iter().find(|e| e.operation == "send_message").expect("sent to Meta");
    assert_eq!(
        request.body["text"]["body"],
        "Hallo Anna, Ihre Fahrt BX-204 ist verspätet: neue Abfahrt 2026-11-23T09:40:00."
    );

    // Hasura retries deliveries: the same event id changes nothing.
    let again =
        post_event(&app, &tenant, hasura_event("85558393-c75d-4d2f-9c15-e80591b83894", "ON_TIME", "DELAYED")).await;
    assert_eq!(again["duplicate"], true);
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM communications.messages").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn conditions_decide_and_unmatched_events_queue_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("busflow").await;
    template(&app, &tenant).await;
    app.post("/api/v1/trigger-rules", &tenant.api_key, delayed_rule()).await;
    let unchanged = post_event(&app, &tenant, hasura_event("e-1", "DELAYED", "DELAYED")).await;
    assert_eq!(unchanged["messages"], json!([]), "the status did not change");
    let other = post_event(&app, &tenant, hasura_event("e-2", "DELAYED", "ON_TIME")).await;
    assert_eq!(other["messages"], json!([]));
    let domain = post_event(&app, &tenant, json!({"event": "booking.confirmed", "id": "e-3", "data": {}})).await;
    assert_eq!(domain["messages"], json!([]), "no rule for this event");
}

#[tokio::test]
async fn scheduled_rules_queue_relative_to_a_time_in_the_event() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("busflow").await;
    template(&app, &tenant).await;
    let mut rule = delayed_rule();
    rule["event"] = json!("trip.booked");
    rule["conditions"] = json!([]);
    rule["audience"] = json!([{"phone": "data.new.passenger_phone"}]);
    rule["schedule"] = json!({"relative_to": "data.new.departure_at", "offset_secs": -86400});
    assert_eq!(app.post("/api/v1/trigger-rules", &tenant.api_key, rule).await.status(), 201);
    let departure = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let event = json!({"event": "trip.booked", "id": "b-1", "data": {"new": {"passenger_phone": "+4915112345678", "passenger_name": "Anna",
        "leg_ref": "BX-9", "departure_at": departure}}});
    let outcome = post_event(&app, &tenant, event).await;
    let scheduled =
        chrono::DateTime::parse_from_rfc3339(outcome["messages"][0]["scheduled_at"].as_str().unwrap()).unwrap();
    let expected = chrono::DateTime::parse_from_rfc3339(&departure).unwrap() - chrono::Duration::days(1);
    assert_eq!(scheduled, expected, "24 h before departure");

    let past = json!({"event": "trip.booked", "id": "b-2", "data": {"new": {"passenger_phone": "+4915112345678", "passenger_name": "Anna",
        "leg_ref": "BX-10", "departure_at": "2020-01-01T00:00:00Z"}}});
    let outcome = post_event(&app, &tenant, past).await;
    assert_eq!(outcome["messages"], json!([]));
    assert!(outcome["skipped"][0]["reason"].as_str().unwrap().contains("has passed"), "{outcome}");
}

#[tokio::test]
async fn a_recipient_that_cannot_be_served_is_reported_and_others_still_go() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("busflow").await;
    template(&app, &tenant).await;
    let mut rule = delayed_rule();
    rule["audience"] = json!([{"phone": "data.new.passenger_phone"}, {"phone": "data.new.guide_phone"}]);
    assert_eq!(app.post("/api/v1/trigger-rules", &tenant.api_key, rule).await.status(), 201);
    let mut event = hasura_event("e-9", "ON_TIME", "DELAYED");
    event["event"]["data"]["new"]["guide_phone"] = json!("not a number");
    let outcome = post_event(&app, &tenant, event).await;
    assert_eq!(outcome["messages"].as_array().unwrap().len(), 1);
    assert!(outcome["skipped"][0]["reason"].as_str().unwrap().starts_with("to.phone"), "{outcome}");
}

#[tokio::test]
async fn rules_are_validated_and_isolated() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("busflow").await;
    let other = app.create_tenant("other").await;
    template(&app, &tenant).await;
    let cases = [
        (json!({"template_name": "nope"}), "template_name"),
        (json!({"audience": []}), "audience"),
        (json!({"audience": [{}]}), "audience[0]"),
        (json!({"conditions": [{"path": "data.new.status"}]}), "conditions[0]"),
        (json!({"conditions": [{"path": "data.status", "changed": true}]}), "conditions[0].changed"),
        (json!({"channels": []}), "channels"),
        (json!({"schedule": {"relative_to": "not a path!", "offset_secs": 0}}), "schedule.relative_to"),
    ];
    for (patch, field) in cases {
        let mut rule = delayed_rule();
        for (key, value) in patch.as_object().unwrap() {
            rule[key] = value.clone();
        }
        let error =
            assert_error(app.post("/api/v1/trigger-rules", &tenant.api_key, rule).await, 422, "validation_failed")
                .await;
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    let created: Value = app.post("/api/v1/trigger-rules", &tenant.api_key, delayed_rule()).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_error(app.get(&format!("/api/v1/trigger-rules/{id}"), &other.api_key).await, 404, "not_found").await;
    let delete = app.delete(&format!("/api/v1/trigger-rules/{id}"), &other.api_key).await;
    assert_error(delete, 404, "not_found").await;
    // The other tenant's event with the same name triggers nothing of ours.
    let theirs = post_event(&app, &other, hasura_event("e-1", "ON_TIME", "DELAYED")).await;
    assert_eq!(theirs["messages"], json!([]));
    assert_error(app.post("/api/v1/events", &tenant.api_key, json!({"event": "x"})).await, 422, "validation_failed")
        .await;
}

async fn digest_template(app: &TestApp, tenant: &TestTenant) {
    // The digest goes out at 06:00 UTC on the bulk lane: inside the default quiet hours.
    app.quiet_hours_off(tenant).await;
    let body = json!({
        "name": "morning_digest",
        "default_locale": "de",
        "variants": [{"channel": "whatsapp", "locale": "de", "body": {"text": "Guten Morgen {{ data.payload.name }}: Ihre Touren für heute."}}]
    });
    let response = app.post("/api/v1/templates", &tenant.api_key, body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

fn digest_rule() -> Value {
    json!({
        "name": "Morning digest for the dispatcher",
        "event": "morning-digest",
        "template_name": "morning_digest",
        "audience": [{"phone": "data.payload.phone"}],
        "channels": ["whatsapp"],
        "lane": "bulk"
    })
}

#[tokio::test]
async fn a_due_cron_trigger_fires_once_through_its_rules_and_moves_to_its_next_time() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, SimConfig::default()).await;
    let tenant = app.create_tenant("busflow").await;
    whatsapp(&app, &tenant).await;
    digest_template(&app, &tenant).await;
    assert_eq!(app.post("/api/v1/trigger-rules", &tenant.api_key, digest_rule()).await.status(), 201);
    let body = json!({"name": "morning-digest", "schedule": "0 6 * * *", "payload": {"phone": "+4915112345678", "name": "Anna"}});
    let response = app.post("/api/v1/cron-triggers", &tenant.api_key, body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let trigger: Value = response.json().await.unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(trigger["next_run_at"].as_str().unwrap()).unwrap();
    assert_eq!(next.format("%H:%M:%S").to_string(), "06:00:00", "{trigger}");
    assert!(next > chrono::Utc::now());

    // Not due yet: nothing is sent.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(sim.ledger().iter().all(|e| e.operation != "send_message"));

    // Three days of missed firings (the service was down): it fires once, for the latest.
    let id: uuid::Uuid = trigger["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("UPDATE communications.cron_triggers SET next_run_at = next_run_at - interval '3 days' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.ledger().iter().all(|e| e.operation != "send_message") {
        assert!(Instant::now() < deadline, "the cron trigger never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sends: Vec<_> = sim.ledger().into_iter().filter(|e| e.operation == "send_message").collect();
    assert_eq!(sends.len(), 1, "one firing, not one per missed day");
    assert_eq!(sends[0].body["text"]["body"], "Guten Morgen Anna: Ihre Touren für heute.");

    let after: Value = app.get(&format!("/api/v1/cron-triggers/{id}"), &tenant.api_key).await.json().await.unwrap();
    let last = chrono::DateTime::parse_from_rfc3339(after["last_run_at"].as_str().unwrap()).unwrap();
    assert_eq!(last, next - chrono::Duration::days(1), "the latest missed time: {after}");
    assert_eq!(after["next_run_at"], trigger["next_run_at"], "back on schedule: {after}");
    let event_id: String = sqlx::query_scalar("SELECT metadata->>'event_id' FROM communications.messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(event_id, format!("cron:{id}:{}", last.timestamp()));
}

#[tokio::test]
async fn a_hasura_cron_trigger_payload_is_an_event_processed_once() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("busflow").await;
    digest_template(&app, &tenant).await;
    assert_eq!(app.post("/api/v1/trigger-rules", &tenant.api_key, digest_rule()).await.status(), 201);
    // Shaped as Hasura posts a cron trigger's webhook.
    let body = json!({
        "scheduled_time": "2026-11-23T06:00:00Z",
        "payload": {"phone": "+4915112345678", "name": "Anna"},
        "name": "morning-digest",
        "id": "f3d4a1e2-0d5a-4b8a-9a64-0cc3f3d3b1aa",
        "comment": "daily"
    });
    let outcome = post_event(&app, &tenant, body.clone()).await;
    assert_eq!(outcome["messages"].as_array().unwrap().len(), 1, "{outcome}");
    let again = post_event(&app, &tenant, body).await;
    assert_eq!(again["duplicate"], true);

    let missing_name = json!({"scheduled_time": "2026-11-23T06:00:00Z", "id": "x-1"});
    assert_eq!(
        assert_error(app.post("/api/v1/events", &tenant.api_key, missing_name).await, 422, "validation_failed").await["error"]
            ["field"],
        "name"
    );
    let bad_time = json!({"scheduled_time": "tomorrow", "name": "morning-digest", "id": "x-2"});
    assert_eq!(
        assert_error(app.post("/api/v1/events", &tenant.api_key, bad_time).await, 422, "validation_failed").await["error"]
            ["field"],
        "scheduled_time"
    );
}

#[tokio::test]
async fn cron_triggers_are_validated_and_isolated() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("busflow").await;
    let other = app.create_tenant("other").await;
    let cases = [
        (json!({"name": "d", "schedule": "0 6 * *"}), "schedule"),
        (json!({"name": "d", "schedule": "0 0 6 * * *"}), "schedule"),
        (json!({"name": "d", "schedule": "61 6 * * *"}), "schedule"),
        (json!({"name": "d", "schedule": "0 6 31 2 *"}), "schedule"),
        (json!({"name": " ", "schedule": "0 6 * * *"}), "name"),
        (json!({"name": "d", "schedule": "0 6 * * *", "payload": [1]}), "payload"),
    ];
    for (body, field) in cases {
        assert_eq!(
            assert_error(app.post("/api/v1/cron-triggers", &tenant.api_key, body).await, 422, "validation_failed")
                .await["error"]["field"],
            field
        );
    }
    let body = json!({"name": "digest", "schedule": "*/15 8-18 * * MON-FRI"});
    let created: Value = app.post("/api/v1/cron-triggers", &tenant.api_key, body.clone()).await.json().await.unwrap();
    assert_eq!(
        assert_error(app.post("/api/v1/cron-triggers", &tenant.api_key, body.clone()).await, 409, "conflict").await["error"]
            ["field"],
        "name"
    );
    assert_eq!(app.post("/api/v1/cron-triggers", &other.api_key, body).await.status(), 201, "names are per tenant");

    let path = format!("/api/v1/cron-triggers/{}", created["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &other.api_key).await.status(), 404);
    let replace = json!({"name": "digest", "schedule": "0 7 * * *", "enabled": false});
    let put = app.put(&path, &other.api_key, replace.clone()).await;
    assert_eq!(put.status(), 404);
    assert_eq!(app.delete(&path, &other.api_key).await.status(), 404);
    let listed: Value = app.get("/api/v1/cron-triggers", &other.api_key).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "only its own: {listed}");

    let put = app.put(&path, &tenant.api_key, replace.clone()).await;
    assert_eq!(put.status(), 200);
    let replaced: Value = put.json().await.unwrap();
    assert_eq!(replaced["enabled"], false);
    assert!(replaced["next_run_at"].as_str().unwrap().contains("T07:00:00"), "{replaced}");
    assert_eq!(app.delete(&path, &tenant.api_key).await.status(), 204);
    assert_eq!(app.get(&path, &tenant.api_key).await.status(), 404);
}
