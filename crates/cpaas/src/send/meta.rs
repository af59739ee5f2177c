//! Meta WhatsApp Cloud API: `POST {base_url}/{api_version}/{phone_number_id}/messages` with the
//! business token as Bearer (docs/providers/meta-whatsapp.md §1).
//!
//! Content: text, template (name, `language.code`, `components` verbatim when given, else one
//! body component of text parameters), and image/document/audio/video by link (caption for
//! image/document/video, filename for documents). Email content is `unsupported_content`.
//! Recipients: E.164 phone numbers or WhatsApp ids. The receipt id is `messages[0].id`.
//! `biz_opaque_callback_data` carries our correlation id, which Meta echoes in status webhooks.
//!
//! ## Error codes
//! Meta says to key on `error.code`, not the HTTP status: throttling comes as **HTTP 400**
//! (notes §2). A code not in this table falls back on the HTTP status (401/403 → TenantBlocked,
//! 429 → RateLimited, other 4xx → Permanent, 5xx → Retryable).
//!
//! | code | Meta title | HTTP | class | why |
//! |---|---|---|---|---|
//! | 4 | API Too Many Calls | 400 | RateLimited | app-level call rate |
//! | 80007 | Rate limit issues | 400 | RateLimited | WABA-level rate |
//! | 130429 | Rate limit hit | 400 | RateLimited | number's throughput (80/1000 mps) |
//! | 131056 | (Business, Consumer) pair rate limit hit | 400 | RateLimited | this recipient only; retry later |
//! | 0 | AuthException | 401 | TenantBlocked | credentials |
//! | 10 | Permission Denied | 403 | TenantBlocked | permission missing |
//! | 190 | Access token has expired | 401 | TenantBlocked | re-onboard; retries cannot help |
//! | 200–299 | Graph permission errors | 403 | TenantBlocked | permission missing |
//! | 368 | Temporarily blocked for policies violations | 403 | TenantBlocked | WABA restricted: operator must act |
//! | 131005 | Access denied | 403 | TenantBlocked | permission removed |
//! | 131031 | Account locked | 403 | TenantBlocked | |
//! | 131042 | Business eligibility payment issue | 400 | TenantBlocked | nothing sends until billing is fixed |
//! | 131048 | Spam rate limit hit | 400 | TenantBlocked | sender restricted for quality; pause it (notes: "pause the sender") |
//! | 133010 | Phone number not registered | 400 | TenantBlocked | call `/register` (provisioning) |
//! | 100 | Invalid parameter | 400 | Permanent | request bug or bad value |
//! | 131008 | Required parameter is missing | 400 | Permanent | |
//! | 131009 | Parameter value is not valid | 400 | Permanent | |
//! | 131021 | Recipient cannot be sender | 400 | Permanent | |
//! | 131026 | Message undeliverable | 400 | Permanent | not on WhatsApp, old client… |
//! | 131047 | Re-engagement message | 400 | Permanent | 24 h window closed: needs a template |
//! | 131049 | Not delivered to maintain ecosystem engagement | 400 | Permanent | per-user marketing cap: hours to days; fall back rather than retry |
//! | 131051 | Unsupported message type | 400 | Permanent | |
//! | 131052 | Media download error | 400 | Permanent | Meta could not fetch our link |
//! | 131053 | Media upload error | 400 | Permanent | |
//! | 132000 | Template param count mismatch | 400 | Permanent | |
//! | 132001 | Template does not exist | 404 | Permanent | name/language wrong or not approved |
//! | 132015 | Template is paused | 400 | Permanent | |
//! | 132016 | Template is disabled | 400 | Permanent | |
//! | 1 | API Unknown | 400/500 | Retryable | transient per Graph guide |
//! | 2 | API Service | 503 | Retryable | |
//! | 131000 | Something went wrong | 500 | Retryable | |
//! | 131016 | Service unavailable | 500 | Retryable | |
//! | 131057 | Account in maintenance mode | 500 | Retryable | temporary |
//! | 133004 | Server temporarily unavailable | 503 | Retryable | |

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::class::ErrorClass;
use super::compat::{invalid_recipient, is_e164, unsupported_content};
use super::http::{ProviderResponse, base_url, execute, path_segment};
use super::{ConfigError, SendOptions};
use crate::{
    Content, MediaKind, MetaConfig, Provider, Recipient, SendError, SendMessageCommand, SendReceipt, TemplateContent,
};

