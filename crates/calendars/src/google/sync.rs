//! Busy times from Google: events.list with incremental sync.
//!
//! Without a token, a full listing (live events only) whose last page carries the
//! `nextSyncToken`; with one, the changes since, deleted events included, until a page
//! carries the next token. Pages are followed with `pageToken` under the same query.
//! `singleEvents=true` expands recurring events into instances, each its own busy time.
//!
//! An event is a busy time when it is not ours (no [`KEY_PROPERTY`]), not cancelled, not
//! `transparent` ("show as free") and not declined by the calendar's owner. Every other event
//! a listing answers is reported as removed: it may have been a busy time before.

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::Method;
use serde_json::Value;

use super::{GoogleCalendar, KEY_PROPERTY};
use crate::credentials::Session;
use crate::{Busy, BusyChanges, BusyTime, Credentials, Outcome, SyncError};

/// What one event of a listing means for busy times.
#[derive(Debug, PartialEq, Eq)]
enum Reading {
    Busy(Busy),
    NotBusy(String),
    Ours,
}

fn time(value: &Value) -> Option<BusyBound> {
    if let Some(date_time) = value.get("dateTime").and_then(Value::as_str) {
        return DateTime::parse_from_rfc3339(date_time).ok().map(|t| BusyBound::At(t.with_timezone(&Utc)));
    }
    let date = value.get("date").and_then(Value::as_str)?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok().map(BusyBound::Day)
}

enum BusyBound {
    At(DateTime<Utc>),
    Day(NaiveDate),
}

fn read_event(event: &Value) -> Option<Reading> {
    let id = event.get("id")?.as_str()?.to_owned();
    if event.pointer(&format!("/extendedProperties/private/{KEY_PROPERTY}")).is_some() {
        return Some(Reading::Ours);
    }
    let cancelled = event.get("status").and_then(Value::as_str) == Some("cancelled");
    let free = event.get("transparency").and_then(Value::as_str) == Some("transparent");
    let declined = event.get("attendees").and_then(Value::as_array).is_some_and(|attendees| {
        attendees.iter().any(|a| {
            a.get("self").and_then(Value::as_bool) == Some(true)
                && a.get("responseStatus").and_then(Value::as_str) == Some("declined")
        })
    });
    if cancelled || free || declined {
        return Some(Reading::NotBusy(id));
    }
    let time = match (event.get("start").and_then(time), event.get("end").and_then(time)) {
        (Some(BusyBound::At(start)), Some(BusyBound::At(end))) if end > start => BusyTime::At { start, end },
        (Some(BusyBound::Day(start)), Some(BusyBound::Day(end))) if end > start => BusyTime::AllDay { start, end },
        // Without usable times there is nothing to block; drop anything imported before.
        _ => return Some(Reading::NotBusy(id)),
    };
    Some(Reading::Busy(Busy { external_id: id, time }))
}

/// Folds one page's events into the changes (a later reading of an id replaces an earlier one).
fn apply_page(changes: &mut BusyChanges, items: &[Value]) {
    for reading in items.iter().filter_map(read_event) {
        match reading {
            Reading::Busy(busy) => {
                changes.removed.retain(|id| *id != busy.external_id);
                changes.busy.retain(|b| b.external_id != busy.external_id);
                changes.busy.push(busy);
            }
            Reading::NotBusy(id) => {
                changes.busy.retain(|b| b.external_id != id);
                if !changes.removed.contains(&id) {
                    changes.removed.push(id);
                }
            }
            Reading::Ours => {}
        }
    }
}

