//! SNS signature verification: v1 (recorded fixtures, pinned certificate), v2 (key generated
//! here), the certificate URL policy, and fetching + caching over HTTP.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use cpaas::webhooks::WebhookError;
use cpaas::webhooks::sns::{SnsMessage, SnsMessageType, SnsTrust, SnsVerifier};

const AWS_CERT_URL: &str = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-test.pem";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/sns/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn v1_cert() -> String {
    String::from_utf8(fixture("v1_cert.pem")).unwrap()
}

/// A throwaway RSA key and its self-signed certificate, made once per test binary.
struct TestSigner {
    key: RsaKeyPair,
    cert_pem: String,
}

fn signer() -> &'static TestSigner {
    static SIGNER: OnceLock<TestSigner> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let key_pair = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["sns.test.invalid".to_owned()]).unwrap().self_signed(&key_pair).unwrap();
        TestSigner { key: RsaKeyPair::from_pkcs8(&key_pair.serialize_der()).unwrap(), cert_pem: cert.pem() }
    })
}

/// Signs with SignatureVersion 2 (SHA256withRSA).
fn sign_v2(message: &mut SnsMessage) {
    message.signature_version = "2".to_owned();
    let key = &signer().key;
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message.string_to_sign().as_bytes(), &mut signature).unwrap();
    message.signature = base64::engine::general_purpose::STANDARD.encode(signature);
}

fn notification(cert_url: &str) -> SnsMessage {
    let mut message = SnsMessage {
        message_type: SnsMessageType::Notification,
        message_id: "4d4dc071-ddbf-465d-bba8-08f81c89da64".into(),
        token: None,
        topic_arn: "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P".into(),
        subject: Some("My subject".into()),
        message: "{\"eventType\":\"Send\"}\nwith a newline".into(),
        timestamp: "2012-06-05T04:37:04.321Z".into(),
        signature_version: String::new(),
        signature: String::new(),
        signing_cert_url: cert_url.into(),
        subscribe_url: None,
        unsubscribe_url: Some("https://sns.us-east-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x".into()),
    };
    sign_v2(&mut message);
    message
}

fn pinned_v2() -> SnsVerifier {
    SnsVerifier::new(SnsTrust::aws().with_pinned_certificate(AWS_CERT_URL, signer().cert_pem.clone())).unwrap()
}

fn pinned_v1() -> SnsVerifier {
    SnsVerifier::new(SnsTrust::aws().with_pinned_certificate(AWS_CERT_URL, v1_cert())).unwrap()
}

#[test]
fn string_to_sign_matches_the_documented_example() {
    let mut message = notification(AWS_CERT_URL);
    message.message = "My Test Message".into();
    assert_eq!(
        message.string_to_sign(),
        "Message\nMy Test Message\nMessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\nSubject\nMy subject\nTimestamp\n2012-06-05T04:37:04.321Z\nTopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\nType\nNotification\n"
    );
    message.subject = None;
    assert!(!message.string_to_sign().contains("Subject"));
}

#[tokio::test]
async fn v1_notification_and_subscription_confirmation_verify() {
    let verifier = pinned_v1();
    let notification = verifier.verify_body(&fixture("v1_notification.json")).await.unwrap();
    assert!(notification.is_notification());
    assert!(notification.message.contains('\n'), "JSON escapes are unescaped before signing");
    assert_eq!(verifier.confirmation_url(&notification).unwrap(), None);

    let confirmation = verifier.verify_body(&fixture("v1_subscription_confirmation.json")).await.unwrap();
    assert!(confirmation.is_subscription_confirmation());
    let url = verifier.confirmation_url(&confirmation).unwrap().unwrap();
    assert_eq!(url.host_str(), Some("sns.us-west-2.amazonaws.com"));
    assert_eq!(url.query_pairs().find(|(k, _)| k == "Action").unwrap().1, "ConfirmSubscription");
}

