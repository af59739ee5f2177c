//! Google Calendar API v3 (docs/providers/google-calendar.md): our appointments as events in
//! the operator's calendar, busy times from the rest of it (`sync.rs`), push channels and their
//! notifications (`push.rs`).
//!
//! Our events carry our [`EventKey`] as their Google id (an insert retried after a lost answer
//! meets 409 `duplicate`, which means "already there") and as the private extended property
//! [`KEY_PROPERTY`], which is how a sync tells them from the operator's own events.
//!
//! ## Errors
//!
//! | answer | `SyncError` |
//! |---|---|
//! | no connection, no answer in time, 5xx, 408 | `Retryable` (`Retry-After` kept) |
//! | 401 | refresh the access token, try once more; then `Unauthorized` |
//! | 403 `rateLimitExceeded`, `userRateLimitExceeded`, `quotaExceeded`, `dailyLimitExceeded`; 429 | `RateLimited` |
//! | 403 `insufficientPermissions`, `requiredAccessLevel`, `forbidden` | `Unauthorized` (the grant no longer lets us write this calendar) |
//! | 410 `fullSyncRequired`, `updatedMinTooLongAgo` | `SyncTokenExpired` |
//! | 409 `duplicate` on insert; 404 and 410 `deleted` on delete; 404 on channels.stop | success |
//! | any other 4xx | `Permanent { code: reason, reason: message }` |

mod push;
mod sync;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

pub use push::{PushError, PushNotification, ResourceState, UnverifiedPush};

use crate::credentials::{Session, TokenEndpoint};
use crate::http::{Failure, retry_after, server_error, transport_error};
use crate::{CalendarEvent, Credentials, EventKey, Outcome, SyncError};

/// The private extended property that marks an event as one of our appointments.
pub const KEY_PROPERTY: &str = "switchboardKey";

/// Where the adapter talks to and as whom.
#[derive(Clone, Debug)]
pub struct GoogleConfig {
    /// `https://www.googleapis.com` (the simulator's base URL in tests and the demo).
    pub api_base: String,
    /// `https://oauth2.googleapis.com/token` (`{sim}/token` in tests).
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// The calendar to write to and read busy times from (`primary` or an id).
    pub calendar_id: String,
    /// Per request, connecting included.
    pub timeout: Duration,
    /// Events per events.list page (Google allows up to 2500, the default here: few requests).
    pub page_size: u32,
}

impl GoogleConfig {
    /// Google's production endpoints.
    pub fn new(client_id: &str, client_secret: &str, calendar_id: &str) -> Self {
        Self {
            api_base: "https://www.googleapis.com".to_owned(),
            token_url: "https://oauth2.googleapis.com/token".to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            calendar_id: calendar_id.to_owned(),
            timeout: Duration::from_secs(20),
            page_size: 2500,
        }
    }
}

/// A push channel Google opened for us; keep it to stop it, renew before `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatchChannel {
    pub id: String,
    pub resource_id: String,
    pub expires_at: DateTime<Utc>,
}

/// The Google Calendar adapter for one calendar. Cheap to share; credentials come per call.
#[derive(Debug)]
pub struct GoogleCalendar {
    config: GoogleConfig,
    http: reqwest::Client,
    endpoint: TokenEndpoint,
}

/// Google's error envelope, read as far as we need it.
struct GoogleError {
    status: StatusCode,
    reason: String,
    message: String,
}

impl GoogleError {
    fn read(status: StatusCode, text: &str) -> Self {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let error = &body["error"];
        let reason = error["errors"][0]["reason"].as_str().unwrap_or_default().to_owned();
        let message = error["message"].as_str().map_or_else(|| text.chars().take(200).collect(), str::to_owned);
        Self { status, reason, message }
    }
}

