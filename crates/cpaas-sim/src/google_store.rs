//! Google Calendar's state and rules, without HTTP: calendars of events (the app's and the
//! user's), the change sequence that sync tokens and pages are cut from, and push channels
//! (docs/providers/google-calendar.md).
//!
//! Every change to an event takes the next number of one global sequence. A sync token names
//! the sequence number its listing was cut at; an incremental listing answers the events
//! changed after it, cancelled ones included. A full listing answers the live events. Pages of
//! a listing are cut at the sequence number of its first page, so an event changed while a
//! client pages through is not lost: it comes in the next incremental sync.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::random_hex;

/// A Google error: HTTP status and the single entry of `error.errors[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GoogleError {
    pub status: u16,
    pub domain: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// `(locationType, location)`.
    pub location: Option<(&'static str, &'static str)>,
}

impl GoogleError {
    pub(crate) fn new(status: u16, domain: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self { status, domain, reason, message: message.into(), location: None }
    }

    fn at(mut self, location_type: &'static str, location: &'static str) -> Self {
        self.location = Some((location_type, location));
        self
    }

    pub(crate) fn not_found() -> Self {
        Self::new(404, "global", "notFound", "Not Found")
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "global", "invalid", message)
    }
}

#[derive(Clone, Debug)]
struct StoredEvent {
    resource: Value,
    seq: u64,
}

#[derive(Debug, Default)]
struct Calendar {
    events: BTreeMap<String, StoredEvent>,
}

#[derive(Clone, Debug)]
struct SyncToken {
    calendar: String,
    seq: u64,
    issued: Instant,
}

/// A push channel on one calendar's events.
#[derive(Clone, Debug)]
pub(crate) struct Channel {
    pub id: String,
    pub resource_id: String,
    pub calendar: String,
    pub address: String,
    pub token: Option<String>,
    pub expiration: DateTime<Utc>,
    /// The number the next notification carries; the `sync` message has 1.
    pub next_message: u64,
}

/// What a listing asks for.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    pub sync_token: Option<String>,
    pub page_token: Option<String>,
    pub max_results: Option<usize>,
    pub show_deleted: bool,
    /// Parameters Google refuses next to a sync token (`timeMin`, `orderBy`, …), by name.
    pub conflicting: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct GoogleStore {
    calendars: HashMap<String, Calendar>,
    seq: u64,
    tokens: HashMap<String, SyncToken>,
    channels: HashMap<String, Channel>,
}

/// Google's default and largest page sizes for events.list.
const DEFAULT_PAGE: usize = 250;
const MAX_PAGE: usize = 2500;

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Provided ids: base32hex (`a`–`v`, `0`–`9`), 5 to 1024 characters.
pub(crate) fn valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
}

/// An `EventDateTime` as a comparable instant (an all-day `date` counts from its UTC midnight,
/// enough to order start and end of one event).
fn when(value: Option<&Value>, which: &'static str) -> Result<DateTime<Utc>, GoogleError> {
    let value = value.filter(|v| v.is_object()).ok_or_else(|| {
        GoogleError::new(400, "global", "required", format!("Missing {which} time.")).at("parameter", which)
    })?;
    if let Some(date_time) = value.get("dateTime").and_then(Value::as_str) {
        // The sim has no time-zone database: a local time without an offset is refused, where
        // Google would read it in `timeZone`.
        return DateTime::parse_from_rfc3339(date_time)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| GoogleError::invalid(format!("Missing time zone definition for {which} time.")));
    }
    if let Some(date) = value.get("date").and_then(Value::as_str) {
        let day = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| GoogleError::invalid(format!("Invalid {which} date.")))?;
        return Ok(day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(GoogleError::new(400, "global", "required", format!("Missing {which} time.")))
}

fn check_times(event: &Value) -> Result<(), GoogleError> {
    let start = when(event.get("start"), "start")?;
    let end = when(event.get("end"), "end")?;
    if end <= start {
        return Err(GoogleError::new(400, "calendar", "timeRangeEmpty", "The specified time range is empty.")
            .at("parameter", "timeMax"));
    }
    Ok(())
}

/// Merges a patch into a resource: objects field by field, anything else replaced.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => merge(existing, value),
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

