//! Twilio's Message resources: every message the sim accepted or received, with its status as
//! the status callbacks advanced it, read back through `GET …/Messages.json` (list, filtered and
//! paged as Twilio does) and `GET …/Messages/{Sid}.json` (see docs/providers/twilio.md §1.4).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::SimState;
use crate::ledger::{NewEntry, form_to_json};
use crate::twilio::{authenticate_error, is_authenticated, twilio_error};

/// The sender Twilio picks from a Messaging Service's pool, once it has picked one.
pub(crate) const POOL_SENDER: &str = "+15005550006";

#[derive(Clone, Debug)]
pub(crate) struct StoredMessage {
    pub sid: String,
    pub account_sid: String,
    /// `None` while a Messaging Service has not assigned a sender yet.
    pub from: Option<String>,
    pub to: String,
    pub body: String,
    pub num_media: usize,
    pub messaging_service_sid: Option<String>,
    /// `outbound-api` or `inbound`.
    pub direction: &'static str,
    pub status: String,
    pub error_code: Option<u32>,
    pub date_created: DateTime<Utc>,
    pub date_updated: DateTime<Utc>,
    /// Set when the message is sent (or received); `null` before.
    pub date_sent: Option<DateTime<Utc>>,
}

/// All messages, in the order they were created.
#[derive(Debug, Default)]
pub(crate) struct Store {
    messages: Vec<StoredMessage>,
}

impl Store {
    pub(crate) fn add(&mut self, message: StoredMessage) {
        self.messages.push(message);
    }

    /// Moves a message to `status` as its status callback reports it. A status never moves
    /// back (a callback posted twice, or out of order, leaves the furthest one).
    pub(crate) fn advance(&mut self, sid: &str, status: &str, error_code: Option<u32>) {
        let Some(message) = self.messages.iter_mut().find(|m| m.sid == sid) else { return };
        if rank(status) < rank(&message.status) {
            return;
        }
        let now = Utc::now();
        message.status = status.to_owned();
        message.date_updated = now;
        if message.date_sent.is_none() && rank(status) >= rank("sent") {
            message.date_sent = Some(now);
        }
        if message.from.is_none() {
            message.from = Some(POOL_SENDER.to_owned());
        }
        if matches!(status, "failed" | "undelivered") {
            message.error_code = error_code;
        }
    }
}

fn rank(status: &str) -> u8 {
    match status {
        "accepted" | "scheduled" => 0,
        "queued" => 1,
        "sending" => 2,
        "sent" => 3,
        "delivered" | "undelivered" | "failed" => 4,
        "read" => 5,
        _ => 0,
    }
}

/// RFC 2822 in GMT, as every date in the 2010 API.
pub(crate) fn rfc2822(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

fn error_message(code: u32) -> &'static str {
    match code {
        30003 => "Unreachable destination handset",
        30007 => "Message filtered",
        30008 => "Unknown error",
        _ => "Message delivery failed",
    }
}

impl StoredMessage {
    /// The Message resource (docs/providers/twilio.md §1.1).
    pub(crate) fn to_json(&self) -> Value {
        let (account_sid, sid) = (&self.account_sid, &self.sid);
        // With a Messaging Service, segments are counted once a sender is picked.
        let segments = if self.messaging_service_sid.is_some() && self.from.is_none() { "0" } else { "1" };
        json!({
            "sid": sid,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_updated),
            "date_sent": self.date_sent.map(rfc2822),
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from,
            "messaging_service_sid": self.messaging_service_sid,
            "body": self.body,
            "status": self.status,
            "num_segments": segments,
            "num_media": self.num_media.to_string(),
            "direction": self.direction,
            "api_version": "2010-04-01",
            "price": null,
            "price_unit": "USD",
            "error_code": self.error_code,
            "error_message": self.error_code.map(error_message),
            "uri": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"),
            "subresource_uris": {
                "media": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"),
                "feedback": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Feedback.json"),
            },
        })
    }
}

/// A `DateSent` bound: a GMT date as documented, or a full timestamp as the SDKs send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DateBound {
    Day(NaiveDate),
    At(DateTime<Utc>),
}

impl DateBound {
    fn parse(value: &str) -> Option<Self> {
        if let Ok(day) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
            return Some(DateBound::Day(day));
        }
        DateTime::parse_from_rfc3339(value).ok().map(|at| DateBound::At(at.with_timezone(&Utc)))
    }
}

