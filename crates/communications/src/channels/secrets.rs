//! Sealing provider secrets: each field is its own envelope, bound to its tenant, its channel
//! account, its provider configuration row and its field name, so a ciphertext copied anywhere
//! else does not open.

use std::collections::BTreeMap;

use kernel::crypto::{Envelope, Keyring, associated_data, mask};
use kernel::error::ApiError;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Where a secret belongs. Platform defaults have neither tenant nor account.
#[derive(Debug, Clone, Copy)]
pub struct SecretOwner {
    pub tenant_id: Option<Uuid>,
    pub channel_account_id: Option<Uuid>,
    pub provider_config_id: Uuid,
}

impl From<&super::repository::ProviderRow> for SecretOwner {
    fn from(row: &super::repository::ProviderRow) -> Self {
        Self { tenant_id: row.tenant_id, channel_account_id: row.channel_account_id, provider_config_id: row.id }
    }
}

pub fn aad(owner: &SecretOwner, field: &str) -> Vec<u8> {
    let tenant = owner.tenant_id.map_or_else(|| "platform".to_owned(), |id| id.to_string());
    let account = owner.channel_account_id.map_or_else(|| "none".to_owned(), |id| id.to_string());
    associated_data(&tenant, &format!("channel_account:{account}/provider_config:{}", owner.provider_config_id), field)
}

/// Seals every secret field; returns (envelopes, masks) as stored.
pub fn seal_all(keyring: &Keyring, owner: &SecretOwner, secrets: &BTreeMap<String, String>) -> (Value, Value) {
    let mut envelopes = Map::new();
    let mut masks = Map::new();
    for (field, plaintext) in secrets {
        let envelope = keyring.seal(plaintext.as_bytes(), &aad(owner, field));
        envelopes.insert(field.clone(), serde_json::to_value(envelope).unwrap_or_default());
        masks.insert(field.clone(), Value::String(mask(plaintext)));
    }
    (Value::Object(envelopes), Value::Object(masks))
}

/// Opens every secret field of a stored row.
pub fn open_all(keyring: &Keyring, owner: &SecretOwner, stored: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(fields) = stored.as_object() else { return Ok(BTreeMap::new()) };
    fields
        .iter()
        .map(|(field, value)| {
            let envelope: Envelope = serde_json::from_value(value.clone()).map_err(ApiError::internal)?;
            let plaintext = keyring.open(&envelope, &aad(owner, field)).map_err(ApiError::internal)?;
            let text = String::from_utf8(plaintext).map_err(ApiError::internal)?;
            Ok((field.clone(), text))
        })
        .collect()
}

/// Re-seals envelopes made under an old key; `None` when all are current.
pub fn reseal_stale(keyring: &Keyring, owner: &SecretOwner, stored: &Value) -> Result<Option<Value>, ApiError> {
    let Some(fields) = stored.as_object() else { return Ok(None) };
    let mut changed = false;
    let mut resealed = Map::new();
    for (field, value) in fields {
        let envelope: Envelope = serde_json::from_value(value.clone()).map_err(ApiError::internal)?;
        let fresh = if keyring.is_stale(&envelope) {
            changed = true;
            keyring.reseal(&envelope, &aad(owner, field)).map_err(ApiError::internal)?
        } else {
            envelope
        };
        resealed.insert(field.clone(), serde_json::to_value(fresh).map_err(ApiError::internal)?);
    }
    Ok(changed.then_some(Value::Object(resealed)))
}
