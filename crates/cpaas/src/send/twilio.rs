//! Twilio Programmable Messaging: `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`,
//! Basic auth (account SID : auth token), form-encoded (docs/providers/twilio.md §1).
//!
//! Form: `To`, then `MessagingServiceSid` when configured (Twilio picks the sender from the
//! service's pool) or else `From`, `Body` (text, or a media caption), `MediaUrl` (media content)
//! and `StatusCallback` when configured. Templates and email are `unsupported_content`; the
//! recipient must be an E.164 phone number. The receipt id is the answer's `sid` (HTTP 201).
//!
//! ## Error codes
//! The body is `{"code", "message", "more_info", "status"}` (notes §1.2). A code not in this
//! table falls back on the HTTP status (401/403 → TenantBlocked, 429 → RateLimited, other 4xx →
//! Permanent, 5xx → Retryable). `Retry-After` is honoured when present.
//!
//! | code | meaning | HTTP | class | why |
//! |---|---|---|---|---|
//! | 20429 | Too Many Requests (account concurrency) | 429 | RateLimited | "never processed, always safe to retry" |
//! | 21611 | 'From' number exceeded its queue of messages | 400 | RateLimited | sender's queue full; drains |
//! | 20003 | Authenticate | 401 | TenantBlocked | bad SID/token: fix credentials |
//! | 20005 | Account not active | 401/403 | TenantBlocked | suspended or closed account |
//! | 20404 | Resource not found | 404 | TenantBlocked | on Messages.json the only resource is the account SID in the path, so every send would fail (the notes call it permanent; for this URL that is account-wide) |
//! | 21212 | Invalid 'From' number | 400 | TenantBlocked | sender misconfigured |
//! | 21603 | 'From' number is required | 400 | TenantBlocked | sender misconfigured |
//! | 21606 | 'From' is not a valid message-capable Twilio number | 400 | TenantBlocked | sender misconfigured |
//! | 21705 | Invalid Messaging Service SID | 400 | TenantBlocked | sender misconfigured |
//! | 30002 | Account suspended | async | TenantBlocked | |
//! | 21211 | Invalid 'To' phone number | 400 | Permanent | bad number |
//! | 21408 | No permission to send to this region (geo permissions) | 400 | Permanent | other regions still work; fall back for this one |
//! | 21602 | Message body is required | 400 | Permanent | |
//! | 21604 | 'To' number is required | 400 | Permanent | |
//! | 21608 | 'To' not verified (trial account) | 400 | Permanent | this recipient only |
//! | 21610 | Attempt to send to unsubscribed recipient (STOP) | 400 | Permanent | opted out |
//! | 21612 | 'To' not reachable via SMS | 400 | Permanent | |
//! | 21614 | 'To' is not a valid mobile number | 400 | Permanent | landline |
//! | 21617 | Body exceeds 1600 characters | 400 | Permanent | |
//! | 21619 | A text body or media URL is required | 400 | Permanent | |
//! | 21620 | Invalid media URL | 400 | Permanent | |
//! | 30004 / 30005 / 30006 / 30007 | blocked / unknown handset / landline / filtered | async | Permanent | (callbacks; tabled so the classifier can be reused) |
//! | 30003 / 30008 | unreachable handset / unknown carrier error | async | Retryable | transient per the notes |
//! | 20500 / 20503 | internal error / service unavailable | 500/503 | Retryable | |

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::class::ErrorClass;
use super::compat::{e164_phone, unsupported_content};
use super::http::{ProviderResponse, base_url, execute, path_segment};
use super::{ConfigError, SendOptions};
use crate::{Content, Provider, SendError, SendMessageCommand, SendReceipt, TwilioConfig};

#[derive(Debug, Clone)]
pub struct TwilioAdapter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    messages_url: String,
    account_sid: String,
    auth_token: SecretString,
    sender: Sender,
    status_callback: Option<String>,
    timeout: Duration,
}

/// Who sends: a Messaging Service (preferred when configured) or a fixed number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    MessagingService(String),
    From(String),
}

impl TwilioAdapter {
    pub fn new(config: &TwilioConfig, http: &reqwest::Client, options: &SendOptions) -> Result<Self, ConfigError> {
        if config.auth_token.expose_secret().is_empty() {
            return Err(ConfigError::new("twilio", "auth_token is empty"));
        }
        Ok(TwilioAdapter {
            inner: Arc::new(Inner {
                http: http.clone(),
                messages_url: messages_url(config)?,
                account_sid: config.account_sid.clone(),
                auth_token: config.auth_token.clone(),
                sender: sender(config)?,
                status_callback: config.status_callback_url.clone().filter(|url| !url.is_empty()),
                timeout: options.request_timeout,
            }),
        })
    }

    pub async fn send(&self, command: &SendMessageCommand) -> Result<SendReceipt, SendError> {
        let inner = &self.inner;
        let form = build_form(command, &inner.sender, inner.status_callback.as_deref())?;
        let request = inner
            .http
            .post(&inner.messages_url)
            .basic_auth(&inner.account_sid, Some(inner.auth_token.expose_secret()))
            .form(&form);
        let response = execute(request, inner.timeout).await?;
        receipt_from_response(&response)
    }
}

