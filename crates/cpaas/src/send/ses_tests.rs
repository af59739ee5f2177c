#![allow(clippy::unwrap_used)]

use super::*;
use crate::Attachment;
use crate::send::test_server::{Canned, serve_once};
use base64::Engine;
use mail_parser::MessageParser;
use secrecy::SecretString;
use serde_json::Value;
use uuid::Uuid;

const FROM: &str = "Alpine Coaches <noreply@mail.alpine.example>";

fn email(attachments: Vec<Attachment>, in_reply_to: Option<&str>) -> Content {
    Content::Email {
        subject: "Your code".into(),
        text: Some("Your code is 123456".into()),
        html: Some("<p>Your code is <b>123456</b></p>".into()),
        attachments,
        in_reply_to: in_reply_to.map(str::to_owned),
    }
}

fn command(content: Content) -> SendMessageCommand {
    SendMessageCommand {
        correlation_id: "msg_01J9".into(),
        tenant_id: Uuid::from_u128(42),
        recipient: Recipient::Email("user@example.org".into()),
        content,
    }
}

fn config(endpoint: Option<&str>) -> SesConfig {
    SesConfig {
        region: "eu-west-1".into(),
        endpoint_url: endpoint.map(str::to_owned),
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        domain: "mail.alpine.example".into(),
        from_address: FROM.into(),
        configuration_set: Some("switchboard-events".into()),
    }
}

#[test]
fn plain_mail_uses_simple_content() {
    let input = send_email_input(FROM, Some("switchboard-events"), &command(email(vec![], None))).unwrap();
    assert_eq!(input.from_email_address(), Some(FROM));
    assert_eq!(input.destination().unwrap().to_addresses(), ["user@example.org"]);
    assert_eq!(input.configuration_set_name(), Some("switchboard-events"));
    let simple = input.content().unwrap().simple().unwrap();
    assert_eq!(simple.subject().unwrap().data(), "Your code");
    assert_eq!(simple.subject().unwrap().charset(), Some("UTF-8"));
    assert_eq!(simple.body().unwrap().text().unwrap().data(), "Your code is 123456");
    assert_eq!(simple.body().unwrap().html().unwrap().data(), "<p>Your code is <b>123456</b></p>");
    assert!(input.content().unwrap().raw().is_none());
    let tags: Vec<_> = input.email_tags().iter().map(|t| (t.name(), t.value())).collect();
    assert_eq!(tags, [("sb_tenant", "00000000-0000-0000-0000-00000000002a"), ("sb_correlation", "msg_01J9")]);
}

#[test]
fn attachments_switch_to_raw_mime() {
    let attachment =
        Attachment { filename: "ticket.pdf".into(), content_type: "application/pdf".into(), data: b"%PDF".to_vec() };
    let input = send_email_input(FROM, None, &command(email(vec![attachment], None))).unwrap();
    let raw = input.content().unwrap().raw().unwrap().data().as_ref().to_vec();
    let message = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(message.subject(), Some("Your code"));
    assert_eq!(message.attachment_count(), 1);
    assert_eq!(message.to().unwrap().first().unwrap().address(), Some("user@example.org"));
    // SES still gets the envelope explicitly.
    assert_eq!(input.destination().unwrap().to_addresses(), ["user@example.org"]);
    assert_eq!(input.configuration_set_name(), None);
}

#[test]
fn replies_switch_to_raw_mime_with_threading_headers() {
    let input = send_email_input(FROM, None, &command(email(vec![], Some("<orig@mail.example>")))).unwrap();
    let raw = String::from_utf8(input.content().unwrap().raw().unwrap().data().as_ref().to_vec()).unwrap();
    assert!(raw.contains("In-Reply-To: <orig@mail.example>\r\n"));
    assert!(raw.contains("References: <orig@mail.example>\r\n"));
}

