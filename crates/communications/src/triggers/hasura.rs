//! Hasura event-trigger payloads read straight into an event.
//!
//! [`event::parse`] reads any event body from a JSON tree. A Hasura payload — what a busy
//! integration posts, one per row change — carries more than rules see (`trace_context`,
//! `delivery_info`, the envelope), and building the whole tree, then moving its parts into the
//! event's document and dropping the rest, cost the service about as much as everything else
//! the request handler does for an event. [`read`] deserializes the parts rules see and skips
//! the rest unbuilt. It answers only a payload it reads completely and validly: anything else,
//! every error included, is left to [`event::parse`], so that both make the same event and a bad
//! payload gets the same 422 naming its field.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::event::{self, IncomingEvent};

/// The event a Hasura event-trigger payload makes, as [`event::parse`] makes it from the tree;
/// `None` when `body` is not one, or is not one this reads.
pub fn read(body: &[u8]) -> Option<IncomingEvent> {
    // serde fills a struct from a JSON array too, field by field: only an object is a payload.
    // A NUL character is refused by the tree's reader, which names its path.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') || body.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    let payload: Payload = serde_json::from_slice(body).ok()?;
    let id = event::event_id(payload.id.as_ref()).ok()?;
    let name = event::trigger_name(payload.trigger.as_ref()).ok()?;
    let occurred_at = event::timestamp(payload.created_at.as_ref(), "created_at").ok()?;
    let Event { op, old, new, session_variables } = payload.event;
    let data = event::object_of([
        ("op", op),
        ("old", old),
        ("new", new),
        ("table", payload.table.unwrap_or(Value::Null)),
        ("session_variables", session_variables),
    ]);
    Some(event::event(id, name, occurred_at, data))
}

/// The envelope: what rules see of it, each field as the tree has it (`null` as absent). A key
/// twice is an error here, and the tree's reader keeps the last.
#[derive(Deserialize)]
struct Payload {
    id: Option<Value>,
    created_at: Option<Value>,
    trigger: Option<Value>,
    table: Option<Value>,
    event: Event,
}