/// `{base_url}/2010-04-01/Accounts/{sid}/Messages.json`, checked.
pub fn messages_url(config: &TwilioConfig) -> Result<String, ConfigError> {
    Ok(format!("{}/Messages.json", account_url(config)?))
}

/// `{base_url}/2010-04-01/Accounts/{sid}`: the account resource (append `.json` to fetch it).
pub(crate) fn account_url(config: &TwilioConfig) -> Result<String, ConfigError> {
    let sid = path_segment("twilio", "account_sid", &config.account_sid)?;
    Ok(format!("{}/2010-04-01/Accounts/{sid}", base_url("twilio", &config.base_url)?))
}

pub fn sender(config: &TwilioConfig) -> Result<Sender, ConfigError> {
    match (config.messaging_service_sid.as_deref(), config.from.as_deref()) {
        (Some(sid), _) if !sid.is_empty() => Ok(Sender::MessagingService(sid.to_owned())),
        (_, Some(from)) if !from.is_empty() => Ok(Sender::From(from.to_owned())),
        _ => Err(ConfigError::new("twilio", "either from or messaging_service_sid is required")),
    }
}

/// The form fields of a send, in order (a Vec, since `MediaUrl` may repeat).
pub fn build_form(
    command: &SendMessageCommand,
    sender: &Sender,
    status_callback: Option<&str>,
) -> Result<Vec<(&'static str, String)>, SendError> {
    let to = e164_phone("Twilio SMS", &command.recipient)?;
    let mut form = vec![("To", to.to_owned())];
    match sender {
        Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid.clone())),
        Sender::From(from) => form.push(("From", from.clone())),
    }
    match &command.content {
        Content::Text { body } => form.push(("Body", body.clone())),
        Content::Media { url, caption, .. } => {
            if let Some(caption) = caption {
                form.push(("Body", caption.clone()));
            }
            form.push(("MediaUrl", url.clone()));
        }
        Content::Template(_) => return Err(unsupported_content("Twilio SMS", "WhatsApp template content")),
        Content::Email { .. } => return Err(unsupported_content("Twilio SMS", "email content")),
    }
    if let Some(url) = status_callback {
        form.push(("StatusCallback", with_correlation(url, &command.correlation_id)));
    }
    Ok(form)
}

/// Twilio posts status callbacks to exactly this URL: carrying our correlation id lets a
/// callback find its message even when the provider's id was never recorded (a worker that died
/// between the send and recording its outcome).
fn with_correlation(url: &str, correlation_id: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.query_pairs_mut().append_pair("correlation_id", correlation_id);
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

fn receipt_from_response(response: &ProviderResponse) -> Result<SendReceipt, SendError> {
    if !response.is_success() {
        return Err(classify_error(response.status, &response.body, response.retry_after));
    }
    match parse_sid(&response.body) {
        Some(sid) => Ok(SendReceipt { provider: Provider::Twilio, provider_message_id: sid }),
        None => Err(SendError::Unknown { reason: format!("HTTP {} without a message sid", response.status) }),
    }
}

pub fn parse_sid(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let sid = value.get("sid")?.as_str()?;
    (!sid.is_empty()).then(|| sid.to_owned())
}

/// Classifies a non-2xx answer from its status and `{code, message}` body.
pub fn classify_error(status: u16, body: &str, retry_after: Option<Duration>) -> SendError {
    let value: Option<Value> = serde_json::from_str(body).ok();
    // `code` is an integer on the 2010 API; some SDKs type it as a string, so accept both.
    let code = value.as_ref().and_then(|v| v.get("code")).and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()));
    let message =
        value.as_ref().and_then(|v| v.get("message")).and_then(Value::as_str).unwrap_or("no message").to_owned();
    match code {
        Some(code) => code_class(code).unwrap_or_else(|| ErrorClass::from_http_status(status)).into_error(
            code.to_string(),
            message,
            retry_after,
        ),
        None => ErrorClass::from_http_status(status).into_error(
            format!("http_{status}"),
            format!("HTTP {status}: {message}"),
            retry_after,
        ),
    }
}

/// The table in the module documentation.
pub(crate) fn code_class(code: i64) -> Option<ErrorClass> {
    Some(match code {
        20429 | 21611 => ErrorClass::RateLimited,
        20003 | 20005 | 20404 | 21212 | 21603 | 21606 | 21705 | 30002 => ErrorClass::TenantBlocked,
        21211 | 21408 | 21602 | 21604 | 21608 | 21610 | 21612 | 21614 | 21617 | 21619 | 21620 | 30004 | 30005
        | 30006 | 30007 => ErrorClass::Permanent,
        20500 | 20503 | 30003 | 30008 => ErrorClass::Retryable,
        _ => return None,
    })
}

#[cfg(test)]
#[path = "twilio_tests.rs"]
mod tests;
