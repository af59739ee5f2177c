#![allow(clippy::unwrap_used)]

use super::*;
use crate::{MediaKind, Recipient, TemplateContent};
use uuid::Uuid;

fn command(content: Content) -> SendMessageCommand {
    SendMessageCommand {
        correlation_id: "msg_1".into(),
        tenant_id: Uuid::nil(),
        recipient: Recipient::Phone("+15558675310".into()),
        content,
    }
}

fn config() -> TwilioConfig {
    TwilioConfig {
        base_url: "https://api.twilio.com/".into(),
        account_sid: "ACe808b673a9ec8700fe049815e199bc06".into(),
        auth_token: SecretString::from("twilio-auth-token"),
        from: Some("+15017122661".into()),
        messaging_service_sid: None,
        status_callback_url: Some("https://hooks.example.com/twilio/status".into()),
    }
}

fn from() -> Sender {
    Sender::From("+15017122661".into())
}

#[test]
fn url_is_the_account_messages_resource() {
    assert_eq!(
        messages_url(&config()).unwrap(),
        "https://api.twilio.com/2010-04-01/Accounts/ACe808b673a9ec8700fe049815e199bc06/Messages.json"
    );
    let mut bad = config();
    bad.account_sid = "AC/../x".into();
    assert!(messages_url(&bad).is_err());
}

#[test]
fn text_form_matches_the_documented_request() {
    let form = build_form(
        &command(Content::Text { body: "Your code is 123456".into() }),
        &from(),
        Some("https://hooks.example.com/twilio/status"),
    )
    .unwrap();
    assert_eq!(
        form,
        vec![
            ("To", "+15558675310".to_owned()),
            ("From", "+15017122661".to_owned()),
            ("Body", "Your code is 123456".to_owned()),
            ("StatusCallback", "https://hooks.example.com/twilio/status?correlation_id=msg_1".to_owned()),
        ]
    );
    // And it encodes as the notes show (`+` → %2B).
    let encoded = serde_urlencoded_like(&form);
    assert!(encoded.starts_with("To=%2B15558675310&From=%2B15017122661&Body=Your+code+is+123456"), "{encoded}");
}

