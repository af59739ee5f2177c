//! Event payloads, paths into them, and rule conditions: pure functions.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An upstream event, whatever shape it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    pub id: String,
    /// The domain event's name, or the Hasura trigger's name.
    pub name: String,
    pub occurred_at: DateTime<Utc>,
    /// What rules see: `{"event", "occurred_at", "data"}`; for Hasura `data` is
    /// `{"op", "old", "new", "table", "session_variables"}`.
    pub document: Value,
}

/// Reads a domain event or a Hasura event-trigger payload; 422s name the missing field. The
/// body's parts move into the event's document rather than being copied.
pub fn parse(mut body: Value) -> Result<IncomingEvent, ApiError> {
    let object = body.as_object_mut().ok_or_else(|| ApiError::validation("body", "must be a JSON object"))?;
    let id = event_id(object.get("id"))?;
    if object.get("event").is_some_and(Value::is_object) {
        let mut hasura = object.remove("event").unwrap_or_default();
        let name = trigger_name(object.get("trigger"))?;
        let occurred_at = timestamp(object.get("created_at"), "created_at")?;
        let mut take = |pointer: &str| hasura.pointer_mut(pointer).map(Value::take).unwrap_or(Value::Null);
        let data = object_of([
            ("op", take("/op")),
            ("old", take("/data/old")),
            ("new", take("/data/new")),
            ("table", object.remove("table").unwrap_or(Value::Null)),
            ("session_variables", take("/session_variables")),
        ]);
        return Ok(event(id, name, occurred_at, data));
    }
    if let Some(scheduled_time) = object.get("scheduled_time") {
        // A Hasura cron trigger: `{"id","name","scheduled_time","payload","comment"}`.
        let name = object
            .get("name")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.len() <= 200)
            .ok_or_else(|| ApiError::validation("name", "is required in a Hasura cron-trigger payload"))?
            .to_owned();
        let at = timestamp(Some(scheduled_time), "scheduled_time")?;
        let payload = object.remove("payload").unwrap_or_else(|| json!({}));
        return Ok(cron_event(id, name, at, payload));
    }
    let name = object
        .get("event")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 200)
        .ok_or_else(|| ApiError::validation("event", "is required: the event's name, e.g. booking.confirmed"))?
        .to_owned();
    let occurred_at = timestamp(object.get("occurred_at"), "occurred_at")?;
    let data = object.remove("data").unwrap_or_else(|| json!({}));
    Ok(event(id, name, occurred_at, data))
}

/// An event's `id`: a string or a number.
pub(super) fn event_id(id: Option<&Value>) -> Result<String, ApiError> {
    match id {
        Some(Value::String(id)) if !id.trim().is_empty() && id.len() <= 200 => Ok(id.clone()),
        Some(Value::Number(id)) => Ok(id.to_string()),
        _ => Err(ApiError::validation("id", "is required: a string identifying the event, for de-duplication")),
    }
}

/// A Hasura payload's `trigger.name`.
pub(super) fn trigger_name(trigger: Option<&Value>) -> Result<String, ApiError> {
    Ok(trigger
        .and_then(|trigger| trigger.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::validation("trigger.name", "is required in a Hasura event payload"))?
        .to_owned())
}

/// The event a cron trigger emits: rules see `data.scheduled_time` and `data.payload`.
pub fn cron_event(id: String, name: String, scheduled_time: DateTime<Utc>, payload: Value) -> IncomingEvent {
    let data = object_of([("scheduled_time", scheduled_time.to_rfc3339().into()), ("payload", payload)]);
    event(id, name, scheduled_time, data)
}

pub(super) fn event(id: String, name: String, occurred_at: DateTime<Utc>, data: Value) -> IncomingEvent {
    let document =
        object_of([("event", name.clone().into()), ("occurred_at", occurred_at.to_rfc3339().into()), ("data", data)]);
    IncomingEvent { id, name, occurred_at, document }
}

