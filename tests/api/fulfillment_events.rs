//! Fulfillment meets communications only through `kernel::scheduling`: a booked appointment's
//! event becomes a confirmation and a T-24h reminder through trigger rules; a reschedule cancels
//! the old reminder and schedules a new one; a cancellation cancels it; the inbox shows the
//! appointment linked to a conversation from the same events.

use std::time::{Duration, Instant};

use cpaas_sim::InboundSpec;
use serde_json::{Value, json};

use crate::delivery::whatsapp;
use crate::fulfillment::berlin_plumber;
use crate::helpers::{TestApp, TestTenant, spawn_app_with_sim};

async fn rules(app: &TestApp, tenant: &TestTenant) {
    for (name, text) in [
        ("appointment_booked", "Booked: {{ data.service.name }} on {{ data.local_date }} at {{ data.local_time }}."),
        ("appointment_reminder", "Reminder: {{ data.service.name }} tomorrow at {{ data.local_time }}."),
        ("appointment_moved", "Moved: now {{ data.local_date }} at {{ data.local_time }}."),
    ] {
        let body = json!({"name": name, "default_locale": "en",
                          "variants": [{"channel": "whatsapp", "locale": "en", "body": {"text": text}}]});
        assert_eq!(app.post("/api/v1/templates", &tenant.api_key, body).await.status(), 201);
    }
    for (event, template, schedule) in [
        ("appointment.booked", "appointment_booked", None),
        (
            "appointment.booked",
            "appointment_reminder",
            Some(json!({"relative_to": "data.start", "offset_secs": -86400})),
        ),
        ("appointment.rescheduled", "appointment_moved", None),
        (
            "appointment.rescheduled",
            "appointment_reminder",
            Some(json!({"relative_to": "data.start", "offset_secs": -86400})),
        ),
    ] {
        let mut rule = json!({"name": format!("{event} → {template}"), "event": event, "template_name": template,
                              "audience": [{"contact_id": "data.contact_id"}], "channels": ["whatsapp"]});
        if let Some(schedule) = schedule {
            rule["schedule"] = schedule;
        }
        let created = app.post("/api/v1/trigger-rules", &tenant.api_key, rule).await;
        assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    }
}

/// The messages made for the appointment, by template (told apart by their rendered text), with
/// status and scheduled time.
async fn messages_about(app: &TestApp, appointment: &str) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as::<_, (Option<String>, String, Option<chrono::DateTime<chrono::Utc>>)>(
        r#"SELECT content->>'text', status, scheduled_at FROM communications.messages
           WHERE metadata->'link'->>'id' = $1 ORDER BY created_at, id"#,
    )
    .bind(appointment)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(text, s, at)| {
        let text = text.unwrap_or_default();
        let template =
            [("Booked:", "appointment_booked"), ("Reminder:", "appointment_reminder"), ("Moved:", "appointment_moved")]
                .into_iter()
                .find(|(prefix, _)| text.starts_with(prefix))
                .map_or(text.clone(), |(_, name)| name.to_owned());
        (template, s, at.map(|at| at.to_rfc3339()))
    })
    .collect()
}

