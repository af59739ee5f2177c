//! Channel accounts: a tenant's WhatsApp, email, SMS and webchat endpoints, their lifecycle,
//! and the provider configurations (with encrypted secrets) behind them.

pub mod adapter_config;
pub mod endpoints;
pub mod http;
pub mod lifecycle;
pub mod provider_input;
pub mod repository;
pub mod secrets;
pub mod service;
pub mod test_message;
pub mod validate;
pub mod verification;

use serde::{Deserialize, Serialize};

pub use lifecycle::{ChannelStatus, LifecycleAction};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ChannelType {
    Whatsapp,
    Email,
    Sms,
    Webchat,
}

impl ChannelType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Webchat => "webchat",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ProviderKind {
    Meta,
    Ses,
    Sns,
    Twilio,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Meta => "meta",
            Self::Ses => "ses",
            Self::Sns => "sns",
            Self::Twilio => "twilio",
        }
    }

    /// Which providers can serve a channel. Webchat is served by Switchboard itself.
    pub fn serves(self, channel: ChannelType) -> bool {
        matches!(
            (channel, self),
            (ChannelType::Whatsapp, Self::Meta)
                | (ChannelType::Email, Self::Ses)
                | (ChannelType::Sms, Self::Sns | Self::Twilio)
        )
    }
}
