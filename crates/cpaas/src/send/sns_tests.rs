#![allow(clippy::unwrap_used)]

use super::*;
use crate::send::test_server::{Canned, serve_once};
use crate::{MediaKind, Recipient};
use secrecy::SecretString;
use uuid::Uuid;

fn command(content: Content) -> SendMessageCommand {
    SendMessageCommand {
        correlation_id: "c1".into(),
        tenant_id: Uuid::nil(),
        recipient: Recipient::Phone("+15555550100".into()),
        content,
    }
}

fn text() -> Content {
    Content::Text { body: "Your code is 123456".into() }
}

fn sender() -> SmsSender {
    SmsSender {
        sms_type: SmsType::Transactional,
        sender_id: Some("SWITCHBRD".into()),
        origination_number: Some("+18005550199".into()),
    }
}

fn config(endpoint: Option<&str>) -> SnsConfig {
    SnsConfig {
        region: "us-east-1".into(),
        endpoint_url: endpoint.map(str::to_owned),
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: SecretString::from("sns-secret-EXAMPLEKEY"),
        sender_id: Some("SWITCHBRD".into()),
        origination_number: Some("+18005550199".into()),
        sms_type: SmsType::Transactional,
    }
}

const PUBLISH_OK: &str = r#"<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">
  <PublishResult><MessageId>9b888f80-15f7-5c30-81a2-c4511a3f5229</MessageId></PublishResult>
  <ResponseMetadata><RequestId>d74b8436-ae13-5ab4-a9ff-ce54dfea72a0</RequestId></ResponseMetadata>
</PublishResponse>"#;

fn error_xml(code: &str, message: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>0a1b2c3d</RequestId></ErrorResponse>"#
    )
}

#[test]
fn publish_carries_all_configured_attributes() {
    let publish = build_publish(&sender(), &command(text())).unwrap();
    assert_eq!(
        publish,
        SmsPublish {
            phone_number: "+15555550100".into(),
            message: "Your code is 123456".into(),
            attributes: vec![
                (ATTR_SMS_TYPE, "Transactional".into()),
                (ATTR_SENDER_ID, "SWITCHBRD".into()),
                (ATTR_ORIGINATION_NUMBER, "+18005550199".into()),
            ],
        }
    );
}

#[test]
fn publish_only_sends_configured_attributes() {
    let bare = SmsSender { sms_type: SmsType::Promotional, sender_id: None, origination_number: None };
    assert_eq!(
        build_publish(&bare, &command(text())).unwrap().attributes,
        vec![(ATTR_SMS_TYPE, "Promotional".to_owned())]
    );
}

#[test]
fn non_text_content_and_non_phone_recipients_are_unsupported() {
    let media =
        Content::Media { kind: MediaKind::Image, url: "https://e.example/a.png".into(), caption: None, filename: None };
    let email = Content::Email { subject: "s".into(), text: None, html: None, attachments: vec![], in_reply_to: None };
    for content in [media, email] {
        assert!(
            matches!(build_publish(&sender(), &command(content)), Err(SendError::Permanent { ref code, .. }) if code == "unsupported_content")
        );
    }
    let mut cmd = command(text());
    cmd.recipient = Recipient::Email("a@b.example".into());
    assert!(
        matches!(build_publish(&sender(), &cmd), Err(SendError::Permanent { ref code, .. }) if code == "unsupported_content")
    );
    cmd.recipient = Recipient::Phone("555-0100".into());
    assert!(
        matches!(build_publish(&sender(), &cmd), Err(SendError::Permanent { ref code, .. }) if code == "invalid_recipient")
    );
}

#[test]
fn the_whole_code_table() {
    let cases: &[(&str, u16, &str)] = &[
        ("Throttling", 400, "rate"),
        ("Throttled", 429, "rate"),
        ("KMSThrottling", 400, "rate"),
        ("OptedOut", 400, "permanent"),
        ("InvalidParameter", 400, "permanent"),
        ("ParameterValueInvalid", 400, "permanent"),
        ("InvalidParameterValue", 400, "permanent"),
        ("ValidationException", 400, "permanent"),
        ("NotFound", 404, "permanent"),
        ("AuthorizationError", 403, "blocked"),
        ("InvalidClientTokenId", 403, "blocked"),
        ("UnrecognizedClientException", 403, "blocked"),
        ("AccessDenied", 403, "blocked"),
        ("AccessDeniedException", 403, "blocked"),
        ("SignatureDoesNotMatch", 403, "blocked"),
        ("InvalidSecurity", 403, "blocked"),
        ("ExpiredToken", 403, "blocked"),
        ("OptInRequired", 403, "blocked"),
        ("KMSAccessDenied", 400, "blocked"),
        ("KMSDisabled", 400, "blocked"),
        ("KMSInvalidState", 400, "blocked"),
        ("KMSNotFound", 400, "blocked"),
        ("KMSOptInRequired", 403, "blocked"),
        ("InternalError", 500, "retry"),
        ("InternalFailure", 500, "retry"),
        ("ServiceUnavailable", 503, "retry"),
    ];
    for &(code, status, expected) in cases {
        let class = crate::send::test_class::class_of(&classify_error(status, Some(code), Some("m"), None), code);
        assert_eq!(class, expected, "{code}");
    }
}

