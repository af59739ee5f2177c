//! Twilio account check: `GET {base_url}/2010-04-01/Accounts/{sid}.json` with Basic auth proves
//! the SID and token and tells whether the account is `active`, `suspended` or `closed`.
//!
//! Errors: 20003 / HTTP 401 → Unauthorized; 20404 / HTTP 404 → NotFound; 20429, HTTP 429 and
//! 5xx → Unavailable; anything else → Rejected.

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;

use super::http::fetch;
use super::{ProvisioningError, ProvisioningErrorKind};
use crate::TwilioConfig;
use crate::send::twilio::account_url;

/// What the verification flow needs from the account resource (the answer also carries the
/// auth token, which is deliberately not kept).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TwilioAccount {
    /// `active`, `suspended` or `closed`: only `active` accounts send.
    pub status: String,
    pub friendly_name: String,
}

impl TwilioAccount {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

pub async fn check_account(http: &reqwest::Client, config: &TwilioConfig) -> Result<TwilioAccount, ProvisioningError> {
    let url = format!("{}.json", account_url(config)?);
    let request = http.get(url).basic_auth(&config.account_sid, Some(config.auth_token.expose_secret()));
    let (status, body) = fetch(request).await?;
    if !(200..300).contains(&status) {
        return Err(classify_error(status, &body));
    }
    serde_json::from_str(&body).map_err(|e| ProvisioningError::unavailable(format!("unexpected account answer: {e}")))
}

pub fn classify_error(status: u16, body: &str) -> ProvisioningError {
    let value: Option<Value> = serde_json::from_str(body).ok();
    let code = value.as_ref().and_then(|v| v.get("code")).and_then(Value::as_i64);
    let message = value.as_ref().and_then(|v| v.get("message")).and_then(Value::as_str).map(str::to_owned);
    let kind = match code {
        Some(20003) => ProvisioningErrorKind::Unauthorized,
        Some(20404) => ProvisioningErrorKind::NotFound,
        Some(20429) => ProvisioningErrorKind::Unavailable,
        _ => ProvisioningError::kind_for_status(status),
    };
    ProvisioningError::new(kind, code.map(|c| c.to_string()), message.unwrap_or_else(|| format!("HTTP {status}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_kinds() {
        let auth = r#"{"code":20003,"message":"Authenticate","more_info":"http://www.twilio.com/docs/errors/20003","status":401}"#;
        let err = classify_error(401, auth);
        assert_eq!(
            (err.kind, err.code.as_deref(), err.message.as_str()),
            (ProvisioningErrorKind::Unauthorized, Some("20003"), "Authenticate")
        );
        let missing = r#"{"code":20404,"message":"The requested resource was not found","status":404}"#;
        assert_eq!(classify_error(404, missing).kind, ProvisioningErrorKind::NotFound);
        assert_eq!(classify_error(503, "").kind, ProvisioningErrorKind::Unavailable);
        assert_eq!(classify_error(400, r#"{"code":21999,"message":"x"}"#).kind, ProvisioningErrorKind::Rejected);
    }
}
