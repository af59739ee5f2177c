//! OAuth 2.0 credentials and their refresh, shared by both vendors.
//!
//! Every adapter call takes `&mut Credentials`. Before a request the access token is
//! refreshed if it expires within [`EXPIRY_MARGIN`]; a 401 gets one refresh and one more try.
//! A refresh rewrites the credentials in place and sets `Outcome::credentials_changed`, which
//! the caller must act on (persist) whatever the result: Jobber rotates refresh tokens, so the
//! one the caller loaded is dead once a refresh succeeded.
//!
//! Token endpoint answers: Google `{access_token, expires_in, token_type, scope}` (no new
//! refresh token, normally); Jobber `{access_token, refresh_token}` where the access token is a
//! JWT whose `exp` claim is its only stated expiry. `invalid_grant` (revoked, expired, already
//! rotated) is `Unauthorized`; `invalid_client` is our own configuration, so `Permanent`.

use std::fmt;
use std::future::Future;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{Failure, retry_after, server_error, transport_error};
use crate::{Outcome, SyncError};

/// Refresh this long before the access token's stated expiry: clocks differ, requests take time.
pub const EXPIRY_MARGIN: ChronoDuration = ChronoDuration::seconds(60);

/// Assumed lifetime of an access token whose answer states none (Jobber's default: 60 minutes).
const DEFAULT_LIFETIME: ChronoDuration = ChronoDuration::minutes(60);

/// One operator's grant to one vendor account. The caller keeps it (encrypted) and passes it
/// to every call; `Debug` shows no token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("access_expires_at", &self.access_expires_at).finish_non_exhaustive()
    }
}

/// A vendor's token endpoint and our client there.
#[derive(Clone)]
pub(crate) struct TokenEndpoint {
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The `exp` claim of a JWT, read without verifying it (we only need to know when to refresh;
/// the vendor verifies the token).
fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    let claims = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?).ok()?;
    DateTime::from_timestamp(claims.get("exp")?.as_i64()?, 0)
}

/// The new credentials from a token endpoint's answer; `previous` supplies the refresh token
/// when the vendor sends none (Google).
fn read_token_answer(body: &Value, previous: &Credentials, now: DateTime<Utc>) -> Option<Credentials> {
    let access_token = body.get("access_token")?.as_str()?.to_owned();
    let access_expires_at = match body.get("expires_in").and_then(Value::as_i64) {
        Some(seconds) => now + ChronoDuration::seconds(seconds),
        None => jwt_expiry(&access_token).unwrap_or(now + DEFAULT_LIFETIME),
    };
    let refresh_token = body
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map_or_else(|| previous.refresh_token.clone(), str::to_owned);
    Some(Credentials { access_token, access_expires_at, refresh_token })
}

/// The refresh request; on success `credentials` are replaced.
pub(crate) async fn refresh(
    http: &reqwest::Client,
    endpoint: &TokenEndpoint,
    credentials: &mut Credentials,
) -> Result<(), SyncError> {
    let form = [
        ("client_id", endpoint.client_id.as_str()),
        ("client_secret", endpoint.client_secret.as_str()),
        ("grant_type", "refresh_token"),
        ("refresh_token", credentials.refresh_token.as_str()),
    ];
    let response = http.post(&endpoint.url).form(&form).send().await.map_err(|e| transport_error(&e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.map_err(|e| transport_error(&e))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let error = body.get("error").and_then(Value::as_str).unwrap_or_default();
    let description = body.get("error_description").and_then(Value::as_str).unwrap_or(error).to_owned();
    if status.is_success() {
        let fresh = read_token_answer(&body, credentials, Utc::now())
            .ok_or_else(|| SyncError::retryable("the token endpoint answered without an access token"))?;
        *credentials = fresh;
        return Ok(());
    }
    Err(match (status.as_u16(), error) {
        (_, "invalid_grant") => SyncError::Unauthorized { reason: description },
        (_, "invalid_client" | "unauthorized_client") => SyncError::permanent(error, description),
        (429, _) => SyncError::RateLimited { retry_after: retry_after(&headers) },
        (500.., _) | (408, _) => server_error(status, &headers, &text),
        _ => SyncError::permanent(format!("oauth_{}", status.as_u16()), description),
    })
}

/// Runs requests for one call with a valid access token, refreshing as needed, and records
/// whether the credentials changed.
pub(crate) struct Session<'a> {
    http: &'a reqwest::Client,
    endpoint: &'a TokenEndpoint,
    credentials: &'a mut Credentials,
    changed: bool,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        http: &'a reqwest::Client,
        endpoint: &'a TokenEndpoint,
        credentials: &'a mut Credentials,
    ) -> Self {
        Self { http, endpoint, credentials, changed: false }
    }

    async fn refresh(&mut self) -> Result<(), SyncError> {
        refresh(self.http, self.endpoint, self.credentials).await?;
        self.changed = true;
        Ok(())
    }

    /// One request: with a fresh token, and once more after a refresh if the token is refused.
    pub(crate) async fn call<T, F, Fut>(&mut self, request: F) -> Result<T, SyncError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        if self.credentials.access_expires_at <= Utc::now() + EXPIRY_MARGIN {
            self.refresh().await?;
        }
        match request(self.credentials.access_token.clone()).await {
            Ok(value) => return Ok(value),
            Err(Failure::Sync(error)) => return Err(error),
            Err(Failure::AccessRefused) => {}
        }
        self.refresh().await?;
        match request(self.credentials.access_token.clone()).await {
            Ok(value) => Ok(value),
            Err(Failure::Sync(error)) => Err(error),
            Err(Failure::AccessRefused) => {
                Err(SyncError::Unauthorized { reason: "the access token was refused right after a refresh".to_owned() })
            }
        }
    }

    pub(crate) fn finish<T>(self, result: Result<T, SyncError>) -> Outcome<T> {
        Outcome { result, credentials_changed: self.changed }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn previous() -> Credentials {
        Credentials { access_token: "old".into(), access_expires_at: Utc::now(), refresh_token: "r1".into() }
    }

    #[test]
    fn google_answers_keep_the_refresh_token_and_use_expires_in() {
        let now = Utc::now();
        let fresh = read_token_answer(&json!({"access_token": "a2", "expires_in": 3920}), &previous(), now).unwrap();
        assert_eq!(fresh.refresh_token, "r1");
        assert_eq!(fresh.access_expires_at, now + ChronoDuration::seconds(3920));
    }

    #[test]
    fn jobber_answers_rotate_the_refresh_token_and_expire_by_the_jwt() {
        let exp = Utc::now().timestamp() + 1234;
        let claims = URL_SAFE_NO_PAD.encode(json!({"exp": exp}).to_string());
        let jwt = format!("e30.{claims}.sig");
        let fresh =
            read_token_answer(&json!({"access_token": jwt, "refresh_token": "r2"}), &previous(), Utc::now()).unwrap();
        assert_eq!(fresh.refresh_token, "r2");
        assert_eq!(fresh.access_expires_at.timestamp(), exp);
    }

    #[test]
    fn an_opaque_token_without_expiry_gets_the_default_lifetime() {
        let now = Utc::now();
        let fresh = read_token_answer(&json!({"access_token": "opaque"}), &previous(), now).unwrap();
        assert_eq!(fresh.access_expires_at, now + DEFAULT_LIFETIME);
        assert!(read_token_answer(&json!({}), &previous(), now).is_none());
    }

    #[test]
    fn debug_shows_no_tokens() {
        let shown = format!("{:?}", previous());
        assert!(!shown.contains("old") && !shown.contains("r1"));
    }
}