/// Meta caps `biz_opaque_callback_data` at 512 characters.
const MAX_CALLBACK_DATA: usize = 512;

#[derive(Debug, Clone)]
pub struct MetaAdapter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    messages_url: String,
    /// `SecretString`'s Debug prints `[REDACTED]`.
    access_token: SecretString,
    timeout: Duration,
}

impl MetaAdapter {
    pub fn new(config: &MetaConfig, http: &reqwest::Client, options: &SendOptions) -> Result<Self, ConfigError> {
        let messages_url = messages_url(config)?;
        if config.access_token.expose_secret().is_empty() {
            return Err(ConfigError::new("meta", "access_token is empty"));
        }
        Ok(MetaAdapter {
            inner: Arc::new(Inner {
                http: http.clone(),
                messages_url,
                access_token: config.access_token.clone(),
                timeout: options.request_timeout,
            }),
        })
    }

    pub async fn send(&self, command: &SendMessageCommand) -> Result<SendReceipt, SendError> {
        let body = build_message(command)?;
        let request = self
            .inner
            .http
            .post(&self.inner.messages_url)
            .bearer_auth(self.inner.access_token.expose_secret())
            .json(&body);
        let response = execute(request, self.inner.timeout).await?;
        receipt_from_response(&response)
    }
}

/// `{base_url}/{api_version}/{phone_number_id}/messages`, checked.
pub fn messages_url(config: &MetaConfig) -> Result<String, ConfigError> {
    Ok(format!("{}/messages", graph_node_url(config, &config.phone_number_id)?))
}

/// `{base_url}/{api_version}/{node}`: the URL of one Graph node (phone number, WABA).
pub(crate) fn graph_node_url(config: &MetaConfig, node: &str) -> Result<String, ConfigError> {
    let version = path_segment("meta", "api_version", &config.api_version)?;
    let node = path_segment("meta", "node id", node)?;
    Ok(format!("{}/{version}/{node}", base_url("meta", &config.base_url)?))
}

/// The JSON body of a send (notes §1).
pub fn build_message(command: &SendMessageCommand) -> Result<Value, SendError> {
    let to = recipient_to(&command.recipient)?;
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
    });
    let (kind, payload) = match &command.content {
        Content::Text { body } => ("text", json!({ "body": body })),
        Content::Template(template) => ("template", template_object(template)),
        Content::Media { kind, url, caption, filename } => {
            media_object(*kind, url, caption.as_deref(), filename.as_deref())?
        }
        Content::Email { .. } => return Err(unsupported_content("WhatsApp", "email content")),
    };
    body["type"] = json!(kind);
    body[kind] = payload;
    if !command.correlation_id.is_empty() && command.correlation_id.chars().count() <= MAX_CALLBACK_DATA {
        body["biz_opaque_callback_data"] = json!(command.correlation_id);
    }
    Ok(body)
}