impl GoogleStore {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn stamp(resource: &mut Value, seq: u64) {
        let now = rfc3339(Utc::now());
        resource["etag"] = json!(format!("\"{}\"", 3_000_000_000_000_000u64 + seq));
        resource["updated"] = json!(now);
    }

    /// events.insert: the client's id if given (a repeat is 409 `duplicate`), else a new one.
    pub(crate) fn insert(&mut self, calendar: &str, mut body: Value) -> Result<Value, GoogleError> {
        if !body.is_object() {
            return Err(GoogleError::new(400, "global", "parseError", "Parse Error"));
        }
        let id = match body.get("id").and_then(Value::as_str) {
            Some(id) if !valid_event_id(id) => return Err(GoogleError::invalid("Invalid resource id value.")),
            Some(id) => id.to_owned(),
            None => random_hex(26),
        };
        if self.calendars.get(calendar).is_some_and(|c| c.events.contains_key(&id)) {
            return Err(GoogleError::new(409, "global", "duplicate", "The requested identifier already exists."));
        }
        check_times(&body)?;
        let now = rfc3339(Utc::now());
        merge(
            &mut body,
            &json!({
                "kind": "calendar#event",
                "id": id,
                "created": now,
                "iCalUID": format!("{id}@google.com"),
                "sequence": 0,
                "htmlLink": format!("https://www.google.com/calendar/event?eid={id}"),
            }),
        );
        if body.get("status").is_none() {
            body["status"] = json!("confirmed");
        }
        let seq = self.next_seq();
        Self::stamp(&mut body, seq);
        let stored = StoredEvent { resource: body.clone(), seq };
        self.calendars.entry(calendar.to_owned()).or_default().events.insert(id, stored);
        Ok(body)
    }

    /// events.get: cancelled events too, as Google answers them.
    pub(crate) fn get(&self, calendar: &str, id: &str) -> Result<Value, GoogleError> {
        self.calendars
            .get(calendar)
            .and_then(|c| c.events.get(id))
            .map(|e| e.resource.clone())
            .ok_or_else(GoogleError::not_found)
    }

    /// events.patch: the given fields replace the stored ones (objects merged field by field).
    pub(crate) fn patch(&mut self, calendar: &str, id: &str, patch: &Value) -> Result<Value, GoogleError> {
        let seq = self.seq + 1;
        let event =
            self.calendars.get_mut(calendar).and_then(|c| c.events.get_mut(id)).ok_or_else(GoogleError::not_found)?;
        let mut updated = event.resource.clone();
        merge(&mut updated, patch);
        // What identifies the event is not the client's to change.
        updated["id"] = json!(id);
        check_times(&updated)?;
        let times_changed =
            updated.get("start") != event.resource.get("start") || updated.get("end") != event.resource.get("end");
        if times_changed {
            let sequence = updated.get("sequence").and_then(Value::as_u64).unwrap_or(0);
            updated["sequence"] = json!(sequence + 1);
        }
        Self::stamp(&mut updated, seq);
        event.resource = updated.clone();
        event.seq = seq;
        self.seq = seq;
        Ok(updated)
    }

    /// events.delete: the event stays, `cancelled`, so incremental syncs can report it; a
    /// second delete is 410 `deleted`.
    pub(crate) fn delete(&mut self, calendar: &str, id: &str) -> Result<(), GoogleError> {
        let seq = self.seq + 1;
        let event =
            self.calendars.get_mut(calendar).and_then(|c| c.events.get_mut(id)).ok_or_else(GoogleError::not_found)?;
        if event.resource.get("status").and_then(Value::as_str) == Some("cancelled") {
            return Err(GoogleError::new(410, "global", "deleted", "Resource has been deleted"));
        }
        event.resource["status"] = json!("cancelled");
        Self::stamp(&mut event.resource, seq);
        event.seq = seq;
        self.seq = seq;
        Ok(())
    }

    /// Every event of a calendar as stored, cancelled ones included.
    pub(crate) fn events(&self, calendar: &str) -> Vec<Value> {
        self.calendars
            .get(calendar)
            .map(|c| c.events.values().map(|e| e.resource.clone()).collect())
            .unwrap_or_default()
    }

    /// Makes every sync token of the calendar invalid, as Google may at any time.
    pub(crate) fn expire_sync_tokens(&mut self, calendar: &str) {
        self.tokens.retain(|_, t| t.calendar != calendar);
    }