/// The payload's `event` object, as `/op`, `/data/old`, `/data/new` and `/session_variables`
/// (`null` where absent), the last of a repeated key as in the tree.
#[derive(Default)]
struct Event {
    op: Value,
    old: Value,
    new: Value,
    session_variables: Value,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum EventField {
    Op,
    Data,
    SessionVariables,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum DataField {
    Old,
    New,
    #[serde(other)]
    Other,
}

/// `event.data`: its `old` and `new` rows.
#[derive(Default)]
struct Data {
    old: Value,
    new: Value,
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Objects;
        impl<'de> Visitor<'de> for Objects {
            type Value = Event;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Hasura event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
                let mut event = Event::default();
                while let Some(field) = map.next_key()? {
                    match field {
                        EventField::Op => event.op = map.next_value()?,
                        EventField::SessionVariables => event.session_variables = map.next_value()?,
                        EventField::Data => {
                            let Data { old, new } = map.next_value()?;
                            (event.old, event.new) = (old, new);
                        }
                        EventField::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(event)
            }
        }
        deserializer.deserialize_map(Objects)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Objects;
        impl<'de> Visitor<'de> for Objects {
            type Value = Data;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Hasura event's data object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
                let mut data = Data::default();
                while let Some(field) = map.next_key()? {
                    match field {
                        DataField::Old => data.old = map.next_value()?,
                        DataField::New => data.new = map.next_value()?,
                        DataField::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(data)
            }
        }
        deserializer.deserialize_map(Objects)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    /// The event both readers make of `body`, or `None` where this one leaves it to the tree.
    fn both(body: &str) -> Option<IncomingEvent> {
        let direct = read(body.as_bytes());
        let tree = serde_json::from_str::<Value>(body).map_err(|_| ()).and_then(|v| event::parse(v).map_err(|_| ()));
        if let Some(direct) = &direct {
            let tree = tree.as_ref().unwrap_or_else(|_| panic!("the tree refused what was read directly: {body}"));
            // A body without created_at is stamped now, by each reader on its own.
            let stamped = |e: &IncomingEvent| (e.id.clone(), e.name.clone(), e.document["data"].clone());
            if body.contains("created_at\": \"") {
                assert_eq!(direct, tree, "{body}");
            } else {
                assert_eq!(stamped(direct), stamped(tree), "{body}");
            }
        }
        direct
    }

    /// The envelope of `event::tests`' payload around `event`.
    fn payload(event: Value) -> Value {
        let mut body = event::tests::hasura_update();
        body["event"] = event;
        body
    }

    #[test]
    fn a_hasura_payload_is_read_into_the_event_the_tree_makes() {
        let update = payload(json!({
            "session_variables": {"x-hasura-role": "admin"}, "op": "UPDATE",
            "data": {"old": {"id": 7, "status": "ON_TIME"}, "new": {"id": 7, "status": "DELAYED", "passengers": [{"phone": "+4915112345678"}]}},
            "trace_context": {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}
        }));
        let event = both(&update.to_string()).expect("read directly");
        assert_eq!(event.name, "service_leg_status");
        assert_eq!(event::lookup(&event.document, "data.new.passengers[0].phone"), Some(&json!("+4915112345678")));
        assert_eq!(event::lookup(&event.document, "data.table.name"), Some(&json!("service_legs")));
        // An insert has no old row, a delete no new one; unknown keys are skipped.
        let insert = payload(json!({"op": "INSERT", "data": {"old": null, "new": {"id": 8}}, "extra": [1, {"a": 2}]}));
        assert_eq!(both(&insert.to_string()).unwrap().document["data"]["old"], Value::Null);
        let bare = payload(json!({}));
        assert_eq!(both(&bare.to_string()).unwrap().document["data"]["op"], Value::Null);
        // Pretty-printed, with escapes in keys and values, a numeric id, no created_at.
        let mut varied = payload(json!({"op": "UPDATE", "data": {"new": {"name": "Zoë \"Z\""}}}));
        varied["id"] = json!(42);
        varied.as_object_mut().unwrap().remove("created_at");
        let event = both(&serde_json::to_string_pretty(&varied).unwrap()).unwrap();
        assert_eq!((event.id.as_str(), &event.document["data"]["new"]["name"]), ("42", &json!("Zoë \"Z\"")));
        let escaped =
            r#"{"id": "e-1", "trigger": {"name": "t"}, "event": {"\u006fp": "DELETE", "data": {"old": {"id": 1}}}}"#;
        assert_eq!(both(escaped).unwrap().document["data"]["op"], "DELETE");
    }

    #[test]
    fn what_it_does_not_read_is_left_to_the_tree_and_its_errors() {
        let good = payload(json!({"op": "UPDATE", "data": {"new": {"id": 1}}}));
        let with = |key: &str, value: Value| {
            let mut body = good.clone();
            body[key] = value;
            body.to_string()
        };
        let refused = [
            with("id", json!("")),
            with("id", Value::Null),
            with("trigger", json!({"name": ""})),
            with("created_at", json!("yesterday")),
            with("event", json!("booking.confirmed")),
            with("event", json!([1, 2])),
            with("event", json!({"data": [1]})),
            json!([good.clone()]).to_string(),
            r#"{"id": "1", "id": "2", "trigger": {"name": "t"}, "event": {}}"#.to_owned(),
            good.to_string().replace("UPDATE", "UP\\u0000DATE"),
            "{\"id\": \"1\", ".to_owned(),
        ];
        for body in refused {
            assert!(both(&body).is_none(), "{body}");
        }
        // A domain event or a cron trigger is not a Hasura event payload.
        assert!(both(r#"{"event": "booking.confirmed", "id": "e-1", "data": {}}"#).is_none());
        assert!(both(r#"{"id": "c-1", "name": "digest", "scheduled_time": "2026-11-22T14:00:00Z"}"#).is_none());
    }
}
