#![allow(clippy::unwrap_used)]
//! The Jobber adapter against cpaas-sim's independent implementation of Jobber.

mod common;

use std::time::Duration;

use calendars::jobber::{WebhookError, verify_webhook};
use calendars::{
    CalendarEvent, Credentials, Customer, EventKey, Jobber, JobberConfig, JobberLink, PostalAddress, SyncError,
};
use chrono::{DateTime, Utc};
use common::{Receiver, count, credentials, unchanged};
use cpaas_sim::{FailureKind, FailureRule, JobberCost, SimConfig, SimHandle, Simulator, Vendor};

fn config(sim: &SimHandle) -> JobberConfig {
    let defaults = SimConfig::default();
    let mut config = JobberConfig::new(&defaults.jobber_client_id, &defaults.jobber_client_secret);
    config.graphql_url = format!("{}/api/graphql", sim.base_url());
    config.token_url = format!("{}/api/oauth/token", sim.base_url());
    config
}

async fn setup(sim_config: SimConfig) -> (SimHandle, Jobber, Credentials) {
    let sim = Simulator::start(sim_config).await.unwrap();
    let jobber = Jobber::new(config(&sim));
    let creds = credentials(&sim, Vendor::Jobber);
    (sim, jobber, creds)
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn appointment() -> CalendarEvent {
    CalendarEvent {
        key: EventKey::from_uuid(uuid::Uuid::new_v4()),
        title: "Furnace tune-up".to_owned(),
        description: Some("Bring filters".to_owned()),
        start: at("2030-10-21T14:00:00Z"),
        end: at("2030-10-21T15:30:00Z"),
        time_zone: "America/Chicago".to_owned(),
        location: None,
    }
}

fn customer() -> Customer {
    Customer {
        first_name: Some("Jo".to_owned()),
        last_name: Some("Rivera".to_owned()),
        phone: Some("+15125550100".to_owned()),
        address: Some(PostalAddress {
            street1: "12 Oak St".to_owned(),
            city: Some("Austin".to_owned()),
            ..PostalAddress::default()
        }),
        ..Customer::default()
    }
}

#[tokio::test]
async fn an_appointment_becomes_a_visit_that_moves_and_goes() {
    let (sim, jobber, mut creds) = setup(SimConfig::default()).await;
    let mut link = JobberLink::default();
    let mut event = appointment();
    unchanged(jobber.create(&mut creds, &mut link, &customer(), &event).await).unwrap();
    let visit = link.visit.clone().unwrap();
    assert!(link.client.is_some() && link.property.is_some() && link.job.is_some());
    let visits = sim.jobber_visits();
    assert_eq!((visits[0].id.as_str(), visits[0].start_at, visits[0].end_at), (visit.as_str(), event.start, event.end));

    event.start = at("2030-10-22T09:00:00Z");
    event.end = at("2030-10-22T10:00:00Z");
    unchanged(jobber.reschedule(&mut creds, &link, &event).await).unwrap();
    assert_eq!(sim.jobber_visits()[0].start_at, event.start);
    let times = unchanged(jobber.visit(&mut creds, &visit).await).unwrap().unwrap();
    assert_eq!((times.start, times.end), (event.start, event.end));

    // A second appointment of the same customer reuses Jobber's client and property.
    let mut second =
        JobberLink { client: link.client.clone(), property: link.property.clone(), ..JobberLink::default() };
    unchanged(jobber.create(&mut creds, &mut second, &customer(), &appointment()).await).unwrap();
    assert_eq!(sim.jobber_counts(), (1, 2), "one client, two jobs");

    unchanged(jobber.cancel(&mut creds, &mut link).await).unwrap();
    assert_eq!(link.visit, None);
    assert_eq!(sim.jobber_visits().len(), 1);
    assert_eq!(unchanged(jobber.visit(&mut creds, &visit).await).unwrap(), None);
    // A link that still names the deleted visit (say, its save was lost) cancels fine.
    let mut stale = JobberLink { visit: Some(visit), ..link.clone() };
    unchanged(jobber.cancel(&mut creds, &mut stale).await).unwrap();
    assert_eq!(count(&sim, "visitDelete"), 2);
    assert_eq!(count(&sim, "visit"), 3, "the refused delete was checked with a lookup");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_the_old_one_dies() {
    let (sim, jobber, mut creds) = setup(SimConfig::default()).await;
    let old = creds.clone();
    creds.access_expires_at = Utc::now() - chrono::Duration::seconds(1);
    let mut link = JobberLink::default();
    let outcome = jobber.create(&mut creds, &mut link, &customer(), &appointment()).await;
    assert!(outcome.credentials_changed);
    outcome.result.unwrap();
    assert_ne!(creds.refresh_token, old.refresh_token, "rotated");
    // The expiry comes from the JWT's `exp`: an hour ahead.
    assert!(creds.access_expires_at > Utc::now() + chrono::Duration::minutes(59));
    assert_eq!(count(&sim, "oauth.refresh"), 1, "one refresh serves all four requests");

    // Whoever still holds the old refresh token is locked out.
    let mut stale = Credentials { access_expires_at: Utc::now() - chrono::Duration::seconds(1), ..old };
    let refused = jobber.visit(&mut stale, link.visit.as_ref().unwrap()).await.result.unwrap_err();
    assert!(matches!(refused, SyncError::Unauthorized { .. }), "{refused:?}");

    // An access token Jobber stops accepting early: a 401, a refresh, a second try.
    sim.expire_access_tokens(Vendor::Jobber);
    let before = creds.refresh_token.clone();
    let outcome = jobber.visit(&mut creds, link.visit.as_ref().unwrap()).await;
    assert!(outcome.credentials_changed);
    assert!(outcome.result.unwrap().is_some());
    assert_ne!(creds.refresh_token, before);
}

#[tokio::test]
async fn throttling_says_when_to_come_back_and_create_resumes() {
    // 30 points restoring 10 a second: a client (12) and a property (12) fit, the job (15) not.
    let sim_config =
        SimConfig { jobber_cost: JobberCost { maximum_available: 30, restore_rate: 10 }, ..SimConfig::default() };
    let (sim, jobber, mut creds) = setup(sim_config).await;
    let mut link = JobberLink::default();
    let throttled = unchanged(jobber.create(&mut creds, &mut link, &customer(), &appointment()).await).unwrap_err();
    assert_eq!(
        throttled,
        SyncError::RateLimited { retry_after: Some(Duration::from_secs(1)) },
        "(15 - 6) / 10, rounded up"
    );
    assert!(link.client.is_some() && link.property.is_some() && link.job.is_none(), "progress kept: {link:?}");

    let mut attempts = 1;
    loop {
        let outcome = unchanged(jobber.create(&mut creds, &mut link, &customer(), &appointment()).await);
        match outcome {
            Ok(()) => break,
            Err(SyncError::RateLimited { retry_after: Some(wait) }) if attempts < 6 => {
                tokio::time::sleep(wait).await;
                attempts += 1;
            }
            Err(other) => panic!("unexpected {other:?} after {attempts} attempts"),
        }
    }
    assert_eq!(sim.jobber_counts(), (1, 1), "resumed, nothing made twice");
    assert_eq!(sim.jobber_visits().len(), 1);
    let throttled_requests = sim.ledger().iter().filter(|e| e.outcome == "error:THROTTLED").count();
    assert!(throttled_requests >= 1);

    // Having seen the budget empty, the adapter holds off by itself: nothing is sent.
    let mut event = appointment();
    let sent = sim.ledger().len();
    let mut outcomes = Vec::new();
    for hour in 0..4 {
        event.start = at(&format!("2030-10-23T0{hour}:00:00Z"));
        event.end = at(&format!("2030-10-23T0{hour}:30:00Z"));
        outcomes.push(unchanged(jobber.reschedule(&mut creds, &link, &event).await));
    }
    assert!(matches!(outcomes.last(), Some(Err(SyncError::RateLimited { retry_after: Some(_) }))), "{outcomes:?}");
    let refused_by_sim = sim.ledger()[sent..].iter().filter(|e| e.outcome == "error:THROTTLED").count();
    assert!(refused_by_sim <= 1, "the adapter stopped sending once it knew: {refused_by_sim}");
}

#[tokio::test]
async fn jobber_failures_are_retryable_or_rate_limited() {
    let (sim, jobber, mut creds) = setup(SimConfig::default()).await;
    let rule = |kind| FailureRule {
        provider: Some("jobber".into()),
        recipient: None,
        kind,
        probability: 1.0,
        remaining: Some(1),
    };
    let mut link = JobberLink::default();
    sim.add_failure(rule(FailureKind::ServerError));
    let failed = unchanged(jobber.create(&mut creds, &mut link, &customer(), &appointment()).await).unwrap_err();
    assert!(matches!(failed, SyncError::Retryable { .. }), "{failed:?}");
    assert_eq!(link, JobberLink::default());
    sim.add_failure(rule(FailureKind::RateLimited));
    let limited = unchanged(jobber.create(&mut creds, &mut link, &customer(), &appointment()).await).unwrap_err();
    assert!(matches!(limited, SyncError::RateLimited { .. }), "{limited:?}");
    unchanged(jobber.create(&mut creds, &mut link, &customer(), &appointment()).await).unwrap();

    let nowhere = Customer { address: None, ..customer() };
    let mut fresh = JobberLink::default();
    let refused = unchanged(jobber.create(&mut creds, &mut fresh, &nowhere, &appointment()).await).unwrap_err();
    assert!(matches!(refused, SyncError::Permanent { code, .. } if code == "address_required"));
}

#[tokio::test]
async fn webhooks_are_verified_before_they_are_read() {
    let receiver = Receiver::start().await;
    let sim_config = SimConfig {
        jobber_webhook_url: Some(format!("{}/api/webhooks/jobber", receiver.base)),
        ..SimConfig::default()
    };
    let (sim, jobber, mut creds) = setup(sim_config).await;
    let secret = SimConfig::default().jobber_client_secret;
    let mut link = JobberLink::default();
    unchanged(jobber.create(&mut creds, &mut link, &customer(), &appointment()).await).unwrap();

    let posted = &receiver.wait_for(1).await[0];
    assert_eq!(posted.path, "/api/webhooks/jobber");
    let signature = posted.headers.get("x-jobber-hmac-sha256").and_then(|v| v.to_str().ok());
    let webhook = verify_webhook(&posted.body, signature, &secret).unwrap();
    assert_eq!(webhook.topic, "VISIT_CREATE");
    assert_eq!(Some(&webhook.item_id), link.visit.as_ref());

    // Forged: a body changed after signing, or signed with another secret.
    let mut tampered = posted.body.to_vec();
    let at = tampered.iter().position(|b| *b == b'V').unwrap();
    tampered[at] = b'W';
    assert_eq!(verify_webhook(&tampered, signature, &secret), Err(WebhookError::BadSignature));
    assert_eq!(verify_webhook(&posted.body, signature, "not-the-secret"), Err(WebhookError::BadSignature));

    // On command, any topic.
    sim.post_jobber_webhook("APP_DISCONNECT", "MQ==").await.unwrap();
    let posted = &receiver.wait_for(2).await[1];
    let signature = posted.headers.get("x-jobber-hmac-sha256").and_then(|v| v.to_str().ok());
    assert_eq!(verify_webhook(&posted.body, signature, &secret).unwrap().topic, "APP_DISCONNECT");
}