fn serde_urlencoded_like(form: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

#[test]
fn messaging_service_wins_over_from() {
    let mut cfg = config();
    cfg.messaging_service_sid = Some("MG9752274e9e519418a7406176694466fa".into());
    assert_eq!(sender(&cfg).unwrap(), Sender::MessagingService("MG9752274e9e519418a7406176694466fa".into()));
    let form = build_form(&command(Content::Text { body: "x".into() }), &sender(&cfg).unwrap(), None).unwrap();
    assert_eq!(form[1], ("MessagingServiceSid", "MG9752274e9e519418a7406176694466fa".to_owned()));
    assert!(form.iter().all(|(k, _)| *k != "From" && *k != "StatusCallback"));
    cfg.messaging_service_sid = None;
    cfg.from = None;
    assert!(sender(&cfg).is_err());
}

#[test]
fn media_becomes_media_url_with_caption_as_body() {
    let media = Content::Media {
        kind: MediaKind::Image,
        url: "https://e.example/a.jpg".into(),
        caption: Some("Look".into()),
        filename: None,
    };
    let form = build_form(&command(media), &from(), None).unwrap();
    assert_eq!(form[2..], [("Body", "Look".to_owned()), ("MediaUrl", "https://e.example/a.jpg".to_owned())]);
    let media =
        Content::Media { kind: MediaKind::Image, url: "https://e.example/a.jpg".into(), caption: None, filename: None };
    assert!(build_form(&command(media), &from(), None).unwrap().iter().all(|(k, _)| *k != "Body"));
}

#[test]
fn templates_emails_and_non_phone_recipients_are_unsupported() {
    let template = Content::Template(TemplateContent {
        name: "t".into(),
        language: "en".into(),
        body_parameters: vec![],
        components: None,
    });
    let email = Content::Email { subject: "s".into(), text: None, html: None, attachments: vec![], in_reply_to: None };
    for content in [template, email] {
        let err = build_form(&command(content), &from(), None).unwrap_err();
        assert!(matches!(err, SendError::Permanent { ref code, .. } if code == "unsupported_content"), "{err:?}");
    }
    let mut cmd = command(Content::Text { body: "x".into() });
    cmd.recipient = Recipient::WhatsappId("15558675310".into());
    assert!(
        matches!(build_form(&cmd, &from(), None), Err(SendError::Permanent { ref code, .. }) if code == "unsupported_content")
    );
}

#[test]
fn receipt_is_the_sid_of_the_201_body() {
    let body =
        r#"{"sid": "SMc270985b65f443d9af000abb1ee3b588", "status": "queued", "num_segments": "1", "error_code": null}"#;
    assert_eq!(parse_sid(body).as_deref(), Some("SMc270985b65f443d9af000abb1ee3b588"));
    let response = ProviderResponse { status: 201, retry_after: None, body: body.into() };
    assert_eq!(receipt_from_response(&response).unwrap().provider_message_id, "SMc270985b65f443d9af000abb1ee3b588");
    let response = ProviderResponse { status: 201, retry_after: None, body: "{}".into() };
    assert!(matches!(receipt_from_response(&response), Err(SendError::Unknown { .. })));
}

#[test]
fn real_error_bodies_from_the_notes() {
    let not_mobile = r#"{"code": 21614, "message": "To number: +41799894492, is not a mobile number", "more_info": "https://www.twilio.com/docs/errors/21614", "status": 400}"#;
    assert_eq!(
        classify_error(400, not_mobile, None),
        SendError::Permanent { code: "21614".into(), reason: "To number: +41799894492, is not a mobile number".into() }
    );
    let auth =
        r#"{"code":20003,"message":"Authenticate","more_info":"http://www.twilio.com/docs/errors/20003","status":401}"#;
    assert_eq!(
        classify_error(401, auth, None),
        SendError::TenantBlocked { code: "20003".into(), reason: "Authenticate".into() }
    );
}

#[test]
fn too_many_requests_honours_retry_after() {
    let body = r#"{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}"#;
    assert_eq!(
        classify_error(429, body, Some(Duration::from_secs(2))),
        SendError::RateLimited { reason: "20429: Too Many Requests".into(), retry_after: Some(Duration::from_secs(2)) }
    );
}

#[test]
fn the_whole_code_table() {
    let cases: &[(i64, u16, &str)] = &[
        (20429, 429, "rate"),
        (21611, 400, "rate"),
        (20003, 401, "blocked"),
        (20005, 401, "blocked"),
        (20404, 404, "blocked"),
        (21212, 400, "blocked"),
        (21603, 400, "blocked"),
        (21606, 400, "blocked"),
        (21705, 400, "blocked"),
        (30002, 400, "blocked"),
        (21211, 400, "permanent"),
        (21408, 400, "permanent"),
        (21602, 400, "permanent"),
        (21604, 400, "permanent"),
        (21608, 400, "permanent"),
        (21610, 400, "permanent"),
        (21612, 400, "permanent"),
        (21614, 400, "permanent"),
        (21617, 400, "permanent"),
        (21619, 400, "permanent"),
        (21620, 400, "permanent"),
        (30004, 400, "permanent"),
        (30005, 400, "permanent"),
        (30006, 400, "permanent"),
        (30007, 400, "permanent"),
        (30003, 400, "retry"),
        (30008, 400, "retry"),
        (20500, 500, "retry"),
        (20503, 503, "retry"),
    ];
    for &(code, status, expected) in cases {
        let body = format!(
            r#"{{"code":{code},"message":"m","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
        );
        let class = crate::send::test_class::class_of(&classify_error(status, &body, None), &code.to_string());
        assert_eq!(class, expected, "code {code}");
    }
}

#[test]
fn unknown_codes_and_bodies_fall_back_on_the_status() {
    assert!(
        matches!(classify_error(400, r#"{"code":"21999","message":"new"}"#, None), SendError::Permanent { ref code, .. } if code == "21999")
    );
    assert!(matches!(classify_error(500, "", None), SendError::Retryable { .. }));
    assert!(
        matches!(classify_error(403, "<html/>", None), SendError::TenantBlocked { ref code, .. } if code == "http_403")
    );
}

#[test]
fn debug_output_hides_the_token() {
    let adapter = TwilioAdapter::new(&config(), &reqwest::Client::new(), &SendOptions::default()).unwrap();
    assert!(!format!("{adapter:?}").contains("twilio-auth-token"));
}