#[test]
fn invalid_origination_number_blocks_the_account_not_the_message() {
    let err = classify_error(
        400,
        Some("InvalidParameter"),
        Some("Invalid parameter: OriginationNumber Reason: not owned by account"),
        None,
    );
    assert!(matches!(err, SendError::TenantBlocked { .. }), "{err:?}");
    let err = classify_error(
        400,
        Some("InvalidParameter"),
        Some("Invalid parameter: PhoneNumber Reason: +1555 is not valid to publish to"),
        None,
    );
    assert!(matches!(err, SendError::Permanent { .. }), "{err:?}");
}

#[tokio::test]
async fn sdk_publishes_the_documented_query_form() {
    let (url, server) =
        serve_once(Canned::new(200, "text/xml", PUBLISH_OK).header("x-amzn-RequestId", "d74b8436")).await;
    let adapter = SnsAdapter::new(&config(Some(&url)), &SendOptions::default()).unwrap();
    let receipt = adapter.send(&command(text())).await.unwrap();
    assert_eq!(
        receipt,
        SendReceipt { provider: Provider::Sns, provider_message_id: "9b888f80-15f7-5c30-81a2-c4511a3f5229".into() }
    );
    let request = server.await.unwrap();
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/"));
    let form: Vec<(String, String)> = url::form_urlencoded::parse(request.body.as_bytes()).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("Action"), Some("Publish"));
    assert_eq!(get("PhoneNumber"), Some("+15555550100"));
    assert_eq!(get("Message"), Some("Your code is 123456"));
    // Entry numbering follows a HashMap: collect name → value pairs instead of relying on it.
    let mut attributes = Vec::new();
    for n in 1..=3 {
        let name = get(&format!("MessageAttributes.entry.{n}.Name")).unwrap();
        assert_eq!(get(&format!("MessageAttributes.entry.{n}.Value.DataType")), Some("String"));
        attributes.push((
            name.to_owned(),
            get(&format!("MessageAttributes.entry.{n}.Value.StringValue")).unwrap().to_owned(),
        ));
    }
    attributes.sort();
    assert_eq!(
        attributes,
        [
            ("AWS.MM.SMS.OriginationNumber".to_owned(), "+18005550199".to_owned()),
            ("AWS.SNS.SMS.SMSType".to_owned(), "Transactional".to_owned()),
            ("AWS.SNS.SMS.SenderID".to_owned(), "SWITCHBRD".to_owned()),
        ]
    );
}

#[tokio::test]
async fn sdk_query_errors_are_classified_by_code() {
    let (url, _server) = serve_once(Canned::new(400, "text/xml", error_xml("Throttling", "Rate exceeded"))).await;
    let adapter = SnsAdapter::new(&config(Some(&url)), &SendOptions::default()).unwrap();
    let err = adapter.send(&command(text())).await.unwrap_err();
    assert!(matches!(err, SendError::RateLimited { ref reason, .. } if reason.contains("Rate exceeded")), "{err:?}");

    let (url, _server) = serve_once(Canned::new(
        403,
        "text/xml",
        error_xml("AuthorizationError", "User is not authorized to perform: SNS:Publish"),
    ))
    .await;
    let adapter = SnsAdapter::new(&config(Some(&url)), &SendOptions::default()).unwrap();
    let err = adapter.send(&command(text())).await.unwrap_err();
    assert_eq!(
        err,
        SendError::TenantBlocked {
            code: "AuthorizationError".into(),
            reason: "User is not authorized to perform: SNS:Publish".into()
        }
    );
}

#[tokio::test]
async fn sdk_timeout_after_sending_is_unknown() {
    let (url, _server) = serve_once(Canned::new(200, "text/xml", PUBLISH_OK).delayed(Duration::from_secs(3))).await;
    let options =
        SendOptions { request_timeout: Duration::from_millis(400), connect_timeout: Duration::from_millis(200) };
    let adapter = SnsAdapter::new(&config(Some(&url)), &options).unwrap();
    assert!(matches!(adapter.send(&command(text())).await, Err(SendError::Unknown { .. })));
}

#[test]
fn config_checks_the_origination_number() {
    let mut cfg = config(None);
    cfg.origination_number = Some("1800".into());
    assert!(SnsAdapter::new(&cfg, &SendOptions::default()).is_err());
}

#[test]
fn debug_output_hides_the_secret_key() {
    let adapter = SnsAdapter::new(&config(None), &SendOptions::default()).unwrap();
    assert!(!format!("{adapter:?}").contains("EXAMPLEKEY"));
}