/// The list filters; a message without a `date_sent` never matches a `DateSent` filter.
#[derive(Debug, Default)]
struct Filters {
    to: Option<String>,
    from: Option<String>,
    on: Option<DateBound>,
    on_or_before: Option<DateBound>,
    on_or_after: Option<DateBound>,
}

impl Filters {
    fn matches(&self, message: &StoredMessage) -> bool {
        if self.to.as_ref().is_some_and(|to| *to != message.to)
            || self.from.as_ref().is_some_and(|from| Some(from) != message.from.as_ref())
        {
            return false;
        }
        let bounds = [self.on, self.on_or_before, self.on_or_after];
        if bounds.iter().all(Option::is_none) {
            return true;
        }
        let Some(sent) = message.date_sent else { return false };
        let day = sent.date_naive();
        let on = self.on.is_none_or(|b| match b {
            DateBound::Day(d) => day == d,
            DateBound::At(t) => day == t.date_naive(),
        });
        let before = self.on_or_before.is_none_or(|b| match b {
            DateBound::Day(d) => day <= d,
            DateBound::At(t) => sent <= t,
        });
        let after = self.on_or_after.is_none_or(|b| match b {
            DateBound::Day(d) => day >= d,
            DateBound::At(t) => sent >= t,
        });
        on && before && after
    }
}

