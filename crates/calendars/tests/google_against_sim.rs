#![allow(clippy::unwrap_used)]
//! The Google Calendar adapter against cpaas-sim's independent implementation of Google.

mod common;

use std::time::Duration;

use calendars::google::{KEY_PROPERTY, PushError, ResourceState, UnverifiedPush};
use calendars::{BusyTime, CalendarEvent, EventKey, GoogleCalendar, GoogleConfig, SyncError};
use chrono::{DateTime, Utc};
use common::{Receiver, count, credentials, unchanged};
use cpaas_sim::{FailureKind, FailureRule, SimConfig, SimHandle, Simulator, Vendor};
use serde_json::json;

const CALENDAR: &str = "ops@example.com";

async fn setup() -> (SimHandle, GoogleCalendar) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let google = GoogleCalendar::new(config(&sim));
    (sim, google)
}

fn config(sim: &SimHandle) -> GoogleConfig {
    let defaults = SimConfig::default();
    let mut config = GoogleConfig::new(&defaults.google_client_id, &defaults.google_client_secret, CALENDAR);
    config.api_base = sim.base_url();
    config.token_url = format!("{}/token", sim.base_url());
    config
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn appointment(title: &str) -> CalendarEvent {
    CalendarEvent {
        key: EventKey::from_uuid(uuid::Uuid::new_v4()),
        title: title.to_owned(),
        description: Some("Furnace tune-up".to_owned()),
        start: at("2030-10-21T14:00:00Z"),
        end: at("2030-10-21T15:30:00Z"),
        time_zone: "America/Chicago".to_owned(),
        location: Some("12 Oak St".to_owned()),
    }
}

fn failure(kind: FailureKind, remaining: u32) -> FailureRule {
    FailureRule { provider: Some("google".into()), recipient: None, kind, probability: 1.0, remaining: Some(remaining) }
}

fn user_event(start: &str, end: &str) -> serde_json::Value {
    json!({"summary": "Dentist", "start": {"dateTime": start}, "end": {"dateTime": end}})
}

#[tokio::test]
async fn insert_patch_and_delete_show_in_the_calendar() {
    let (sim, google) = setup().await;
    let mut creds = credentials(&sim, Vendor::Google);
    let mut event = appointment("Tune-up — J. Rivera");
    unchanged(google.insert(&mut creds, &event).await).unwrap();
    let stored = &sim.google_events(CALENDAR)[0];
    assert_eq!(stored["id"], event.key.as_str());
    assert_eq!(stored["summary"], "Tune-up — J. Rivera");
    assert_eq!(stored["start"], json!({"dateTime": "2030-10-21T14:00:00Z", "timeZone": "America/Chicago"}));
    assert_eq!(stored["extendedProperties"]["private"][KEY_PROPERTY], event.key.as_str());

    event.title = "Tune-up (moved)".to_owned();
    event.start = at("2030-10-22T09:00:00Z");
    event.end = at("2030-10-22T10:00:00Z");
    unchanged(google.update(&mut creds, &event).await).unwrap();
    let stored = &sim.google_events(CALENDAR)[0];
    assert_eq!(stored["summary"], "Tune-up (moved)");
    assert_eq!(stored["end"]["dateTime"], "2030-10-22T10:00:00Z");

    unchanged(google.delete(&mut creds, &event.key).await).unwrap();
    assert_eq!(sim.google_events(CALENDAR)[0]["status"], "cancelled");
    // Deleting again (410 deleted) and deleting what never existed (404) are both done.
    unchanged(google.delete(&mut creds, &event.key).await).unwrap();
    unchanged(google.delete(&mut creds, &EventKey::parse("neverinserted").unwrap()).await).unwrap();
    let missing = unchanged(google.update(&mut creds, &appointment("never inserted")).await).unwrap_err();
    assert!(matches!(missing, SyncError::Permanent { code, .. } if code == "notFound"));
}

#[tokio::test]
async fn an_insert_retried_after_a_lost_answer_is_done_once() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let mut config = config(&sim);
    config.timeout = Duration::from_millis(500);
    let google = GoogleCalendar::new(config);
    let mut creds = credentials(&sim, Vendor::Google);
    let event = appointment("Tune-up");
    sim.add_failure(failure(FailureKind::LostAnswer, 1));
    let lost = unchanged(google.insert(&mut creds, &event).await).unwrap_err();
    assert!(matches!(lost, SyncError::Retryable { .. }), "{lost:?}");
    assert_eq!(sim.google_events(CALENDAR).len(), 1, "the first attempt got through");
    unchanged(google.insert(&mut creds, &event).await).unwrap();
    assert_eq!(sim.google_events(CALENDAR).len(), 1);
    let outcomes: Vec<String> =
        sim.ledger().iter().filter(|e| e.operation == "events.insert").map(|e| e.outcome.clone()).collect();
    assert_eq!(outcomes, ["accepted:answer_lost", "error:duplicate"]);
}

