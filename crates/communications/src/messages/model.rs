//! Message states and lanes.

use serde::{Deserialize, Serialize};

/// The channels messages travel on. Webchat is delivered by Switchboard itself to the visitor's
/// browser (see `crate::webchat`): the pipeline never queues a webchat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Channel {
    Whatsapp,
    Email,
    Sms,
    Webchat,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Webchat => "webchat",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "whatsapp" => Some(Self::Whatsapp),
            "email" => Some(Self::Email),
            "sms" => Some(Self::Sms),
            "webchat" => Some(Self::Webchat),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum MessageStatus {
    Queued,
    PendingReview,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
    Superseded,
    Canceled,
    /// The request may have reached the provider but no answer came: callbacks settle it.
    Unknown,
    /// An inbound message: a contact wrote to us.
    Received,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::PendingReview => "pending_review",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
            Self::Canceled => "canceled",
            Self::Unknown => "unknown",
            Self::Received => "received",
        }
    }

    /// Whether nothing will ever change this message again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Read | Self::Failed | Self::Superseded | Self::Canceled | Self::Received)
    }

    /// Whether the message may still be canceled (it has not left us).
    pub fn is_cancelable(self) -> bool {
        matches!(self, Self::Queued | Self::PendingReview)
    }
}

/// Urgent (transactional) messages never wait behind bulk campaigns: separate queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Lane {
    #[default]
    Urgent,
    Bulk,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Urgent => "urgent",
            Self::Bulk => "bulk",
        }
    }
}

/// Who caused a state change, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    Api,
    Worker,
    Provider,
    System,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Worker => "worker",
            Self::Provider => "provider",
            Self::System => "system",
        }
    }
}