#[tokio::test]
async fn v1_tampering_is_detected() {
    let verifier = pinned_v1();
    for tamper in [
        |m: &mut SnsMessage| m.message.push('!'),
        |m: &mut SnsMessage| m.subject = None,
        |m: &mut SnsMessage| m.topic_arn = "arn:aws:sns:us-west-2:123456789012:Other".into(),
        |m: &mut SnsMessage| m.timestamp = "2012-05-02T00:54:06.656Z".into(),
        |m: &mut SnsMessage| m.message_type = SnsMessageType::SubscriptionConfirmation,
        // Same key, other algorithm: a v1 signature is not a v2 signature.
        |m: &mut SnsMessage| m.signature_version = "2".into(),
    ] {
        let mut message = SnsMessage::from_json(&fixture("v1_notification.json")).unwrap();
        tamper(&mut message);
        assert_eq!(verifier.verify(&message).await, Err(WebhookError::BadSignature));
    }
    let mut confirmation = SnsMessage::from_json(&fixture("v1_subscription_confirmation.json")).unwrap();
    confirmation.subscribe_url =
        Some("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=evil".into());
    assert_eq!(verifier.verify(&confirmation).await, Err(WebhookError::BadSignature));
}

#[tokio::test]
async fn v2_notification_with_and_without_subject_verifies() {
    let verifier = pinned_v2();
    let mut message = notification(AWS_CERT_URL);
    verifier.verify(&message).await.unwrap();
    message.subject = None;
    assert_eq!(verifier.verify(&message).await, Err(WebhookError::BadSignature));
    sign_v2(&mut message);
    verifier.verify(&message).await.unwrap();
    // Round trip through the wire format.
    let body = serde_json::to_vec(&message).unwrap();
    assert_eq!(verifier.verify_body(&body).await.unwrap(), message);
}

#[tokio::test]
async fn v2_unsubscribe_confirmation_verifies() {
    let verifier = pinned_v2();
    let mut message = notification(AWS_CERT_URL);
    message.message_type = SnsMessageType::UnsubscribeConfirmation;
    message.subject = None;
    message.token = Some("2336412f37fb".into());
    message.subscribe_url =
        Some("https://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37fb".into());
    sign_v2(&mut message);
    verifier.verify(&message).await.unwrap();
    assert!(message.is_unsubscribe_confirmation());
    assert_eq!(verifier.confirmation_url(&message).unwrap(), None, "only subscriptions are confirmed");
    message.token = Some("other".into());
    assert_eq!(verifier.verify(&message).await, Err(WebhookError::BadSignature));
}

#[tokio::test]
async fn wrong_certificate_unknown_version_and_missing_signature_are_rejected() {
    // Signed by the generated key, checked against the fixture's certificate.
    let message = notification(AWS_CERT_URL);
    assert_eq!(pinned_v1().verify(&message).await, Err(WebhookError::BadSignature));

    let mut unknown = message.clone();
    unknown.signature_version = "3".into();
    assert_eq!(pinned_v2().verify(&unknown).await, Err(WebhookError::UnsupportedSignatureVersion("3".into())));
    assert_eq!(WebhookError::UnsupportedSignatureVersion("3".into()).http_status(), 403);

    let mut missing = message.clone();
    missing.signature = String::new();
    assert_eq!(pinned_v2().verify(&missing).await, Err(WebhookError::MissingSignature));
    let mut garbage = message;
    garbage.signature = "not base64!".into();
    assert_eq!(pinned_v2().verify(&garbage).await, Err(WebhookError::BadSignature));
}

#[tokio::test]
async fn untrusted_certificate_urls_are_refused_before_fetching() {
    let verifier = SnsVerifier::new(SnsTrust::aws()).unwrap();
    for url in [
        "https://sns.us-west-2.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.us-west-2.amazonaws.com/cert.pem",
        "http://sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.us-west-2.amazonaws.com:8443/cert.pem",
        "https://sns.us-west-2.amazonaws.com/cert.txt",
        "https://sns.us-west-2.amazonaws.com/cert.pem?x=1",
        "https://user@sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.amazonaws.com/cert.pem",
        "https://sqs.us-west-2.amazonaws.com/cert.pem",
        "file:///etc/passwd.pem",
        "not a url",
    ] {
        let message = notification(url);
        assert!(matches!(verifier.verify(&message).await, Err(WebhookError::UntrustedCertificateUrl(_))), "{url}");
    }
}

