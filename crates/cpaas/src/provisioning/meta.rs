//! Meta Embedded Signup and number management (docs/providers/meta-whatsapp.md §4):
//! exchange the signup code for a business token, register the phone number, subscribe our app
//! to the customer's WABA (optionally with an override callback), and read the number's fields.
//!
//! Errors: Graph error bodies (§2.1). 190, 0, 10, 200–299, 131005, 131031, 368 and HTTP 401/403
//! → Unauthorized; 100 with subcode 33 ("object does not exist") and HTTP 404 → NotFound;
//! 4, 80007, 130429, 133016 (register rate limit), 1, 2, 131000, 131016, 133004, HTTP 429/5xx →
//! Unavailable; everything else (133005 PIN mismatch, 100 invalid code, …) → Rejected.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::fetch;
use super::{ProvisioningError, ProvisioningErrorKind};
use crate::MetaConfig;
use crate::send::http::{base_url, path_segment};
use crate::send::meta::graph_node_url;

/// Meta caps `override_callback_uri` at 200 characters.
const MAX_OVERRIDE_CALLBACK_LEN: usize = 200;

/// Our Meta app (not a tenant's): what the code exchange authenticates with.
#[derive(Debug, Clone)]
pub struct MetaApp {
    /// Graph API base, e.g. `https://graph.facebook.com`.
    pub base_url: String,
    pub api_version: String,
    pub app_id: String,
    pub app_secret: SecretString,
}

/// `GET /{phone_number_id}?fields=…` (§4.4). Fields Meta may omit are optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PhoneNumberInfo {
    pub display_phone_number: String,
    pub verified_name: String,
    /// `GREEN`, `YELLOW`, `RED`, `UNKNOWN`.
    pub quality_rating: Option<String>,
    /// `TIER_250` … `TIER_UNLIMITED`; may be missing on newer API versions.
    pub messaging_limit_tier: Option<String>,
}

const PHONE_NUMBER_FIELDS: &str = "display_phone_number,verified_name,quality_rating,messaging_limit_tier";

