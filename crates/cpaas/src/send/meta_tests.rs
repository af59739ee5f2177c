#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;
use uuid::Uuid;

fn command(recipient: Recipient, content: Content) -> SendMessageCommand {
    SendMessageCommand { correlation_id: "msg_42".into(), tenant_id: Uuid::nil(), recipient, content }
}

fn phone() -> Recipient {
    Recipient::Phone("+16505551234".into())
}

fn config(base_url: &str) -> MetaConfig {
    MetaConfig {
        base_url: base_url.into(),
        api_version: "v21.0".into(),
        phone_number_id: "1122334455667".into(),
        waba_id: "102290129340398".into(),
        access_token: SecretString::from("EAAG-token"),
        app_secret: SecretString::from("app-secret"),
        verify_token: SecretString::from("verify"),
    }
}

/// A Graph error body as in notes §2.1.
fn graph_error(code: i64, message: &str) -> String {
    json!({"error": {"message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": "details text"}, "fbtrace_id": "A4O5a8RAgePwbcGSu"}})
    .to_string()
}

#[test]
fn url_is_version_then_phone_number_id() {
    assert_eq!(
        messages_url(&config("https://graph.facebook.com/")).unwrap(),
        "https://graph.facebook.com/v21.0/1122334455667/messages"
    );
    let mut bad = config("https://graph.facebook.com");
    bad.phone_number_id = "../me".into();
    assert!(messages_url(&bad).is_err());
    assert!(messages_url(&config("graph.facebook.com")).is_err());
}

#[test]
fn text_message_matches_the_documented_shape() {
    let body = build_message(&command(phone(), Content::Text { body: "Here is the link".into() })).unwrap();
    assert_eq!(
        body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "+16505551234", "type": "text",
               "text": {"body": "Here is the link"}, "biz_opaque_callback_data": "msg_42"})
    );
}

#[test]
fn whatsapp_id_recipient_is_sent_as_is() {
    let body =
        build_message(&command(Recipient::WhatsappId("16505551234".into()), Content::Text { body: "hi".into() }))
            .unwrap();
    assert_eq!(body["to"], "16505551234");
}