    fn issue_sync_token(&mut self, calendar: &str, seq: u64) -> String {
        // Opaque to clients, shaped like Google's (`CPDAlvWDx70CEPDAlvWDx70CGAU=`).
        let token = format!("C{}=", URL_SAFE_NO_PAD.encode(format!("{seq}:{}", random_hex(12))));
        self.tokens.insert(token.clone(), SyncToken { calendar: calendar.to_owned(), seq, issued: Instant::now() });
        token
    }

    /// events.list: a full or incremental listing, one page of it.
    pub(crate) fn list(
        &mut self,
        calendar: &str,
        query: &ListQuery,
        token_ttl: Duration,
    ) -> Result<Value, GoogleError> {
        let page_size = query.max_results.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let (since, incremental) = match &query.sync_token {
            Some(token) => {
                if let Some(name) = query.conflicting.first() {
                    return Err(GoogleError::invalid(format!("The parameter {name} cannot be used with syncToken.")));
                }
                let stored =
                    self.tokens.get(token).filter(|t| t.calendar == calendar && t.issued.elapsed() <= token_ttl);
                let Some(stored) = stored else {
                    return Err(GoogleError::new(
                        410,
                        "calendar",
                        "fullSyncRequired",
                        "Sync token is no longer valid, a full sync is required.",
                    )
                    .at("parameter", "syncToken"));
                };
                (stored.seq, true)
            }
            None => (0, false),
        };
        // Where this page starts, and the sequence number the whole listing is cut at.
        let (offset, cut) = match &query.page_token {
            Some(page) => decode_page(page).ok_or_else(|| GoogleError::invalid("Invalid page token value."))?,
            None => (0, self.seq),
        };
        let show_cancelled = incremental || query.show_deleted;
        let (total, items) = {
            let matching: Vec<&StoredEvent> = self
                .calendars
                .get(calendar)
                .map(|c| {
                    c.events
                        .values()
                        .filter(|e| e.seq > since && e.seq <= cut)
                        .filter(|e| {
                            show_cancelled || e.resource.get("status").and_then(Value::as_str) != Some("cancelled")
                        })
                        .collect()
                })
                .unwrap_or_default();
            let items: Vec<Value> = matching.iter().skip(offset).take(page_size).map(|e| e.resource.clone()).collect();
            (matching.len(), items)
        };
        let mut reply = json!({
            "kind": "calendar#events",
            "etag": format!("\"{}\"", 3_000_000_000_000_000u64 + cut),
            "summary": calendar,
            "updated": rfc3339(Utc::now()),
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [],
            "items": items,
        });
        if offset + page_size < total {
            reply["nextPageToken"] = json!(encode_page(offset + page_size, cut));
        } else {
            reply["nextSyncToken"] = json!(self.issue_sync_token(calendar, cut));
        }
        Ok(reply)
    }

    /// events.watch: a channel on the calendar's events; its `sync` message is the caller's to send.
    pub(crate) fn watch(
        &mut self,
        calendar: &str,
        body: &Value,
        default_ttl: Duration,
    ) -> Result<Channel, GoogleError> {
        let id = body.get("id").and_then(Value::as_str).unwrap_or_default();
        if id.is_empty() || id.len() > 64 {
            return Err(GoogleError::new(400, "global", "required", "Required: channel id"));
        }
        if !matches!(body.get("type").and_then(Value::as_str), Some("web_hook" | "webhook")) {
            return Err(GoogleError::invalid("Invalid value for: type"));
        }
        let Some(address) = body.get("address").and_then(Value::as_str).filter(|a| !a.is_empty()) else {
            return Err(GoogleError::new(400, "push", "required", "Required: address"));
        };
        if self.channels.contains_key(id) {
            return Err(GoogleError::new(400, "push", "channelIdNotUnique", "Channel id not unique"));
        }
        // `expiration` is an int64 in milliseconds, sent as a string or a number.
        let requested = body.get("expiration").and_then(|e| e.as_i64().or_else(|| e.as_str()?.parse().ok()));
        let default = Utc::now() + chrono::Duration::from_std(default_ttl).unwrap_or(chrono::Duration::days(7));
        let expiration =
            requested.and_then(DateTime::<Utc>::from_timestamp_millis).map_or(default, |asked| asked.min(default));
        let channel = Channel {
            id: id.to_owned(),
            // One resource id per calendar's events, stable across channels.
            resource_id: format!("sim-{}", URL_SAFE_NO_PAD.encode(calendar)),
            calendar: calendar.to_owned(),
            address: address.to_owned(),
            token: body.get("token").and_then(Value::as_str).map(str::to_owned),
            expiration,
            next_message: 1,
        };
        self.channels.insert(channel.id.clone(), channel.clone());
        Ok(channel)
    }

