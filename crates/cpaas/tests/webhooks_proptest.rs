//! Parsers and verifiers never panic, whatever arrives: raw bytes, random JSON built from the
//! providers' own field names (so the parsers' deeper branches are reached), random form params.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use chrono::{TimeZone, Utc};
use cpaas::webhooks::sns::{SnsMessage, SnsTrust};
use cpaas::webhooks::{meta, ses, twilio};
use proptest::prelude::*;
use serde_json::{Value, json};

const KEYS: &[&str] = &[
    "object",
    "entry",
    "changes",
    "field",
    "value",
    "metadata",
    "phone_number_id",
    "messages",
    "statuses",
    "status",
    "id",
    "from",
    "timestamp",
    "type",
    "text",
    "body",
    "image",
    "document",
    "sticker",
    "location",
    "latitude",
    "longitude",
    "interactive",
    "button_reply",
    "list_reply",
    "button",
    "payload",
    "title",
    "errors",
    "code",
    "error_data",
    "details",
    "contacts",
    "profile",
    "name",
    "wa_id",
    "context",
    "recipient_id",
    "eventType",
    "notificationType",
    "mail",
    "messageId",
    "destination",
    "bounce",
    "bounceType",
    "bouncedRecipients",
    "emailAddress",
    "complaint",
    "complainedRecipients",
    "delivery",
    "recipients",
    "deliveryDelay",
    "delayedRecipients",
    "open",
    "click",
    "reject",
    "reason",
    "failure",
    "content",
    "receipt",
    "action",
    "encoding",
];

const WORDS: &[&str] = &[
    "whatsapp_business_account",
    "messages",
    "text",
    "image",
    "interactive",
    "button_reply",
    "list_reply",
    "button",
    "location",
    "sent",
    "failed",
    "read",
    "delivered",
    "1697043223",
    "-5",
    "99999999999999999999",
    "Send",
    "Delivery",
    "Bounce",
    "Complaint",
    "Open",
    "Click",
    "Reject",
    "DeliveryDelay",
    "Rendering Failure",
    "Received",
    "Permanent",
    "BASE64",
    "UTF8",
    "2017-08-05T00:40:02.012Z",
    "a@b.example",
    "",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        proptest::sample::select(WORDS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// A Meta envelope around random messages/statuses, so parsing reaches the per-type code.
fn meta_envelope() -> impl Strategy<Value = Value> {
    (proptest::collection::vec(json_value(), 0..4), proptest::collection::vec(json_value(), 0..4), json_value()).prop_map(|(messages, statuses, contacts)| {
        json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": {
            "metadata": {"phone_number_id": "1"}, "contacts": contacts, "messages": messages, "statuses": statuses }}]}]})
    })
}

fn ses_event() -> impl Strategy<Value = Value> {
    (proptest::sample::select(WORDS), json_value(), json_value(), ".{0,400}", any::<bool>()).prop_map(|(kind, mail, detail, content, base64)| {
        let key = if base64 { "eventType" } else { "notificationType" };
        json!({key: kind, "mail": mail, "bounce": detail, "delivery": detail, "complaint": detail, "deliveryDelay": detail,
               "receipt": {"action": {"encoding": if base64 { "BASE64" } else { "UTF8" }}, "recipients": ["x@y.example"]},
               "content": content})
    })
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    let names = prop_oneof![
        proptest::sample::select(
            &[
                "MessageSid",
                "SmsSid",
                "SmsMessageSid",
                "MessageStatus",
                "SmsStatus",
                "ErrorCode",
                "ErrorMessage",
                "From",
                "To",
                "Body",
                "NumMedia",
                "MediaUrl0",
                "MediaContentType0",
                "MediaUrl1",
                "CallSid",
                "CallStatus",
                "DialCallStatus",
                "Timestamp",
                "ProfileName",
            ][..]
        )
        .prop_map(str::to_owned),
        ".{0,8}",
    ];
    let values = prop_oneof![
        proptest::sample::select(
            &[
                "received",
                "delivered",
                "undelivered",
                "no-answer",
                "busy",
                "completed",
                "3",
                "18446744073709551616",
                "whatsapp:+1",
                "image/png",
                ""
            ][..]
        )
        .prop_map(str::to_owned),
        ".{0,16}",
    ];
    proptest::collection::vec((names, values), 0..16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn meta_parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = meta::parse(&bytes);
        let _ = meta::verify_signature(b"secret", Some(&String::from_utf8_lossy(&bytes)), &bytes);
    }

    #[test]
    fn meta_parse_never_panics_on_json(value in json_value(), envelope in meta_envelope()) {
        let _ = meta::parse(value.to_string().as_bytes());
        let events = meta::parse(envelope.to_string().as_bytes());
        prop_assert!(events.is_ok());
    }

    #[test]
    fn sns_message_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), url in ".{0,64}") {
        if let Ok(message) = SnsMessage::from_json(&bytes) {
            let _ = message.string_to_sign();
        }
        let _ = SnsTrust::aws().check_certificate_url(&url);
        let _ = SnsTrust::nothing().with_allowed_host(url.clone()).with_http_allowed(true).check_subscribe_url(&url);
    }

    #[test]
    fn ses_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), value in json_value(), event in ses_event()) {
        let _ = ses::parse(&String::from_utf8_lossy(&bytes));
        let _ = ses::parse(&value.to_string());
        prop_assert!(ses::parse(&event.to_string()).is_ok());
    }

    #[test]
    fn ses_inbound_never_panics_on_arbitrary_mime(mime in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let event = json!({"notificationType": "Received", "mail": {"messageId": "m", "timestamp": "2015-09-11T20:32:33.936Z"},
            "receipt": {"action": {"type": "SNS", "encoding": "BASE64"}},
            "content": base64::engine::general_purpose::STANDARD.encode(&mime)});
        prop_assert_eq!(ses::parse(&event.to_string()).map(|events| events.len()), Ok(1));
    }

    #[test]
    fn twilio_never_panics(params in params(), body in proptest::collection::vec(any::<u8>(), 0..256), url in ".{0,64}", header in ".{0,40}") {
        let at = Utc.timestamp_opt(0, 0).unwrap();
        prop_assert!(!twilio::parse_callback(&params, at).is_empty());
        let _ = twilio::parse_message_status(&params, at);
        let _ = twilio::parse_inbound_message(&params, at);
        let _ = twilio::parse_voice_status(&params, at);
        let _ = twilio::parse_form(&body);
        let _ = twilio::verify_signature(b"token", &url, &params, Some(&header));
        let _ = twilio::verify_json_signature(b"token", &url, &body, Some(&header));
    }

    #[test]
    fn twilio_url_variants_never_panic(scheme in "(https?|ftp|)", userinfo in "([a-z:]{0,6}@)?", host in "(\\[::1\\]|[a-z.]{0,10}|é)", port in "(:[0-9]{0,6}|:)?", rest in "[/?#a-z=&:%]{0,20}") {
        let url = format!("{scheme}://{userinfo}{host}{port}{rest}");
        let _ = twilio::verify_signature(b"token", &url, &[], Some("AAAA"));
    }
}
