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
//!
//! ## Status callbacks and lookups
//! The `StatusCallback` URL carries our correlation id (`?correlation_id=…`) and, unless the
//! configured URL has a fragment already, Twilio's connection overrides
//! [`STATUS_CALLBACK_OVERRIDES`], so a callback that meets a refused connection, a timeout or an
//! error status is retried (notes §5.1). Twilio signs the URL it requests, which never carries
//! the fragment, so the receiver verifies the URL it was called on, as before.
//!
//! A send whose answer was lost is found again through the Messages list
//! ([`TwilioAdapter::find_sent`], notes §1.4): filtered by `To` (and `From` for a fixed sender),
//! newest first, read until messages are older than the probe's start (minus
//! [`LOOKUP_SLACK`]), keeping outbound messages with exactly our body. `DateSent` is not used:
//! a message still queued has no `date_sent` and would be missed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::class::ErrorClass;
use super::compat::{e164_phone, unsupported_content};
use super::http::{ProviderResponse, base_url, execute, path_segment};
use super::{ConfigError, FoundMessage, SendOptions, SentProbe};
use crate::{Content, DeliveryStatus, Provider, SendError, SendMessageCommand, SendReceipt, TwilioConfig};

/// Twilio's connection overrides on our status callbacks: up to 5 immediate retries on any
/// failure (`rp=all`: refused or timed-out connections, no answer, 4xx, 5xx). `ct`/`rt` are
/// shortened from Twilio's 5 s / 15 s so that a hung receiver leaves room for retries inside
/// `tt`, the 15 s Twilio allows for all attempts together.
pub const STATUS_CALLBACK_OVERRIDES: &str = "rc=5&rp=all&ct=2000&rt=5000";

/// How far before the probe's start a lookup still accepts a message: clocks differ, and
/// `date_created` has whole seconds.
pub const LOOKUP_SLACK: Duration = Duration::from_secs(60);

/// Messages per list page (Twilio allows up to 1000).
const LOOKUP_PAGE_SIZE: u32 = 100;

/// A lookup reading more pages than this gives up (`Unknown`) rather than guess from a part.
const LOOKUP_MAX_PAGES: usize = 10;

#[derive(Debug, Clone)]
pub struct TwilioAdapter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// `{base_url}`, to resolve the list's relative page URIs.
    api_base: String,
    /// `{base_url}/2010-04-01/Accounts/{sid}`.
    account_url: String,
    /// `{account_url}/Messages.json`, parsed once rather than per send.
    messages_url: reqwest::Url,
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
                api_base: base_url("twilio", &config.base_url)?,
                account_url: account_url(config)?,
                messages_url: reqwest::Url::parse(&messages_url(config)?)
                    .map_err(|e| ConfigError::new("twilio", format!("base_url is not a URL: {e}")))?,
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
            .post(inner.messages_url.clone())
            .basic_auth(&inner.account_sid, Some(inner.auth_token.expose_secret()))
            .form(&form);
        let response = execute(request, inner.timeout).await?;
        receipt_from_response(&response)
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let inner = &self.inner;
        inner.http.get(url).basic_auth(&inner.account_sid, Some(inner.auth_token.expose_secret()))
    }

    /// Our outbound messages to the probe's recipient with the probe's body, created since a
    /// little before the probe's start, oldest first.
    pub async fn find_sent(&self, probe: &SentProbe) -> Result<Vec<FoundMessage>, SendError> {
        let inner = &self.inner;
        let to = e164_phone("Twilio SMS", &probe.recipient)?;
        let cutoff = probe.since - chrono::Duration::from_std(LOOKUP_SLACK).unwrap_or_default();
        // In its own block: the serializer is not `Send` and must not live across an await.
        let query = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("To", to);
            // With a Messaging Service the sender comes from a pool, so it cannot narrow the search.
            if let Sender::From(from) = &inner.sender {
                query.append_pair("From", from);
            }
            query.append_pair("PageSize", &LOOKUP_PAGE_SIZE.to_string());
            query.finish()
        };
        let mut url = format!("{}?{}", inner.messages_url, query);
        let mut found = Vec::new();
        for _ in 0..LOOKUP_MAX_PAGES {
            let response = execute(self.get(&url), inner.timeout).await?;
            if !response.is_success() {
                return Err(classify_error(response.status, &response.body, response.retry_after));
            }
            let page = parse_page(&response.body)?;
            let (candidates, older_reached) = candidates(&page.messages, probe.body.as_deref(), cutoff)?;
            found.extend(candidates);
            match page.next_page_uri {
                Some(next) if !older_reached => url = next_page_url(&inner.api_base, &next)?,
                _ => {
                    // Newest first from Twilio; oldest first for the caller, ties included.
                    found.reverse();
                    found.sort_by_key(|m| m.created_at);
                    return Ok(found);
                }
            }
        }
        Err(SendError::Unknown {
            reason: format!(
                "more than {} messages to this recipient since the send; the lookup stopped",
                LOOKUP_MAX_PAGES * LOOKUP_PAGE_SIZE as usize
            ),
        })
    }

    /// The message as Twilio has it now; `None` when Twilio does not know the sid.
    pub async fn fetch_status(&self, provider_message_id: &str) -> Result<Option<FoundMessage>, SendError> {
        let sid = path_segment("twilio", "message sid", provider_message_id)
            .map_err(|e| SendError::Permanent { code: "invalid_message_id".into(), reason: e.message })?;
        let url = format!("{}/Messages/{sid}.json", self.inner.account_url);
        let response = execute(self.get(&url), self.inner.timeout).await?;
        if response.status == 404 {
            return Ok(None);
        }
        if !response.is_success() {
            return Err(classify_error(response.status, &response.body, response.retry_after));
        }
        let resource: MessageResource = serde_json::from_str(&response.body).map_err(|e| unreadable(&e))?;
        Ok(Some(resource.found()?))
    }
}