    /// channels.stop: 404 for a channel the sim does not know (or a resource id that does not match).
    pub(crate) fn stop(&mut self, id: &str, resource_id: &str) -> Result<(), GoogleError> {
        match self.channels.get(id) {
            Some(channel) if channel.resource_id == resource_id => {
                self.channels.remove(id);
                Ok(())
            }
            _ => {
                Err(GoogleError::new(404, "global", "notFound", format!("Channel '{id}' not found for project 'sim'")))
            }
        }
    }

    /// The live channels of a calendar, each with its message number taken; expired ones are dropped.
    pub(crate) fn take_notifications(&mut self, calendar: &str) -> Vec<(Channel, u64)> {
        let now = Utc::now();
        self.channels.retain(|_, c| c.expiration > now);
        let mut out = Vec::new();
        for channel in self.channels.values_mut().filter(|c| c.calendar == calendar) {
            let number = channel.next_message;
            channel.next_message += 1;
            out.push((channel.clone(), number));
        }
        out
    }

    /// The message number for one channel's next notification (its `sync` message).
    pub(crate) fn take_message_number(&mut self, channel_id: &str) -> Option<(Channel, u64)> {
        let channel = self.channels.get_mut(channel_id)?;
        let number = channel.next_message;
        channel.next_message += 1;
        Some((channel.clone(), number))
    }

    /// Deletes a calendar: its events and sync tokens go, and its channels end, each with the
    /// number of its last message.
    pub(crate) fn remove_calendar(&mut self, calendar: &str) -> Vec<(Channel, u64)> {
        self.calendars.remove(calendar);
        self.expire_sync_tokens(calendar);
        let ended: Vec<Channel> = self.channels.values().filter(|c| c.calendar == calendar).cloned().collect();
        self.channels.retain(|_, c| c.calendar != calendar);
        ended
            .into_iter()
            .map(|c| {
                let n = c.next_message;
                (c, n)
            })
            .collect()
    }

    pub(crate) fn channels(&self) -> Vec<Channel> {
        self.channels.values().cloned().collect()
    }
}

fn encode_page(offset: usize, cut: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{offset}:{cut}"))
}