/// Exchanges an Embedded Signup `code` for the customer's business token (§4.1). Server to
/// server only: the URL carries our app secret, so it is never logged.
pub async fn exchange_code(
    http: &reqwest::Client,
    app: &MetaApp,
    code: &str,
) -> Result<SecretString, ProvisioningError> {
    if code.is_empty() {
        return Err(ProvisioningError::rejected("the signup code is empty"));
    }
    let version = path_segment("meta", "api_version", &app.api_version)?;
    let mut url = url::Url::parse(&format!("{}/{version}/oauth/access_token", base_url("meta", &app.base_url)?))
        .map_err(|e| ProvisioningError::rejected(format!("base_url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("client_id", &app.app_id)
        .append_pair("client_secret", app.app_secret.expose_secret())
        .append_pair("code", code);
    let body = success_body(fetch(http.get(url)).await?)?;
    match body.get("access_token").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => Ok(SecretString::from(token.to_owned())),
        _ => Err(ProvisioningError::unavailable("Meta answered the code exchange without an access_token")),
    }
}

/// Registers the business number on Cloud API with its two-step verification PIN (§4.3).
pub async fn register_phone(
    http: &reqwest::Client,
    config: &MetaConfig,
    pin: &SecretString,
) -> Result<(), ProvisioningError> {
    let pin_ok = pin.expose_secret().len() == 6 && pin.expose_secret().bytes().all(|b| b.is_ascii_digit());
    if !pin_ok {
        return Err(ProvisioningError::rejected("the PIN must be 6 digits"));
    }
    let url = format!("{}/register", graph_node_url(config, &config.phone_number_id)?);
    let request = http
        .post(url)
        .bearer_auth(config.access_token.expose_secret())
        .json(&json!({ "messaging_product": "whatsapp", "pin": pin.expose_secret() }));
    expect_success_true(success_body(fetch(request).await?)?)
}

/// Subscribes our app to the tenant's WABA (§4.2). With `override_callback_uri`, Meta sends this
/// WABA's message webhooks there instead of the app's callback, after a GET handshake echoing
/// `verify_token`.
pub async fn subscribe_app(
    http: &reqwest::Client,
    config: &MetaConfig,
    override_callback_uri: Option<&str>,
    verify_token: &SecretString,
) -> Result<(), ProvisioningError> {
    let url = format!("{}/subscribed_apps", graph_node_url(config, &config.waba_id)?);
    let mut request = http.post(url).bearer_auth(config.access_token.expose_secret());
    if let Some(uri) = override_callback_uri {
        if uri.is_empty() || uri.chars().count() > MAX_OVERRIDE_CALLBACK_LEN {
            return Err(ProvisioningError::rejected("override_callback_uri must be 1 to 200 characters"));
        }
        if verify_token.expose_secret().is_empty() {
            return Err(ProvisioningError::rejected("an override callback needs a verify token"));
        }
        request = request.json(&json!({ "override_callback_uri": uri, "verify_token": verify_token.expose_secret() }));
    }
    expect_success_true(success_body(fetch(request).await?)?)
}

/// Reads the number's display number, verified name, quality rating and messaging tier (§4.4).
pub async fn phone_number_info(
    http: &reqwest::Client,
    config: &MetaConfig,
) -> Result<PhoneNumberInfo, ProvisioningError> {
    let url = graph_node_url(config, &config.phone_number_id)?;
    let request =
        http.get(url).bearer_auth(config.access_token.expose_secret()).query(&[("fields", PHONE_NUMBER_FIELDS)]);
    let body = success_body(fetch(request).await?)?;
    serde_json::from_value(body)
        .map_err(|e| ProvisioningError::unavailable(format!("unexpected phone number answer: {e}")))
}

/// The JSON of a 2xx answer, or the classified Graph error.
fn success_body((status, body): (u16, String)) -> Result<Value, ProvisioningError> {
    if !(200..300).contains(&status) {
        return Err(classify_error(status, &body));
    }
    serde_json::from_str(&body)
        .map_err(|_| ProvisioningError::unavailable(format!("HTTP {status} with a body that is not JSON")))
}

fn expect_success_true(body: Value) -> Result<(), ProvisioningError> {
    if body.get("success").and_then(Value::as_bool) == Some(true) {
        Ok(())
    } else {
        Err(ProvisioningError::rejected(format!("Meta did not confirm success: {body}")))
    }
}

/// A Graph error answer → [`ProvisioningError`] (table in the module documentation).
pub fn classify_error(status: u16, body: &str) -> ProvisioningError {
    let error = serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("error").cloned());
    let Some(error) = error else {
        return ProvisioningError::new(
            ProvisioningError::kind_for_status(status),
            None,
            format!("HTTP {status} without a Graph error body"),
        );
    };
    let code = error.get("code").and_then(Value::as_i64);
    let subcode = error.get("error_subcode").and_then(Value::as_i64);
    let message = error.get("message").and_then(Value::as_str).unwrap_or("no message").to_owned();
    let kind =
        code.and_then(|c| kind_for_code(c, subcode)).unwrap_or_else(|| ProvisioningError::kind_for_status(status));
    ProvisioningError::new(kind, code.map(|c| c.to_string()), message)
}

fn kind_for_code(code: i64, subcode: Option<i64>) -> Option<ProvisioningErrorKind> {
    Some(match (code, subcode) {
        (0 | 10 | 190 | 200..=299 | 368 | 131005 | 131031, _) => ProvisioningErrorKind::Unauthorized,
        (100, Some(33)) => ProvisioningErrorKind::NotFound,
        (1 | 2 | 4 | 80007 | 130429 | 131000 | 131016 | 133004 | 133016, _) => ProvisioningErrorKind::Unavailable,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn graph_errors_map_to_kinds() {
        let token = r#"{"error":{"message":"Error validating access token: Session has expired on ...","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"EJplcsCHuLu"}}"#;
        let err = classify_error(401, token);
        assert_eq!(err.kind, ProvisioningErrorKind::Unauthorized);
        assert_eq!(err.code.as_deref(), Some("190"));
        assert!(err.message.starts_with("Error validating access token"));

        let bad_code = r#"{"error":{"message":"Invalid verification code format.","type":"OAuthException","code":100,"fbtrace_id":"x"}}"#;
        assert_eq!(classify_error(400, bad_code).kind, ProvisioningErrorKind::Rejected);

        let missing = r#"{"error":{"message":"Unsupported get request. Object with ID '1' does not exist","type":"GraphMethodException","code":100,"error_subcode":33}}"#;
        assert_eq!(classify_error(400, missing).kind, ProvisioningErrorKind::NotFound);

        let pin = r#"{"error":{"message":"(#133005) Two step verification PIN Mismatch","type":"OAuthException","code":133005}}"#;
        assert_eq!(classify_error(400, pin).kind, ProvisioningErrorKind::Rejected);

        let too_many =
            r#"{"error":{"message":"(#133016) Account register deregister rate limit exceeded","code":133016}}"#;
        assert_eq!(classify_error(400, too_many).kind, ProvisioningErrorKind::Unavailable);

        assert_eq!(classify_error(503, "oops").kind, ProvisioningErrorKind::Unavailable);
        assert_eq!(classify_error(404, "").kind, ProvisioningErrorKind::NotFound);
    }

    #[test]
    fn success_must_be_confirmed() {
        assert!(expect_success_true(json!({"success": true})).is_ok());
        assert_eq!(expect_success_true(json!({"success": false})).unwrap_err().kind, ProvisioningErrorKind::Rejected);
    }

    #[test]
    fn phone_number_info_tolerates_missing_optional_fields() {
        let info: PhoneNumberInfo = serde_json::from_value(json!({
            "id": "106540352242922", "display_phone_number": "+1 555-123-4567", "verified_name": "Lucky Shrub", "quality_rating": "GREEN"
        }))
        .unwrap();
        assert_eq!(info.messaging_limit_tier, None);
        assert_eq!(info.quality_rating.as_deref(), Some("GREEN"));
    }

    #[test]
    fn debug_hides_the_app_secret() {
        let app = MetaApp {
            base_url: "https://graph.facebook.com".into(),
            api_version: "v21.0".into(),
            app_id: "123".into(),
            app_secret: SecretString::from("very-secret"),
        };
        assert!(!format!("{app:?}").contains("very-secret"));
    }
}
