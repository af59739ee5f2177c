//! Twilio voice status callbacks → missed calls.

use chrono::{DateTime, Utc};

use super::{describe_params, non_empty_param};
use crate::{Provider, ProviderEvent};

/// A voice status callback or `<Dial action>` callback.
///
/// `DialCallStatus` (the forwarded leg, present on `<Dial>` action callbacks) wins over
/// `CallStatus`: the inbound leg is usually `completed` because Twilio answered it, even when
/// nobody picked up the forwarded call. `no-answer`, `busy`, `failed` and `canceled` are missed
/// calls; everything else (`completed`, `ringing`, `in-progress`…) is `Unknown`.
/// The time is the callback's `Timestamp` (RFC 2822) when present, else `received_at`.
pub fn parse_voice_status(params: &[(String, String)], received_at: DateTime<Utc>) -> ProviderEvent {
    let (Some(call_id), Some(from), Some(to)) =
        (non_empty_param(params, "CallSid"), non_empty_param(params, "From"), non_empty_param(params, "To"))
    else {
        return unknown(format!("voice callback without CallSid, From or To: {}", describe_params(params)));
    };
    let status = non_empty_param(params, "DialCallStatus").or_else(|| non_empty_param(params, "CallStatus"));
    match status {
        Some(reason @ ("no-answer" | "busy" | "failed" | "canceled")) => ProviderEvent::MissedCall {
            provider: Provider::Twilio,
            call_id: call_id.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            reason: reason.to_owned(),
            timestamp: non_empty_param(params, "Timestamp")
                .and_then(|text| DateTime::parse_from_rfc2822(text).ok())
                .map_or(received_at, |time| time.with_timezone(&Utc)),
        },
        other => unknown(format!("call {call_id} status {other:?}")),
    }
}

fn unknown(description: String) -> ProviderEvent {
    ProviderEvent::Unknown { provider: Provider::Twilio, description }
}
