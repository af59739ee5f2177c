//! What providers tell us, in our words.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Channel, Provider};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderEvent {
    /// Someone wrote to us.
    InboundMessage {
        provider: Provider,
        channel: Channel,
        /// The provider's id for the inbound message (dedupe key).
        provider_message_id: String,
        /// Sender: E.164 phone, email address, or WhatsApp id.
        from: String,
        /// Our address it was sent to (phone number id / number / email).
        to: String,
        /// Sender's display name if the provider gives one.
        from_name: Option<String>,
        timestamp: DateTime<Utc>,
        content: InboundContent,
        /// The id of our message this replies to, when the provider says (WhatsApp context).
        in_reply_to: Option<String>,
    },
    /// A status change of a message we sent.
    StatusUpdate {
        provider: Provider,
        provider_message_id: String,
        status: DeliveryStatus,
        timestamp: DateTime<Utc>,
        recipient: Option<String>,
        error: Option<ProviderError>,
        /// The correlation id we gave the send, when the provider echoes it (Meta's
        /// `biz_opaque_callback_data`, SES's `sb_correlation` tag): it matches the callback to
        /// our message even when the send's answer — and so the provider's id — never reached us.
        correlation_id: Option<String>,
    },
    /// A call to an operator's number is coming in (Twilio's voice request): it waits for our
    /// answer (TwiML).
    IncomingCall { provider: Provider, call_id: String, from: String, to: String, timestamp: DateTime<Utc> },
    /// A call to an operator's number that nobody answered (a `<Dial>` outcome or status).
    MissedCall {
        provider: Provider,
        call_id: String,
        from: String,
        to: String,
        /// `no-answer`, `busy`, `failed` or `canceled`.
        reason: String,
        timestamp: DateTime<Utc>,
    },
    /// A call that was answered and has ended; a very short one may still count as missed.
    CallCompleted {
        provider: Provider,
        call_id: String,
        from: String,
        to: String,
        /// Seconds the answered leg lasted, when the provider says.
        duration_secs: Option<u32>,
        timestamp: DateTime<Utc>,
    },
    /// Authentic but not understood: kept, acknowledged, never an error.
    Unknown { provider: Provider, description: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
    /// SES bounce (the address should be suppressed when permanent).
    Bounced,
    /// SES complaint (suppress).
    Complained,
    /// SES rejected before sending.
    Rejected,
    /// SES open tracking.
    Opened,
    /// SES delivery delay (temporary).
    Delayed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderError {
    pub code: String,
    pub reason: String,
    /// What the failure means for the message and its address.
    pub class: FailureClass,
}

impl ProviderError {
    /// The address will not take messages on this channel (hard bounce, complaint, unknown
    /// number): the one class that suppresses an address.
    pub fn is_permanent(&self) -> bool {
        self.class == FailureClass::Permanent
    }
}

/// What a failure the provider reports after accepting a message calls for — the callback
/// counterpart of the send-time [`SendError`](crate::SendError) classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The address is bad for good on this channel (hard bounce, unknown or landline number,
    /// complaint, opted out): move on to the next channel; suppress where the channel does.
    Permanent,
    /// This message did not arrive and the provider has stopped trying (handset off for too
    /// long, a soft bounce after the provider's own retries): move on to the next channel.
    Transient,
    /// The provider's side refused it for now (throttling, an outage, a queue overflow): the
    /// same message on the same channel later is the right answer.
    Retry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboundContent {
    Text {
        body: String,
    },
    Media {
        kind: crate::MediaKind,
        media_id: Option<String>,
        url: Option<String>,
        mime_type: Option<String>,
        caption: Option<String>,
        filename: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    },
    /// A quick-reply button or interactive button reply.
    ButtonReply {
        id: Option<String>,
        title: String,
    },
    ListReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// A reaction to one of the conversation's messages; `emoji: None` takes a reaction back
    /// (Meta sends an empty emoji for that).
    Reaction {
        emoji: Option<String>,
        /// The provider's id of the message reacted to.
        message_id: String,
    },
    /// Contact cards the sender shared.
    Contacts {
        contacts: Vec<SharedContact>,
    },
    /// A phone call to the operator's number (recorded in the caller's SMS conversation):
    /// `outcome` is `no-answer`, `busy`, `failed`, `canceled`, `short` (answered, ended at once)
    /// or `rejected` (no forwarding number).
    Call {
        outcome: String,
        duration_secs: Option<u32>,
    },
    Email {
        subject: Option<String>,
        text: Option<String>,
        html: Option<String>,
        attachments: Vec<InboundAttachment>,
        message_id: Option<String>,
        in_reply_to: Option<String>,
        references: Vec<String>,
    },
}

/// One shared contact card: what the sender's address book holds, not one of our contacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedContact {
    /// The formatted name (Meta's `name.formatted_name`).
    pub name: Option<String>,
    pub phones: Vec<SharedPhone>,
    pub emails: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPhone {
    pub phone: String,
    /// The number's WhatsApp id, when it has one.
    pub wa_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundAttachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
}
