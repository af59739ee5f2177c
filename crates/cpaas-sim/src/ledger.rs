//! What the simulator received, and what it remembers about the messages it accepted.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One provider request as the sim received it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: u64,
    /// `"meta"`, `"ses"`, `"sns"` or `"twilio"`.
    pub provider: String,
    pub operation: String,
    pub method: String,
    pub path: String,
    pub recipient: Option<String>,
    pub provider_message_id: Option<String>,
    /// JSON body as received; form fields as a JSON object (repeated keys become arrays); for SES
    /// raw mail, `Content.Raw.Data` is replaced by the base64-decoded MIME text.
    pub body: serde_json::Value,
    /// `"accepted"`, `"accepted:<later failure>"`, `"dropped:opted_out"`, `"error:<code>"` or `"timeout"`.
    pub outcome: String,
    pub received_at: DateTime<Utc>,
}

/// What a ledger entry is built from; the ledger assigns `seq` and `received_at`.
#[derive(Debug)]
pub(crate) struct NewEntry {
    pub provider: &'static str,
    pub operation: &'static str,
    pub method: &'static str,
    pub path: String,
    pub recipient: Option<String>,
    pub provider_message_id: Option<String>,
    pub body: serde_json::Value,
    pub outcome: String,
}

/// What happens to an accepted message later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    Delivered,
    Undeliverable,
    Rejected,
}

/// Provider-specific facts a callback needs about an accepted message.
#[derive(Clone, Debug)]
pub(crate) enum SentMessage {
    Meta {
        phone_number_id: String,
        to: String,
        biz_opaque_callback_data: Option<String>,
        fate: Fate,
    },
    Ses {
        from: String,
        to: Vec<String>,
        subject: String,
        tags: Vec<(String, String)>,
        configuration_set: Option<String>,
        fate: Fate,
    },
    Sns {
        phone_number: String,
    },
    Twilio {
        account_sid: String,
        from: String,
        to: String,
        messaging_service_sid: Option<String>,
        status_callback: Option<String>,
        fate: Fate,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    next_seq: u64,
    entries: Vec<LedgerEntry>,
    messages: HashMap<String, SentMessage>,
}

impl Ledger {
    pub(crate) fn record(&mut self, entry: NewEntry) -> u64 {
        self.next_seq += 1;
        self.entries.push(LedgerEntry {
            seq: self.next_seq,
            provider: entry.provider.to_owned(),
            operation: entry.operation.to_owned(),
            method: entry.method.to_owned(),
            path: entry.path,
            recipient: entry.recipient,
            provider_message_id: entry.provider_message_id,
            body: entry.body,
            outcome: entry.outcome,
            received_at: Utc::now(),
        });
        self.next_seq
    }

    pub(crate) fn remember_message(&mut self, id: &str, message: SentMessage) {
        self.messages.insert(id.to_owned(), message);
    }

    pub(crate) fn message(&self, id: &str) -> Option<SentMessage> {
        self.messages.get(id).cloned()
    }

    pub(crate) fn entries(&self) -> Vec<LedgerEntry> {
        self.entries.clone()
    }

    pub(crate) fn clear_entries(&mut self) {
        self.entries.clear();
    }
}

/// Form fields as a JSON object; a repeated key (Twilio `MediaUrl`) becomes an array.
pub(crate) fn form_to_json(fields: &[(String, String)]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (key, value) in fields {
        let value = serde_json::Value::String(value.clone());
        match map.get_mut(key) {
            None => {
                map.insert(key.clone(), value);
            }
            Some(serde_json::Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = serde_json::Value::Array(vec![first, value]);
            }
        }
    }
    serde_json::Value::Object(map)
}
