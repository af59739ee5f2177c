//! Calendar sync against the simulated Google Calendar and Jobber: appointments appear, move and
//! go in both; busy times added in Google disappear from availability after the push
//! notification; vendor failures, a lost answer (Google's duplicate-id 409 on the retry),
//! throttling and revoked grants are survived without touching the booking; forged pushes and
//! webhooks are refused.

use std::time::{Duration, Instant};

use cpaas_sim::{FailureKind, FailureRule, SimHandle, Vendor};
use serde_json::{Value, json};

use crate::fulfillment::berlin_plumber;
use crate::helpers::{TestApp, TestTenant, assert_error, spawn_app_with_sim};

const CALENDAR: &str = "jonas@plumbing.example";

async fn connect(app: &TestApp, tenant: &TestTenant, sim: &SimHandle, resource: &str) -> (String, String) {
    let google = sim.oauth_grant(Vendor::Google);
    let jobber = sim.oauth_grant(Vendor::Jobber);
    let g = app
        .post(
            "/api/v1/calendar-connections",
            &tenant.api_key,
            json!({"provider": "google", "display_name": "Jonas's calendar", "resource_id": resource, "calendar_id": CALENDAR,
                   "refresh_token": google.refresh_token, "access_token": google.access_token, "access_expires_at": google.expires_at}),
        )
        .await;
    assert_eq!(g.status(), 201, "{}", g.text().await.unwrap());
    let j = app
        .post(
            "/api/v1/calendar-connections",
            &tenant.api_key,
            json!({"provider": "jobber", "display_name": "Jobber", "refresh_token": jobber.refresh_token}),
        )
        .await;
    assert_eq!(j.status(), 201, "{}", j.text().await.unwrap());
    let (g, j): (Value, Value) = (g.json().await.unwrap(), j.json().await.unwrap());
    (g["id"].as_str().unwrap().to_owned(), j["id"].as_str().unwrap().to_owned())
}