async fn wait_until<F: Fn(&[(String, String, Option<String>)]) -> bool>(
    app: &TestApp,
    appointment: &str,
    done: F,
) -> Vec<(String, String, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let messages = messages_about(app, appointment).await;
        if done(&messages) {
            return messages;
        }
        assert!(Instant::now() < deadline, "never reached the expected messages: {messages:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bookings_confirm_and_remind_reschedules_move_the_reminder_and_cancellations_cancel_it() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("plumbing").await;
    whatsapp(&app, &tenant).await;
    rules(&app, &tenant).await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;
    // A customer writes in; the agent books them.
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112349999".into(),
        text: "My boiler is leaking, can someone come?".into(),
    })
    .await
    .unwrap();
    let conversation = app.newest_conversation(&tenant, 1).await;
    let view: Value =
        app.get(&format!("/api/v1/conversations/{conversation}"), &tenant.api_key).await.json().await.unwrap();
    let contact = view["contact_id"].as_str().unwrap().to_owned();

    let booked = app
        .post(
            "/api/v1/appointments",
            &tenant.api_key,
            json!({"service_id": service, "resource_id": resource, "start": "2027-04-13T08:00:00Z", "contact_id": contact}),
        )
        .await;
    assert_eq!(booked.status(), 201);
    let booked: Value = booked.json().await.unwrap();
    let id = booked["id"].as_str().unwrap().to_owned();

    let messages = wait_until(&app, &id, |m| m.len() == 2).await;
    assert!(messages.iter().any(|(t, _, at)| t == "appointment_booked" && at.is_none()), "{messages:?}");
    assert!(
        messages.iter().any(|(t, s, at)| t == "appointment_reminder"
            && s == "queued"
            && at.as_deref() == Some("2027-04-12T08:00:00+00:00")),
        "a reminder 24 h before: {messages:?}"
    );
    // The confirmation reached the customer, in their local time (10:00 Berlin, summer time).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent =
            sim.ledger().into_iter().find(|e| e.operation == "send_message" && e.body.to_string().contains("Booked:"));
        if let Some(sent) = sent {
            assert!(sent.body.to_string().contains("2027-04-13 at 10:00"), "{}", sent.body);
            break;
        }
        assert!(Instant::now() < deadline, "the confirmation never reached the simulator");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The inbox shows the appointment once the conversation is linked to it.
    let linked = app
        .put(&format!("/api/v1/conversations/{conversation}/link"), &tenant.api_key, json!({"appointment_id": id}))
        .await;
    assert!(linked.status().is_success(), "{}", linked.text().await.unwrap());
    let view: Value =
        app.get(&format!("/api/v1/conversations/{conversation}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(view["context"]["row"]["local_time"], "10:00", "{view}");
    assert_eq!(view["context"]["row"]["service"]["name"], "Boiler service");

    // Moved: the old reminder is canceled, the new one scheduled, the customer told.
    let moved = app
        .post(
            &format!("/api/v1/appointments/{id}/reschedule"),
            &tenant.api_key,
            json!({"start": "2027-04-14T12:00:00Z"}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    let messages = wait_until(&app, &id, |m| m.len() == 4).await;
    let reminders: Vec<_> = messages.iter().filter(|(t, _, _)| t == "appointment_reminder").collect();
    assert_eq!(reminders[0].1, "canceled", "{messages:?}");
    assert_eq!((reminders[1].1.as_str(), reminders[1].2.as_deref()), ("queued", Some("2027-04-13T12:00:00+00:00")));
    assert!(messages.iter().any(|(t, _, _)| t == "appointment_moved"));
    let view: Value =
        app.get(&format!("/api/v1/conversations/{conversation}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(view["context"]["row"]["local_time"], "14:00", "the inbox follows the move: {view}");

    // Canceled: no reminder goes out for it.
    assert_eq!(app.post(&format!("/api/v1/appointments/{id}/cancel"), &tenant.api_key, json!({})).await.status(), 200);
    let messages = wait_until(&app, &id, |m| {
        m.iter().filter(|(t, s, _)| t == "appointment_reminder" && s == "canceled").count() == 2
    })
    .await;
    assert!(!messages.iter().any(|(_, s, _)| s == "queued"), "{messages:?}");
    // The listener cancels the reminders before it ingests the event that carries the
    // appointment's new state, so the sidebar may follow a moment after them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view: Value =
            app.get(&format!("/api/v1/conversations/{conversation}"), &tenant.api_key).await.json().await.unwrap();
        if view["context"]["row"]["status"] == "canceled" {
            break;
        }
        assert!(Instant::now() < deadline, "the inbox never showed the cancellation: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
