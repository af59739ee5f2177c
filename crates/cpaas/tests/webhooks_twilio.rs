//! Twilio: X-Twilio-Signature (form and JSON bodies) and the callback parsers.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use cpaas::webhooks::WebhookError;
use cpaas::webhooks::twilio::{
    parse_callback, parse_form, parse_inbound_message, parse_message_status, parse_voice_status, verify_json_signature,
    verify_signature,
};
use cpaas::{Channel, DeliveryStatus, FailureClass, InboundContent, MediaKind, Provider, ProviderError, ProviderEvent};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

const DOC_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const DOC_SIGNATURE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

fn doc_params() -> Vec<(String, String)> {
    [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn fixture(name: &str) -> Vec<(String, String)> {
    parse_form(&std::fs::read(format!("{}/tests/fixtures/twilio/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap())
}

fn sign(token: &[u8], text: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(token).unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 8, 16, 3, 45, 1).unwrap()
}

#[test]
fn documented_test_vector_is_accepted_in_any_param_order() {
    verify_signature(b"12345", DOC_URL, &doc_params(), Some(DOC_SIGNATURE)).unwrap();
    let mut reversed = doc_params();
    reversed.reverse();
    verify_signature(b"12345", DOC_URL, &reversed, Some(DOC_SIGNATURE)).unwrap();
}

#[test]
fn tampering_wrong_token_and_missing_header_are_rejected() {
    let mut params = doc_params();
    params[2].1 = "9999".into();
    assert_eq!(verify_signature(b"12345", DOC_URL, &params, Some(DOC_SIGNATURE)), Err(WebhookError::BadSignature));
    let mut extra = doc_params();
    extra.push(("Injected".into(), "1".into()));
    assert_eq!(verify_signature(b"12345", DOC_URL, &extra, Some(DOC_SIGNATURE)), Err(WebhookError::BadSignature));
    assert_eq!(
        verify_signature(b"54321", DOC_URL, &doc_params(), Some(DOC_SIGNATURE)),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        verify_signature(b"12345", "https://mycompany.com/myapp.php?foo=1&bar=3", &doc_params(), Some(DOC_SIGNATURE)),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(verify_signature(b"12345", DOC_URL, &doc_params(), None), Err(WebhookError::MissingSignature));
    assert_eq!(verify_signature(b"12345", DOC_URL, &doc_params(), Some("  ")), Err(WebhookError::MissingSignature));
    assert_eq!(verify_signature(b"12345", DOC_URL, &doc_params(), Some("%%%")), Err(WebhookError::BadSignature));
    assert_eq!(
        verify_signature(b"", DOC_URL, &doc_params(), Some(&sign(b"", DOC_URL))),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn default_port_is_accepted_both_ways() {
    // Twilio signed with the port; we see the URL without it.
    let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
    let suffix: String = {
        let mut p = doc_params();
        p.sort();
        p.iter().map(|(k, v)| format!("{k}{v}")).collect()
    };
    let signature = sign(b"12345", &format!("{with_port}{suffix}"));
    verify_signature(b"12345", DOC_URL, &doc_params(), Some(&signature)).unwrap();
    // And the other way round.
    verify_signature(b"12345", with_port, &doc_params(), Some(DOC_SIGNATURE)).unwrap();
    // A non-default port is part of the URL.
    assert_eq!(
        verify_signature(
            b"12345",
            "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
            &doc_params(),
            Some(DOC_SIGNATURE)
        ),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn repeated_params_are_sorted_by_value() {
    let url = "https://hooks.example/twilio";
    let params = vec![
        ("MediaUrl".to_string(), "b".to_string()),
        ("Body".to_string(), "x".to_string()),
        ("MediaUrl".to_string(), "a".to_string()),
    ];
    let signature = sign(b"tok", &format!("{url}BodyxMediaUrlaMediaUrlb"));
    verify_signature(b"tok", url, &params, Some(&signature)).unwrap();
}

#[test]
fn fixture_bodies_verify_with_their_empty_values() {
    let url = "https://hooks.example/twilio/inbound";
    let params = fixture("inbound_sms.form");
    let mut sorted = params.clone();
    sorted.sort();
    let text: String = std::iter::once(url.to_owned()).chain(sorted.iter().map(|(k, v)| format!("{k}{v}"))).collect();
    verify_signature(b"secret-token", url, &params, Some(&sign(b"secret-token", &text))).unwrap();
    let without_empty: Vec<_> = params.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    assert_eq!(
        verify_signature(b"secret-token", url, &without_empty, Some(&sign(b"secret-token", &text))),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn json_bodies_use_body_sha256() {
    let body = br#"{"event":"x"}"#;
    let url = format!("https://hooks.example/twilio/events?bodySHA256={}", hex::encode(Sha256::digest(body)));
    let signature = sign(b"tok", &url);
    verify_json_signature(b"tok", &url, body, Some(&signature)).unwrap();
    assert_eq!(
        verify_json_signature(b"tok", &url, br#"{"event":"y"}"#, Some(&signature)),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(verify_json_signature(b"other", &url, body, Some(&signature)), Err(WebhookError::BadSignature));
    let no_hash = "https://hooks.example/twilio/events";
    assert!(matches!(
        verify_json_signature(b"tok", no_hash, body, Some(&sign(b"tok", no_hash))),
        Err(WebhookError::Malformed(_))
    ));
}

#[test]
fn status_callbacks() {
    let event = parse_message_status(&fixture("status_undelivered.form"), received_at());
    assert_eq!(
        event,
        ProviderEvent::StatusUpdate {
            provider: Provider::Twilio,
            provider_message_id: "SMxxxxxxxx".into(),
            status: DeliveryStatus::Failed,
            timestamp: received_at(),
            recipient: Some("+15558675310".into()),
            error: Some(ProviderError {
                code: "30003".into(),
                reason: "Unreachable destination handset".into(),
                class: FailureClass::Transient
            }),
            correlation_id: None,
        }
    );
    let ProviderEvent::StatusUpdate { status, error, .. } =
        parse_message_status(&fixture("status_delivered.form"), received_at())
    else {
        panic!()
    };
    assert_eq!((status, error), (DeliveryStatus::Delivered, None));

    let params = |status: &str, code: Option<&str>| {
        let mut p =
            vec![("MessageSid".to_string(), "SM1".to_string()), ("MessageStatus".to_string(), status.to_string())];
        if let Some(code) = code {
            p.push(("ErrorCode".into(), code.into()));
        }
        p
    };
    for (status, expected) in
        [("sent", DeliveryStatus::Sent), ("read", DeliveryStatus::Read), ("failed", DeliveryStatus::Failed)]
    {
        assert!(
            matches!(parse_message_status(&params(status, None), received_at()), ProviderEvent::StatusUpdate { status, .. } if status == expected)
        );
    }
    let ProviderEvent::StatusUpdate { error, .. } =
        parse_message_status(&params("undelivered", Some("30006")), received_at())
    else {
        panic!()
    };
    assert_eq!(error.unwrap().class, FailureClass::Permanent);
    for (code, class) in
        [("30001", FailureClass::Retry), ("20429", FailureClass::Retry), ("30003", FailureClass::Transient)]
    {
        let ProviderEvent::StatusUpdate { error, .. } =
            parse_message_status(&params("undelivered", Some(code)), received_at())
        else {
            panic!()
        };
        assert_eq!(error.unwrap().class, class, "{code}");
    }
    for status in ["queued", "sending", "accepted", "weird"] {
        assert!(
            matches!(parse_message_status(&params(status, None), received_at()), ProviderEvent::Unknown { .. }),
            "{status}"
        );
    }
    // SmsSid/SmsStatus alone (older callbacks) are enough.
    let legacy = vec![("SmsSid".to_string(), "SM2".to_string()), ("SmsStatus".to_string(), "delivered".to_string())];
    assert!(matches!(parse_message_status(&legacy, received_at()), ProviderEvent::StatusUpdate { .. }));
    assert!(matches!(parse_message_status(&[], received_at()), ProviderEvent::Unknown { .. }));
}

#[test]
fn inbound_sms_is_text() {
    let events = parse_inbound_message(&fixture("inbound_sms.form"), received_at());
    assert_eq!(
        events,
        vec![ProviderEvent::InboundMessage {
            provider: Provider::Twilio,
            channel: Channel::Sms,
            provider_message_id: "SMe287d7109a5a925f182f0e07fe5b223b".into(),
            from: "+14133881111".into(),
            to: "+12028831111".into(),
            from_name: None,
            timestamp: received_at(),
            content: InboundContent::Text { body: "Msg".into() },
            in_reply_to: None,
        }]
    );
    // STOP is just text.
    let mut stop = fixture("inbound_sms.form");
    stop.iter_mut().filter(|(k, _)| k == "Body").for_each(|(_, v)| *v = "STOP".into());
    assert!(
        matches!(parse_callback(&stop, received_at()).as_slice(), [ProviderEvent::InboundMessage { content: InboundContent::Text { body }, .. }] if body == "STOP")
    );
}

#[test]
fn inbound_mms_gives_one_media_event_per_item() {
    let events = parse_inbound_message(&fixture("inbound_mms.form"), received_at());
    assert_eq!(events.len(), 2);
    let ids_and_contents: Vec<_> = events
        .into_iter()
        .map(|event| match event {
            ProviderEvent::InboundMessage { provider_message_id, content, .. } => (provider_message_id, content),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids_and_contents[0].0, "MM0f6a0bd2b35e4b0b8f3f8e5b1a2c3d4e");
    assert_eq!(ids_and_contents[1].0, "MM0f6a0bd2b35e4b0b8f3f8e5b1a2c3d4e/1");
    let InboundContent::Media { kind, url, mime_type, caption, .. } = &ids_and_contents[0].1 else { panic!() };
    assert_eq!(*kind, MediaKind::Image);
    assert!(url.as_deref().unwrap().ends_with("/Media/ME1"));
    assert_eq!(mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(caption.as_deref(), Some("Here is the damage"));
    let InboundContent::Media { kind, caption, .. } = &ids_and_contents[1].1 else { panic!() };
    assert_eq!((*kind, caption.as_deref()), (MediaKind::Document, None));
}

#[test]
fn whatsapp_via_twilio_is_whatsapp() {
    let params: Vec<(String, String)> = [
        ("MessageSid", "SM9"),
        ("From", "whatsapp:+14133881111"),
        ("To", "whatsapp:+12028831111"),
        ("Body", "hi"),
        ("ProfileName", "Ann"),
        ("NumMedia", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let events = parse_inbound_message(&params, received_at());
    let [ProviderEvent::InboundMessage { channel, from, to, from_name, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(
        (*channel, from.as_str(), to.as_str(), from_name.as_deref()),
        (Channel::Whatsapp, "+14133881111", "+12028831111", Some("Ann"))
    );
}

#[test]
fn voice_missed_calls() {
    assert_eq!(
        parse_voice_status(&fixture("voice_no_answer.form"), received_at()),
        ProviderEvent::MissedCall {
            provider: Provider::Twilio,
            call_id: "CA5b7a0c3d2e1f4a5b6c7d8e9f0a1b2c3d".into(),
            from: "+15551230000".into(),
            to: "+15557650000".into(),
            reason: "no-answer".into(),
            timestamp: Utc.with_ymd_and_hms(2024, 8, 16, 3, 45, 0).unwrap(),
        }
    );
    let ProviderEvent::MissedCall { reason, timestamp, .. } =
        parse_voice_status(&fixture("voice_dial_busy.form"), received_at())
    else {
        panic!()
    };
    assert_eq!((reason.as_str(), timestamp), ("busy", received_at()), "DialCallStatus wins over CallStatus=completed");
    assert!(matches!(
        parse_voice_status(&fixture("voice_completed.form"), received_at()),
        ProviderEvent::CallCompleted { duration_secs: Some(42), .. }
    ));
}

#[test]
fn parse_callback_dispatches() {
    assert!(matches!(
        parse_callback(&fixture("voice_no_answer.form"), received_at()).as_slice(),
        [ProviderEvent::MissedCall { .. }]
    ));
    assert!(matches!(
        parse_callback(&fixture("status_delivered.form"), received_at()).as_slice(),
        [ProviderEvent::StatusUpdate { .. }]
    ));
    assert!(matches!(
        parse_callback(&fixture("inbound_sms.form"), received_at()).as_slice(),
        [ProviderEvent::InboundMessage { .. }]
    ));
    assert_eq!(parse_callback(&fixture("inbound_mms.form"), received_at()).len(), 2);
}