fn decode_page(token: &str) -> Option<(usize, u64)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (offset, cut) = text.split_once(':')?;
    Some((offset.parse().ok()?, cut.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    fn event(id: &str, hour: u32) -> Value {
        json!({
            "id": id,
            "summary": "x",
            "start": {"dateTime": format!("2030-01-01T{hour:02}:00:00Z")},
            "end": {"dateTime": format!("2030-01-01T{:02}:00:00Z", hour + 1)},
        })
    }

    fn ids(page: &Value) -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn event_ids_are_base32hex_of_5_to_1024_characters() {
        assert!(valid_event_id("abcv0123"));
        assert!(!valid_event_id("abcw0123"), "w is past base32hex");
        assert!(!valid_event_id("ABCD0123"), "upper case is not allowed");
        assert!(!valid_event_id("abcd"));
        assert!(valid_event_id(&"a".repeat(1024)) && !valid_event_id(&"a".repeat(1025)));
    }

    #[test]
    fn a_repeated_id_is_a_duplicate_and_bad_times_are_refused() {
        let mut store = GoogleStore::default();
        store.insert("c", event("event1", 9)).unwrap();
        assert_eq!(store.insert("c", event("event1", 9)).unwrap_err().reason, "duplicate");
        let mut backwards = event("event2", 9);
        backwards["end"] = json!({"dateTime": "2030-01-01T08:00:00Z"});
        assert_eq!(store.insert("c", backwards).unwrap_err().reason, "timeRangeEmpty");
        let mut local = event("event3", 9);
        local["start"] = json!({"dateTime": "2030-01-01T09:00:00"});
        assert_eq!(store.insert("c", local).unwrap_err().status, 400);
    }

    #[test]
    fn incremental_sync_answers_changes_and_deletions_after_the_token() {
        let mut store = GoogleStore::default();
        store.insert("c", event("event1", 9)).unwrap();
        let full = store.list("c", &ListQuery::default(), TTL).unwrap();
        assert_eq!(ids(&full), ["event1"]);
        let token = full["nextSyncToken"].as_str().unwrap().to_owned();
        store.insert("c", event("event2", 10)).unwrap();
        store.delete("c", "event1").unwrap();
        let query = ListQuery { sync_token: Some(token.clone()), ..ListQuery::default() };
        let changes = store.list("c", &query, TTL).unwrap();
        assert_eq!(ids(&changes), ["event1", "event2"]);
        assert_eq!(changes["items"][0]["status"], "cancelled");
        assert_eq!(store.delete("c", "event1").unwrap_err().reason, "deleted");
        // A full listing leaves cancelled events out.
        assert_eq!(ids(&store.list("c", &ListQuery::default(), TTL).unwrap()), ["event2"]);
        store.expire_sync_tokens("c");
        assert_eq!(store.list("c", &query, TTL).unwrap_err().reason, "fullSyncRequired");
        let expired =
            store.list("c", &ListQuery::default(), TTL).unwrap()["nextSyncToken"].as_str().unwrap().to_owned();
        let old = ListQuery { sync_token: Some(expired), ..ListQuery::default() };
        assert_eq!(store.list("c", &old, Duration::ZERO).unwrap_err().status, 410, "older than the horizon");
    }

    #[test]
    fn pages_are_cut_at_the_first_page_and_only_the_last_carries_the_sync_token() {
        let mut store = GoogleStore::default();
        for (n, id) in ["event1", "event2", "event3"].iter().enumerate() {
            store.insert("c", event(id, 9 + n as u32)).unwrap();
        }
        let query = ListQuery { max_results: Some(2), ..ListQuery::default() };
        let first = store.list("c", &query, TTL).unwrap();
        assert_eq!(ids(&first), ["event1", "event2"]);
        assert!(first.get("nextSyncToken").is_none());
        store.insert("c", event("event4", 20)).unwrap();
        let next = ListQuery {
            page_token: first["nextPageToken"].as_str().map(str::to_owned),
            max_results: Some(2),
            ..ListQuery::default()
        };
        let second = store.list("c", &next, TTL).unwrap();
        assert_eq!(ids(&second), ["event3"], "event4 came after the cut");
        let token = second["nextSyncToken"].as_str().unwrap().to_owned();
        let changes = store.list("c", &ListQuery { sync_token: Some(token), ..ListQuery::default() }, TTL).unwrap();
        assert_eq!(ids(&changes), ["event4"]);
    }

    #[test]
    fn patch_merges_fields_and_keeps_the_id() {
        let mut store = GoogleStore::default();
        store.insert("c", event("event1", 9)).unwrap();
        let patched = store
            .patch("c", "event1", &json!({"id": "other", "summary": "y", "end": {"dateTime": "2030-01-01T11:00:00Z"}}))
            .unwrap();
        assert_eq!(patched["id"], "event1");
        assert_eq!(patched["summary"], "y");
        assert_eq!(patched["sequence"], 1);
        assert_eq!(store.patch("c", "missing", &json!({})).unwrap_err().status, 404);
    }

    #[test]
    fn channels_number_their_messages_and_stop_needs_the_resource_id() {
        let mut store = GoogleStore::default();
        let body = json!({"id": "ch1", "type": "web_hook", "address": "http://x/y", "token": "t"});
        let channel = store.watch("c", &body, TTL).unwrap();
        assert_eq!(store.watch("c", &body, TTL).unwrap_err().reason, "channelIdNotUnique");
        assert_eq!(store.take_message_number("ch1").unwrap().1, 1);
        assert_eq!(store.take_notifications("c")[0].1, 2);
        assert_eq!(store.stop("ch1", "wrong").unwrap_err().status, 404);
        store.stop("ch1", &channel.resource_id).unwrap();
        assert!(store.take_notifications("c").is_empty());
    }
}