/// The table in the module docs.
fn classify(status: StatusCode, headers: &reqwest::header::HeaderMap, text: &str) -> Failure {
    let error = GoogleError::read(status, text);
    let reason = error.reason.as_str();
    match status.as_u16() {
        401 => Failure::AccessRefused,
        403 if matches!(
            reason,
            "rateLimitExceeded" | "userRateLimitExceeded" | "quotaExceeded" | "dailyLimitExceeded"
        ) =>
        {
            SyncError::RateLimited { retry_after: retry_after(headers) }.into()
        }
        403 if matches!(reason, "insufficientPermissions" | "requiredAccessLevel" | "forbidden") => {
            SyncError::Unauthorized { reason: error.message }.into()
        }
        429 => SyncError::RateLimited { retry_after: retry_after(headers) }.into(),
        410 if matches!(reason, "fullSyncRequired" | "updatedMinTooLongAgo") => SyncError::SyncTokenExpired.into(),
        408 | 500.. => server_error(status, headers, text).into(),
        _ => {
            let code = if reason.is_empty() { error.status.as_u16().to_string() } else { error.reason.clone() };
            SyncError::permanent(code, error.message).into()
        }
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The event body we send: the same for insert and patch, so a patch restores every field.
fn event_body(event: &CalendarEvent) -> Value {
    json!({
        "summary": event.title,
        "description": event.description,
        "location": event.location,
        // The instant in UTC; `timeZone` is how Google shows it.
        "start": {"dateTime": rfc3339(event.start), "timeZone": event.time_zone},
        "end": {"dateTime": rfc3339(event.end), "timeZone": event.time_zone},
        "extendedProperties": {"private": {KEY_PROPERTY: event.key.as_str()}},
    })
}

impl GoogleCalendar {
    pub fn new(config: GoogleConfig) -> Self {
        let http = reqwest::Client::builder().timeout(config.timeout).build().unwrap_or_default();
        let endpoint = TokenEndpoint {
            url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
        };
        Self { config, http, endpoint }
    }

    /// `{api_base}/calendar/v3/{segments…}`, each segment percent-encoded (calendar ids hold
    /// `@` and sometimes `#`).
    fn url(&self, segments: &[&str]) -> Result<Url, SyncError> {
        let mut url = Url::parse(&self.config.api_base)
            .map_err(|e| SyncError::permanent("config", format!("bad api_base: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| SyncError::permanent("config", "api_base cannot take a path"))?
            .pop_if_empty()
            .extend(["calendar", "v3"])
            .extend(segments);
        Ok(url)
    }

    fn events_url(&self, rest: &[&str]) -> Result<Url, SyncError> {
        let mut segments = vec!["calendars", self.config.calendar_id.as_str(), "events"];
        segments.extend_from_slice(rest);
        self.url(&segments)
    }

    /// One authorised request: the answer's status and body, or the classified failure.
    async fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        token: String,
    ) -> Result<(StatusCode, String), Failure> {
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| transport_error(&e))?;
        if status.is_success() { Ok((status, text)) } else { Err(classify(status, &headers, &text)) }
    }

    /// A request whose listed Google reasons count as success (`duplicate` on insert, …).
    async fn request_tolerating(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        token: String,
        tolerated: &[(&str, u16)],
    ) -> Result<(), Failure> {
        match self.request(method, url, body, token).await {
            Ok(_) => Ok(()),
            Err(Failure::Sync(SyncError::Permanent { code, .. }))
                if tolerated.iter().any(|(reason, status)| *reason == code || status.to_string() == code) =>
            {
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    /// events.insert with our key as the id. A 409 `duplicate` means an earlier attempt got
    /// through (its answer was lost): success. If the appointment changed in between, the
    /// caller's next `update` brings the event up to date.
    pub async fn insert(&self, credentials: &mut Credentials, event: &CalendarEvent) -> Outcome<()> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = async {
            let mut url = self.events_url(&[])?;
            // Our appointments are the operator's; guests (if any) are not mailed by us.
            url.query_pairs_mut().append_pair("sendUpdates", "none");
            let mut body = event_body(event);
            body["id"] = json!(event.key.as_str());
            let body = &body;
            session
                .call(|token| {
                    self.request_tolerating(Method::POST, url.clone(), Some(body), token, &[("duplicate", 409)])
                })
                .await
        }
        .await;
        session.finish(result)
    }

    /// events.patch of every field we own. A 404 (never inserted, or gone) is `Permanent
    /// { code: "notFound" }`: insert it instead.
    pub async fn update(&self, credentials: &mut Credentials, event: &CalendarEvent) -> Outcome<()> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = async {
            let mut url = self.events_url(&[event.key.as_str()])?;
            url.query_pairs_mut().append_pair("sendUpdates", "none");
            let body = event_body(event);
            let body = &body;
            session
                .call(|token| async { self.request(Method::PATCH, url.clone(), Some(body), token).await.map(|_| ()) })
                .await
        }
        .await;
        session.finish(result)
    }

    /// events.delete; an event already gone (404, 410 `deleted`) is success.
    pub async fn delete(&self, credentials: &mut Credentials, key: &EventKey) -> Outcome<()> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = async {
            let mut url = self.events_url(&[key.as_str()])?;
            url.query_pairs_mut().append_pair("sendUpdates", "none");
            let tolerated = [("notFound", 404), ("deleted", 410)];
            session.call(|token| self.request_tolerating(Method::DELETE, url.clone(), None, token, &tolerated)).await
        }
        .await;
        session.finish(result)
    }

    /// events.watch: Google will POST to `address` (HTTPS with a valid certificate in
    /// production) when the calendar's events change, echoing `token` in
    /// `X-Goog-Channel-Token`. `channel_id` must be unique (a UUID), at most 64 characters.
    pub async fn watch(
        &self,
        credentials: &mut Credentials,
        channel_id: &str,
        address: &str,
        token: &str,
        ttl: Duration,
    ) -> Outcome<WatchChannel> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = async {
            let url = self.events_url(&["watch"])?;
            let expiration = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(7));
            let body = json!({
                "id": channel_id,
                "type": "web_hook",
                "address": address,
                "token": token,
                "expiration": expiration.timestamp_millis().to_string(),
            });
            let body = &body;
            let (_, text) = session.call(|token| self.request(Method::POST, url.clone(), Some(body), token)).await?;
            let channel: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let expires_at = channel["expiration"]
                .as_str()
                .and_then(|ms| ms.parse::<i64>().ok())
                .or_else(|| channel["expiration"].as_i64())
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or(expiration);
            match (channel["id"].as_str(), channel["resourceId"].as_str()) {
                (Some(id), Some(resource_id)) => {
                    Ok(WatchChannel { id: id.to_owned(), resource_id: resource_id.to_owned(), expires_at })
                }
                _ => Err(SyncError::retryable("events.watch answered without a channel id or resource id")),
            }
        }
        .await;
        session.finish(result)
    }

    /// channels.stop; a channel Google no longer knows (404) is success.
    pub async fn stop(&self, credentials: &mut Credentials, channel: &WatchChannel) -> Outcome<()> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = async {
            let url = self.url(&["channels", "stop"])?;
            let body = json!({"id": channel.id, "resourceId": channel.resource_id});
            let body = &body;
            let tolerated = [("notFound", 404)];
            session
                .call(|token| self.request_tolerating(Method::POST, url.clone(), Some(body), token, &tolerated))
                .await
        }
        .await;
        session.finish(result)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use reqwest::header::HeaderMap;

    fn error(status: u16, reason: &str) -> Failure {
        let body = json!({"error": {"errors": [{"domain": "global", "reason": reason, "message": "m"}], "code": status, "message": "m"}});
        classify(StatusCode::from_u16(status).unwrap(), &HeaderMap::new(), &body.to_string())
    }

    #[test]
    fn errors_are_classified_as_the_table_says() {
        assert!(matches!(error(401, "authError"), Failure::AccessRefused));
        assert!(matches!(error(403, "rateLimitExceeded"), Failure::Sync(SyncError::RateLimited { .. })));
        assert!(matches!(error(429, "rateLimitExceeded"), Failure::Sync(SyncError::RateLimited { .. })));
        assert!(matches!(error(403, "insufficientPermissions"), Failure::Sync(SyncError::Unauthorized { .. })));
        assert!(matches!(error(403, "forbiddenForNonOrganizer"), Failure::Sync(SyncError::Permanent { .. })));
        assert!(matches!(error(410, "fullSyncRequired"), Failure::Sync(SyncError::SyncTokenExpired)));
        assert!(matches!(error(503, "backendError"), Failure::Sync(SyncError::Retryable { .. })));
        assert!(
            matches!(error(409, "duplicate"), Failure::Sync(SyncError::Permanent { code, .. }) if code == "duplicate")
        );
        let html = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), "<html>");
        assert!(matches!(html, Failure::Sync(SyncError::Permanent { code, .. }) if code == "400"));
    }

    #[test]
    fn urls_encode_the_calendar_id() {
        let mut config = GoogleConfig::new("id", "secret", "team#holidays@group.calendar.google.com");
        config.api_base = "http://127.0.0.1:9/".into();
        let google = GoogleCalendar::new(config);
        let url = google.events_url(&["abcde"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/calendar/v3/calendars/team%23holidays@group.calendar.google.com/events/abcde"
        );
    }
}
