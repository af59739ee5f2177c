//! CPaaS adapters: the edge where our generic commands meet providers' wire formats.
//!
//! Belongs here: turning a generic [`SendMessageCommand`] into a Meta WhatsApp Cloud API, Amazon
//! SES, Amazon SNS or Twilio request (base URLs configurable, so tests and the demo talk to the
//! simulator), classifying their errors ([`SendError`]), provisioning calls (Meta Embedded
//! Signup, SES identities, SNS origination checks, Twilio account checks), verifying webhook
//! signatures, and parsing webhooks into generic [`ProviderEvent`]s.
//!
//! Must not be here: database access of any kind, or our domain's types (conversations,
//! contacts, tenants' business rules). It knows providers, not Switchboard.

pub mod command;
pub mod config;
pub mod event;
pub mod media;
pub mod provisioning;
pub mod send;
pub mod webhooks;

pub use command::{
    Attachment, Content, MediaKind, Recipient, SendError, SendMessageCommand, SendReceipt, TemplateContent,
};
pub use config::{MetaConfig, ProviderConfig, SesConfig, SmsType, SnsConfig, TwilioConfig};
pub use event::{
    DeliveryStatus, FailureClass, InboundContent, ProviderError, ProviderEvent, SharedContact, SharedPhone,
};
pub use send::{FoundMessage, SentProbe, Settlement};

use serde::{Deserialize, Serialize};

/// The channels Switchboard delivers on through an external provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Whatsapp,
    Email,
    Sms,
}

/// The providers Switchboard speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Meta,
    Ses,
    Sns,
    Twilio,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Meta => "meta",
            Provider::Ses => "ses",
            Provider::Sns => "sns",
            Provider::Twilio => "twilio",
        }
    }

    /// The channel a provider serves (Meta: WhatsApp; SES: email; SNS and Twilio: SMS).
    pub fn channel(self) -> Channel {
        match self {
            Provider::Meta => Channel::Whatsapp,
            Provider::Ses => Channel::Email,
            Provider::Sns | Provider::Twilio => Channel::Sms,
        }
    }
}
