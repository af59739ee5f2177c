//! The generic send command and its outcome.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Provider;

/// One message to one recipient, provider-agnostic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMessageCommand {
    /// Our id for the message; sent to providers that accept a client reference, logged always.
    pub correlation_id: String,
    /// The tenant on whose behalf we send (for logs and provider tags; never for authorisation).
    pub tenant_id: Uuid,
    pub recipient: Recipient,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Recipient {
    /// E.164, e.g. `+4915112345678` (SMS, and WhatsApp where the wa_id is the number).
    Phone(String),
    Email(String),
    /// A WhatsApp id as Meta reports it (digits, no `+`).
    WhatsappId(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text {
        body: String,
    },
    Template(TemplateContent),
    Media {
        kind: MediaKind,
        url: String,
        caption: Option<String>,
        filename: Option<String>,
    },
    Email {
        subject: String,
        text: Option<String>,
        html: Option<String>,
        #[serde(default)]
        attachments: Vec<Attachment>,
        /// Message-ID this mail answers (threading), if any.
        in_reply_to: Option<String>,
    },
}

/// A WhatsApp template message: an approved Meta template by name and language.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateContent {
    pub name: String,
    /// Meta's language code, e.g. `en_US`, `de`.
    pub language: String,
    /// Body parameters in order ({{1}}, {{2}}, …).
    #[serde(default)]
    pub body_parameters: Vec<String>,
    /// Full Meta `components` array when the template needs more than body text (header media,
    /// buttons); sent as given and takes precedence over `body_parameters`.
    pub components: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Document,
    Audio,
    Video,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    /// Raw bytes (base64 in JSON).
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// A provider accepted the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    pub provider: Provider,
    /// The provider's id for the message (Meta `wamid.…`, SES MessageId, SNS MessageId, Twilio SM…).
    pub provider_message_id: String,
}

/// Why a send did not succeed, classified for the pipeline's decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again later (5xx, network failure before the request was sent, provider hiccup).
    #[error("retryable: {reason}")]
    Retryable { reason: String, retry_after: Option<Duration> },
    /// The provider throttled us; wait at least `retry_after` if given.
    #[error("rate limited: {reason}")]
    RateLimited { reason: String, retry_after: Option<Duration> },
    /// This message will never succeed as it is (bad recipient, opted out, template rejected…):
    /// fail it and fall back to the next channel.
    #[error("permanent failure {code}: {reason}")]
    Permanent { code: String, reason: String },
    /// Nothing for this tenant's account will succeed (bad credentials, suspended, paused):
    /// suspend the channel account instead of burning retries.
    #[error("account blocked {code}: {reason}")]
    TenantBlocked { code: String, reason: String },
    /// The request may have reached the provider but we have no answer (timeout after sending):
    /// never resend blindly; callbacks settle it.
    #[error("outcome unknown: {reason}")]
    Unknown { reason: String },
}
