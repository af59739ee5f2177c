//! OAuth 2.0 token endpoints of the calendar vendors: Google's `POST /token` (the path of
//! `https://oauth2.googleapis.com/token`) and Jobber's `POST /api/oauth/token`, both
//! `grant_type=refresh_token` with the client id and secret in the form
//! (docs/providers/google-calendar.md §OAuth, docs/providers/jobber.md §OAuth).
//!
//! Access tokens expire after `SimConfig::access_token_ttl`. Google keeps a refresh token
//! until it is revoked and answers a refresh without a new one; Jobber rotates: every refresh
//! answers a new refresh token and kills the one presented, so presenting it again fails with
//! `invalid_grant`. Jobber access tokens are JWTs whose `exp` claim is the only statement of
//! their lifetime (Jobber's answer has no `expires_in`).
//!
//! There is no consent screen: a grant (what the authorization-code exchange would have
//! produced) is made with `POST /sim/oauth/grants` or [`crate::SimHandle::oauth_grant`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use crate::ledger::{NewEntry, form_to_json};
use crate::{SimState, random_hex};

/// The calendar vendors whose tokens the sim issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Google,
    Jobber,
}

impl Vendor {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Vendor::Google => "google",
            Vendor::Jobber => "jobber",
        }
    }
}

/// What a completed consent would have handed the app.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OAuthGrant {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug)]
struct AccessToken {
    vendor: Vendor,
    expires_at: DateTime<Utc>,
}

/// Every token the sim issued: access tokens with their expiry, refresh tokens while alive.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, Vendor>,
}

/// Why an access token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccessRefused {
    Missing,
    Unknown,
    Expired,
}

impl Tokens {
    /// Checks an `Authorization: Bearer …` header against the vendor's live access tokens.
    pub(crate) fn check(&self, vendor: Vendor, headers: &HeaderMap) -> Result<(), AccessRefused> {
        let token = bearer(headers).ok_or(AccessRefused::Missing)?;
        match self.access.get(&token) {
            Some(access) if access.vendor == vendor && access.expires_at > Utc::now() => Ok(()),
            Some(access) if access.vendor == vendor => Err(AccessRefused::Expired),
            _ => Err(AccessRefused::Unknown),
        }
    }

    fn issue_access(
        &mut self,
        vendor: Vendor,
        ttl: std::time::Duration,
        client_secret: &str,
    ) -> (String, DateTime<Utc>) {
        let expires_at = Utc::now() + ChronoDuration::from_std(ttl).unwrap_or(ChronoDuration::hours(1));
        let token = match vendor {
            // Google's access tokens are opaque (`ya29.` by convention).
            Vendor::Google => format!("ya29.sim-{}", random_hex(40)),
            Vendor::Jobber => jobber_jwt(expires_at, client_secret),
        };
        self.access.insert(token.clone(), AccessToken { vendor, expires_at });
        (token, expires_at)
    }

    fn issue_refresh(&mut self, vendor: Vendor) -> String {
        // Jobber's refresh tokens are 32 hex characters; Google's start with `1//`.
        let token = match vendor {
            Vendor::Google => format!("1//sim-{}", random_hex(40)),
            Vendor::Jobber => random_hex(32),
        };
        self.refresh.insert(token.clone(), vendor);
        token
    }

    /// Makes every access token of `vendor` expired now (their refresh tokens stay alive).
    pub(crate) fn expire_access(&mut self, vendor: Vendor) {
        let past = Utc::now() - ChronoDuration::seconds(1);
        for access in self.access.values_mut().filter(|a| a.vendor == vendor) {
            access.expires_at = past;
        }
    }

