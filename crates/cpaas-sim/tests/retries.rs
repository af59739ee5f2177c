#![allow(clippy::unwrap_used)]
//! Webhook retries, per provider: Meta backs off and keeps trying, SNS follows its delivery
//! policy (never retrying a 4xx), Twilio retries only as its connection overrides say.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use cpaas_sim::{CallbackStatus, InboundSpec, SimConfig, SnsBackoff, SnsDeliveryPolicy, WebhookAttempt};
use serde_json::Value;

fn fast_meta() -> SimConfig {
    SimConfig {
        meta_retry_base: Duration::from_millis(50),
        meta_retry_max_delay: Duration::from_millis(100),
        meta_retry_window: Duration::from_secs(5),
        ..SimConfig::default()
    }
}

fn fast_sns(num_retries: u32) -> SimConfig {
    SimConfig {
        sns_delivery_policy: SnsDeliveryPolicy {
            num_retries,
            min_delay: Duration::from_millis(30),
            max_delay: Duration::from_millis(60),
            backoff: SnsBackoff::Linear,
        },
        ..SimConfig::default()
    }
}

fn outcomes(log: &[WebhookAttempt]) -> Vec<(u32, String, Option<u64>)> {
    log.iter().map(|a| (a.attempt, a.outcome.clone(), a.retry_in_ms)).collect()
}