/// Waits until the appointment's sync states satisfy `done`; answers the appointment.
async fn until_synced(app: &TestApp, tenant: &TestTenant, id: &str, done: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view: Value = app.get(&format!("/api/v1/appointments/{id}"), &tenant.api_key).await.json().await.unwrap();
        if done(view["sync"].as_array().unwrap()) {
            return view;
        }
        assert!(Instant::now() < deadline, "sync never got there: {}", view["sync"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all(states: &[Value], state: &str) -> bool {
    states.len() == 2 && states.iter().all(|s| s["state"] == state)
}

fn event_key(id: &str) -> String {
    id.replace('-', "")
}

async fn slots(app: &TestApp, tenant: &TestTenant, service: &str, resource: &str, day: &str) -> Vec<String> {
    let url = format!(
        "/api/v1/availability?service_id={service}&resource_id={resource}&from={day}T00:00:00Z&to={day}T23:59:00Z"
    );
    let body: Value = app.get(&url, &tenant.api_key).await.json().await.unwrap();
    body["resources"][0]["slots"].as_array().unwrap().iter().map(|s| s["start"].as_str().unwrap().to_owned()).collect()
}

async fn until_slots(
    app: &TestApp,
    tenant: &TestTenant,
    service: &str,
    resource: &str,
    day: &str,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = slots(app, tenant, service, resource, day).await;
        if done(&found) {
            return;
        }
        assert!(Instant::now() < deadline, "availability never changed: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn appointments_follow_through_to_google_and_jobber_and_google_busy_times_come_back() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("plumbing").await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;
    connect(&app, &tenant, &sim, &resource).await;

    let booked: Value = app
        .post(
            "/api/v1/appointments",
            &tenant.api_key,
            json!({"service_id": service, "resource_id": resource, "start": "2027-04-19T08:00:00Z", "location": "Hauptstr. 1, 10115 Berlin"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = booked["id"].as_str().unwrap().to_owned();
    until_synced(&app, &tenant, &id, |s| all(s, "synced")).await;
    let event =
        sim.google_events(CALENDAR).into_iter().find(|e| e["id"] == event_key(&id)).expect("the event is in Google");
    assert_eq!(
        event["start"]["dateTime"]
            .as_str()
            .map(|t| t.starts_with("2027-04-19T10:00:00+02:00") || t.starts_with("2027-04-19T08:00:00Z")),
        Some(true),
        "{event}"
    );
    let visits = sim.jobber_visits();
    assert_eq!(visits.len(), 1);
    assert_eq!(visits[0].start_at.to_rfc3339(), "2027-04-19T08:00:00+00:00");

    // Moved: both follow.
    let moved = app
        .post(
            &format!("/api/v1/appointments/{id}/reschedule"),
            &tenant.api_key,
            json!({"start": "2027-04-19T12:00:00Z"}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let google = sim.google_events(CALENDAR).into_iter().find(|e| e["id"] == event_key(&id)).unwrap();
        let jobber = sim.jobber_visits();
        let google_moved = google["start"]["dateTime"]
            .as_str()
            .is_some_and(|t| t.contains("14:00:00+02:00") || t.contains("12:00:00Z"));
        if google_moved && jobber[0].start_at.to_rfc3339() == "2027-04-19T12:00:00+00:00" {
            break;
        }
        assert!(Instant::now() < deadline, "the move never reached the vendors: {google} {jobber:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The plumber's own dentist appointment, added in Google: gone from availability once Google
    // pushes the change (the push channel points at us).
    let before = slots(&app, &tenant, &service, &resource, "2027-04-20").await;
    assert!(before.contains(&"2027-04-20T07:00:00Z".to_owned()) && before.contains(&"2027-04-20T08:00:00Z".to_owned()));
    assert!(!sim.google_channel_ids().is_empty(), "a push channel is open");
    sim.google_add_event(CALENDAR, json!({"id": "dentist1", "summary": "Dentist", "start": {"dateTime": "2027-04-20T07:00:00Z"}, "end": {"dateTime": "2027-04-20T09:00:00Z"}}))
        .unwrap();
    until_slots(&app, &tenant, &service, &resource, "2027-04-20", |s| {
        !s.contains(&"2027-04-20T07:00:00Z".to_owned()) && !s.contains(&"2027-04-20T08:00:00Z".to_owned())
    })
    .await;
    let refused = app
        .post(
            "/api/v1/reservations",
            &tenant.api_key,
            json!({"service_id": service, "resource_id": resource, "start": "2027-04-20T07:00:00Z"}),
        )
        .await;
    assert_error(refused, 409, "conflict").await;
    // Deleted there: free again.
    sim.google_delete_event(CALENDAR, "dentist1").unwrap();
    until_slots(&app, &tenant, &service, &resource, "2027-04-20", |s| s.contains(&"2027-04-20T07:00:00Z".to_owned()))
        .await;

    // An expired sync token means a full resync, and the result is the same.
    sim.google_add_event(CALENDAR, json!({"id": "lunch1", "summary": "Lunch", "start": {"dateTime": "2027-04-21T10:00:00Z"}, "end": {"dateTime": "2027-04-21T11:00:00Z"}}))
        .unwrap();
    sim.google_expire_sync_tokens(CALENDAR);
    until_slots(&app, &tenant, &service, &resource, "2027-04-21", |s| !s.contains(&"2027-04-21T10:00:00Z".to_owned()))
        .await;

    // Canceled: removed from both.
    assert_eq!(app.post(&format!("/api/v1/appointments/{id}/cancel"), &tenant.api_key, json!({})).await.status(), 200);
    until_synced(&app, &tenant, &id, |s| all(s, "removed")).await;
    let event = sim.google_events(CALENDAR).into_iter().find(|e| e["id"] == event_key(&id)).unwrap();
    assert_eq!(event["status"], "cancelled");
    assert!(sim.jobber_visits().is_empty());
}

#[tokio::test]
async fn vendor_failures_lost_answers_throttling_and_revoked_grants_never_touch_the_booking() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("plumbing").await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;
    let (_, jobber) = connect(&app, &tenant, &sim, &resource).await;
    // The first busy-time import talks to Google too: let it finish, so the failures below meet
    // the appointment's insert.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let connections: Value = app.get("/api/v1/calendar-connections", &tenant.api_key).await.json().await.unwrap();
        let google =
            connections["items"].as_array().unwrap().iter().find(|c| c["provider"] == "google").cloned().unwrap();
        if google["last_synced_at"].is_string() && google["push_channel_expires_at"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the first import never ran: {google}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rule = |provider: &str, kind: FailureKind, n: u32| FailureRule {
        provider: Some(provider.into()),
        recipient: None,
        kind,
        probability: 1.0,
        remaining: Some(n),
    };
    // Google fails twice, then loses the answer to the insert it carried out; Jobber throttles.
    sim.add_failure(rule("google", FailureKind::ServerError, 2));
    sim.add_failure(rule("jobber", FailureKind::RateLimited, 1));
    let started = Instant::now();
    let booked = app
        .post(
            "/api/v1/appointments",
            &tenant.api_key,
            json!({"service_id": service, "resource_id": resource, "start": "2027-04-22T08:00:00Z", "location": "Hauptstr. 1"}),
        )
        .await;
    assert_eq!(booked.status(), 201, "the vendors' trouble is not the booking's");
    assert!(started.elapsed() < Duration::from_secs(2));
    let id = booked.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let view = until_synced(&app, &tenant, &id, |s| all(s, "synced")).await;
    assert!(view["sync"].as_array().unwrap().iter().any(|s| s["attempts"].as_i64().unwrap() >= 3), "{}", view["sync"]);

    sim.add_failure(rule("google", FailureKind::LostAnswer, 1));
    let second: Value = app
        .post(
            "/api/v1/appointments",
            &tenant.api_key,
            json!({"service_id": service, "resource_id": resource, "start": "2027-04-22T13:00:00Z", "location": "Hauptstr. 1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let second = second["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view: Value =
            app.get(&format!("/api/v1/appointments/{second}"), &tenant.api_key).await.json().await.unwrap();
        if all(view["sync"].as_array().unwrap(), "synced") {
            break;
        }
        assert!(Instant::now() < deadline, "the lost answer was never settled: {}", view["sync"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let copies = sim.google_events(CALENDAR).into_iter().filter(|e| e["id"] == event_key(&second)).count();
    assert_eq!(copies, 1, "the retried insert made no second event");

    // The operator revoked Jobber: the connection says so, the appointment's Jobber state fails.
    sim.revoke_tokens(Vendor::Jobber);
    let third: Value = app
        .post(
            "/api/v1/appointments",
            &tenant.api_key,
            json!({"service_id": service, "resource_id": resource, "start": "2027-04-23T08:00:00Z", "location": "Hauptstr. 1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let third = third["id"].as_str().unwrap().to_owned();
    let view = until_synced(&app, &tenant, &third, |s| {
        s.iter().any(|x| x["provider"] == "jobber" && x["state"] == "failed")
            && s.iter().any(|x| x["provider"] == "google" && x["state"] == "synced")
    })
    .await;
    assert_eq!(view["status"], "booked");
    let connections: Value = app.get("/api/v1/calendar-connections", &tenant.api_key).await.json().await.unwrap();
    let jobber_connection =
        connections["items"].as_array().unwrap().iter().find(|c| c["id"] == jobber.as_str()).unwrap();
    assert_eq!(jobber_connection["status"], "unauthorized", "{jobber_connection}");
}

#[tokio::test]
async fn forged_pushes_and_webhooks_are_refused_and_authentic_ones_are_taken() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("plumbing").await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;
    connect(&app, &tenant, &sim, &resource).await;
    let booked: Value = app
        .post(
            "/api/v1/appointments",
            &tenant.api_key,
            json!({"service_id": service, "resource_id": resource, "start": "2027-04-26T08:00:00Z", "location": "Hauptstr. 1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = booked["id"].as_str().unwrap().to_owned();
    until_synced(&app, &tenant, &id, |s| all(s, "synced")).await;

    let jobber = |signature: &'static str, body: &'static str| {
        app.client
            .post(app.url("/api/webhooks/jobber"))
            .header("x-jobber-hmac-sha256", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let forged = r#"{"data":{"webHookEvent":{"topic":"VISIT_DESTROY","appId":"x","accountId":"y","itemId":"z","occurredAt":"2027-01-01T00:00:00Z"}}}"#;
    assert_error(jobber("bm90IHRoZSBzaWduYXR1cmU=", forged).await.unwrap(), 401, "invalid_credentials").await;
    let visit = sim.jobber_visits()[0].id.clone();
    sim.post_jobber_webhook("VISIT_UPDATE", &visit).await.unwrap();
    let view = until_synced(&app, &tenant, &id, |s| {
        s.iter().any(|x| x["remote_change"].as_str().is_some_and(|r| r.starts_with("VISIT_UPDATE")))
    })
    .await;
    assert!(view["sync"].to_string().contains("VISIT_UPDATE"));

    let channel = sim.google_channel_ids().pop().expect("a push channel");
    let push = app
        .client
        .post(app.url("/api/webhooks/google-calendar"))
        .header("x-goog-channel-id", &channel)
        .header("x-goog-channel-token", "guessed")
        .header("x-goog-resource-state", "exists")
        .header("x-goog-resource-id", "r")
        .header("x-goog-message-number", "7")
        .send()
        .await
        .unwrap();
    assert_error(push, 401, "invalid_credentials").await;
}