#[test]
fn unsupported_content_and_recipients_fail_before_the_network() {
    let template = Content::Template(crate::TemplateContent {
        name: "t".into(),
        language: "en".into(),
        body_parameters: vec![],
        components: None,
    });
    for content in [Content::Text { body: "x".into() }, template] {
        let err = send_email_input(FROM, None, &command(content)).unwrap_err();
        assert!(matches!(err, SendError::Permanent { ref code, .. } if code == "unsupported_content"), "{err:?}");
    }
    let mut cmd = command(email(vec![], None));
    cmd.recipient = Recipient::Phone("+4915112345678".into());
    assert!(
        matches!(send_email_input(FROM, None, &cmd), Err(SendError::Permanent { ref code, .. }) if code == "unsupported_content")
    );
    cmd.recipient = Recipient::Email("user@example.org\r\nBcc: x@y.example".into());
    assert!(
        matches!(send_email_input(FROM, None, &cmd), Err(SendError::Permanent { ref code, .. }) if code == "invalid_recipient")
    );
}

#[test]
fn odd_correlation_ids_are_not_tagged() {
    let mut cmd = command(email(vec![], None));
    cmd.correlation_id = "has spaces/and:colons".into();
    let input = send_email_input(FROM, None, &cmd).unwrap();
    assert_eq!(input.email_tags().len(), 1);
}

#[test]
fn the_whole_code_table() {
    let cases: &[(&str, u16, &str)] = &[
        ("TooManyRequestsException", 429, "rate"),
        ("Throttling", 400, "rate"),
        ("ThrottlingException", 400, "rate"),
        ("LimitExceededException", 400, "rate"),
        ("MessageRejected", 400, "permanent"),
        ("MailFromDomainNotVerifiedException", 400, "permanent"),
        ("BadRequestException", 400, "permanent"),
        ("NotFoundException", 404, "permanent"),
        ("AccountSuspendedException", 400, "blocked"),
        ("SendingPausedException", 400, "blocked"),
        ("UnrecognizedClientException", 403, "blocked"),
        ("InvalidClientTokenId", 403, "blocked"),
        ("AccessDenied", 403, "blocked"),
        ("AccessDeniedException", 403, "blocked"),
        ("SignatureDoesNotMatch", 403, "blocked"),
        ("InvalidSignatureException", 403, "blocked"),
        ("ExpiredToken", 403, "blocked"),
        ("ExpiredTokenException", 403, "blocked"),
        ("InternalServiceErrorException", 500, "retry"),
        ("InternalFailure", 500, "retry"),
        ("ServiceUnavailable", 503, "retry"),
    ];
    for &(code, status, expected) in cases {
        let class = crate::send::test_class::class_of(&classify_error(status, Some(code), Some("m"), None), code);
        assert_eq!(class, expected, "{code}");
    }
    assert!(matches!(classify_error(502, None, None, None), SendError::Retryable { .. }));
    assert!(matches!(classify_error(400, Some("SomethingNew"), None, None), SendError::Permanent { .. }));
}

// The SDK path over a socket: what it sends, and how real error responses are classified.

