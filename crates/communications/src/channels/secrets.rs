//! Sealing provider secrets: each field is its own envelope, bound to its tenant, its provider
//! configuration row and its field name, so a ciphertext copied anywhere else does not open.

use std::collections::BTreeMap;

use kernel::crypto::{Envelope, Keyring, associated_data, mask};
use kernel::error::ApiError;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The owner part of the associated data: the tenant, or `platform` for platform defaults.
fn tenant_part(tenant_id: Option<Uuid>) -> String {
    tenant_id.map_or_else(|| "platform".to_owned(), |id| id.to_string())
}

pub fn aad(tenant_id: Option<Uuid>, provider_config_id: Uuid, field: &str) -> Vec<u8> {
    associated_data(&tenant_part(tenant_id), &format!("provider_config:{provider_config_id}"), field)
}

/// Seals every secret field; returns (envelopes, masks) as stored.
pub fn seal_all(
    keyring: &Keyring,
    tenant_id: Option<Uuid>,
    provider_config_id: Uuid,
    secrets: &BTreeMap<String, String>,
) -> (Value, Value) {
    let mut envelopes = Map::new();
    let mut masks = Map::new();
    for (field, plaintext) in secrets {
        let envelope = keyring.seal(plaintext.as_bytes(), &aad(tenant_id, provider_config_id, field));
        envelopes.insert(field.clone(), serde_json::to_value(envelope).unwrap_or_default());
        masks.insert(field.clone(), Value::String(mask(plaintext)));
    }
    (Value::Object(envelopes), Value::Object(masks))
}

/// Opens every secret field of a stored row.
pub fn open_all(
    keyring: &Keyring,
    tenant_id: Option<Uuid>,
    provider_config_id: Uuid,
    stored: &Value,
) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(fields) = stored.as_object() else { return Ok(BTreeMap::new()) };
    fields
        .iter()
        .map(|(field, value)| {
            let envelope: Envelope = serde_json::from_value(value.clone()).map_err(ApiError::internal)?;
            let plaintext =
                keyring.open(&envelope, &aad(tenant_id, provider_config_id, field)).map_err(ApiError::internal)?;
            let text = String::from_utf8(plaintext).map_err(ApiError::internal)?;
            Ok((field.clone(), text))
        })
        .collect()
}

/// Re-seals envelopes made under an old key; `None` when all are current.
pub fn reseal_stale(
    keyring: &Keyring,
    tenant_id: Option<Uuid>,
    provider_config_id: Uuid,
    stored: &Value,
) -> Result<Option<Value>, ApiError> {
    let Some(fields) = stored.as_object() else { return Ok(None) };
    let mut changed = false;
    let mut resealed = Map::new();
    for (field, value) in fields {
        let envelope: Envelope = serde_json::from_value(value.clone()).map_err(ApiError::internal)?;
        let fresh = if keyring.is_stale(&envelope) {
            changed = true;
            keyring.reseal(&envelope, &aad(tenant_id, provider_config_id, field)).map_err(ApiError::internal)?
        } else {
            envelope
        };
        resealed.insert(field.clone(), serde_json::to_value(fresh).map_err(ApiError::internal)?);
    }
    Ok(changed.then_some(Value::Object(resealed)))
}
