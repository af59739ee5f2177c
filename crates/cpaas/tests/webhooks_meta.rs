//! Meta WhatsApp webhooks: handshake, X-Hub-Signature-256, payload parsing.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use cpaas::webhooks::WebhookError;
use cpaas::webhooks::meta::{parse, verify_handshake, verify_signature};
use cpaas::{Channel, DeliveryStatus, FailureClass, InboundContent, MediaKind, Provider, ProviderError, ProviderEvent};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/meta/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn only(events: Vec<ProviderEvent>) -> ProviderEvent {
    assert_eq!(events.len(), 1, "{events:#?}");
    events.into_iter().next().unwrap()
}

fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn documented_signature_test_vector_is_accepted() {
    // hexdocs WhatsApp.Webhook.compute_signature("test", "secret").
    let header = "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914";
    verify_signature(b"secret", Some(header), b"test").unwrap();
    assert_eq!(
        verify_signature(b"secret", Some(&header.to_uppercase().replace("SHA256=", "sha256=")), b"test"),
        Ok(())
    );
}

#[test]
fn signature_over_raw_fixture_bytes() {
    let body = fixture("text.json");
    verify_signature(b"app-secret", Some(&sign(b"app-secret", &body)), &body).unwrap();
}

#[test]
fn tampered_body_wrong_secret_and_bad_headers_are_rejected() {
    let body = fixture("text.json");
    let header = sign(b"app-secret", &body);
    let mut tampered = body.clone();
    tampered.push(b' ');
    assert_eq!(verify_signature(b"app-secret", Some(&header), &tampered), Err(WebhookError::BadSignature));
    assert_eq!(verify_signature(b"other-secret", Some(&header), &body), Err(WebhookError::BadSignature));
    assert_eq!(verify_signature(b"app-secret", None, &body), Err(WebhookError::MissingSignature));
    assert_eq!(verify_signature(b"app-secret", Some(""), &body), Err(WebhookError::MissingSignature));
    assert_eq!(
        verify_signature(b"app-secret", Some(header.trim_start_matches("sha256=")), &body),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(verify_signature(b"app-secret", Some("sha256=zz"), &body), Err(WebhookError::BadSignature));
    assert_eq!(
        verify_signature(b"app-secret", Some(&header[..header.len() - 2]), &body),
        Err(WebhookError::BadSignature)
    );
    // An empty (unconfigured) secret never validates, even a signature made with it.
    assert_eq!(verify_signature(b"", Some(&sign(b"", &body)), &body), Err(WebhookError::BadSignature));
}

#[test]
fn forged_and_malformed_map_to_http_statuses() {
    assert_eq!(WebhookError::MissingSignature.http_status(), 401);
    assert_eq!(WebhookError::BadSignature.http_status(), 403);
    assert!(WebhookError::BadSignature.is_forged());
    assert_eq!(WebhookError::Malformed("x".into()).http_status(), 400);
    assert!(!WebhookError::Malformed("x".into()).is_forged());
    assert_eq!(WebhookError::CertificateFetch("x".into()).http_status(), 503);
}

#[test]
fn handshake_echoes_the_challenge_only_for_the_right_token() {
    let good = query(&[("hub.mode", "subscribe"), ("hub.challenge", "1158201444"), ("hub.verify_token", "tok")]);
    assert_eq!(verify_handshake(&good, "tok").unwrap(), "1158201444");
    assert_eq!(verify_handshake(&good, "other"), Err(WebhookError::BadSignature));
    assert_eq!(verify_handshake(&good, ""), Err(WebhookError::BadSignature));
    let no_token = query(&[("hub.mode", "subscribe"), ("hub.challenge", "1")]);
    assert_eq!(verify_handshake(&no_token, "tok"), Err(WebhookError::MissingSignature));
    let wrong_mode = query(&[("hub.mode", "unsubscribe"), ("hub.challenge", "1"), ("hub.verify_token", "tok")]);
    assert!(matches!(verify_handshake(&wrong_mode, "tok"), Err(WebhookError::Malformed(_))));
    let no_challenge = query(&[("hub.mode", "subscribe"), ("hub.verify_token", "tok")]);
    assert!(matches!(verify_handshake(&no_challenge, "tok"), Err(WebhookError::Malformed(_))));
}

fn inbound(event: ProviderEvent) -> (String, String, String, Option<String>, InboundContent, Option<String>) {
    match event {
        ProviderEvent::InboundMessage {
            provider,
            channel,
            provider_message_id,
            from,
            to,
            from_name,
            timestamp,
            content,
            in_reply_to,
        } => {
            assert_eq!(provider, Provider::Meta);
            assert_eq!(channel, Channel::Whatsapp);
            assert_eq!(timestamp, Utc.timestamp_opt(1_697_043_223, 0).unwrap());
            (provider_message_id, from, to, from_name, content, in_reply_to)
        }
        other => panic!("not inbound: {other:?}"),
    }
}

#[test]
fn text_message() {
    let (id, from, to, name, content, reply) = inbound(only(parse(&fixture("text.json")).unwrap()));
    assert_eq!(id, "wamid.HBgMOTcyOTg3NjU0MzIxFQIAEhgUM0VCMDRBN0YyQzNEMkE1RjU3RDIA");
    assert_eq!(from, "972987654321");
    assert_eq!(to, "1122334455667");
    assert_eq!(name.as_deref(), Some("Test Name"));
    assert_eq!(content, InboundContent::Text { body: "Body Text".into() });
    assert_eq!(reply, None);
}

#[test]
fn image_and_document_messages_are_media() {
    let (.., content, _) = inbound(only(parse(&fixture("image.json")).unwrap()));
    assert_eq!(
        content,
        InboundContent::Media {
            kind: MediaKind::Image,
            media_id: Some("1479537139650973".into()),
            url: None,
            mime_type: Some("image/jpeg".into()),
            caption: Some("The best succulent ever?".into()),
            filename: None
        }
    );
    let (.., content, _) = inbound(only(parse(&fixture("document.json")).unwrap()));
    let InboundContent::Media { kind, filename, mime_type, .. } = content else { panic!() };
    assert_eq!(kind, MediaKind::Document);
    assert_eq!(filename.as_deref(), Some("lucky-shrub-invoice.pdf"));
    assert_eq!(mime_type.as_deref(), Some("application/pdf"));
}

#[test]
fn location_message() {
    let (.., content, _) = inbound(only(parse(&fixture("location.json")).unwrap()));
    assert_eq!(
        content,
        InboundContent::Location {
            latitude: 37.46,
            longitude: -122.21,
            name: Some("Philz Coffee".into()),
            address: Some("101 Forest Ave, Palo Alto, CA 94301".into())
        }
    );
}

#[test]
fn template_button_and_interactive_replies() {
    let (.., content, reply) = inbound(only(parse(&fixture("button.json")).unwrap()));
    assert_eq!(content, InboundContent::ButtonReply { id: Some("callback_data".into()), title: "Yes, confirm".into() });
    assert_eq!(reply.as_deref(), Some("wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"));

    let (.., content, reply) = inbound(only(parse(&fixture("interactive_button_reply.json")).unwrap()));
    assert_eq!(content, InboundContent::ButtonReply { id: Some("reschedule".into()), title: "Reschedule".into() });
    assert!(reply.is_some());

    let (.., content, _) = inbound(only(parse(&fixture("interactive_list_reply.json")).unwrap()));
    assert_eq!(
        content,
        InboundContent::ListReply {
            id: "slot-0930".into(),
            title: "09:30".into(),
            description: Some("Tuesday morning".into())
        }
    );
}

fn status(event: ProviderEvent) -> (String, DeliveryStatus, Option<String>, Option<ProviderError>) {
    match event {
        ProviderEvent::StatusUpdate { provider, provider_message_id, status, recipient, error, .. } => {
            assert_eq!(provider, Provider::Meta);
            (provider_message_id, status, recipient, error)
        }
        other => panic!("not a status: {other:?}"),
    }
}

#[test]
fn statuses_sent_delivered_read() {
    for (file, expected) in [
        ("status_sent.json", DeliveryStatus::Sent),
        ("status_delivered.json", DeliveryStatus::Delivered),
        ("status_read.json", DeliveryStatus::Read),
    ] {
        let (id, got, recipient, error) = status(only(parse(&fixture(file)).unwrap()));
        assert_eq!(id, "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA");
        assert_eq!(got, expected, "{file}");
        assert_eq!(recipient.as_deref(), Some("972987654321"));
        assert_eq!(error, None);
    }
}

#[test]
fn failed_status_carries_the_error_and_its_permanence() {
    let (_, got, _, error) = status(only(parse(&fixture("status_failed.json")).unwrap()));
    assert_eq!(got, DeliveryStatus::Failed);
    assert_eq!(
        error,
        Some(ProviderError {
            code: "131026".into(),
            reason: "Message Undeliverable.".into(),
            class: FailureClass::Permanent
        })
    );
    let (_, _, _, error) = status(only(parse(&fixture("status_failed_rate_limited.json")).unwrap()));
    let error = error.unwrap();
    assert_eq!(error.code, "130429");
    assert_eq!(error.class, FailureClass::Retry, "a rate limit is worth the same message later");
}

#[test]
fn reaction_message() {
    let (.., content, _) = inbound(only(parse(&fixture("reaction.json")).unwrap()));
    assert_eq!(
        content,
        InboundContent::Reaction {
            emoji: Some("\u{1F62E}".into()),
            message_id: "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA".into()
        }
    );
}

#[test]
fn unknown_kinds_are_unknown_events_not_errors() {
    // Reactions are understood now (see `reaction_message`); an order is not.
    let order = String::from_utf8(fixture("reaction.json"))
        .unwrap()
        .replace(r#""type":"reaction","reaction""#, r#""type":"order","order""#);
    let event = only(parse(order.as_bytes()).unwrap());
    let ProviderEvent::Unknown { provider, description } = event else { panic!("{event:?}") };
    assert_eq!(provider, Provider::Meta);
    assert!(description.contains("order"), "{description}");

    let event = only(parse(&fixture("template_status_update.json")).unwrap());
    assert!(
        matches!(event, ProviderEvent::Unknown { ref description, .. } if description.contains("message_template_status_update"))
    );

    for body in [&b"{}"[..], b"[]", b"null", br#"{"object":"page","entry":[]}"#, br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"statuses":[{"id":"x","status":"played","timestamp":"1"}]}}]}]}"#] {
        let events = parse(body).unwrap();
        assert!(events.iter().all(|e| matches!(e, ProviderEvent::Unknown { .. })), "{events:?}");
    }
}

#[test]
fn malformed_json_is_the_only_error() {
    assert!(matches!(parse(b"{not json"), Err(WebhookError::Malformed(_))));
    assert!(matches!(parse(b""), Err(WebhookError::Malformed(_))));
}

#[test]
fn several_entries_and_changes_are_all_parsed() {
    let text: serde_json::Value = serde_json::from_slice(&fixture("text.json")).unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&fixture("status_sent.json")).unwrap();
    let body = serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [text["entry"][0], {"id": "2", "changes": [sent["entry"][0]["changes"][0], text["entry"][0]["changes"][0]]}]
    });
    let events = parse(body.to_string().as_bytes()).unwrap();
    assert_eq!(events.len(), 3);
}

#[test]
fn biz_opaque_callback_data_is_our_correlation_id() {
    let correlation = |body: &[u8]| match parse(body).unwrap().into_iter().next().unwrap() {
        ProviderEvent::StatusUpdate { correlation_id, .. } => correlation_id,
        other => panic!("{other:?}"),
    };
    let plain = String::from_utf8(fixture("status_delivered.json")).unwrap();
    assert_eq!(correlation(plain.as_bytes()), None);
    let echoed =
        plain.replace(r#""status":"delivered","#, r#""status":"delivered","biz_opaque_callback_data":"msg-42","#);
    assert_ne!(echoed, plain);
    assert_eq!(correlation(echoed.as_bytes()), Some("msg-42".to_owned()));
}
