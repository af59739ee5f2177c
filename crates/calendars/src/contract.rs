//! The vendor-neutral contract: what a calendar is told about an appointment, what it tells us
//! about busy times, and the one error type whose variants say what the caller must do.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Our stable id for an appointment as a calendar knows it. It is also the Google event id, so
/// it is base32hex (`a`–`v`, `0`–`9`), 5 to 1024 characters: an insert retried after a lost
/// answer then meets its own first attempt (409 `duplicate`) instead of making a second event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventKey(String);

impl EventKey {
    /// The key of an appointment: its UUID as 32 lowercase hex digits (hex is a subset of
    /// base32hex, so every UUID gives a valid Google event id).
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id.simple().to_string())
    }

    /// A key read back from storage; `None` if Google would refuse it as an event id.
    pub fn parse(key: &str) -> Option<Self> {
        let valid =
            (5..=1024).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b));
        valid.then(|| Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventKey {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("not a valid event key: {value}"))
    }
}

impl From<EventKey> for String {
    fn from(key: EventKey) -> Self {
        key.0
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An appointment as a calendar sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarEvent {
    pub key: EventKey,
    pub title: String,
    pub description: Option<String>,
    pub start: DateTime<Utc>,
    /// Exclusive, as in both vendors.
    pub end: DateTime<Utc>,
    /// IANA name (`Europe/Zurich`): how Google shows the event. Jobber gets the instant in UTC
    /// (see `jobber` for why).
    pub time_zone: String,
    pub location: Option<String>,
}

/// When an imported busy time is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusyTime {
    /// A timed event.
    At { start: DateTime<Utc>, end: DateTime<Utc> },
    /// An all-day event: whole days in the calendar's own time zone, `end` exclusive. Which
    /// instants that covers depends on the zone the caller's resource works in, so it is left
    /// to the caller (this crate has no time-zone database).
    AllDay { start: NaiveDate, end: NaiveDate },
}

/// A time a calendar says its owner is busy, from an event that is not one of ours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Busy {
    /// The vendor's id of the event; the same event keeps it across syncs.
    pub external_id: String,
    pub time: BusyTime,
}

/// What a busy-time sync found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyChanges {
    /// `true` after a sync without a token: `busy` is everything, so the caller replaces what
    /// it imported from this calendar before; `false`: merge (add or replace by `external_id`).
    pub full_sync: bool,
    pub busy: Vec<Busy>,
    /// Events that are no longer busy times (deleted, now free, declined). May name events the
    /// caller never imported (our own deleted appointments among them): ignore unknown ids.
    pub removed: Vec<String>,
    /// Pass to the next sync.
    pub next_sync_token: String,
}

/// A vendor's id for something we created there, opaque to the domain: store it, hand it back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExternalRef(pub String);

impl ExternalRef {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a call failed, as what the caller should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The vendor is unreachable or failed (connect errors, timeouts, 5xx): try again later.
    /// Safe for every call here: inserts carry our id, patches and deletes are idempotent (for
    /// Jobber's creations see `jobber::Jobber::create`).
    #[error("the vendor failed, retry later: {reason}")]
    Retryable { retry_after: Option<Duration>, reason: String },
    /// Too many requests or query cost: try again after `retry_after` (or back off).
    #[error("rate limited by the vendor (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// The operator's grant is gone (revoked, expired, scopes missing): stop syncing this
    /// account and ask the operator to connect it again.
    #[error("the vendor refused our credentials: {reason}")]
    Unauthorized { reason: String },
    /// The vendor refused this request for good; retrying the same request will not help.
    #[error("the vendor refused the request ({code}): {reason}")]
    Permanent { code: String, reason: String },
    /// Google's sync token is no longer valid: sync again without one (a full sync).
    #[error("the sync token expired; a full sync is required")]
    SyncTokenExpired,
}

impl SyncError {
    pub(crate) fn permanent(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Permanent { code: code.into(), reason: reason.into() }
    }

    pub(crate) fn retryable(reason: impl Into<String>) -> Self {
        Self::Retryable { retry_after: None, reason: reason.into() }
    }
}

/// The result of a call, and whether it refreshed the credentials on the way.
///
/// When `credentials_changed` is true the caller must persist the `Credentials` it passed in
/// **before anything else, whatever `result` says**: Jobber has already invalidated the old
/// refresh token, so losing the new one locks the account out.
#[must_use = "persist the credentials when `credentials_changed`, then look at `result`"]
#[derive(Debug)]
pub struct Outcome<T> {
    pub result: Result<T, SyncError>,
    pub credentials_changed: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_from_uuids_are_valid_google_event_ids() {
        for _ in 0..100 {
            let key = EventKey::from_uuid(Uuid::new_v4());
            assert_eq!(key.as_str().len(), 32);
            assert_eq!(EventKey::parse(key.as_str()), Some(key));
        }
    }

    #[test]
    fn keys_outside_base32hex_are_refused() {
        assert!(EventKey::parse("abcw1").is_none(), "w is not base32hex");
        assert!(EventKey::parse("ABCD1").is_none());
        assert!(EventKey::parse("abcd").is_none(), "too short");
        assert!(EventKey::parse(&"v".repeat(1025)).is_none());
        assert!(serde_json::from_str::<EventKey>("\"has-dash\"").is_err());
        assert_eq!(serde_json::from_str::<EventKey>("\"abcde\"").unwrap().as_str(), "abcde");
    }
}