#[tokio::test]
async fn sdk_sends_simple_content_to_the_overridden_endpoint() {
    let (url, server) =
        serve_once(Canned::new(200, "application/json", r#"{"MessageId":"0100018f1b2c3d4e-5f6a7b8c-000000"}"#)).await;
    let adapter = SesAdapter::new(&config(Some(&url)), &SendOptions::default()).unwrap();
    let receipt = adapter.send(&command(email(vec![], None))).await.unwrap();
    assert_eq!(
        receipt,
        SendReceipt { provider: Provider::Ses, provider_message_id: "0100018f1b2c3d4e-5f6a7b8c-000000".into() }
    );
    let request = server.await.unwrap();
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v2/email/outbound-emails"));
    assert!(request.header("authorization").unwrap().contains("/eu-west-1/ses/aws4_request"));
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["FromEmailAddress"], FROM);
    assert_eq!(body["Destination"]["ToAddresses"][0], "user@example.org");
    assert_eq!(body["Content"]["Simple"]["Subject"]["Data"], "Your code");
    assert_eq!(body["ConfigurationSetName"], "switchboard-events");
}

#[tokio::test]
async fn sdk_sends_raw_content_base64_encoded() {
    let (url, server) = serve_once(Canned::new(200, "application/json", r#"{"MessageId":"m-1"}"#)).await;
    let adapter = SesAdapter::new(&config(Some(&url)), &SendOptions::default()).unwrap();
    let attachment =
        Attachment { filename: "a.txt".into(), content_type: "text/plain".into(), data: b"hello".to_vec() };
    adapter.send(&command(email(vec![attachment], None))).await.unwrap();
    let body: Value = serde_json::from_str(&server.await.unwrap().body).unwrap();
    let raw =
        base64::engine::general_purpose::STANDARD.decode(body["Content"]["Raw"]["Data"].as_str().unwrap()).unwrap();
    assert!(String::from_utf8(raw).unwrap().contains("multipart/mixed"));
}

#[tokio::test]
async fn sdk_error_header_and_body_are_classified() {
    let canned = Canned::new(400, "application/json", r#"{"__type":"MessageRejected","message":"Email address is not verified. The following identities failed the check in region EU-WEST-1: noreply@mail.alpine.example"}"#)
        .header("x-amzn-ErrorType", "MessageRejected:http://internal.amazon.com/coral/com.amazon.coral.validate/");
    let (url, _server) = serve_once(canned).await;
    let adapter = SesAdapter::new(&config(Some(&url)), &SendOptions::default()).unwrap();
    let err = adapter.send(&command(email(vec![], None))).await.unwrap_err();
    assert_eq!(
        err,
        SendError::Permanent {
            code: "MessageRejected".into(),
            reason: "Email address is not verified. The following identities failed the check in region EU-WEST-1: noreply@mail.alpine.example".into()
        }
    );
}

#[tokio::test]
async fn sdk_throttling_is_rate_limited_and_not_retried_by_the_sdk() {
    let canned = Canned::new(
        429,
        "application/json",
        r#"{"__type":"TooManyRequestsException","message":"Maximum sending rate exceeded."}"#,
    );
    // serve_once answers once: an SDK retry would find no server and fail differently.
    let (url, _server) = serve_once(canned).await;
    let adapter = SesAdapter::new(&config(Some(&url)), &SendOptions::default()).unwrap();
    let err = adapter.send(&command(email(vec![], None))).await.unwrap_err();
    assert!(
        matches!(err, SendError::RateLimited { ref reason, .. } if reason.contains("Maximum sending rate exceeded")),
        "{err:?}"
    );
}

#[tokio::test]
async fn sdk_timeout_after_sending_is_unknown() {
    let canned = Canned::new(200, "application/json", r#"{"MessageId":"late"}"#).delayed(Duration::from_secs(3));
    let (url, _server) = serve_once(canned).await;
    let options =
        SendOptions { request_timeout: Duration::from_millis(400), connect_timeout: Duration::from_millis(200) };
    let adapter = SesAdapter::new(&config(Some(&url)), &options).unwrap();
    let err = adapter.send(&command(email(vec![], None))).await.unwrap_err();
    assert!(matches!(err, SendError::Unknown { .. }), "{err:?}");
}

#[tokio::test]
async fn sdk_connection_refused_is_retryable() {
    // Port 9 (discard) is closed here. Binding port 0 and dropping it would race with the other
    // tests' one-shot servers, which the OS may hand that same free port.
    let adapter = SesAdapter::new(&config(Some("http://127.0.0.1:9")), &SendOptions::default()).unwrap();
    let err = adapter.send(&command(email(vec![], None))).await.unwrap_err();
    assert!(matches!(err, SendError::Retryable { .. }), "{err:?}");
}

#[test]
fn debug_output_hides_the_secret_key() {
    let adapter = SesAdapter::new(&config(None), &SendOptions::default()).unwrap();
    let debug = format!("{adapter:?}");
    assert!(!debug.contains("EXAMPLEKEY"), "{debug}");
}
