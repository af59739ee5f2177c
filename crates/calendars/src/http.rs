//! What every adapter shares about HTTP: transport failures, `Retry-After`, constant-time
//! comparison, and the outcome of one attempt before credentials are dealt with.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use sha2::{Digest, Sha256};

use crate::SyncError;

/// One attempt's failure: either the access token was refused (refresh and try once more) or
/// a final answer.
#[derive(Debug)]
pub(crate) enum Failure {
    AccessRefused,
    Sync(SyncError),
}

impl From<SyncError> for Failure {
    fn from(error: SyncError) -> Self {
        Failure::Sync(error)
    }
}

/// A request that got no answer. Connect failures never reached the vendor; a timeout may
/// have (the request left), but every call here can be repeated safely, so both are retryable.
pub(crate) fn transport_error(error: &reqwest::Error) -> SyncError {
    let what = if error.is_connect() {
        "no connection"
    } else if error.is_timeout() {
        "no answer in time"
    } else {
        "transport error"
    };
    let mut reason = format!("{what}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        reason.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    SyncError::retryable(reason)
}

/// `Retry-After` in seconds (an HTTP date is also allowed by RFC 9110 but neither vendor is
/// documented to send one; it is read as "no hint").
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A 5xx or 408: the vendor failed, try again.
pub(crate) fn server_error(status: reqwest::StatusCode, headers: &HeaderMap, body: &str) -> SyncError {
    let excerpt: String = body.chars().take(200).collect();
    SyncError::Retryable { retry_after: retry_after(headers), reason: format!("HTTP {status}: {excerpt}") }
}

/// Equality that takes the same time wherever the inputs differ: both sides are hashed first,
/// so neither the position of the first difference nor the secret's length shows.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_in_seconds_is_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }

    #[test]
    fn server_errors_are_retryable_with_the_hint() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let error = server_error(reqwest::StatusCode::BAD_GATEWAY, &headers, "oops");
        assert!(matches!(error, SyncError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(3)));
    }
}
