//! Provider calls made while a channel account is connected and verified (not per message):
//! Meta Embedded Signup (code exchange, phone registration, webhook subscription, number info),
//! SES domain identities and their DKIM records, SNS credential and origination-number checks,
//! and the Twilio account check.
//!
//! Every call fails with one [`ProvisioningError`], whose kind tells the verification flow what
//! to show the operator; the provider's own code and message are kept.
//!
//! | kind | when |
//! |---|---|
//! | `Unauthorized` | credentials rejected or lacking permission (HTTP 401/403; Meta 190, 0, 10, 2xx, 131005, 131031, 368; AWS auth codes; Twilio 20003) |
//! | `NotFound` | the thing named does not exist (HTTP 404; Meta 100/33; AWS `NotFoundException`/`NotFound`; an origination number not in the account) |
//! | `Unavailable` | try again later: transport failures, timeouts, throttling, 5xx |
//! | `Rejected` | the provider refused the request as given (wrong PIN, invalid code, bad input) |

pub mod meta;
pub mod ses;
pub mod sns;
pub mod twilio;

mod aws_error;
mod http;

use std::time::Duration;

/// How long one provisioning call may take; these calls are interactive but not hot.
pub(crate) const PROVISIONING_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisioningErrorKind {
    Unauthorized,
    NotFound,
    Rejected,
    Unavailable,
}

/// A failed provisioning call. `message` is the provider's message (or ours for local checks and
/// transport failures); `code` the provider's error code when it sent one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ProvisioningError {
    pub kind: ProvisioningErrorKind,
    pub code: Option<String>,
    pub message: String,
}

impl ProvisioningError {
    pub fn new(kind: ProvisioningErrorKind, code: Option<String>, message: impl Into<String>) -> Self {
        ProvisioningError { kind, code, message: message.into() }
    }

    pub(crate) fn rejected(message: impl Into<String>) -> Self {
        Self::new(ProvisioningErrorKind::Rejected, None, message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ProvisioningErrorKind::Unavailable, None, message)
    }

    /// The kind an HTTP status implies when the provider's code says nothing more specific.
    pub(crate) fn kind_for_status(status: u16) -> ProvisioningErrorKind {
        match status {
            401 | 403 => ProvisioningErrorKind::Unauthorized,
            404 => ProvisioningErrorKind::NotFound,
            429 | 500..=599 => ProvisioningErrorKind::Unavailable,
            _ => ProvisioningErrorKind::Rejected,
        }
    }
}

impl From<crate::send::ConfigError> for ProvisioningError {
    fn from(error: crate::send::ConfigError) -> Self {
        ProvisioningError::rejected(error.to_string())
    }
}
