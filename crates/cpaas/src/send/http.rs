//! What the reqwest-based adapters (Meta, Twilio) share: executing a request with our timeout,
//! telling "never sent" from "sent, no answer", and reading `Retry-After`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::{ConfigError, SendOptions};
use crate::SendError;

/// A `reqwest::Client` with the connect timeout of `options` (reqwest sets it per client, not
/// per request). The overall timeout is applied per request by the adapters.
pub fn build_http_client(options: &SendOptions) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .user_agent(concat!("switchboard-cpaas/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A provider's answer, read completely.
#[derive(Debug)]
pub(crate) struct ProviderResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

impl ProviderResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends the request with `timeout` and reads the whole answer. Transport failures come back
/// classified (see [`classify_transport_error`]).
pub(crate) async fn execute(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<ProviderResponse, SendError> {
    let response = request.timeout(timeout).send().await.map_err(|e| classify_transport_error(&e))?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers(), Utc::now());
    match response.text().await {
        Ok(body) => Ok(ProviderResponse { status, retry_after, body }),
        // A 2xx whose body we lost may well be an accepted message.
        Err(e) if (200..300).contains(&status) => Err(SendError::Unknown {
            reason: format!("HTTP {status} but the body could not be read: {}", describe(&e)),
        }),
        // An error status says enough on its own; classify it without the body.
        Err(_) => Ok(ProviderResponse { status, retry_after, body: String::new() }),
    }
}

/// Connect/DNS failures never sent the request → `Retryable`. Everything after that (timeout
/// waiting for the answer, connection dropped mid-response) may have reached the provider →
/// `Unknown`, so nobody resends blindly.
pub(crate) fn classify_transport_error(error: &reqwest::Error) -> SendError {
    let reason = describe(error);
    if error.is_connect() {
        SendError::Retryable { reason: format!("could not connect: {reason}"), retry_after: None }
    } else if error.is_builder() {
        // Our request could not be built (a bad URL in the configuration): nothing was sent and
        // sending again will not help.
        SendError::Permanent { code: "request_build_failed".into(), reason }
    } else if error.is_timeout() {
        SendError::Unknown { reason: format!("timed out waiting for the provider: {reason}") }
    } else {
        SendError::Unknown { reason: format!("request failed after it may have been sent: {reason}") }
    }
}

/// The error and its sources, without the URL (a query string can carry secrets, e.g. the Meta
/// code exchange).
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

/// `Retry-After` is either delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the past
/// means "now": zero.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is valid RFC 2822, which chrono parses.
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The base URL without a trailing slash, checked to be an http(s) URL.
pub(crate) fn base_url(provider: &'static str, raw: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(raw).map_err(|e| ConfigError::new(provider, format!("base_url is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::new(provider, "base_url must be http or https"));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

/// A value we put in a URL path: non-empty and unable to change the path's shape.
pub(crate) fn path_segment<'a>(provider: &'static str, what: &str, value: &'a str) -> Result<&'a str, ConfigError> {
    if value.is_empty()
        || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || value == "."
        || value == ".."
    {
        return Err(ConfigError::new(provider, format!("{what} must be non-empty letters, digits, '.', '_' or '-'")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("120", now()), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_http_date() {
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now()), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_garbage_is_none() {
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
    }

    #[test]
    fn retry_after_header_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers, now()), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&HeaderMap::new(), now()), None);
    }

    #[tokio::test]
    async fn refused_connection_is_retryable() {
        // Bind and drop a listener so the port is (almost certainly) closed.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = build_http_client(&SendOptions::default()).unwrap();
        let err = execute(client.get(format!("http://127.0.0.1:{port}/x?secret=s3cr3t")), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Retryable { .. }), "{err:?}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[tokio::test]
    async fn silence_after_sending_is_unknown() {
        // Accepts the connection, reads nothing back, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(socket);
        });
        let client = build_http_client(&SendOptions::default()).unwrap();
        let err = execute(client.post(format!("http://{addr}/send")).body("x"), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Unknown { .. }), "{err:?}");
        server.abort();
    }
}