/// One page of `GET …/Messages.json` (notes §1.4); only what a lookup reads.
#[derive(Debug, Deserialize)]
struct MessagePage {
    messages: Vec<MessageResource>,
    next_page_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessageResource {
    sid: String,
    status: String,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    body: Option<String>,
    date_created: String,
    #[serde(default)]
    date_sent: Option<String>,
    /// An integer, or a string in some SDKs' typing; null unless failed/undelivered.
    #[serde(default)]
    error_code: Option<Value>,
}

impl MessageResource {
    fn created_at(&self) -> Result<DateTime<Utc>, SendError> {
        parse_date(&self.date_created)
    }

    /// The list's order: `date_sent`, newest first; a message not sent yet has none.
    fn sorted_at(&self) -> Result<DateTime<Utc>, SendError> {
        match self.date_sent.as_deref() {
            Some(sent) => parse_date(sent),
            None => self.created_at(),
        }
    }

    fn found(&self) -> Result<FoundMessage, SendError> {
        let error_code = match &self.error_code {
            Some(Value::Number(code)) => Some(code.to_string()),
            Some(Value::String(code)) if !code.is_empty() => Some(code.clone()),
            _ => None,
        };
        Ok(FoundMessage {
            provider_message_id: self.sid.clone(),
            status: delivery_status(&self.status),
            error_code,
            created_at: self.created_at()?,
        })
    }
}

fn unreadable(error: &serde_json::Error) -> SendError {
    SendError::Unknown { reason: format!("Twilio's message list could not be read: {error}") }
}

fn parse_page(body: &str) -> Result<MessagePage, SendError> {
    serde_json::from_str(body).map_err(|e| unreadable(&e))
}

/// Twilio's dates are RFC 2822 in GMT (`Fri, 24 May 2019 17:44:46 +0000`).
fn parse_date(value: &str) -> Result<DateTime<Utc>, SendError> {
    DateTime::parse_from_rfc2822(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| SendError::Unknown { reason: format!("Twilio date {value:?} is not RFC 2822") })
}

/// The page's messages that match, and whether the page reached messages older than `cutoff`
/// (the list is newest first, so nothing after them can match).
fn candidates(
    messages: &[MessageResource],
    body: Option<&str>,
    cutoff: DateTime<Utc>,
) -> Result<(Vec<FoundMessage>, bool), SendError> {
    let mut found = Vec::new();
    for message in messages {
        if message.sorted_at()? < cutoff {
            return Ok((found, true));
        }
        let ours = message.direction.as_deref() == Some("outbound-api");
        let same_body = body.is_none_or(|body| message.body.as_deref() == Some(body));
        if ours && same_body && message.created_at()? >= cutoff {
            found.push(message.found()?);
        }
    }
    Ok((found, false))
}

/// Page URIs are relative to the API base; anything else is refused rather than sent our
/// credentials.
fn next_page_url(api_base: &str, next: &str) -> Result<String, SendError> {
    if next.starts_with('/') {
        Ok(format!("{api_base}{next}"))
    } else {
        Err(SendError::Unknown { reason: "Twilio's next page is not a relative URI".into() })
    }
}

/// Twilio's message status in our words. Every state before a carrier's answer is `Sent`: the
/// provider has the message.
pub fn delivery_status(status: &str) -> DeliveryStatus {
    match status {
        "delivered" | "partially_delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" | "undelivered" | "canceled" => DeliveryStatus::Failed,
        // accepted, scheduled, queued, sending, sent, and anything Twilio adds later.
        _ => DeliveryStatus::Sent,
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
/// between the send and recording its outcome). The override fragment makes Twilio retry a
/// callback that meets an outage; a fragment configured by hand is kept as it is.
fn with_correlation(url: &str, correlation_id: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.query_pairs_mut().append_pair("correlation_id", correlation_id);
            if parsed.fragment().is_none() {
                parsed.set_fragment(Some(STATUS_CALLBACK_OVERRIDES));
            }
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

/// The `sid` of a message resource. Read into a struct that names only `sid`: the resource has
/// some thirty fields, and building them all as a `Value` cost more than the rest of the
/// answer's handling.
pub fn parse_sid(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Resource<'a> {
        #[serde(borrow)]
        sid: Option<std::borrow::Cow<'a, str>>,
    }
    let sid = serde_json::from_str::<Resource<'_>>(body).ok()?.sid?;
    (!sid.is_empty()).then(|| sid.into_owned())
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
