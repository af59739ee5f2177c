#![allow(clippy::unwrap_used)]
//! Signed callbacks and inbound webhooks, recomputing every signature independently, plus
//! Embedded Signup, SES identity verification and automatic callbacks.

mod common;

use std::time::Duration;

use aws_lc_rs::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use cpaas_sim::{CallbackStatus, InboundSpec, SimConfig, SimHandle};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

fn expected_meta_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn expected_twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let data: String = std::iter::once(url.to_owned()).chain(sorted.into_iter().map(|(k, v)| k + &v)).collect();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Verifies an SNS Notification exactly as docs/providers/sns.md §4 describes.
fn verify_sns(sim: &SimHandle, notification: &Value) {
    assert_eq!(notification["SigningCertURL"], sim.sns_signing_cert_url());
    let mut string_to_sign = String::new();
    for key in ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"] {
        if let Some(value) = notification.get(key).and_then(Value::as_str) {
            string_to_sign.push_str(&format!("{key}\n{value}\n"));
        }
    }
    let pem = sim.sns_certificate_pem();
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let public_key = cert.public_key().subject_public_key.data.to_vec();
    let signature = BASE64.decode(notification["Signature"].as_str().unwrap()).unwrap();
    let algorithm = match notification["SignatureVersion"].as_str().unwrap() {
        "1" => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        "2" => &RSA_PKCS1_2048_8192_SHA256,
        other => panic!("SignatureVersion {other}"),
    };
    UnparsedPublicKey::new(algorithm, public_key)
        .verify(string_to_sign.as_bytes(), &signature)
        .expect("SNS signature verifies");
}