fn recipient_to(recipient: &Recipient) -> Result<&str, SendError> {
    match recipient {
        // Meta accepts the leading `+` (its own examples use it).
        Recipient::Phone(number) if is_e164(number) => Ok(number),
        Recipient::Phone(_) => Err(invalid_recipient("phone number is not in E.164 form")),
        Recipient::WhatsappId(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        Recipient::WhatsappId(_) => Err(invalid_recipient("a WhatsApp id is digits only")),
        Recipient::Email(_) => Err(unsupported_content("WhatsApp", "to an email recipient")),
    }
}

fn template_object(template: &TemplateContent) -> Value {
    let mut object = json!({ "name": template.name, "language": { "code": template.language } });
    if let Some(components) = &template.components {
        object["components"] = components.clone();
    } else if !template.body_parameters.is_empty() {
        let parameters: Vec<Value> =
            template.body_parameters.iter().map(|text| json!({ "type": "text", "text": text })).collect();
        object["components"] = json!([{ "type": "body", "parameters": parameters }]);
    }
    object
}

fn media_object(
    kind: MediaKind,
    link: &str,
    caption: Option<&str>,
    filename: Option<&str>,
) -> Result<(&'static str, Value), SendError> {
    let mut object = json!({ "link": link });
    let name = match kind {
        MediaKind::Image => "image",
        MediaKind::Document => "document",
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    };
    if let Some(caption) = caption {
        // WhatsApp audio has no caption; dropping it silently would lose content the sender
        // meant to deliver, so refuse and let the pipeline choose.
        if kind == MediaKind::Audio {
            return Err(unsupported_content("WhatsApp", "a caption on audio"));
        }
        object["caption"] = json!(caption);
    }
    // Only documents have a file name; on other media it is metadata Meta would reject.
    if let (MediaKind::Document, Some(filename)) = (kind, filename) {
        object["filename"] = json!(filename);
    }
    Ok((name, object))
}

fn receipt_from_response(response: &ProviderResponse) -> Result<SendReceipt, SendError> {
    if !response.is_success() {
        return Err(classify_error(response.status, &response.body, response.retry_after));
    }
    match parse_message_id(&response.body) {
        Some(id) => Ok(SendReceipt { provider: Provider::Meta, provider_message_id: id }),
        None => Err(SendError::Unknown { reason: format!("HTTP {} without messages[0].id", response.status) }),
    }
}

/// `messages[0].id` of a success body.
pub fn parse_message_id(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let id = value.get("messages")?.get(0)?.get("id")?.as_str()?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// Classifies a non-2xx answer from its status and Graph error body (notes §2.1).
pub fn classify_error(status: u16, body: &str, retry_after: Option<Duration>) -> SendError {
    let Some(error) = serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("error").cloned()) else {
        let class = ErrorClass::from_http_status(status);
        return class.into_error(
            format!("http_{status}"),
            format!("HTTP {status} without a Graph error body"),
            retry_after,
        );
    };
    let code = error.get("code").and_then(Value::as_i64);
    let reason = error_reason(&error);
    match code {
        Some(code) => code_class(code).unwrap_or_else(|| ErrorClass::from_http_status(status)).into_error(
            code.to_string(),
            reason,
            retry_after,
        ),
        None => ErrorClass::from_http_status(status).into_error(format!("http_{status}"), reason, retry_after),
    }
}

/// "message — details": the title line plus Meta's explanation, which the notes say to rely on.
fn error_reason(error: &Value) -> String {
    let message = error.get("message").and_then(Value::as_str).unwrap_or("no message");
    match error.pointer("/error_data/details").and_then(Value::as_str) {
        Some(details) if !details.is_empty() => format!("{message} — {details}"),
        _ => message.to_owned(),
    }
}

/// The table in the module documentation.
pub(crate) fn code_class(code: i64) -> Option<ErrorClass> {
    Some(match code {
        4 | 80007 | 130429 | 131056 => ErrorClass::RateLimited,
        0 | 10 | 190 | 200..=299 | 368 | 131005 | 131031 | 131042 | 131048 | 133010 => ErrorClass::TenantBlocked,
        100 | 131008 | 131009 | 131021 | 131026 | 131047 | 131049 | 131051 | 131052 | 131053 | 132000 | 132001
        | 132015 | 132016 => ErrorClass::Permanent,
        1 | 2 | 131000 | 131016 | 131057 | 133004 => ErrorClass::Retryable,
        _ => return None,
    })
}

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
