//! Outbound sends: one [`Adapter`] per channel account, turning a generic
//! [`SendMessageCommand`] into a provider request and the provider's answer into a
//! [`SendReceipt`] or a classified [`SendError`].
//!
//! Each provider has its own file with three parts, kept apart so the first and last are pure
//! and unit-tested without a network: request building (command → JSON / form / SDK input),
//! the call, and an error classifier (status + provider code → [`SendError`]). The tables of
//! provider codes live in each file's module documentation.
//!
//! Shared rules, whatever the provider:
//! - a recipient or content the provider cannot carry (an email to SNS, a template to SES…) is
//!   `Permanent { code: "unsupported_content" | "invalid_recipient" }` before any network call;
//! - the request never left (DNS, refused connection, connect timeout) → `Retryable`;
//! - the request left but no answer arrived in time, or a 2xx body we cannot read → `Unknown`
//!   (the provider may have accepted the message; status callbacks settle it);
//! - `Retry-After` (seconds or HTTP date) is honoured on `RateLimited` / `Retryable`;
//! - no adapter retries on its own: the pipeline owns retries, so the AWS SDK's are disabled.
//!
//! A send whose answer was lost (`Unknown`) may or may not have reached the provider, so it must
//! not be sent again blindly. [`Adapter::settlement`] says how such a send can be settled: by
//! asking the provider ([`Adapter::find_sent`], [`Adapter::fetch_status`]; Twilio only), by
//! waiting for the callbacks the provider sends and retries for every accepted message (Meta,
//! SES), or not at all (SNS SMS reports delivery to CloudWatch only).

pub(crate) mod aws;
mod class;
mod compat;
pub(crate) mod http;
pub mod meta;
pub mod mime;
pub mod ses;
pub mod sns;
#[cfg(test)]
mod test_class;
#[cfg(test)]
mod test_server;
pub mod twilio;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{DeliveryStatus, ProviderConfig, Recipient, SendError, SendMessageCommand, SendReceipt};

pub use http::{build_http_client, parse_retry_after};

/// Timeouts for provider calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// The whole call, from sending the request to the last byte of the answer. When it expires
    /// after the request was sent, the outcome is [`SendError::Unknown`].
    pub request_timeout: Duration,
    /// Establishing the connection. Applied to the AWS SDK clients built in [`Adapter::new`];
    /// for the Meta and Twilio adapters it is the shared `reqwest::Client`'s setting (reqwest has
    /// no per-request connect timeout), see [`build_http_client`]. Keep it below
    /// `request_timeout`: a connect that times out is known not to have sent anything, so it is
    /// `Retryable`, while the overall timeout is `Unknown`.
    pub connect_timeout: Duration,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions { request_timeout: Duration::from_secs(10), connect_timeout: Duration::from_secs(3) }
    }
}

/// The configuration cannot make a working adapter (missing sender, unparsable base URL…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {provider} configuration: {message}")]
pub struct ConfigError {
    pub provider: &'static str,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(provider: &'static str, message: impl Into<String>) -> Self {
        ConfigError { provider, message: message.into() }
    }
}

/// How a send whose answer was lost can be settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The provider can be asked (Twilio's Messages list).
    Lookup,
    /// The provider calls back for every accepted message and retries its webhooks (Meta, SES via SNS).
    AwaitCallbacks,
    /// Nothing can tell (SNS SMS: delivery status goes to CloudWatch only).
    Unknowable,
}

/// What we know about a send we want to find at the provider.
#[derive(Debug, Clone)]
pub struct SentProbe {
    pub recipient: Recipient,
    /// The exact text body we sent (Twilio `Body`), if any.
    pub body: Option<String>,
    /// Our message id (the correlation id of the send).
    pub correlation_id: String,
    /// When the request started (the lookup searches from a little before this).
    pub since: DateTime<Utc>,
}

/// A message the provider has that matches a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMessage {
    pub provider_message_id: String,
    /// The provider's current status mapped to ours (Sent for queued/accepted/sending/sent).
    pub status: DeliveryStatus,
    /// The provider's error code for failed/undelivered, if any.
    pub error_code: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A ready-to-send adapter for one channel account. Cheap to clone (everything inside is shared),
