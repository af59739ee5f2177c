//! For the adapters' error-table tests: the class of a [`SendError`], checking that the
//! provider's code is carried where it must be.

use super::SendError;

/// `"rate"`, `"blocked"`, `"permanent"`, `"retry"` or `"unknown"`; blocked and permanent errors
/// must carry `code`.
pub(crate) fn class_of(error: &SendError, code: &str) -> &'static str {
    match error {
        SendError::RateLimited { .. } => "rate",
        SendError::TenantBlocked { code: carried, .. } => {
            assert_eq!(carried, code);
            "blocked"
        }
        SendError::Permanent { code: carried, .. } => {
            assert_eq!(carried, code);
            "permanent"
        }
        SendError::Retryable { .. } => "retry",
        SendError::Unknown { .. } => "unknown",
    }
}