#[test]
fn certificate_url_policy() {
    let aws = SnsTrust::aws();
    for url in [
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com/a.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/a.pem",
        "https://SNS.EU-WEST-1.AMAZONAWS.COM/a.pem",
        "https://sns.eu-west-1.amazonaws.com:443/a.pem",
    ] {
        aws.check_certificate_url(url).unwrap();
    }
    // AWS hosts switched off: only what is listed.
    let sim = SnsTrust::nothing().with_allowed_host("sim.local").with_allowed_host("127.0.0.1:9000");
    assert!(sim.check_certificate_url("https://sns.us-east-1.amazonaws.com/a.pem").is_err());
    sim.check_certificate_url("https://sim.local/a.pem").unwrap();
    sim.check_certificate_url("https://sim.local:8443/a.pem").unwrap();
    sim.check_certificate_url("https://127.0.0.1:9000/a.pem").unwrap();
    assert!(sim.check_certificate_url("https://127.0.0.1:9001/a.pem").is_err());
    assert!(sim.check_certificate_url("http://sim.local/a.pem").is_err(), "http needs allow_http");
    let sim = sim.with_http_allowed(true);
    sim.check_certificate_url("http://sim.local/a.pem").unwrap();
    // allow_http never extends to AWS's pattern.
    assert!(
        SnsTrust::aws()
            .with_http_allowed(true)
            .check_certificate_url("http://sns.us-east-1.amazonaws.com/a.pem")
            .is_err()
    );
    // Subscribe URLs carry a query, but the same hosts.
    aws.check_subscribe_url("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=y")
        .unwrap();
    assert!(aws.check_subscribe_url("https://evil.example/?Action=ConfirmSubscription").is_err());
}

#[tokio::test]
async fn untrusted_subscribe_url_is_not_handed_out() {
    let verifier = pinned_v2();
    let mut message = notification(AWS_CERT_URL);
    message.message_type = SnsMessageType::SubscriptionConfirmation;
    message.subject = None;
    message.token = Some("t".into());
    message.subscribe_url = Some("http://169.254.169.254/latest/meta-data".into());
    sign_v2(&mut message);
    verifier.verify(&message).await.unwrap();
    assert!(matches!(verifier.confirmation_url(&message), Err(WebhookError::UntrustedCertificateUrl(_))));
}

#[test]
fn a_pinned_certificate_that_does_not_parse_fails_at_construction() {
    let error = SnsVerifier::new(
        SnsTrust::aws()
            .with_pinned_certificate(AWS_CERT_URL, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    )
    .unwrap_err();
    assert!(matches!(error, WebhookError::CertificateFetch(_)));
}

/// Serves the generated certificate on 127.0.0.1:<random>, counting requests.
async fn certificate_server() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/SimpleNotificationService-sim.pem",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { signer().cert_pem.clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

#[tokio::test]
async fn certificate_is_fetched_over_http_once_and_cached() {
    let (port, hits) = certificate_server().await;
    let cert_url = format!("http://127.0.0.1:{port}/SimpleNotificationService-sim.pem");
    let trust = SnsTrust::nothing().with_allowed_host(format!("127.0.0.1:{port}")).with_http_allowed(true);
    let verifier = SnsVerifier::new(trust).unwrap();
    let message = notification(&cert_url);
    verifier.verify(&message).await.unwrap();
    verifier.verify(&message).await.unwrap();
    let mut tampered = message.clone();
    tampered.message.push('x');
    assert_eq!(verifier.verify(&tampered).await, Err(WebhookError::BadSignature));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the certificate is fetched once");

    // Same server, but http not allowed: refused without a request.
    let strict = SnsVerifier::new(SnsTrust::nothing().with_allowed_host(format!("127.0.0.1:{port}"))).unwrap();
    assert!(matches!(strict.verify(&message).await, Err(WebhookError::UntrustedCertificateUrl(_))));
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A trusted host that does not serve a certificate there.
    let missing = notification(&format!("http://127.0.0.1:{port}/nothing-here.pem"));
    let error = verifier.verify(&missing).await.unwrap_err();
    assert!(matches!(error, WebhookError::CertificateFetch(_)), "{error:?}");
    assert_eq!(error.http_status(), 503);
}