/// An object of `entries`, moved in. (`json!` would copy each value, a whole row at a time:
/// it serializes what it is given.)
pub(super) fn object_of<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(entries.into_iter().map(|(key, value)| (key.to_owned(), value)).collect())
}

pub(super) fn timestamp(value: Option<&Value>, field: &str) -> Result<DateTime<Utc>, ApiError> {
    match value.and_then(Value::as_str) {
        None => Ok(Utc::now()),
        Some(text) => parse_time(text).ok_or_else(|| ApiError::validation(field, "must be an RFC 3339 timestamp")),
    }
}

/// RFC 3339, or Hasura's timestamps without a zone (UTC).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        // `NaiveDateTime`'s own parser reads `%Y-%m-%dT%H:%M:%S%.f` without a format to interpret.
        .or_else(|| text.parse::<chrono::NaiveDateTime>().ok().map(|t| t.and_utc()))
}

/// A dotted path with optional indexes: `data.new.passengers[0].phone`.
pub fn lookup<'a>(document: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(document, |value, segment| {
        let (key, indexes) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        let mut current = if key.is_empty() { value } else { value.get(key)? };
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            current = current.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
        Some(current)
    })
}

pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 300
        && path.split('.').all(|segment| {
            !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || "_-[]".contains(c))
        })
}

/// One condition of a rule; all of a rule's conditions must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub path: String,
    #[schema(value_type = Option<Object>)]
    pub equals: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub not_equals: Option<Value>,
    /// With a `data.new.…` path: the value differs from the same path under `data.old`
    /// (a Hasura UPDATE that changed this column).
    pub changed: Option<bool>,
    pub exists: Option<bool>,
}

impl Condition {
    pub fn holds(&self, document: &Value) -> bool {
        let value = lookup(document, &self.path).filter(|v| !v.is_null());
        if let Some(expected) = &self.equals
            && value != Some(expected)
        {
            return false;
        }
        if let Some(unexpected) = &self.not_equals
            && value == Some(unexpected)
        {
            return false;
        }
        if let Some(exists) = self.exists
            && value.is_some() != exists
        {
            return false;
        }
        if let Some(changed) = self.changed {
            let old_path = self.path.replacen("data.new.", "data.old.", 1);
            let before = lookup(document, &old_path).filter(|v| !v.is_null());
            if (before != value) != changed {
                return false;
            }
        }
        true
    }

