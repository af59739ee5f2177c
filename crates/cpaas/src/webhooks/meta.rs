//! Meta WhatsApp Cloud API webhooks: the GET verification handshake, the
//! `X-Hub-Signature-256` HMAC, and the `whatsapp_business_account` payload.

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::WebhookError;
use super::json::{array, describe, float, non_empty, str_field, unix_seconds};
use crate::{
    Channel, DeliveryStatus, FailureClass, InboundContent, MediaKind, Provider, ProviderError, ProviderEvent,
    SharedContact, SharedPhone,
};

/// The header Meta signs POSTs with.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// Answers Meta's `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` handshake.
///
/// Returns the challenge to echo as the plain-text 200 body. A wrong token is
/// [`WebhookError::BadSignature`] (403), a missing token [`WebhookError::MissingSignature`]
/// (401), a wrong mode or missing challenge [`WebhookError::Malformed`] (400).
pub fn verify_handshake(query: &HashMap<String, String>, expected_verify_token: &str) -> Result<String, WebhookError> {
    let mode = query.get("hub.mode").map(String::as_str);
    if mode != Some("subscribe") {
        return Err(WebhookError::Malformed(format!("hub.mode is {mode:?}, expected \"subscribe\"")));
    }
    let token = query.get("hub.verify_token").ok_or(WebhookError::MissingSignature)?;
    // Constant time, like the signature: the verify token is a shared secret.
    if expected_verify_token.is_empty()
        || aws_lc_rs::constant_time::verify_slices_are_equal(token.as_bytes(), expected_verify_token.as_bytes())
            .is_err()
    {
        return Err(WebhookError::BadSignature);
    }
    query.get("hub.challenge").cloned().ok_or_else(|| WebhookError::Malformed("hub.challenge is missing".to_owned()))
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` = HMAC-SHA256(app secret, raw body).
///
/// The body must be the exact bytes received: Meta escapes non-ASCII as `\uXXXX`, so any
/// re-serialisation breaks the signature.
pub fn verify_signature(app_secret: &[u8], header: Option<&str>, raw_body: &[u8]) -> Result<(), WebhookError> {
    let header = header.map(str::trim).filter(|value| !value.is_empty()).ok_or(WebhookError::MissingSignature)?;
    let hex_digest = header.strip_prefix("sha256=").ok_or(WebhookError::BadSignature)?;
    let claimed = hex::decode(hex_digest).map_err(|_| WebhookError::BadSignature)?;
    if app_secret.is_empty() {
        // An unconfigured secret must never make every signature "valid".
        return Err(WebhookError::BadSignature);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(raw_body);
    mac.verify_slice(&claimed).map_err(|_| WebhookError::BadSignature)
}

/// Parses a (verified) webhook body into events, one per status and per message.
///
/// Only undecodable JSON is an error; everything else that is not understood becomes
/// [`ProviderEvent::Unknown`].
pub fn parse(raw_body: &[u8]) -> Result<Vec<ProviderEvent>, WebhookError> {
    let root: Value = serde_json::from_slice(raw_body)
        .map_err(|error| WebhookError::Malformed(format!("meta webhook is not JSON: {error}")))?;
    let object = str_field(&root, "object");
    if object.as_deref() != Some("whatsapp_business_account") {
        return Ok(vec![unknown(format!("object {:?}: {}", object, describe(&root)))]);
    }
    let mut events = Vec::new();
    for entry in array(&root, "entry") {
        for change in array(entry, "changes") {
            parse_change(change, &mut events);
        }
    }
    if events.is_empty() {
        events.push(unknown(format!("no statuses or messages: {}", describe(&root))));
    }
    Ok(events)
}

fn unknown(description: String) -> ProviderEvent {
    ProviderEvent::Unknown { provider: Provider::Meta, description }
}

fn parse_change(change: &Value, events: &mut Vec<ProviderEvent>) {
    let field = str_field(change, "field").unwrap_or_default();
    let Some(value) = change.get("value") else {
        events.push(unknown(format!("change {field:?} without value")));
        return;
    };
    // Template status, account and quality updates share the envelope but are not messages.
    if field != "messages" {
        events.push(unknown(format!("change field {field:?}: {}", describe(value))));
        return;
    }
    for status in array(value, "statuses") {
        events.push(parse_status(status));
    }
    let metadata = value.get("metadata").unwrap_or(&Value::Null);
    // Our address: the phone number id is what configurations key on; the display number is
    // the fallback when an older payload lacks it.
    let to = non_empty(metadata, "phone_number_id")
        .or_else(|| non_empty(metadata, "display_phone_number"))
        .unwrap_or_default();
    let contacts = array(value, "contacts");
    for message in array(value, "messages") {
        events.push(parse_message(message, &to, contacts));
    }
    // Errors at the value level concern the whole change (e.g. a webhook for an unsupported
    // feature); surface them rather than dropping them.
    for error in array(value, "errors") {
        events.push(unknown(format!("change error: {}", describe(error))));
    }
}

fn parse_status(status: &Value) -> ProviderEvent {
    let (Some(id), Some(name), Some(timestamp)) =
        (non_empty(status, "id"), str_field(status, "status"), unix_seconds(status, "timestamp"))
    else {
        return unknown(format!("incomplete status: {}", describe(status)));
    };
    let delivery_status = match name.as_str() {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" => DeliveryStatus::Failed,
        // "played" (voice), "deleted" and future values: authentic, not modelled.
        other => return unknown(format!("status {other:?} for {id}")),
    };
    let error = array(status, "errors").first().map(status_error);
    ProviderEvent::StatusUpdate {
        provider: Provider::Meta,
        provider_message_id: id,
        status: delivery_status,
        timestamp,
        recipient: non_empty(status, "recipient_id"),
        error,
        correlation_id: non_empty(status, "biz_opaque_callback_data"),
    }
}

fn status_error(error: &Value) -> ProviderError {
    let code = str_field(error, "code").unwrap_or_default();
    // Meta says to key logic on the code plus `error_data.details`; the title is a fallback.
    let details = error.get("error_data").and_then(|data| non_empty(data, "details"));
    let reason = details
        .or_else(|| non_empty(error, "message"))
        .or_else(|| non_empty(error, "title"))
        .unwrap_or_else(|| "unknown error".to_owned());
    let class = if is_retry_error_code(&code) { FailureClass::Retry } else { FailureClass::Permanent };
    ProviderError { code, reason, class }
}

/// Codes where sending the same message again later can succeed (throttling, Meta-side
/// hiccups, per-user marketing caps). Everything else — undeliverable, outside the 24 h window,
/// template problems, account problems — will not succeed as it is.
fn is_retry_error_code(code: &str) -> bool {
    matches!(
        code,
        "130429" | "131056" | "80007" | "4" | "131000" | "131016" | "131057" | "133004" | "2" | "131049" | "131048"
    )
}

fn parse_message(message: &Value, to: &str, contacts: &[Value]) -> ProviderEvent {
    let (Some(id), Some(from), Some(timestamp)) =
        (non_empty(message, "id"), non_empty(message, "from"), unix_seconds(message, "timestamp"))
    else {
        return unknown(format!("incomplete message: {}", describe(message)));
    };
    let kind = str_field(message, "type").unwrap_or_default();
    let Some(content) = message_content(message, &kind) else {
        return unknown(format!("message type {kind:?} (id {id} from {from}): {}", describe(message)));
    };
    let context = message.get("context").unwrap_or(&Value::Null);
    ProviderEvent::InboundMessage {
        provider: Provider::Meta,
        channel: Channel::Whatsapp,
        provider_message_id: id,
        from_name: sender_name(contacts, &from),
        from,
        to: to.to_owned(),
        timestamp,
        content,
        in_reply_to: non_empty(context, "id"),
    }
}

/// The profile name of the contact whose `wa_id` is the sender, else of the only contact.
fn sender_name(contacts: &[Value], from: &str) -> Option<String> {
    let name_of = |contact: &Value| contact.get("profile").and_then(|profile| non_empty(profile, "name"));
    contacts
        .iter()
        .find(|contact| str_field(contact, "wa_id").as_deref() == Some(from))
        .and_then(name_of)
        .or_else(|| if contacts.len() == 1 { contacts.first().and_then(name_of) } else { None })
}

fn message_content(message: &Value, kind: &str) -> Option<InboundContent> {
    let body = message.get(kind)?;
    match kind {
        "text" => Some(InboundContent::Text { body: str_field(body, "body")? }),
        "image" | "sticker" => Some(media(body, MediaKind::Image)),
        "document" => Some(media(body, MediaKind::Document)),
        "audio" => Some(media(body, MediaKind::Audio)),
        "video" => Some(media(body, MediaKind::Video)),
        "location" => Some(InboundContent::Location {
            latitude: float(body, "latitude")?,
            longitude: float(body, "longitude")?,
            name: non_empty(body, "name"),
            address: non_empty(body, "address"),
        }),
        // A template's quick-reply button: the payload is what we set when sending.
        "button" => {
            Some(InboundContent::ButtonReply { id: non_empty(body, "payload"), title: str_field(body, "text")? })
        }
        "interactive" => interactive_reply(body),
        // Meta leaves the emoji empty (or out) when the sender takes a reaction back.
        "reaction" => Some(InboundContent::Reaction {
            emoji: non_empty(body, "emoji"),
            message_id: non_empty(body, "message_id")?,
        }),
        "contacts" => shared_contacts(body),
        _ => None,
    }
}

/// `contacts: [{name: {formatted_name, …}, phones: [{phone, wa_id?, type}], emails: [{email}], …}]`:
/// names, numbers and addresses are kept; birthdays, organisations, postal addresses and URLs
/// are not. A card with neither a name nor a number is dropped; none left is not understood.
fn shared_contacts(cards: &Value) -> Option<InboundContent> {
    let contacts: Vec<SharedContact> = cards
        .as_array()?
        .iter()
        .map(|card| {
            let name = card.get("name").and_then(|name| {
                non_empty(name, "formatted_name").or_else(|| {
                    let parts: Vec<String> =
                        ["first_name", "last_name"].iter().filter_map(|key| non_empty(name, key)).collect();
                    (!parts.is_empty()).then(|| parts.join(" "))
                })
            });
            let phones = array(card, "phones")
                .iter()
                .filter_map(|phone| {
                    Some(SharedPhone { phone: non_empty(phone, "phone")?, wa_id: non_empty(phone, "wa_id") })
                })
                .collect();
            let emails = array(card, "emails").iter().filter_map(|email| non_empty(email, "email")).collect();
            SharedContact { name, phones, emails }
        })
        .filter(|card| card.name.is_some() || !card.phones.is_empty())
        .collect();
    (!contacts.is_empty()).then_some(InboundContent::Contacts { contacts })
}

fn media(body: &Value, kind: MediaKind) -> InboundContent {
    InboundContent::Media {
        kind,
        media_id: non_empty(body, "id"),
        // Not in the classic payload (media is fetched by id), but newer payloads carry one.
        url: non_empty(body, "url"),
        mime_type: non_empty(body, "mime_type"),
        caption: non_empty(body, "caption"),
        filename: non_empty(body, "filename"),
    }
}

fn interactive_reply(interactive: &Value) -> Option<InboundContent> {
    match str_field(interactive, "type")?.as_str() {
        "button_reply" => {
            let reply = interactive.get("button_reply")?;
            Some(InboundContent::ButtonReply { id: non_empty(reply, "id"), title: str_field(reply, "title")? })
        }
        "list_reply" => {
            let reply = interactive.get("list_reply")?;
            Some(InboundContent::ListReply {
                id: str_field(reply, "id")?,
                title: str_field(reply, "title")?,
                description: non_empty(reply, "description"),
            })
        }
        // nfm_reply (flows) and future kinds.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    /// One inbound message in Meta's envelope, as the Cloud API webhook reference shows it.
    fn notification(message: Value) -> Vec<u8> {
        json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1122334455667"},
                "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": "16315551181"}],
                "messages": [message],
            }}]}],
        })
        .to_string()
        .into_bytes()
    }

    fn content(message: Value) -> InboundContent {
        let events = parse(&notification(message)).unwrap();
        match events.as_slice() {
            [ProviderEvent::InboundMessage { content, .. }] => content.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reaction_and_its_removal() {
        let reaction = content(json!({
            "from": "16315551181", "id": "wamid.reaction1", "timestamp": "1697043223", "type": "reaction",
            "reaction": {"message_id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA", "emoji": "\u{1F44D}"},
        }));
        assert_eq!(
            reaction,
            InboundContent::Reaction {
                emoji: Some("\u{1F44D}".into()),
                message_id: "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA".into(),
            }
        );
        for removed in [json!({"message_id": "wamid.x", "emoji": ""}), json!({"message_id": "wamid.x"})] {
            let removal = content(json!({
                "from": "16315551181", "id": "wamid.reaction2", "timestamp": "1697043224", "type": "reaction",
                "reaction": removed,
            }));
            assert_eq!(removal, InboundContent::Reaction { emoji: None, message_id: "wamid.x".into() });
        }
    }

    #[test]
    fn a_reaction_without_its_message_is_not_understood() {
        let events = parse(&notification(json!({
            "from": "16315551181", "id": "wamid.r", "timestamp": "1697043223", "type": "reaction",
            "reaction": {"emoji": "x"},
        })))
        .unwrap();
        assert!(matches!(events.as_slice(), [ProviderEvent::Unknown { .. }]), "{events:?}");
    }

    #[test]
    fn shared_contacts_keep_names_numbers_and_addresses() {
        // The shape of Meta's "contacts messages" webhook example.
        let shared = content(json!({
            "from": "16315551181", "id": "wamid.contacts", "timestamp": "1697043223", "type": "contacts",
            "contacts": [{
                "addresses": [{"city": "Menlo Park", "country": "United States", "type": "HOME"}],
                "birthday": "2012-08-18",
                "emails": [{"email": "kerry@example.com", "type": "WORK"}],
                "name": {"first_name": "Kerry", "last_name": "Fisher", "formatted_name": "Kerry Fisher"},
                "org": {"company": "Lucky Shrub"},
                "phones": [
                    {"phone": "+1 (940) 555-1234", "type": "HOME"},
                    {"phone": "+1 (650) 555-1234", "type": "WORK", "wa_id": "16505551234"},
                ],
                "urls": [{"url": "https://www.luckyshrub.com", "type": "WORK"}],
            }, {
                "name": {"first_name": "Ann", "last_name": "Lee"},
                "phones": [{"phone": "+49 151 234"}],
            }, {
                "birthday": "2000-01-01",
            }],
        }));
        assert_eq!(
            shared,
            InboundContent::Contacts {
                contacts: vec![
                    SharedContact {
                        name: Some("Kerry Fisher".into()),
                        phones: vec![
                            SharedPhone { phone: "+1 (940) 555-1234".into(), wa_id: None },
                            SharedPhone { phone: "+1 (650) 555-1234".into(), wa_id: Some("16505551234".into()) },
                        ],
                        emails: vec!["kerry@example.com".into()],
                    },
                    SharedContact {
                        name: Some("Ann Lee".into()),
                        phones: vec![SharedPhone { phone: "+49 151 234".into(), wa_id: None }],
                        emails: vec![],
                    },
                ],
            }
        );
    }

    #[test]
    fn new_kinds_round_trip_as_stored_content() {
        let reaction = InboundContent::Reaction { emoji: None, message_id: "wamid.x".into() };
        let stored = serde_json::to_value(&reaction).unwrap();
        assert_eq!(stored, json!({"type": "reaction", "emoji": null, "message_id": "wamid.x"}));
        let contacts = InboundContent::Contacts {
            contacts: vec![SharedContact { name: Some("A".into()), phones: vec![], emails: vec![] }],
        };
        let stored = serde_json::to_value(&contacts).unwrap();
        assert_eq!(stored["type"], "contacts");
        assert_eq!(serde_json::from_value::<InboundContent>(stored).unwrap(), contacts);
    }
}
