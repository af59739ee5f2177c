//! The four failure classes a provider code maps to, before it becomes a [`SendError`]. The code
//! tables in each provider module map to this, so a table is plain data and easy to test.

use std::time::Duration;

use crate::SendError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    RateLimited,
    Retryable,
    Permanent,
    TenantBlocked,
}

impl ErrorClass {
    /// The class an HTTP status implies when the provider's code is missing or not in a table.
    pub fn from_http_status(status: u16) -> ErrorClass {
        match status {
            401 | 403 => ErrorClass::TenantBlocked,
            429 => ErrorClass::RateLimited,
            400..=499 => ErrorClass::Permanent,
            // 5xx, and anything odd (a 3xx from a misbehaving proxy) that says nothing about
            // the message itself.
            _ => ErrorClass::Retryable,
        }
    }

    pub fn into_error(self, code: String, reason: String, retry_after: Option<Duration>) -> SendError {
        match self {
            ErrorClass::RateLimited => SendError::RateLimited { reason: format!("{code}: {reason}"), retry_after },
            ErrorClass::Retryable => SendError::Retryable { reason: format!("{code}: {reason}"), retry_after },
            ErrorClass::Permanent => SendError::Permanent { code, reason },
            ErrorClass::TenantBlocked => SendError::TenantBlocked { code, reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_fallback() {
        assert_eq!(ErrorClass::from_http_status(401), ErrorClass::TenantBlocked);
        assert_eq!(ErrorClass::from_http_status(403), ErrorClass::TenantBlocked);
        assert_eq!(ErrorClass::from_http_status(429), ErrorClass::RateLimited);
        assert_eq!(ErrorClass::from_http_status(400), ErrorClass::Permanent);
        assert_eq!(ErrorClass::from_http_status(404), ErrorClass::Permanent);
        assert_eq!(ErrorClass::from_http_status(500), ErrorClass::Retryable);
        assert_eq!(ErrorClass::from_http_status(503), ErrorClass::Retryable);
    }
}