#[tokio::test]
async fn meta_status_callbacks_are_signed_and_shaped() {
    let (sim, receiver) = start_with_receiver(SimConfig::default()).await;
    let body: Value = meta_send(&sim, "+491512345678").await.json().await.unwrap();
    let id = body["messages"][0]["id"].as_str().unwrap();
    sim.post_status_callbacks(
        id,
        &[CallbackStatus::Sent, CallbackStatus::Delivered, CallbackStatus::Read, CallbackStatus::Failed],
    )
    .await
    .unwrap();
    let posts = receiver.posts();
    assert_eq!(posts.len(), 4);
    let mut statuses = Vec::new();
    for post in &posts {
        assert_eq!(post.path, "/api/webhooks/meta");
        assert_eq!(post.header("x-hub-signature-256"), expected_meta_signature("sim-meta-app-secret", &post.body));
        let json = post.json();
        assert_eq!(json["object"], "whatsapp_business_account");
        let value = &json["entry"][0]["changes"][0]["value"];
        assert_eq!(json["entry"][0]["changes"][0]["field"], "messages");
        assert_eq!(value["metadata"]["phone_number_id"], "1122334455667");
        let status = &value["statuses"][0];
        assert_eq!(status["id"], id);
        assert_eq!(status["recipient_id"], "491512345678");
        assert!(status["timestamp"].is_string());
        statuses.push(status["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses, ["sent", "delivered", "read", "failed"]);
    assert_eq!(posts[3].json()["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]["code"], 131026);
    assert!(sim.post_status_callbacks("wamid.unknown", &[CallbackStatus::Sent]).await.is_err());
}

#[tokio::test]
async fn meta_inbound_escapes_non_ascii_and_is_signed() {
    let (sim, receiver) =
        start_with_receiver(SimConfig { meta_app_secret: "s3cret".into(), ..SimConfig::default() }).await;
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "555".into(),
        from: "+49 151 2345678".into(),
        text: "Grüße".into(),
    })
    .await
    .unwrap();
    let post = &receiver.posts()[0];
    assert!(post.body.is_ascii(), "Meta escapes non-ASCII as \\uXXXX");
    assert_eq!(post.header("x-hub-signature-256"), expected_meta_signature("s3cret", &post.body));
    let value = &post.json()["entry"][0]["changes"][0]["value"];
    assert_eq!(value["messages"][0]["text"]["body"], "Grüße");
    assert_eq!(value["messages"][0]["from"], "491512345678");
    assert_eq!(value["contacts"][0]["wa_id"], "491512345678");
    assert!(value["contacts"][0]["profile"]["name"].is_string());
}

#[tokio::test]
async fn twilio_callbacks_and_inbound_are_signed_over_url_and_sorted_params() {
    let (sim, receiver) = start_with_receiver(SimConfig::default()).await;
    let body: Value = twilio_send(&sim, "+15558675310").await.json().await.unwrap();
    let sid = body["sid"].as_str().unwrap();
    sim.post_status_callbacks(sid, &[CallbackStatus::Sent, CallbackStatus::Delivered]).await.unwrap();
    sim.post_inbound(InboundSpec::Twilio {
        account_sid: TWILIO_SID.into(),
        from: "+15558675310".into(),
        to: "+15005550006".into(),
        body: "STOP".into(),
    })
    .await
    .unwrap();
    sim.post_inbound(InboundSpec::TwilioMissedCall {
        account_sid: TWILIO_SID.into(),
        from: "+15558675310".into(),
        to: "+15005550006".into(),
        call_status: "no-answer".into(),
    })
    .await
    .unwrap();
    let posts = receiver.posts();
    assert_eq!(posts.len(), 4);
    for post in &posts {
        let url = format!("{}{}", receiver.base, post.path);
        assert_eq!(
            post.header("x-twilio-signature"),
            expected_twilio_signature("sim-twilio-auth-token", &url, &post.form()),
            "{url}"
        );
        assert_eq!(post.header("content-type"), "application/x-www-form-urlencoded");
    }
    assert_eq!(posts[0].path, format!("/api/webhooks/twilio/{TWILIO_SID}/status"));
    let sent = posts[0].form_map();
    assert_eq!(
        (sent["MessageSid"].as_str(), sent["MessageStatus"].as_str(), sent["SmsStatus"].as_str()),
        (sid, "sent", "sent")
    );
    assert_eq!(sent["AccountSid"], TWILIO_SID);
    assert_eq!(sent["ApiVersion"], "2010-04-01");
    assert_eq!(posts[1].form_map()["MessageStatus"], "delivered");
    assert_eq!(posts[2].path, format!("/api/webhooks/twilio/{TWILIO_SID}/inbound"));
    let inbound = posts[2].form_map();
    assert_eq!((inbound["Body"].as_str(), inbound["SmsStatus"].as_str()), ("STOP", "received"));
    assert_eq!(inbound["MessageSid"], inbound["SmsSid"]);
    assert_eq!(inbound["FromCity"], "", "empty geo fields are sent and signed");
    assert_eq!(posts[3].path, format!("/api/webhooks/twilio/{TWILIO_SID}/voice"));
    assert_eq!(posts[3].form_map()["CallStatus"], "no-answer");
}

#[tokio::test]
async fn twilio_status_callback_url_from_the_message_wins() {
    let (sim, receiver) = start_with_receiver(SimConfig::default()).await;
    let callback = format!("{}/custom/cb?x=1", receiver.base);
    let body: Value = client()
        .post(format!("{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", sim.base_url()))
        .basic_auth(TWILIO_SID, Some("sim-twilio-auth-token"))
        .form(&[
            ("To", "+15558675310"),
            ("MessagingServiceSid", "MG0123"),
            ("Body", "x"),
            ("StatusCallback", callback.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "accepted");
    sim.post_status_callbacks(body["sid"].as_str().unwrap(), &[CallbackStatus::Failed]).await.unwrap();
    let post = &receiver.posts()[0];
    assert_eq!((post.path.as_str(), post.query.as_deref()), ("/custom/cb", Some("x=1")));
    assert_eq!(
        post.header("x-twilio-signature"),
        expected_twilio_signature("sim-twilio-auth-token", &callback, &post.form())
    );
    let form = post.form_map();
    assert_eq!((form["MessageStatus"].as_str(), form["ErrorCode"].as_str()), ("failed", "30008"));
    assert_eq!(form["MessagingServiceSid"], "MG0123");
}

async fn ses_events_signed_with(version: u8) {
    let (sim, receiver) =
        start_with_receiver(SimConfig { sns_signature_version: version, ..SimConfig::default() }).await;
    let id = ses_send(&sim, "user@example.org").await.json::<Value>().await.unwrap()["MessageId"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.post_status_callbacks(
        &id,
        &[CallbackStatus::Sent, CallbackStatus::Delivered, CallbackStatus::Bounce, CallbackStatus::Complaint],
    )
    .await
    .unwrap();
    let posts = receiver.posts();
    assert_eq!(posts.len(), 4);
    let mut types = Vec::new();
    for post in &posts {
        assert_eq!(post.path, "/api/webhooks/aws/sns");
        assert_eq!(post.header("x-amz-sns-message-type"), "Notification");
        let notification = post.json();
        assert_eq!(post.header("x-amz-sns-message-id"), notification["MessageId"].as_str().unwrap());
        assert_eq!(post.header("x-amz-sns-topic-arn"), notification["TopicArn"].as_str().unwrap());
        assert!(notification["TopicArn"].as_str().unwrap().starts_with("arn:aws:sns:eu-central-1:"));
        assert_eq!(notification["SignatureVersion"], version.to_string());
        assert!(notification["UnsubscribeURL"].is_string());
        verify_sns(&sim, &notification);
        let event: Value = serde_json::from_str(notification["Message"].as_str().unwrap()).unwrap();
        assert_eq!(event["mail"]["messageId"], id.as_str());
        assert_eq!(event["mail"]["destination"][0], "user@example.org");
        assert_eq!(event["mail"]["tags"]["tenant"][0], "t_42");
        types.push(event["eventType"].as_str().unwrap().to_owned());
    }
    assert_eq!(types, ["Send", "Delivery", "Bounce", "Complaint"]);
    let bounce: Value = serde_json::from_str(posts[2].json()["Message"].as_str().unwrap()).unwrap();
    assert_eq!(bounce["bounce"]["bounceType"], "Permanent");
    assert_eq!(bounce["bounce"]["bouncedRecipients"][0]["emailAddress"], "user@example.org");

    // Inbound mail: a Received notification carrying the raw MIME.
    sim.post_inbound(InboundSpec::SesInbound {
        from: "ann@example.org".into(),
        to: "support@example.com".into(),
        subject: "Help".into(),
        text: "Hi there".into(),
        in_reply_to: None,
    })
    .await
    .unwrap();
    let notification = receiver.posts()[4].json();
    verify_sns(&sim, &notification);
    let received: Value = serde_json::from_str(notification["Message"].as_str().unwrap()).unwrap();
    assert_eq!(received["notificationType"], "Received");
    assert_eq!(received["receipt"]["recipients"][0], "support@example.com");
    let content = received["content"].as_str().unwrap();
    assert!(
        content.contains("From: ann@example.org\r\n")
            && content.contains("Subject: Help\r\n")
            && content.ends_with("\r\n\r\nHi there\r\n"),
        "{content}"
    );
}

#[tokio::test]
async fn ses_events_via_sns_verify_with_signature_version_1() {
    ses_events_signed_with(1).await;
}

#[tokio::test]
async fn ses_events_via_sns_verify_with_signature_version_2() {
    ses_events_signed_with(2).await;
}

#[tokio::test]
async fn sns_sms_has_no_http_status_callbacks() {
    let (sim, _receiver) = start_with_receiver(SimConfig::default()).await;
    sns_publish(&sim, "+4915112345678").await;
    let id = sim.ledger()[0].provider_message_id.clone().unwrap();
    let error = sim.post_status_callbacks(&id, &[CallbackStatus::Delivered]).await.unwrap_err();
    assert!(error.to_string().contains("CloudWatch"), "{error}");
}

#[tokio::test]
async fn embedded_signup_with_override_callback_handshake() {
    let (sim, receiver) = start_with_receiver(SimConfig::default()).await;
    let base = sim.base_url();
    let token: Value = client()
        .get(format!("{base}/v21.0/oauth/access_token?client_id=app&client_secret=sec&code=abc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let invalid = client()
        .get(format!("{base}/v21.0/oauth/access_token?client_id=app&client_secret=sec&code=invalid"))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    assert_eq!(invalid.json::<Value>().await.unwrap()["error"]["type"], "OAuthException");

    let registered: Value = client()
        .post(format!("{base}/v21.0/777000/register"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"messaging_product": "whatsapp", "pin": "123456"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(registered["success"], true);

    // A verify token the receiver refuses: the subscribe call fails and nothing is stored.
    let override_uri = format!("{}/hooks/waba-1", receiver.base);
    let refused = client()
        .post(format!("{base}/v21.0/424242/subscribed_apps"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"override_callback_uri": override_uri, "verify_token": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], 2200);

    let accepted = client()
        .post(format!("{base}/v21.0/424242/subscribed_apps"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"override_callback_uri": override_uri, "verify_token": "good-token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    assert_eq!(accepted.json::<Value>().await.unwrap()["success"], true);
    let handshake = receiver.all().into_iter().filter(|c| c.method == "GET").last().unwrap();
    let query: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(handshake.query.as_deref().unwrap()).unwrap();
    assert_eq!(query["hub.mode"], "subscribe");
    assert!(!query["hub.challenge"].is_empty());

    let phone: Value = client()
        .get(format!(
            "{base}/v21.0/777000?fields=display_phone_number,verified_name,quality_rating,messaging_limit_tier"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (phone["id"].as_str(), phone["quality_rating"].as_str(), phone["messaging_limit_tier"].as_str()),
        (Some("777000"), Some("GREEN"), Some("TIER_1K"))
    );
    assert!(phone["display_phone_number"].as_str().unwrap().starts_with('+'));

    // Webhooks for the registered number now go to the WABA's override, with the WABA id.
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "777000".into(),
        from: "4915112345678".into(),
        text: "hi".into(),
    })
    .await
    .unwrap();
    let post = receiver.posts().pop().unwrap();
    assert_eq!(post.path, "/hooks/waba-1");
    assert_eq!(post.json()["entry"][0]["id"], "424242");

    let operations: Vec<(String, String)> = sim.ledger().into_iter().map(|e| (e.operation, e.outcome)).collect();
    let expected = [
        ("exchange_code", "accepted"),
        ("exchange_code", "error:100"),
        ("register_phone", "accepted"),
        ("subscribe_app", "error:2200"),
        ("subscribe_app", "accepted"),
        ("get_phone_number", "accepted"),
    ];
    assert_eq!(operations, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
}

#[tokio::test]
async fn ses_identity_is_pending_on_first_read_then_verified() {
    let sim = cpaas_sim::Simulator::start(SimConfig::default()).await.unwrap();
    let base = sim.base_url();
    let created: Value = client()
        .post(format!("{base}/v2/email/identities"))
        .header("authorization", "x")
        .json(&serde_json::json!({"EmailIdentity": "example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["IdentityType"], "DOMAIN");
    assert_eq!(created["VerifiedForSendingStatus"], false);
    assert_eq!(created["DkimAttributes"]["Status"], "PENDING");
    assert_eq!(created["DkimAttributes"]["Tokens"].as_array().unwrap().len(), 3);
    let get = || client().get(format!("{base}/v2/email/identities/example.com")).header("authorization", "x").send();
    let first: Value = get().await.unwrap().json().await.unwrap();
    assert_eq!(
        (first["VerifiedForSendingStatus"].as_bool(), first["DkimAttributes"]["Status"].as_str()),
        (Some(false), Some("PENDING"))
    );
    let second: Value = get().await.unwrap().json().await.unwrap();
    assert_eq!(
        (second["VerifiedForSendingStatus"].as_bool(), second["DkimAttributes"]["Status"].as_str()),
        (Some(true), Some("SUCCESS"))
    );
    assert_eq!(second["DkimAttributes"]["Tokens"], created["DkimAttributes"]["Tokens"]);

    let again = client()
        .post(format!("{base}/v2/email/identities"))
        .header("authorization", "x")
        .json(&serde_json::json!({"EmailIdentity": "example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["x-amzn-errortype"], "AlreadyExistsException");
    let unknown = client()
        .get(format!("{base}/v2/email/identities/nope.example"))
        .header("authorization", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.headers()["x-amzn-errortype"], "NotFoundException");
}

#[tokio::test]
async fn auto_callbacks_follow_each_accepted_send() {
    let config = SimConfig { auto_callbacks: Some(Duration::from_millis(30)), ..SimConfig::default() };
    let (sim, receiver) = start_with_receiver(config).await;
    meta_send(&sim, "+491512345678").await;
    let posts = receiver.wait_for_posts(3).await;
    let statuses: Vec<String> = posts
        .iter()
        .map(|p| p.json()["entry"][0]["changes"][0]["value"]["statuses"][0]["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["sent", "delivered", "read"]);

    twilio_send(&sim, "+15558675310").await;
    let posts = receiver.wait_for_posts(5).await;
    let twilio: Vec<String> = posts[3..].iter().map(|p| p.form_map()["MessageStatus"].clone()).collect();
    assert_eq!(twilio, ["sent", "delivered"]);

    ses_send(&sim, "user@example.org").await;
    let posts = receiver.wait_for_posts(7).await;
    let ses: Vec<String> = posts[5..]
        .iter()
        .map(|p| {
            serde_json::from_str::<Value>(p.json()["Message"].as_str().unwrap()).unwrap()["eventType"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ses, ["Send", "Delivery"]);

    // An undeliverable Twilio send ends in `undelivered` with 30003.
    sim.add_failure(cpaas_sim::FailureRule {
        provider: Some("twilio".into()),
        recipient: None,
        kind: cpaas_sim::FailureKind::Undeliverable,
        probability: 1.0,
        remaining: Some(1),
    });
    twilio_send(&sim, "+15558675310").await;
    let posts = receiver.wait_for_posts(9).await;
    let last = posts[8].form_map();
    assert_eq!((last["MessageStatus"].as_str(), last["ErrorCode"].as_str()), ("undelivered", "30003"));
}