impl GoogleCalendar {
    /// Busy times of the calendar: all of them without a `sync_token` (`full_sync`), else the
    /// changes since it. `SyncTokenExpired`: call again without a token.
    pub async fn busy(&self, credentials: &mut Credentials, sync_token: Option<&str>) -> Outcome<BusyChanges> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = self.list_busy(&mut session, sync_token).await;
        session.finish(result)
    }

    async fn list_busy(&self, session: &mut Session<'_>, sync_token: Option<&str>) -> Result<BusyChanges, SyncError> {
        let mut changes = BusyChanges {
            full_sync: sync_token.is_none(),
            busy: Vec::new(),
            removed: Vec::new(),
            next_sync_token: String::new(),
        };
        let mut page_token: Option<String> = None;
        loop {
            let mut url = self.events_url(&[])?;
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("singleEvents", "true").append_pair("maxResults", &self.config.page_size.to_string());
                if let Some(token) = sync_token {
                    query.append_pair("syncToken", token);
                }
                if let Some(page) = &page_token {
                    query.append_pair("pageToken", page);
                }
            }
            let (_, text) = session.call(|token| self.request(Method::GET, url.clone(), None, token)).await?;
            let page: Value = serde_json::from_str(&text)
                .map_err(|e| SyncError::retryable(format!("events.list answered unreadable JSON: {e}")))?;
            apply_page(&mut changes, page.get("items").and_then(Value::as_array).map_or(&[][..], Vec::as_slice));
            if let Some(next) = page.get("nextPageToken").and_then(Value::as_str) {
                page_token = Some(next.to_owned());
                continue;
            }
            let Some(token) = page.get("nextSyncToken").and_then(Value::as_str) else {
                return Err(SyncError::retryable("events.list ended without a nextSyncToken"));
            };
            changes.next_sync_token = token.to_owned();
            return Ok(changes);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn timed(id: &str) -> Value {
        json!({"id": id, "status": "confirmed",
            "start": {"dateTime": "2030-01-01T09:00:00+01:00"}, "end": {"dateTime": "2030-01-01T10:00:00+01:00"}})
    }

    #[test]
    fn timed_and_all_day_events_are_busy() {
        let Some(Reading::Busy(busy)) = read_event(&timed("e1")) else { panic!("busy expected") };
        assert_eq!(
            busy.time,
            BusyTime::At {
                start: "2030-01-01T08:00:00Z".parse().unwrap(),
                end: "2030-01-01T09:00:00Z".parse().unwrap(),
            }
        );
        let all_day = json!({"id": "e2", "start": {"date": "2030-01-01"}, "end": {"date": "2030-01-03"}});
        let Some(Reading::Busy(busy)) = read_event(&all_day) else { panic!("busy expected") };
        assert!(matches!(busy.time, BusyTime::AllDay { start, end } if (end - start).num_days() == 2));
    }

    #[test]
    fn ours_free_declined_and_cancelled_events_are_not_busy() {
        let mut ours = timed("e1");
        ours["extendedProperties"] = json!({"private": {KEY_PROPERTY: "abcde"}});
        assert_eq!(read_event(&ours), Some(Reading::Ours));
        let mut free = timed("e2");
        free["transparency"] = json!("transparent");
        assert_eq!(read_event(&free), Some(Reading::NotBusy("e2".into())));
        let mut declined = timed("e3");
        declined["attendees"] = json!([{"email": "a@b", "self": true, "responseStatus": "declined"}]);
        assert_eq!(read_event(&declined), Some(Reading::NotBusy("e3".into())));
        assert_eq!(read_event(&json!({"id": "e4", "status": "cancelled"})), Some(Reading::NotBusy("e4".into())));
    }

    #[test]
    fn a_later_reading_of_the_same_event_wins() {
        let mut changes =
            BusyChanges { full_sync: false, busy: vec![], removed: vec![], next_sync_token: String::new() };
        apply_page(&mut changes, &[timed("e1")]);
        apply_page(&mut changes, &[json!({"id": "e1", "status": "cancelled"})]);
        assert!(changes.busy.is_empty());
        assert_eq!(changes.removed, ["e1"]);
        apply_page(&mut changes, &[timed("e1")]);
        assert_eq!(changes.busy.len(), 1);
        assert!(changes.removed.is_empty());
    }
}
