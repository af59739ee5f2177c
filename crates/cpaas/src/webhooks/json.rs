//! Defensive accessors over `serde_json::Value`: providers' payloads are navigated field by
//! field so that a missing or oddly typed field degrades to `None` instead of failing the
//! whole webhook (serde structs would reject the entire body for one surprise).

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

/// A string field; numbers are accepted too because providers are not consistent about ids.
pub(crate) fn str_field(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A non-empty string field.
pub(crate) fn non_empty(value: &Value, key: &str) -> Option<String> {
    str_field(value, key).filter(|text| !text.is_empty())
}

/// An array field as a slice (empty when absent or not an array).
pub(crate) fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// An array of strings, skipping non-strings.
pub(crate) fn strings(value: &Value, key: &str) -> Vec<String> {
    array(value, key).iter().filter_map(|item| item.as_str().map(str::to_owned)).collect()
}

/// Unix seconds given as a string (Meta) or a number.
pub(crate) fn unix_seconds(value: &Value, key: &str) -> Option<DateTime<Utc>> {
    let seconds = match value.get(key)? {
        Value::String(text) => text.trim().parse::<i64>().ok()?,
        Value::Number(number) => number.as_i64()?,
        _ => return None,
    };
    Utc.timestamp_opt(seconds, 0).single()
}

/// An RFC 3339 timestamp field (AWS).
pub(crate) fn rfc3339(value: &Value, key: &str) -> Option<DateTime<Utc>> {
    let text = value.get(key)?.as_str()?;
    DateTime::parse_from_rfc3339(text).ok().map(|time| time.with_timezone(&Utc))
}

/// A floating-point field, also accepted as a numeric string.
pub(crate) fn float(value: &Value, key: &str) -> Option<f64> {
    match value.get(key)? {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
    .filter(|number: &f64| number.is_finite())
}

/// A short, bounded rendering of a value for `Unknown` descriptions (never the whole body).
pub(crate) fn describe(value: &Value) -> String {
    const LIMIT: usize = 300;
    let text = value.to_string();
    if text.len() <= LIMIT {
        return text;
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