#[tokio::test]
async fn meta_redelivers_the_same_webhook_with_growing_waits() {
    let (sim, receiver) = start_with_receiver(fast_meta()).await;
    let id = meta_send(&sim, "+491512345678").await.json::<Value>().await.unwrap()["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    receiver.refuse_next(3, StatusCode::INTERNAL_SERVER_ERROR);

    // The caller still sees the refusal; the sim keeps trying behind its back.
    let error = sim.post_status_callbacks(&id, &[CallbackStatus::Sent]).await.unwrap_err();
    assert!(error.to_string().contains("500"), "{error}");
    let posts = receiver.wait_for_posts(4).await;
    wait_for_retries(&sim).await;

    assert!(posts.iter().all(|p| p.body == posts[0].body), "a redelivery carries the same body");
    assert!(posts.iter().all(|p| p.header("x-hub-signature-256") == posts[0].header("x-hub-signature-256")));
    let log = sim.webhook_log();
    assert_eq!(
        outcomes(&log),
        [
            (1, "http 500".to_owned(), Some(50)),
            (2, "http 500".to_owned(), Some(100)),
            (3, "http 500".to_owned(), Some(100)),
            (4, "delivered".to_owned(), None),
        ]
    );
    assert!(log.iter().all(|a| a.provider == "meta" && a.delivery == log[0].delivery));
    assert!(log[0].url.ends_with("/api/webhooks/meta"));
    let gap = log[2].at - log[1].at;
    assert!(gap >= chrono::Duration::milliseconds(100), "waited {gap}");
}

#[tokio::test]
async fn meta_gives_up_when_its_window_closes() {
    let config = SimConfig {
        meta_retry_base: Duration::from_millis(20),
        meta_retry_max_delay: Duration::from_millis(40),
        meta_retry_window: Duration::from_millis(200),
        ..SimConfig::default()
    };
    let (sim, receiver) = start_with_receiver(config).await;
    receiver.refuse_next(100, StatusCode::SERVICE_UNAVAILABLE);
    let inbound = InboundSpec::Meta { phone_number_id: "555".into(), from: "+4915112345678".into(), text: "hi".into() };
    sim.post_inbound(inbound).await.unwrap_err();
    wait_for_retries(&sim).await;
    let log = sim.webhook_log();
    // 20, 40, 40, 40, … ms apart until 200 ms after the first attempt.
    assert!((4..=7).contains(&log.len()), "{log:#?}");
    assert_eq!(log.last().unwrap().retry_in_ms, None);
    assert_eq!(receiver.posts().len(), log.len());
}

#[tokio::test]
async fn a_receiver_that_comes_back_after_an_outage_gets_meta_webhooks() {
    let address = closed_address();
    let config = SimConfig { webhook_base: Some(format!("http://{address}")), ..fast_meta() };
    let sim = cpaas_sim::Simulator::start(config).await.unwrap();
    let inbound = InboundSpec::Meta { phone_number_id: "555".into(), from: "+4915112345678".into(), text: "hi".into() };
    let error = sim.post_inbound(inbound).await.unwrap_err();
    assert!(error.to_string().contains("failed"), "{error}");
    assert!(sim.webhook_log()[0].outcome.starts_with("error: connect"), "{:?}", sim.webhook_log());

    let receiver = Receiver::start_on(&address).await;
    let posts = receiver.wait_for_posts(1).await;
    assert_eq!(posts[0].json()["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"], "hi");
    wait_for_retries(&sim).await;
    assert_eq!(sim.webhook_log().last().unwrap().outcome, "delivered");
}

#[tokio::test]
async fn sns_retries_server_errors_with_the_same_message_id() {
    let (sim, receiver) = start_with_receiver(fast_sns(3)).await;
    let id = ses_send(&sim, "user@example.org").await.json::<Value>().await.unwrap()["MessageId"]
        .as_str()
        .unwrap()
        .to_owned();
    receiver.refuse_next(2, StatusCode::BAD_GATEWAY);
    sim.post_status_callbacks(&id, &[CallbackStatus::Delivered]).await.unwrap_err();
    let posts = receiver.wait_for_posts(3).await;
    wait_for_retries(&sim).await;
    let message_id = posts[0].header("x-amz-sns-message-id");
    assert!(posts.iter().all(|p| p.header("x-amz-sns-message-id") == message_id && p.body == posts[0].body));
    assert_eq!(posts[0].json()["MessageId"], message_id.as_str());
    assert_eq!(
        outcomes(&sim.webhook_log()),
        [(1, "http 502".to_owned(), Some(30)), (2, "http 502".to_owned(), Some(45)), (3, "delivered".to_owned(), None)]
    );
}

#[tokio::test]
async fn sns_treats_a_client_error_as_final_and_stops_after_its_retries() {
    let (sim, receiver) = start_with_receiver(fast_sns(2)).await;
    receiver.refuse_next(1, StatusCode::FORBIDDEN);
    let error = sim.post_sns_notification(&SimConfig::default().ses_events_topic_arn(), "x").await.unwrap_err();
    assert!(error.to_string().contains("403") && error.to_string().contains("refused"), "{error}");
    assert_eq!(outcomes(&sim.webhook_log()), [(1, "http 403".to_owned(), None)]);
    assert_eq!(sim.pending_webhook_retries(), 0);

    receiver.refuse_next(10, StatusCode::INTERNAL_SERVER_ERROR);
    sim.clear_webhook_log();
    sim.post_sns_notification(&SimConfig::default().ses_events_topic_arn(), "y").await.unwrap_err();
    wait_for_retries(&sim).await;
    let log = outcomes(&sim.webhook_log());
    assert_eq!(log.len(), 3, "the first attempt and two retries: {log:?}");
    assert_eq!(log[2].2, None);
}

#[tokio::test]
async fn twilio_without_overrides_retries_only_a_failed_connection_once() {
    let (sim, receiver) = start_with_receiver(SimConfig::default()).await;
    let sid =
        twilio_send(&sim, "+15558675310").await.json::<Value>().await.unwrap()["sid"].as_str().unwrap().to_owned();
    receiver.refuse_next(1, StatusCode::INTERNAL_SERVER_ERROR);
    sim.post_status_callbacks(&sid, &[CallbackStatus::Sent]).await.unwrap_err();
    assert_eq!(outcomes(&sim.webhook_log()), [(1, "http 500".to_owned(), None)]);

    // Nobody listening: Twilio's default (rc=1, rp=ct) tries once more at once.
    sim.clear_webhook_log();
    let callback = format!("http://{}/status", closed_address());
    let sid = twilio_send_with_callback(&sim, &callback).await;
    sim.post_status_callbacks(&sid, &[CallbackStatus::Sent]).await.unwrap_err();
    wait_for_retries(&sim).await;
    let log = sim.webhook_log();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(log.iter().all(|a| a.outcome.starts_with("error: connect")), "{log:#?}");
    assert_eq!((log[0].retry_in_ms, log[1].retry_in_ms), (Some(0), None));
}

#[tokio::test]
async fn twilio_retries_as_the_connection_override_fragment_says() {
    let (sim, receiver) = start_with_receiver(SimConfig::default()).await;
    let callback = format!("{}/cb?x=1#rc=3&rp=5xx,ct", receiver.base);
    let sid = twilio_send_with_callback(&sim, &callback).await;
    receiver.refuse_next(2, StatusCode::SERVICE_UNAVAILABLE);
    sim.post_status_callbacks(&sid, &[CallbackStatus::Delivered]).await.unwrap_err();
    let posts = receiver.wait_for_posts(3).await;
    wait_for_retries(&sim).await;

    let wire_url = format!("{}/cb?x=1", receiver.base);
    for post in &posts {
        assert_eq!((post.path.as_str(), post.query.as_deref()), ("/cb", Some("x=1")), "the fragment is not sent");
        assert_eq!(post.header("x-twilio-signature"), twilio_signature(&wire_url, &post.form()));
        assert_eq!(post.header("i-twilio-idempotency-token"), posts[0].header("i-twilio-idempotency-token"));
    }
    let log = sim.webhook_log();
    assert_eq!(
        outcomes(&log),
        [(1, "http 503".to_owned(), Some(0)), (2, "http 503".to_owned(), Some(0)), (3, "delivered".to_owned(), None)]
    );
    assert_eq!(log[0].url, wire_url);

    // A 4xx is not in `rp=5xx,ct`: no retry.
    receiver.refuse_next(1, StatusCode::NOT_FOUND);
    sim.clear_webhook_log();
    sim.post_status_callbacks(&sid, &[CallbackStatus::Read]).await.unwrap_err();
    assert_eq!(outcomes(&sim.webhook_log()), [(1, "http 404".to_owned(), None)]);
}

#[tokio::test]
async fn the_webhook_log_is_served_and_cleared_over_http() {
    let (sim, receiver) = start_with_receiver(SimConfig::default()).await;
    receiver.refuse_next(1, StatusCode::FORBIDDEN);
    sim.post_sns_notification(&SimConfig::default().ses_inbound_topic_arn(), "x").await.unwrap_err();
    let url = format!("{}/sim/webhooks", sim.base_url());
    let log: Vec<Value> = client().get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0]["provider"].as_str(), log[0]["attempt"].as_u64()), (Some("sns"), Some(1)));
    assert_eq!(log[0]["outcome"], "http 403");
    assert!(log[0]["url"].as_str().unwrap().ends_with("/api/webhooks/aws/sns"));
    assert!(log[0]["seq"].is_u64() && log[0]["at"].is_string() && log[0]["retry_in_ms"].is_null());
    assert_eq!(client().delete(&url).send().await.unwrap().status(), 204);
    assert!(sim.webhook_log().is_empty());
}

async fn twilio_send_with_callback(sim: &cpaas_sim::SimHandle, callback: &str) -> String {
    let body: Value = client()
        .post(format!("{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", sim.base_url()))
        .basic_auth(TWILIO_SID, Some("sim-twilio-auth-token"))
        .form(&[("To", "+15558675310"), ("From", "+15005550006"), ("Body", "x"), ("StatusCallback", callback)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["sid"].as_str().unwrap().to_owned()
}

fn twilio_signature(url: &str, params: &[(String, String)]) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let mut sorted = params.to_vec();
    sorted.sort();
    let data: String = std::iter::once(url.to_owned()).chain(sorted.into_iter().map(|(k, v)| k + &v)).collect();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"sim-twilio-auth-token").unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}
