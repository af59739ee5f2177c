//! SES inbound mail (receipt rule SNS action) → an inbound email message.

use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde_json::Value;

use super::unknown;
use crate::event::InboundAttachment;
use crate::webhooks::json::{non_empty, rfc3339, str_field, strings};
use crate::{Channel, InboundContent, Provider, ProviderEvent};

/// A `notificationType: "Received"` record.
pub(super) fn parse_received(root: &Value) -> ProviderEvent {
    let mail = root.get("mail").unwrap_or(&Value::Null);
    let receipt = root.get("receipt").unwrap_or(&Value::Null);
    let Some(message_id) = non_empty(mail, "messageId") else {
        return unknown("SES inbound mail without mail.messageId".to_owned());
    };
    let Some(timestamp) = rfc3339(mail, "timestamp").or_else(|| rfc3339(receipt, "timestamp")) else {
        return unknown(format!("SES inbound mail {message_id} without timestamp"));
    };
    // Only the SNS action carries the message; S3/Lambda actions leave it elsewhere.
    let Some(content) = str_field(root, "content") else {
        let action = receipt.get("action").and_then(|action| str_field(action, "type")).unwrap_or_default();
        return unknown(format!("SES inbound mail {message_id} without content (action {action:?})"));
    };
    let raw = match decode_content(&content, receipt) {
        Ok(raw) => raw,
        Err(why) => return unknown(format!("SES inbound mail {message_id}: {why}")),
    };
    let Some(parsed) = MessageParser::default().parse(&raw) else {
        return unknown(format!("SES inbound mail {message_id}: content is not a MIME message"));
    };

    let sender = parsed.from().and_then(|from| from.first());
    let from = sender
        .and_then(|addr| addr.address())
        .map(str::to_owned)
        .or_else(|| mail.get("commonHeaders").and_then(|headers| strings(headers, "from").into_iter().next()))
        .or_else(|| non_empty(mail, "source"))
        .unwrap_or_default();
    let from_name = sender.and_then(|addr| addr.name()).filter(|name| !name.is_empty()).map(str::to_owned);
    // Our address: the envelope recipient that matched the receipt rule, else the To header.
    let to = strings(receipt, "recipients")
        .into_iter()
        .next()
        .or_else(|| parsed.to().and_then(|to| to.first()).and_then(|addr| addr.address()).map(str::to_owned))
        .unwrap_or_default();
    let in_reply_to = parsed.in_reply_to().as_text().map(str::to_owned);
    let references = parsed
        .references()
        .as_text_list()
        .map(|list| list.iter().map(|id| id.to_string()).collect())
        .unwrap_or_default();

    let content = InboundContent::Email {
        subject: parsed.subject().map(str::to_owned),
        text: body_part(&parsed, &parsed.text_body, false),
        html: body_part(&parsed, &parsed.html_body, true),
        attachments: parsed
            .attachments()
            .map(|part| InboundAttachment {
                filename: part.attachment_name().map(str::to_owned),
                content_type: content_type(part),
                size: part.contents().len(),
            })
            .collect(),
        message_id: parsed.message_id().map(str::to_owned),
        in_reply_to: in_reply_to.clone(),
        references,
    };
    ProviderEvent::InboundMessage {
        provider: Provider::Ses,
        channel: Channel::Email,
        provider_message_id: message_id,
        from,
        to,
        from_name,
        timestamp,
        content,
        in_reply_to,
    }
}

/// The raw MIME bytes: base64 when the SNS action was configured with Base64 encoding (which
/// keeps non-UTF-8 mail intact), the JSON string as is otherwise.
fn decode_content(content: &str, receipt: &Value) -> Result<Vec<u8>, String> {
    let encoding = receipt.get("action").and_then(|action| str_field(action, "encoding")).unwrap_or_default();
    if encoding.eq_ignore_ascii_case("base64") {
        let compact: String = content.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|error| format!("content is not base64: {error}"))
    } else {
        Ok(content.as_bytes().to_vec())
    }
}

/// The first body part that really is text (or HTML): mail-parser converts between the two
/// when one is missing, and we want only what the sender wrote.
fn body_part(message: &mail_parser::Message<'_>, ids: &[u32], html: bool) -> Option<String> {
    ids.iter().find_map(|id| match (&message.part(*id)?.body, html) {
        (PartType::Text(text), false) | (PartType::Html(text), true) => Some(text.to_string()),
        _ => None,
    })
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(subtype) => format!("{}/{}", ct.ctype(), subtype).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "application/octet-stream".to_owned(),
    }
}