#[test]
fn template_with_body_parameters_builds_a_body_component() {
    let template = TemplateContent {
        name: "order_update".into(),
        language: "en_US".into(),
        body_parameters: vec!["Asha".into(), "#1234".into()],
        components: None,
    };
    let body = build_message(&command(phone(), Content::Template(template))).unwrap();
    assert_eq!(body["type"], "template");
    assert_eq!(
        body["template"],
        json!({"name": "order_update", "language": {"code": "en_US"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Asha"}, {"type": "text", "text": "#1234"}]}]})
    );
}

#[test]
fn template_components_are_sent_verbatim_and_win_over_parameters() {
    let components = json!([
        {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/h.jpg"}}]},
        {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "PAYLOAD"}]}
    ]);
    let template = TemplateContent {
        name: "order_update".into(),
        language: "de".into(),
        body_parameters: vec!["ignored".into()],
        components: Some(components.clone()),
    };
    let body = build_message(&command(phone(), Content::Template(template))).unwrap();
    assert_eq!(body["template"]["components"], components);
    assert_eq!(body["template"]["language"], json!({"code": "de"}));
}

#[test]
fn template_without_variables_has_no_components() {
    let template = TemplateContent {
        name: "hello_world".into(),
        language: "en_US".into(),
        body_parameters: vec![],
        components: None,
    };
    let body = build_message(&command(phone(), Content::Template(template))).unwrap();
    assert!(body["template"].get("components").is_none());
}

#[test]
fn media_by_link_with_caption_and_filename() {
    let doc = Content::Media {
        kind: MediaKind::Document,
        url: "https://example.com/invoice.pdf".into(),
        caption: Some("Lucky Shrub Invoice".into()),
        filename: Some("lucky-shrub-invoice.pdf".into()),
    };
    let body = build_message(&command(phone(), doc)).unwrap();
    assert_eq!(body["type"], "document");
    assert_eq!(
        body["document"],
        json!({"link": "https://example.com/invoice.pdf", "caption": "Lucky Shrub Invoice", "filename": "lucky-shrub-invoice.pdf"})
    );

    let image = Content::Media {
        kind: MediaKind::Image,
        url: "https://e.example/a.png".into(),
        caption: Some("c".into()),
        filename: Some("a.png".into()),
    };
    let body = build_message(&command(phone(), image)).unwrap();
    assert_eq!(body["image"], json!({"link": "https://e.example/a.png", "caption": "c"}));

    let video =
        Content::Media { kind: MediaKind::Video, url: "https://e.example/v.mp4".into(), caption: None, filename: None };
    assert_eq!(build_message(&command(phone(), video)).unwrap()["video"], json!({"link": "https://e.example/v.mp4"}));

    let audio =
        Content::Media { kind: MediaKind::Audio, url: "https://e.example/a.ogg".into(), caption: None, filename: None };
    assert_eq!(build_message(&command(phone(), audio)).unwrap()["audio"], json!({"link": "https://e.example/a.ogg"}));
}

#[test]
fn audio_caption_is_refused_rather_than_dropped() {
    let audio = Content::Media {
        kind: MediaKind::Audio,
        url: "https://e.example/a.ogg".into(),
        caption: Some("listen".into()),
        filename: None,
    };
    let err = build_message(&command(phone(), audio)).unwrap_err();
    assert!(matches!(err, SendError::Permanent { ref code, .. } if code == "unsupported_content"));
}

#[test]
fn email_content_and_recipients_are_unsupported() {
    let email = Content::Email {
        subject: "s".into(),
        text: Some("t".into()),
        html: None,
        attachments: vec![],
        in_reply_to: None,
    };
    let err = build_message(&command(phone(), email)).unwrap_err();
    assert!(matches!(err, SendError::Permanent { ref code, .. } if code == "unsupported_content"));
    let err = build_message(&command(Recipient::Email("a@b.example".into()), Content::Text { body: "x".into() }))
        .unwrap_err();
    assert!(matches!(err, SendError::Permanent { ref code, .. } if code == "unsupported_content"));
    let err = build_message(&command(Recipient::Phone("16505551234".into()), Content::Text { body: "x".into() }))
        .unwrap_err();
    assert!(matches!(err, SendError::Permanent { ref code, .. } if code == "invalid_recipient"));
}

#[test]
fn long_correlation_ids_are_not_sent() {
    let mut cmd = command(phone(), Content::Text { body: "x".into() });
    cmd.correlation_id = "x".repeat(513);
    assert!(build_message(&cmd).unwrap().get("biz_opaque_callback_data").is_none());
}

#[test]
fn receipt_id_is_the_first_message_id() {
    let body = r#"{"messaging_product":"whatsapp","contacts":[{"input":"16505555555","wa_id":"16505555555"}],
        "messages":[{"id":"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA","message_status":"accepted"}]}"#;
    assert_eq!(parse_message_id(body).as_deref(), Some("wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"));
    assert_eq!(parse_message_id(r#"{"messages":[]}"#), None);
    assert_eq!(parse_message_id("<html>"), None);
}

#[test]
fn unreadable_success_is_unknown() {
    let response = ProviderResponse { status: 200, retry_after: None, body: "<html>proxy</html>".into() };
    assert!(matches!(receipt_from_response(&response), Err(SendError::Unknown { .. })));
}

#[test]
fn pair_rate_limit_from_the_notes_is_rate_limited_despite_http_400() {
    let body = r#"{"error":{"message":"(#131056) (Business Account, Consumer Account) pair rate limit hit","type":"OAuthException","code":131056,"error_data":{"messaging_product":"whatsapp","details":"Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."},"error_subcode":2494055,"fbtrace_id":"A4O5a8RAgePwbcGSu"}}"#;
    let err = classify_error(400, body, Some(Duration::from_secs(6)));
    match err {
        SendError::RateLimited { reason, retry_after } => {
            assert!(reason.contains("pair rate limit hit"));
            assert!(reason.contains("too many messages sent"));
            assert_eq!(retry_after, Some(Duration::from_secs(6)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn expired_token_from_the_notes_blocks_the_tenant() {
    let body = r#"{"error":{"message":"Error validating access token: Session has expired on ...","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"EJplcsCHuLu"}}"#;
    assert_eq!(
        classify_error(401, body, None),
        SendError::TenantBlocked {
            code: "190".into(),
            reason: "Error validating access token: Session has expired on ...".into()
        }
    );
}

#[test]
fn undeliverable_is_permanent_with_meta_details() {
    let err = classify_error(400, &graph_error(131026, "(#131026) Message Undeliverable"), None);
    assert_eq!(
        err,
        SendError::Permanent {
            code: "131026".into(), reason: "(#131026) Message Undeliverable — details text".into()
        }
    );
}

#[test]
fn the_whole_code_table() {
    let cases: &[(i64, u16, &str)] = &[
        (4, 400, "rate"),
        (80007, 400, "rate"),
        (130429, 400, "rate"),
        (131056, 400, "rate"),
        (0, 401, "blocked"),
        (10, 403, "blocked"),
        (190, 401, "blocked"),
        (200, 403, "blocked"),
        (368, 403, "blocked"),
        (131005, 403, "blocked"),
        (131031, 403, "blocked"),
        (131042, 400, "blocked"),
        (131048, 400, "blocked"),
        (133010, 400, "blocked"),
        (100, 400, "permanent"),
        (131008, 400, "permanent"),
        (131009, 400, "permanent"),
        (131021, 400, "permanent"),
        (131026, 400, "permanent"),
        (131047, 400, "permanent"),
        (131049, 400, "permanent"),
        (131051, 400, "permanent"),
        (131052, 400, "permanent"),
        (131053, 400, "permanent"),
        (132000, 400, "permanent"),
        (132001, 404, "permanent"),
        (132015, 400, "permanent"),
        (132016, 400, "permanent"),
        (1, 500, "retry"),
        (2, 503, "retry"),
        (131000, 500, "retry"),
        (131016, 500, "retry"),
        (131057, 500, "retry"),
        (133004, 503, "retry"),
    ];
    for &(code, status, expected) in cases {
        let err = classify_error(status, &graph_error(code, &format!("(#{code}) title")), None);
        let class = crate::send::test_class::class_of(&err, &code.to_string());
        assert_eq!(class, expected, "code {code}: {err:?}");
    }
}

#[test]
fn unknown_codes_and_bodies_fall_back_on_the_status() {
    assert!(
        matches!(classify_error(400, &graph_error(999_999, "new"), None), SendError::Permanent { ref code, .. } if code == "999999")
    );
    assert!(matches!(classify_error(503, &graph_error(999_999, "new"), None), SendError::Retryable { .. }));
    assert!(matches!(classify_error(502, "<html>Bad Gateway</html>", None), SendError::Retryable { .. }));
    assert!(matches!(classify_error(401, "", None), SendError::TenantBlocked { ref code, .. } if code == "http_401"));
    assert!(
        matches!(classify_error(429, "", Some(Duration::from_secs(3))), SendError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 3)
    );
}

#[test]
fn debug_output_hides_the_token() {
    let http = reqwest::Client::new();
    let adapter = MetaAdapter::new(&config("https://graph.facebook.com"), &http, &SendOptions::default()).unwrap();
    assert!(!format!("{adapter:?}").contains("EAAG-token"));
}
