//! The JSON envelope SNS POSTs, and the exact string it signs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::webhooks::WebhookError;

/// What an SNS delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnsMessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

/// One SNS HTTP(S) delivery, field names as on the wire.
///
/// String values are kept exactly as received (after JSON unescaping): the signature is over
/// them, so nothing is normalised — `Timestamp` in particular stays a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub message_type: SnsMessageType,
    #[serde(rename = "MessageId")]
    pub message_id: String,
    /// Subscription and unsubscribe confirmations only.
    #[serde(rename = "Token", default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(rename = "TopicArn")]
    pub topic_arn: String,
    /// Notifications only, and only when the publisher set one.
    #[serde(rename = "Subject", default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    #[serde(rename = "SignatureVersion")]
    pub signature_version: String,
    /// Base64 of the RSA signature.
    #[serde(rename = "Signature")]
    pub signature: String,
    // Lambda's SNS event spells it `SigningCertUrl`; HTTP deliveries use `SigningCertURL`.
    #[serde(rename = "SigningCertURL", alias = "SigningCertUrl")]
    pub signing_cert_url: String,
    #[serde(rename = "SubscribeURL", alias = "SubscribeUrl", default, skip_serializing_if = "Option::is_none")]
    pub subscribe_url: Option<String>,
    #[serde(rename = "UnsubscribeURL", alias = "UnsubscribeUrl", default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe_url: Option<String>,
}

impl SnsMessage {
    /// Decodes the request body (SNS sends JSON with `Content-Type: text/plain`).
    pub fn from_json(raw_body: &[u8]) -> Result<Self, WebhookError> {
        serde_json::from_slice(raw_body)
            .map_err(|error| WebhookError::Malformed(format!("not an SNS message: {error}")))
    }

    pub fn is_notification(&self) -> bool {
        self.message_type == SnsMessageType::Notification
    }

    pub fn is_subscription_confirmation(&self) -> bool {
        self.message_type == SnsMessageType::SubscriptionConfirmation
    }

    pub fn is_unsubscribe_confirmation(&self) -> bool {
        self.message_type == SnsMessageType::UnsubscribeConfirmation
    }

    /// The URL to GET to confirm a subscription, as sent (unchecked: use
    /// [`SnsVerifier::confirmation_url`](super::SnsVerifier::confirmation_url) before fetching).
    pub fn subscribe_url(&self) -> Option<&str> {
        if self.is_subscription_confirmation() { self.subscribe_url.as_deref() } else { None }
    }

    /// `Timestamp` as a time, when it parses.
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.timestamp).ok().map(|time| time.with_timezone(&Utc))
    }

    /// The string SNS signs: selected keys in byte order, each as `key\nvalue\n`.
    ///
    /// Notification: Message, MessageId, Subject (if present), Timestamp, TopicArn, Type.
    /// Confirmations: Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type.
    pub fn string_to_sign(&self) -> String {
        let type_name = match self.message_type {
            SnsMessageType::Notification => "Notification",
            SnsMessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            SnsMessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        };
        let fields: Vec<(&str, Option<&str>)> = match self.message_type {
            SnsMessageType::Notification => vec![
                ("Message", Some(&self.message)),
                ("MessageId", Some(&self.message_id)),
                ("Subject", self.subject.as_deref()),
                ("Timestamp", Some(&self.timestamp)),
                ("TopicArn", Some(&self.topic_arn)),
                ("Type", Some(type_name)),
            ],
            SnsMessageType::SubscriptionConfirmation | SnsMessageType::UnsubscribeConfirmation => vec![
                ("Message", Some(&self.message)),
                ("MessageId", Some(&self.message_id)),
                ("SubscribeURL", self.subscribe_url.as_deref()),
                ("Timestamp", Some(&self.timestamp)),
                ("Token", self.token.as_deref()),
                ("TopicArn", Some(&self.topic_arn)),
                ("Type", Some(type_name)),
            ],
        };
        let mut canonical = String::new();
        for (key, value) in fields {
            if let Some(value) = value {
                canonical.push_str(key);
                canonical.push('\n');
                canonical.push_str(value);
                canonical.push('\n');
            }
        }
        canonical
    }
}
