//! Twilio voice webhooks → calls: the incoming-call request, the `<Dial action>` callback and
//! the status callback. Which calls count as missed is the domain's decision (a short completed
//! call may be one); this only says what Twilio reported.

use chrono::{DateTime, Utc};

use super::{describe_params, non_empty_param};
use crate::{Provider, ProviderEvent};

/// A voice request or callback.
///
/// - No `DialCallStatus` and a `CallStatus` of `ringing`/`queued` (or none): the incoming-call
///   request, [`ProviderEvent::IncomingCall`].
/// - `DialCallStatus` (the forwarded leg, on `<Dial>` action callbacks) wins over `CallStatus`:
///   the inbound leg is usually `completed` because Twilio answered it, even when nobody picked
///   up the forwarded call.
/// - `no-answer`, `busy`, `failed` and `canceled` are [`ProviderEvent::MissedCall`];
///   `completed`/`answered` is [`ProviderEvent::CallCompleted`] with its duration
///   (`DialCallDuration`, else `CallDuration`); anything else (`in-progress`…) is `Unknown`.
///
/// The time is the callback's `Timestamp` (RFC 2822) when present, else `received_at`.
pub fn parse_voice_status(params: &[(String, String)], received_at: DateTime<Utc>) -> ProviderEvent {
    let (Some(call_id), Some(from), Some(to)) =
        (non_empty_param(params, "CallSid"), non_empty_param(params, "From"), non_empty_param(params, "To"))
    else {
        return unknown(format!("voice callback without CallSid, From or To: {}", describe_params(params)));
    };
    let timestamp = non_empty_param(params, "Timestamp")
        .and_then(|text| DateTime::parse_from_rfc2822(text).ok())
        .map_or(received_at, |time| time.with_timezone(&Utc));
    let dial = non_empty_param(params, "DialCallStatus");
    let status = dial.or_else(|| non_empty_param(params, "CallStatus"));
    let duration = if dial.is_some() {
        non_empty_param(params, "DialCallDuration")
    } else {
        non_empty_param(params, "CallDuration")
    }
    .and_then(|text| text.parse::<u32>().ok());
    let (call_id, from, to) = (call_id.to_owned(), from.to_owned(), to.to_owned());
    match status {
        None | Some("ringing" | "queued") if dial.is_none() => {
            ProviderEvent::IncomingCall { provider: Provider::Twilio, call_id, from, to, timestamp }
        }
        Some(reason @ ("no-answer" | "busy" | "failed" | "canceled")) => ProviderEvent::MissedCall {
            provider: Provider::Twilio,
            call_id,
            from,
            to,
            reason: reason.to_owned(),
            timestamp,
        },
        Some("completed" | "answered") => ProviderEvent::CallCompleted {
            provider: Provider::Twilio,
            call_id,
            from,
            to,
            duration_secs: duration,
            timestamp,
        },
        other => unknown(format!("call {call_id} status {other:?}")),
    }
}

fn unknown(description: String) -> ProviderEvent {
    ProviderEvent::Unknown { provider: Provider::Twilio, description }
}