    /// Kills every token of `vendor`, as a user revoking the app's access would.
    pub(crate) fn revoke(&mut self, vendor: Vendor) {
        self.access.retain(|_, a| a.vendor != vendor);
        self.refresh.retain(|_, v| *v != vendor);
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// A JWT (HS256, signed with the client secret) whose claims carry the expiry as Jobber's do.
fn jobber_jwt(expires_at: DateTime<Utc>, client_secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({
        "iat": Utc::now().timestamp(),
        "exp": expires_at.timestamp(),
        "jti": random_hex(16),
        "account_id": crate::jobber_store::ACCOUNT_NUMBER,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(client_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{header}.{claims}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{claims}.{signature}")
}

/// A new grant for `vendor`, as the authorization-code exchange would produce.
pub(crate) fn grant(state: &SimState, vendor: Vendor) -> OAuthGrant {
    let secret = client_credentials(state, vendor).1;
    let mut tokens = state.tokens();
    let (access_token, expires_at) = tokens.issue_access(vendor, state.config.access_token_ttl, &secret);
    let refresh_token = tokens.issue_refresh(vendor);
    OAuthGrant { access_token, refresh_token, expires_at }
}

fn client_credentials(state: &SimState, vendor: Vendor) -> (String, String) {
    match vendor {
        Vendor::Google => (state.config.google_client_id.clone(), state.config.google_client_secret.clone()),
        Vendor::Jobber => (state.config.jobber_client_id.clone(), state.config.jobber_client_secret.clone()),
    }
}

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/token", post(google_token))
        .route("/api/oauth/token", post(jobber_token))
        .route("/sim/oauth/grants", post(make_grant))
        .route("/sim/oauth/expire", post(expire))
        .route("/sim/oauth/revoke", post(revoke))
}

/// `{"vendor": "google" | "jobber"}`, the body of the `/sim/oauth/*` controls.
#[derive(Debug, Deserialize)]
struct VendorRequest {
    vendor: Vendor,
}

async fn make_grant(State(state): State<Arc<SimState>>, axum::Json(request): axum::Json<VendorRequest>) -> Response {
    axum::Json(grant(&state, request.vendor)).into_response()
}

async fn expire(State(state): State<Arc<SimState>>, axum::Json(request): axum::Json<VendorRequest>) -> StatusCode {
    state.tokens().expire_access(request.vendor);
    StatusCode::NO_CONTENT
}

async fn revoke(State(state): State<Arc<SimState>>, axum::Json(request): axum::Json<VendorRequest>) -> StatusCode {
    state.tokens().revoke(request.vendor);
    StatusCode::NO_CONTENT
}

async fn google_token(State(state): State<Arc<SimState>>, raw: Bytes) -> Response {
    token_endpoint(&state, Vendor::Google, &raw)
}

async fn jobber_token(State(state): State<Arc<SimState>>, raw: Bytes) -> Response {
    token_endpoint(&state, Vendor::Jobber, &raw)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

fn token_endpoint(state: &SimState, vendor: Vendor, raw: &[u8]) -> Response {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(raw).unwrap_or_default();
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    // The ledger must not keep usable secrets around; the token's first characters identify it.
    let mut body = form_to_json(&fields);
    for secret in ["client_secret", "refresh_token"] {
        if let Some(value) = body.get_mut(secret) {
            let shown: String = value.as_str().unwrap_or_default().chars().take(8).collect();
            *value = json!(format!("{shown}…"));
        }
    }
    let path = match vendor {
        Vendor::Google => "/token",
        Vendor::Jobber => "/api/oauth/token",
    };
    let record = |outcome: &str| {
        state.ledger().record(NewEntry {
            provider: vendor.as_str(),
            operation: "oauth.refresh",
            method: "POST",
            path: path.to_owned(),
            recipient: None,
            provider_message_id: None,
            body: body.clone(),
            outcome: outcome.to_owned(),
        });
    };
    let (client_id, client_secret) = client_credentials(state, vendor);
    if field("client_id") != Some(client_id.as_str()) || field("client_secret") != Some(client_secret.as_str()) {
        record("error:invalid_client");
        let description = match vendor {
            Vendor::Google => "Unauthorized",
            Vendor::Jobber => {
                "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method."
            }
        };
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    }
    if field("grant_type") != Some("refresh_token") {
        record("error:unsupported_grant_type");
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The sim supports grant_type=refresh_token only; make grants with POST /sim/oauth/grants",
        );
    }
    let presented = field("refresh_token").unwrap_or_default().to_owned();
    let mut tokens = state.tokens();
    if tokens.refresh.get(&presented) != Some(&vendor) {
        drop(tokens);
        record("error:invalid_grant");
        let description = match vendor {
            Vendor::Google => "Token has been expired or revoked.",
            Vendor::Jobber => {
                "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."
            }
        };
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description);
    }
    let (access_token, expires_at) = tokens.issue_access(vendor, state.config.access_token_ttl, &client_secret);
    let reply = match vendor {
        Vendor::Google => json!({
            "access_token": access_token,
            "expires_in": (expires_at - Utc::now()).num_seconds().max(0),
            "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/calendar.events",
        }),
        Vendor::Jobber => {
            // Rotation: the presented refresh token dies, a new one is answered.
            tokens.refresh.remove(&presented);
            let refresh_token = tokens.issue_refresh(vendor);
            json!({"access_token": access_token, "refresh_token": refresh_token})
        }
    };
    drop(tokens);
    record("accepted");
    (StatusCode::OK, axum::Json(reply)).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        headers
    }

    #[test]
    fn access_tokens_are_checked_per_vendor_and_expire() {
        let mut tokens = Tokens::default();
        let (google, _) = tokens.issue_access(Vendor::Google, std::time::Duration::from_secs(60), "s");
        assert_eq!(tokens.check(Vendor::Google, &headers(&google)), Ok(()));
        assert_eq!(tokens.check(Vendor::Jobber, &headers(&google)), Err(AccessRefused::Unknown));
        assert_eq!(tokens.check(Vendor::Google, &HeaderMap::new()), Err(AccessRefused::Missing));
        tokens.expire_access(Vendor::Google);
        assert_eq!(tokens.check(Vendor::Google, &headers(&google)), Err(AccessRefused::Expired));
    }

    #[test]
    fn jobber_access_tokens_are_jwts_with_an_expiry_claim() {
        let expires_at = Utc::now() + ChronoDuration::minutes(60);
        let jwt = jobber_jwt(expires_at, "secret");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["exp"], json!(expires_at.timestamp()));
    }

    #[test]
    fn revoking_kills_refresh_tokens() {
        let mut tokens = Tokens::default();
        let refresh = tokens.issue_refresh(Vendor::Jobber);
        let google = tokens.issue_refresh(Vendor::Google);
        tokens.revoke(Vendor::Jobber);
        assert!(!tokens.refresh.contains_key(&refresh));
        assert!(tokens.refresh.contains_key(&google));
    }
}