/// meant to be built once per account and cached: the AWS clients are built in [`Adapter::new`].
#[derive(Debug, Clone)]
pub enum Adapter {
    Meta(meta::MetaAdapter),
    Ses(ses::SesAdapter),
    Sns(sns::SnsAdapter),
    Twilio(twilio::TwilioAdapter),
}

impl Adapter {
    /// Builds the adapter for `config`. `http` is used by the Meta and Twilio adapters (share one
    /// client across adapters; build it with [`build_http_client`] to get the connect timeout).
    pub fn new(config: &ProviderConfig, http: &reqwest::Client, options: &SendOptions) -> Result<Adapter, ConfigError> {
        Ok(match config {
            ProviderConfig::Meta(c) => Adapter::Meta(meta::MetaAdapter::new(c, http, options)?),
            ProviderConfig::Ses(c) => Adapter::Ses(ses::SesAdapter::new(c, options)?),
            ProviderConfig::Sns(c) => Adapter::Sns(sns::SnsAdapter::new(c, options)?),
            ProviderConfig::Twilio(c) => Adapter::Twilio(twilio::TwilioAdapter::new(c, http, options)?),
        })
    }

    /// The provider this adapter talks to.
    pub fn provider(&self) -> crate::Provider {
        match self {
            Adapter::Meta(_) => crate::Provider::Meta,
            Adapter::Ses(_) => crate::Provider::Ses,
            Adapter::Sns(_) => crate::Provider::Sns,
            Adapter::Twilio(_) => crate::Provider::Twilio,
        }
    }

    /// How a send to this provider whose answer was lost can be settled.
    pub fn settlement(&self) -> Settlement {
        match self {
            Adapter::Twilio(_) => Settlement::Lookup,
            Adapter::Meta(_) | Adapter::Ses(_) => Settlement::AwaitCallbacks,
            Adapter::Sns(_) => Settlement::Unknowable,
        }
    }

    /// Candidates at the provider for a probe, oldest first (Twilio only; others answer
    /// Ok(vec![])). The caller picks one it has not matched yet.
    ///
    /// Errors are classified as for sends: the lookup never reached the provider → `Retryable`,
    /// no answer in time → `Unknown`, credentials refused → `TenantBlocked`. An empty answer is
    /// weaker evidence soon after the send than minutes later: a message Twilio has not sent
    /// yet may be listed only once it is (docs/providers/twilio.md §1.5).
    pub async fn find_sent(&self, probe: &SentProbe) -> Result<Vec<FoundMessage>, SendError> {
        match self {
            Adapter::Twilio(a) => a.find_sent(probe).await,
            Adapter::Meta(_) | Adapter::Ses(_) | Adapter::Sns(_) => Ok(Vec::new()),
        }
    }

    /// The provider's current view of one message (Twilio only; others Ok(None)). `Ok(None)`
    /// also when the provider does not know the id.
    pub async fn fetch_status(&self, provider_message_id: &str) -> Result<Option<FoundMessage>, SendError> {
        match self {
            Adapter::Twilio(a) => a.fetch_status(provider_message_id).await,
            Adapter::Meta(_) | Adapter::Ses(_) | Adapter::Sns(_) => Ok(None),
        }
    }

    /// Sends one message. Never retries; see the module documentation for the error classes.
    pub async fn send(&self, command: &SendMessageCommand) -> Result<SendReceipt, SendError> {
        let provider = self.provider().as_str();
        let result = match self {
            Adapter::Meta(a) => a.send(command).await,
            Adapter::Ses(a) => a.send(command).await,
            Adapter::Sns(a) => a.send(command).await,
            Adapter::Twilio(a) => a.send(command).await,
        };
        // Only ids and the classification: bodies and recipients' content stay out of logs.
        match &result {
            Ok(receipt) => tracing::debug!(
                provider,
                correlation_id = %command.correlation_id,
                provider_message_id = %receipt.provider_message_id,
                "provider accepted message"
            ),
            Err(error) => tracing::info!(
                provider,
                correlation_id = %command.correlation_id,
                error = %error,
                "provider send failed"
            ),
        }
        result
    }
}