#[tokio::test]
async fn incremental_sync_imports_the_users_events_and_their_deletion() {
    let (sim, google) = setup().await;
    let mut creds = credentials(&sim, Vendor::Google);
    unchanged(google.insert(&mut creds, &appointment("ours")).await).unwrap();
    let free = json!({"summary": "Lunch", "transparency": "transparent",
        "start": {"dateTime": "2030-10-21T12:00:00Z"}, "end": {"dateTime": "2030-10-21T13:00:00Z"}});
    sim.google_add_event(CALENDAR, free).unwrap();

    let full = unchanged(google.busy(&mut creds, None).await).unwrap();
    assert!(full.full_sync);
    assert!(full.busy.is_empty(), "our appointment and a free event are no busy times: {full:?}");

    let dentist =
        sim.google_add_event(CALENDAR, user_event("2030-10-21T16:00:00+02:00", "2030-10-21T17:00:00+02:00")).unwrap();
    let dentist_id = dentist["id"].as_str().unwrap().to_owned();
    let vacation = json!({"summary": "Vacation", "start": {"date": "2030-11-01"}, "end": {"date": "2030-11-08"}});
    sim.google_add_event(CALENDAR, vacation).unwrap();
    let changes = unchanged(google.busy(&mut creds, Some(&full.next_sync_token)).await).unwrap();
    assert!(!changes.full_sync);
    assert_eq!(changes.busy.len(), 2);
    let found = changes.busy.iter().find(|b| b.external_id == dentist_id).unwrap();
    assert_eq!(found.time, BusyTime::At { start: at("2030-10-21T14:00:00Z"), end: at("2030-10-21T15:00:00Z") });
    assert!(changes.busy.iter().any(|b| matches!(b.time, BusyTime::AllDay { .. })));

    sim.google_delete_event(CALENDAR, &dentist_id).unwrap();
    let changes = unchanged(google.busy(&mut creds, Some(&changes.next_sync_token)).await).unwrap();
    assert!(changes.busy.is_empty());
    assert_eq!(changes.removed, [dentist_id]);
    let quiet = unchanged(google.busy(&mut creds, Some(&changes.next_sync_token)).await).unwrap();
    assert!(quiet.busy.is_empty() && quiet.removed.is_empty());
}

#[tokio::test]
async fn a_sync_follows_every_page() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let mut config = config(&sim);
    config.page_size = 2;
    let google = GoogleCalendar::new(config);
    let mut creds = credentials(&sim, Vendor::Google);
    for hour in 10..15 {
        let event = user_event(&format!("2030-10-21T{hour}:00:00Z"), &format!("2030-10-21T{hour}:30:00Z"));
        sim.google_add_event(CALENDAR, event).unwrap();
    }
    let full = unchanged(google.busy(&mut creds, None).await).unwrap();
    assert_eq!(full.busy.len(), 5);
    assert_eq!(count(&sim, "events.list"), 3, "pages of 2, 2 and 1");
}

#[tokio::test]
async fn an_expired_sync_token_asks_for_a_full_sync() {
    let (sim, google) = setup().await;
    let mut creds = credentials(&sim, Vendor::Google);
    sim.google_add_event(CALENDAR, user_event("2030-10-21T10:00:00Z", "2030-10-21T11:00:00Z")).unwrap();
    let full = unchanged(google.busy(&mut creds, None).await).unwrap();
    sim.google_expire_sync_tokens(CALENDAR);
    let expired = unchanged(google.busy(&mut creds, Some(&full.next_sync_token)).await).unwrap_err();
    assert_eq!(expired, SyncError::SyncTokenExpired);
    let again = unchanged(google.busy(&mut creds, None).await).unwrap();
    assert!(again.full_sync);
    assert_eq!(again.busy.len(), 1);
}