    pub fn validate(&self, field: &str) -> Result<(), ApiError> {
        if !valid_path(&self.path) {
            return Err(ApiError::validation(format!("{field}.path"), "must be a dotted path such as data.new.status"));
        }
        if self.changed.is_some() && !self.path.starts_with("data.new.") {
            return Err(ApiError::validation(
                format!("{field}.changed"),
                "applies to data.new.… paths (Hasura updates)",
            ));
        }
        if self.equals.is_none() && self.not_equals.is_none() && self.changed.is_none() && self.exists.is_none() {
            return Err(ApiError::validation(field, "needs equals, not_equals, changed or exists"));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(in crate::triggers) fn hasura_update() -> Value {
        json!({
            "event": {"session_variables": {"x-hasura-role": "admin"}, "op": "UPDATE",
                      "data": {"old": {"id": 7, "status": "ON_TIME", "departure_at": "2026-11-23T09:00:00"},
                               "new": {"id": 7, "status": "DELAYED", "departure_at": "2026-11-23T09:00:00",
                                       "passengers": [{"phone": "+4915112345678"}]}}},
            "created_at": "2026-11-22T14:00:00.123456",
            "id": "85558393-c75d-4d2f-9c15-e80591b83894",
            "delivery_info": {"max_retries": 0, "current_retry": 0},
            "trigger": {"name": "service_leg_status"},
            "table": {"schema": "operations", "name": "service_legs"}
        })
    }

    #[test]
    fn hasura_payloads_become_events_named_by_their_trigger() {
        let event = parse(hasura_update()).unwrap();
        assert_eq!(event.name, "service_leg_status");
        assert_eq!(event.id, "85558393-c75d-4d2f-9c15-e80591b83894");
        assert_eq!(lookup(&event.document, "data.new.status"), Some(&json!("DELAYED")));
        assert_eq!(lookup(&event.document, "data.table.name"), Some(&json!("service_legs")));
        assert_eq!(lookup(&event.document, "data.new.passengers[0].phone"), Some(&json!("+4915112345678")));
        assert_eq!(event.occurred_at.to_rfc3339(), "2026-11-22T14:00:00.123456+00:00");
    }

    #[test]
    fn a_hasura_payload_becomes_this_document() {
        let event = parse(hasura_update()).unwrap();
        let expected = json!({
            "event": "service_leg_status",
            "occurred_at": "2026-11-22T14:00:00.123456+00:00",
            "data": {
                "op": "UPDATE",
                "old": {"id": 7, "status": "ON_TIME", "departure_at": "2026-11-23T09:00:00"},
                "new": {"id": 7, "status": "DELAYED", "departure_at": "2026-11-23T09:00:00",
                        "passengers": [{"phone": "+4915112345678"}]},
                "table": {"schema": "operations", "name": "service_legs"},
                "session_variables": {"x-hasura-role": "admin"}
            }
        });
        assert_eq!(event.document, expected);
        let cron = cron_event("c-1".into(), "digest".into(), event.occurred_at, json!({"phone": "+4915112345678"}));
        assert_eq!(
            cron.document,
            json!({"event": "digest", "occurred_at": "2026-11-22T14:00:00.123456+00:00",
                   "data": {"scheduled_time": "2026-11-22T14:00:00.123456+00:00", "payload": {"phone": "+4915112345678"}}})
        );
    }

    #[test]
    fn times_come_with_a_zone_or_as_hasura_writes_them_in_utc() {
        let at = |text: &str| parse_time(text).map(|t| t.to_rfc3339());
        assert_eq!(at("2026-11-22T14:00:00.123456"), Some("2026-11-22T14:00:00.123456+00:00".into()));
        assert_eq!(at("2026-11-22T14:00:00"), Some("2026-11-22T14:00:00+00:00".into()));
        assert_eq!(at("2026-11-22T15:00:00+01:00"), Some("2026-11-22T14:00:00+00:00".into()));
        assert_eq!(at("2026-11-22T14:00:00Z"), Some("2026-11-22T14:00:00+00:00".into()));
        for bad in ["2026-11-22", "yesterday", "2026-13-01T00:00:00", ""] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn domain_events_need_a_name_and_an_id() {
        let event =
            parse(json!({"event": "booking.confirmed", "id": "e-1", "data": {"booking": {"ref": "B1"}}})).unwrap();
        assert_eq!(lookup(&event.document, "data.booking.ref"), Some(&json!("B1")));
        for (body, field) in [
            (json!({"event": "x"}), "id"),
            (json!({"id": "1"}), "event"),
            (json!({"id": "1", "event": "x", "occurred_at": "yesterday"}), "occurred_at"),
            (json!({"id": "1", "event": {"op": "UPDATE"}}), "trigger.name"),
        ] {
            match parse(body.clone()) {
                Err(ApiError::Validation { field: got, .. }) => assert_eq!(got, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn conditions_see_changes() {
        let event = parse(hasura_update()).unwrap();
        let became_delayed = Condition {
            path: "data.new.status".into(),
            equals: Some(json!("DELAYED")),
            not_equals: None,
            changed: Some(true),
            exists: None,
        };
        assert!(became_delayed.holds(&event.document));
        let departure_changed = Condition {
            path: "data.new.departure_at".into(),
            equals: None,
            not_equals: None,
            changed: Some(true),
            exists: None,
        };
        assert!(!departure_changed.holds(&event.document));
        let missing = Condition {
            path: "data.new.nothing".into(),
            equals: None,
            not_equals: None,
            changed: None,
            exists: Some(false),
        };
        assert!(missing.holds(&event.document));
    }
}
