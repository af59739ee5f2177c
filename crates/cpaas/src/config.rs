//! Per-provider configuration, secrets included. Stored encrypted by `communications`; here it
//! is plain data that adapters and provisioning calls read.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// One provider's configuration, tagged by provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum ProviderConfig {
    Meta(MetaConfig),
    Ses(SesConfig),
    Sns(SnsConfig),
    Twilio(TwilioConfig),
}

/// Meta WhatsApp Cloud API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaConfig {
    /// Graph API base, default `https://graph.facebook.com`.
    pub base_url: String,
    /// Graph API version path segment, e.g. `v21.0`.
    pub api_version: String,
    pub phone_number_id: String,
    pub waba_id: String,
    /// The business (system user) access token.
    #[serde(serialize_with = "expose")]
    pub access_token: SecretString,
    /// The app secret: signs webhooks (X-Hub-Signature-256).
    #[serde(serialize_with = "expose")]
    pub app_secret: SecretString,
    /// Echoed in the webhook GET handshake.
    #[serde(serialize_with = "expose")]
    pub verify_token: SecretString,
}

/// Amazon SES v2.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SesConfig {
    pub region: String,
    /// Override endpoint (the simulator); `None` uses AWS's.
    pub endpoint_url: Option<String>,
    pub access_key_id: String,
    #[serde(serialize_with = "expose")]
    pub secret_access_key: SecretString,
    /// The verified sending domain, e.g. `mail.alpine-coaches.example`.
    pub domain: String,
    /// From address, at `domain`.
    pub from_address: String,
    pub configuration_set: Option<String>,
}

/// Amazon SNS SMS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnsConfig {
    pub region: String,
    pub endpoint_url: Option<String>,
    pub access_key_id: String,
    #[serde(serialize_with = "expose")]
    pub secret_access_key: SecretString,
    /// Alphanumeric sender id (where supported).
    pub sender_id: Option<String>,
    /// E.164 origination number (toll-free, 10DLC, long code).
    pub origination_number: Option<String>,
    pub sms_type: SmsType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsType {
    Transactional,
    Promotional,
}

/// Twilio Programmable Messaging.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TwilioConfig {
    /// API base, default `https://api.twilio.com`.
    pub base_url: String,
    pub account_sid: String,
    #[serde(serialize_with = "expose")]
    pub auth_token: SecretString,
    /// E.164 sender, unless a messaging service is used.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    /// Where Twilio posts status callbacks for messages we send.
    pub status_callback_url: Option<String>,
}

/// Configs are serialised only to be encrypted at rest; the API layer masks them.
fn expose<S: serde::Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    serializer.serialize_str(secret.expose_secret())
}