/// `GET /2010-04-01/Accounts/{AccountSid}/Messages.json`: newest first by `date_sent`, messages
/// not sent yet first of all (they will be the newest once sent).
pub(crate) async fn list_messages(
    State(state): State<Arc<SimState>>,
    Path(account_sid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let param = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let path = format!("/2010-04-01/Accounts/{account_sid}/Messages.json");
    let authorised = is_authenticated(&state, &headers, &account_sid);
    let mut filters = Filters { to: param("To"), from: param("From"), ..Filters::default() };
    let mut invalid = None;
    for (name, slot) in [
        ("DateSent", &mut filters.on),
        ("DateSent<", &mut filters.on_or_before),
        ("DateSent>", &mut filters.on_or_after),
    ] {
        if let Some(value) = param(name) {
            match DateBound::parse(&value) {
                Some(bound) => *slot = Some(bound),
                None => invalid = Some(name),
            }
        }
    }
    let outcome = match (authorised, invalid) {
        (false, _) => "error:20003",
        (true, Some(_)) => "error:20001",
        (true, None) => "accepted",
    };
    state.ledger().record(NewEntry {
        provider: "twilio",
        operation: "list_messages",
        method: "GET",
        path: path.clone(),
        recipient: filters.to.clone(),
        provider_message_id: None,
        body: form_to_json(&pairs),
        outcome: outcome.to_owned(),
    });
    if !authorised {
        return authenticate_error();
    }
    if let Some(name) = invalid {
        return twilio_error(StatusCode::BAD_REQUEST, 20001, &format!("Invalid {name} value: expected YYYY-MM-DD"));
    }
    let page_size = param("PageSize").and_then(|v| v.parse::<usize>().ok()).unwrap_or(50).clamp(1, 1000);
    let page = param("Page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);

    let mut matching: Vec<(usize, StoredMessage)> = state
        .twilio_messages()
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.account_sid == account_sid && filters.matches(m))
        .map(|(i, m)| (i, m.clone()))
        .collect();
    matching.sort_by(|(ia, a), (ib, b)| {
        let key = |i: &usize, m: &StoredMessage| (m.date_sent.is_none(), m.date_sent, m.date_created, *i);
        key(ib, b).cmp(&key(ia, a))
    });
    // A page token names the last message of the previous page, so paging does not skip or
    // repeat messages while new ones arrive; without one, `Page` counts pages.
    let start = param("PageToken")
        .and_then(|token| token.strip_prefix("PA").map(str::to_owned))
        .and_then(|sid| matching.iter().position(|(_, m)| m.sid == sid).map(|p| p + 1))
        .unwrap_or_else(|| page.saturating_mul(page_size))
        .min(matching.len());
    let end = (start + page_size).min(matching.len());
    let messages: Vec<Value> = matching[start..end].iter().map(|(_, m)| m.to_json()).collect();

    let uri = |page: usize, token: Option<&str>| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for name in ["To", "From", "DateSent", "DateSent<", "DateSent>"] {
            if let Some(value) = param(name) {
                query.append_pair(name, &value);
            }
        }
        query.append_pair("PageSize", &page_size.to_string()).append_pair("Page", &page.to_string());
        if let Some(token) = token {
            query.append_pair("PageToken", token);
        }
        format!("{path}?{}", query.finish())
    };
    let next_token = end.checked_sub(1).and_then(|last| matching.get(last)).map(|(_, m)| format!("PA{}", m.sid));
    let next_page_uri = (end < matching.len()).then(|| uri(page + 1, next_token.as_deref()));
    let previous_page_uri = (page > 0).then(|| uri(page - 1, None));
    let body = json!({
        "first_page_uri": uri(0, None),
        "end": end.saturating_sub(1).max(start),
        "previous_page_uri": previous_page_uri,
        "messages": messages,
        "uri": uri(page, param("PageToken").as_deref()),
        "page_size": page_size,
        "start": start,
        "next_page_uri": next_page_uri,
        "page": page,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`.
pub(crate) async fn fetch_message(
    State(state): State<Arc<SimState>>,
    Path((account_sid, message_json)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/2010-04-01/Accounts/{account_sid}/Messages/{message_json}");
    let authorised = is_authenticated(&state, &headers, &account_sid);
    let found = message_json.strip_suffix(".json").and_then(|sid| {
        state.twilio_messages().messages.iter().find(|m| m.sid == sid && m.account_sid == account_sid).cloned()
    });
    let outcome = match (authorised, &found) {
        (false, _) => "error:20003",
        (true, None) => "error:20404",
        (true, Some(_)) => "accepted",
    };
    state.ledger().record(NewEntry {
        provider: "twilio",
        operation: "fetch_message",
        method: "GET",
        path: path.clone(),
        recipient: None,
        provider_message_id: found.as_ref().map(|m| m.sid.clone()),
        body: Value::Null,
        outcome: outcome.to_owned(),
    });
    if !authorised {
        return authenticate_error();
    }
    match found {
        Some(message) => (StatusCode::OK, axum::Json(message.to_json())).into_response(),
        None => twilio_error(StatusCode::NOT_FOUND, 20404, &format!("The requested resource {path} was not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sid: &str, status: &str) -> StoredMessage {
        let now = Utc::now();
        StoredMessage {
            sid: sid.to_owned(),
            account_sid: "AC1".to_owned(),
            from: None,
            to: "+15558675310".to_owned(),
            body: "hi".to_owned(),
            num_media: 0,
            messaging_service_sid: Some("MG1".to_owned()),
            direction: "outbound-api",
            status: status.to_owned(),
            error_code: None,
            date_created: now,
            date_updated: now,
            date_sent: None,
        }
    }

    #[test]
    fn statuses_only_move_forward_and_sending_sets_date_sent() {
        let mut store = Store::default();
        store.add(message("SM1", "accepted"));
        assert_eq!(store.messages[0].to_json()["num_segments"], "0");
        store.advance("SM1", "sent", None);
        let sent_at = store.messages[0].date_sent.expect("sent");
        assert_eq!(store.messages[0].from.as_deref(), Some(POOL_SENDER));
        store.advance("SM1", "undelivered", Some(30003));
        store.advance("SM1", "sent", None);
        let json = store.messages[0].to_json();
        assert_eq!((json["status"].as_str(), json["error_code"].as_u64()), (Some("undelivered"), Some(30003)));
        assert_eq!(json["error_message"], "Unreachable destination handset");
        assert_eq!(store.messages[0].date_sent, Some(sent_at));
    }

    #[test]
    fn date_filters_skip_unsent_messages() {
        let mut sent = message("SM1", "sent");
        sent.date_sent = Some(DateTime::parse_from_rfc3339("2024-03-01T10:00:00Z").expect("date").to_utc());
        let unsent = message("SM2", "queued");
        let day = |s| DateBound::parse(s);
        let on = Filters { on: day("2024-03-01"), ..Filters::default() };
        assert!(on.matches(&sent) && !on.matches(&unsent));
        let after = Filters { on_or_after: day("2024-03-02"), ..Filters::default() };
        assert!(!after.matches(&sent));
        let before = Filters { on_or_before: day("2024-03-01T09:59:59Z"), ..Filters::default() };
        assert!(!before.matches(&sent));
        assert!(Filters::default().matches(&unsent));
        assert_eq!(DateBound::parse("yesterday"), None);
    }
}
