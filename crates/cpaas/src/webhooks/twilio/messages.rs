//! Twilio Messaging callbacks: outbound status and inbound SMS/MMS.

use chrono::{DateTime, Utc};

use super::{describe_params, non_empty_param, param};
use crate::{Channel, DeliveryStatus, FailureClass, InboundContent, MediaKind, Provider, ProviderError, ProviderEvent};

/// Twilio allows at most 10 media per message; bounding the loop keeps a hostile `NumMedia`
/// from mattering.
const MAX_MEDIA: usize = 10;

/// A message status callback (`MessageStatus`/`SmsStatus`, `ErrorCode`).
///
/// `sent`, `delivered`, `read` map directly; `undelivered`, `failed` and `canceled` are
/// `Failed`. The pre-send states (`accepted`, `scheduled`, `queued`, `sending`) have no
/// counterpart in [`DeliveryStatus`] and become `Unknown`.
pub fn parse_message_status(params: &[(String, String)], received_at: DateTime<Utc>) -> ProviderEvent {
    let sid = non_empty_param(params, "MessageSid").or_else(|| non_empty_param(params, "SmsSid"));
    let status = non_empty_param(params, "MessageStatus").or_else(|| non_empty_param(params, "SmsStatus"));
    let (Some(sid), Some(status)) = (sid, status) else {
        return unknown(format!("status callback without sid or status: {}", describe_params(params)));
    };
    let delivery_status = match status {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "undelivered" | "failed" | "canceled" => DeliveryStatus::Failed,
        other => return unknown(format!("message {sid} status {other:?}")),
    };
    let error = non_empty_param(params, "ErrorCode").map(|code| ProviderError {
        code: code.to_owned(),
        reason: non_empty_param(params, "ErrorMessage").map_or_else(|| error_title(code).to_owned(), str::to_owned),
        class: failure_class(code),
    });
    let error = error.or_else(|| {
        (status == "canceled").then(|| ProviderError {
            code: "canceled".to_owned(),
            reason: "message canceled".to_owned(),
            class: FailureClass::Permanent,
        })
    });
    ProviderEvent::StatusUpdate {
        provider: Provider::Twilio,
        provider_message_id: sid.to_owned(),
        status: delivery_status,
        timestamp: received_at,
        recipient: non_empty_param(params, "To").map(str::to_owned),
        error,
        // Twilio echoes nothing in the form: ours rides in the StatusCallback URL's query.
        correlation_id: None,
    }
}

/// What a callback's `ErrorCode` calls for. Twilio's side or the carrier's network refusing
/// for now (queue overflow, too many requests, congestion, an unexplained error) is worth the
/// same message again later; an unreachable handset is this message lost, after the carrier's
/// own attempts, but not the number; every other code — unknown or landline number, blocked,
/// filtered, opted out — is the number, for good.
fn failure_class(code: &str) -> FailureClass {
    match code {
        "30001" | "30008" | "30017" | "20429" => FailureClass::Retry,
        "30003" => FailureClass::Transient,
        _ => FailureClass::Permanent,
    }
}

/// Titles of the codes that arrive in callbacks (Twilio's error pages).
fn error_title(code: &str) -> &'static str {
    match code {
        "30001" => "Queue overflow",
        "30002" => "Account suspended",
        "30003" => "Unreachable destination handset",
        "30004" => "Message blocked",
        "30005" => "Unknown destination handset",
        "30006" => "Landline or unreachable carrier",
        "30007" => "Message filtered",
        "30008" => "Unknown error",
        "21610" => "Attempt to send to unsubscribed recipient",
        _ => "delivery failed",
    }
}

/// An inbound SMS/MMS (or WhatsApp through Twilio).
///
/// Without media: one `Text` event. With media: one `Media` event per item, the body as the
/// first one's caption. [`InboundContent`] holds one item, so the 2nd… items get the ids
/// `<MessageSid>/1`, `<MessageSid>/2`… (stable, so still good dedupe keys). An opt-out such as
/// "STOP" is an ordinary text: Twilio handles the opt-out itself.
pub fn parse_inbound_message(params: &[(String, String)], received_at: DateTime<Utc>) -> Vec<ProviderEvent> {
    let sid = ["MessageSid", "SmsMessageSid", "SmsSid"].iter().find_map(|name| non_empty_param(params, name));
    let (Some(sid), Some(from), Some(to)) = (sid, non_empty_param(params, "From"), non_empty_param(params, "To"))
    else {
        return vec![unknown(format!("inbound message without sid, From or To: {}", describe_params(params)))];
    };
    // WhatsApp through Twilio prefixes addresses with `whatsapp:`.
    let (channel, from) = match from.strip_prefix("whatsapp:") {
        Some(number) => (Channel::Whatsapp, number),
        None => (Channel::Sms, from),
    };
    let to = to.strip_prefix("whatsapp:").unwrap_or(to);
    let body = param(params, "Body").unwrap_or_default();
    let media = media_items(params);
    let contents: Vec<InboundContent> = if media.is_empty() {
        vec![InboundContent::Text { body: body.to_owned() }]
    } else {
        media
            .into_iter()
            .enumerate()
            .map(|(index, (url, mime_type))| InboundContent::Media {
                kind: media_kind(mime_type.as_deref()),
                media_id: None,
                url: Some(url),
                mime_type,
                caption: (index == 0 && !body.is_empty()).then(|| body.to_owned()),
                filename: None,
            })
            .collect()
    };
    contents
        .into_iter()
        .enumerate()
        .map(|(index, content)| ProviderEvent::InboundMessage {
            provider: Provider::Twilio,
            channel,
            provider_message_id: if index == 0 { sid.to_owned() } else { format!("{sid}/{index}") },
            from: from.to_owned(),
            to: to.to_owned(),
            from_name: non_empty_param(params, "ProfileName").map(str::to_owned),
            timestamp: received_at,
            content,
            // Twilio WhatsApp replies name the message they answer.
            in_reply_to: non_empty_param(params, "OriginalRepliedMessageSid").map(str::to_owned),
        })
        .collect()
}

/// `MediaUrlN` / `MediaContentTypeN` for `N < NumMedia` (at most [`MAX_MEDIA`]).
fn media_items(params: &[(String, String)]) -> Vec<(String, Option<String>)> {
    let count = param(params, "NumMedia").and_then(|n| n.trim().parse::<usize>().ok()).unwrap_or(0).min(MAX_MEDIA);
    (0..count)
        .filter_map(|index| {
            let url = non_empty_param(params, &format!("MediaUrl{index}"))?;
            let mime = non_empty_param(params, &format!("MediaContentType{index}")).map(str::to_owned);
            Some((url.to_owned(), mime))
        })
        .collect()
}

fn media_kind(mime_type: Option<&str>) -> MediaKind {
    let mime_type = mime_type.unwrap_or_default().to_ascii_lowercase();
    if mime_type.starts_with("image/") {
        MediaKind::Image
    } else if mime_type.starts_with("video/") {
        MediaKind::Video
    } else if mime_type.starts_with("audio/") {
        MediaKind::Audio
    } else {
        MediaKind::Document
    }
}

fn unknown(description: String) -> ProviderEvent {
    ProviderEvent::Unknown { provider: Provider::Twilio, description }
}