#[tokio::test]
async fn access_tokens_are_refreshed_when_expired_or_refused() {
    let (sim, google) = setup().await;
    let mut creds = credentials(&sim, Vendor::Google);
    let refresh_token = creds.refresh_token.clone();

    // Expired by its stated time: refreshed before the request.
    creds.access_expires_at = Utc::now() - chrono::Duration::minutes(1);
    let outcome = google.busy(&mut creds, None).await;
    assert!(outcome.credentials_changed);
    outcome.result.unwrap();
    assert!(creds.access_expires_at > Utc::now() + chrono::Duration::minutes(50));
    assert_eq!(creds.refresh_token, refresh_token, "Google keeps the refresh token");

    // Expired early at Google (the stated time still ahead): a 401, a refresh, a second try.
    sim.expire_access_tokens(Vendor::Google);
    let before = creds.access_token.clone();
    let outcome = google.insert(&mut creds, &appointment("after 401")).await;
    assert!(outcome.credentials_changed);
    outcome.result.unwrap();
    assert_ne!(creds.access_token, before);
    let inserts: Vec<String> =
        sim.ledger().iter().filter(|e| e.operation == "events.insert").map(|e| e.outcome.clone()).collect();
    assert_eq!(inserts, ["error:authError", "accepted"]);

    // The operator revoked the grant: nothing to refresh with.
    sim.revoke_tokens(Vendor::Google);
    let revoked = google.busy(&mut creds, None).await.result.unwrap_err();
    assert!(
        matches!(revoked, SyncError::Unauthorized { ref reason } if reason.contains("expired or revoked")),
        "{revoked:?}"
    );
}

#[tokio::test]
async fn vendor_failures_are_retryable_or_rate_limited() {
    let (sim, google) = setup().await;
    let mut creds = credentials(&sim, Vendor::Google);
    sim.add_failure(failure(FailureKind::ServerError, 1));
    let failed = unchanged(google.insert(&mut creds, &appointment("x")).await).unwrap_err();
    assert!(matches!(failed, SyncError::Retryable { .. }), "{failed:?}");
    sim.add_failure(failure(FailureKind::RateLimited, 1));
    let limited = unchanged(google.busy(&mut creds, None).await).unwrap_err();
    assert!(matches!(limited, SyncError::RateLimited { .. }), "{limited:?}");
    unchanged(google.busy(&mut creds, None).await).unwrap();

    // Nobody listening at all.
    let mut config = config(&sim);
    config.api_base = "http://127.0.0.1:9".to_owned();
    let unreachable = unchanged(GoogleCalendar::new(config).busy(&mut creds, None).await).unwrap_err();
    assert!(
        matches!(unreachable, SyncError::Retryable { ref reason, .. } if reason.contains("no connection")),
        "{unreachable:?}"
    );
}

#[tokio::test]
async fn push_channels_notify_and_the_token_proves_them() {
    let (sim, google) = setup().await;
    let receiver = Receiver::start().await;
    let mut creds = credentials(&sim, Vendor::Google);
    let address = format!("{}/api/webhooks/google-calendar", receiver.base);
    let channel =
        unchanged(google.watch(&mut creds, "chan-1", &address, "s3cret-token", Duration::from_secs(3600)).await)
            .unwrap();
    assert_eq!(channel.id, "chan-1");
    assert!(channel.expires_at > Utc::now() + chrono::Duration::minutes(59));

    let sync = &receiver.wait_for(1).await[0];
    assert!(sync.body.is_empty());
    let push = UnverifiedPush::from_headers(&sync.headers).unwrap();
    assert_eq!(push.channel_id(), "chan-1");
    let push = push.verify("s3cret-token").unwrap();
    assert_eq!((push.state, push.message_number), (ResourceState::Sync, 1));
    assert_eq!(push.resource_id, channel.resource_id);

    sim.google_add_event(CALENDAR, user_event("2030-10-21T10:00:00Z", "2030-10-21T11:00:00Z")).unwrap();
    let change = &receiver.wait_for(2).await[1];
    let push = UnverifiedPush::from_headers(&change.headers).unwrap().verify("s3cret-token").unwrap();
    assert_eq!((push.state, push.message_number), (ResourceState::Exists, 2));
    let forged = UnverifiedPush::from_headers(&change.headers).unwrap();
    assert_eq!(forged.verify("another-token"), Err(PushError::BadToken));

    unchanged(google.stop(&mut creds, &channel).await).unwrap();
    assert!(sim.google_channel_ids().is_empty());
    unchanged(google.stop(&mut creds, &channel).await).unwrap();
    sim.google_add_event(CALENDAR, user_event("2030-10-22T10:00:00Z", "2030-10-22T11:00:00Z")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 2, "a stopped channel hears nothing more");
}
