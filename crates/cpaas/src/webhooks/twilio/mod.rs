//! Twilio webhooks: `X-Twilio-Signature` and the form-encoded callbacks (message status,
//! inbound SMS/MMS, voice status).
//!
//! Twilio callbacks carry no event time, so every parser takes the time we received it.
//! Parsers take the decoded form parameters ([`parse_form`]) and never fail: what is not
//! understood becomes [`ProviderEvent::Unknown`](crate::ProviderEvent::Unknown).

mod messages;
mod signature;
pub mod twiml;
mod voice;

use chrono::{DateTime, Utc};

pub use messages::{parse_inbound_message, parse_message_status};
pub use signature::{SIGNATURE_HEADER, verify_json_signature, verify_signature};
pub use voice::parse_voice_status;

use crate::ProviderEvent;

/// Decodes an `application/x-www-form-urlencoded` body into ordered pairs (repeats kept).
/// Invalid UTF-8 is replaced rather than rejected: the signature check decides authenticity.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Parses any of the callbacks, telling them apart by their fields: `CallSid` is voice, an
/// inbound SMS has `SmsStatus=received` (or a `Body` and no `MessageStatus`), anything else
/// with a message SID is a status callback.
pub fn parse_callback(params: &[(String, String)], received_at: DateTime<Utc>) -> Vec<ProviderEvent> {
    if param(params, "CallSid").is_some() {
        return vec![parse_voice_status(params, received_at)];
    }
    let status = param(params, "MessageStatus").or_else(|| param(params, "SmsStatus"));
    let inbound =
        matches!(status, Some("received") | Some("receiving")) || (status.is_none() && param(params, "Body").is_some());
    if inbound { parse_inbound_message(params, received_at) } else { vec![parse_message_status(params, received_at)] }
}

/// The first value of a parameter.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// The first non-empty value of a parameter.
pub(crate) fn non_empty_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    param(params, name).filter(|value| !value.is_empty())
}

/// A short rendering of the parameters for `Unknown` descriptions: names only, since values
/// include phone numbers and message bodies.
pub(crate) fn describe_params(params: &[(String, String)]) -> String {
    let names: Vec<&str> = params.iter().take(40).map(|(key, _)| key.as_str()).collect();
    format!("params [{}]", names.join(", "))
}
