//! `Idempotency-Key`s of the send API, claimed many at a time inside a shared acceptance
//! transaction.
//!
//! A key row is inserted before its message is stored, in the same transaction, so a concurrent
//! request with the same key waits on the primary key until the first one commits, then finds
//! its response. The row is inserted with the response the request will get if its message is
//! stored (an accepted message's answer follows from its draft), so a key costs one row write;
//! an answer that turns out otherwise is written over it, and a refused request's key is
//! deleted, in the same transaction. Keys are inserted in one order (tenant, key) so that two
//! batches sharing keys queue behind each other instead of deadlocking.

use std::collections::HashMap;

use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A key as a request presented it, with the hash of the request's body.
#[derive(Debug, Clone)]
pub(crate) struct RequestKey {
    pub key: String,
    pub hash: Vec<u8>,
}

/// What an earlier request left under a key.
#[derive(Debug, Clone)]
pub(crate) struct StoredKey {
    pub hash: Vec<u8>,
    pub response: Option<(u16, Value)>,
}

impl StoredKey {
    /// The first response again for the same body; a 422 on the key for another one.
    pub fn replay(&self, hash: &[u8]) -> Result<(u16, Value), ApiError> {
        if self.hash != hash {
            return Err(ApiError::validation("Idempotency-Key", "this key was used with a different request body"));
        }
        self.response.clone().ok_or_else(|| ApiError::internal("an idempotency key without its response"))
    }
}

/// Claims `keys` (unique within the call), each with the response its request expects:
/// inserts those never seen, waiting for concurrent transactions holding any of them, and
/// answers what the others already hold.
pub(crate) async fn claim(
    tx: &mut PgConnection,
    keys: &[(TenantId, &RequestKey, u16, &Value)],
) -> Result<HashMap<(Uuid, String), StoredKey>, ApiError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sorted: Vec<&(TenantId, &RequestKey, u16, &Value)> = keys.iter().collect();
    sorted.sort_by(|a, b| (a.0.0, &a.1.key).cmp(&(b.0.0, &b.1.key)));
    let tenants: Vec<Uuid> = sorted.iter().map(|(tenant, ..)| tenant.0).collect();
    let names: Vec<String> = sorted.iter().map(|(_, key, ..)| key.key.clone()).collect();
    let hashes: Vec<Vec<u8>> = sorted.iter().map(|(_, key, ..)| key.hash.clone()).collect();
    let statuses: Vec<i16> = sorted.iter().map(|(_, _, status, _)| *status as i16).collect();
    let bodies: Vec<Value> = sorted.iter().map(|(.., body)| (*body).clone()).collect();
    let inserted = sqlx::query!(
        r#"INSERT INTO communications.idempotency_keys (tenant_id, key, request_hash, response_status, response_body)
           SELECT tenant_id, key, hash, status, body
           FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::int2[], $5::jsonb[]) WITH ORDINALITY
                AS k(tenant_id, key, hash, status, body, n)
           ORDER BY n
           ON CONFLICT DO NOTHING
           RETURNING tenant_id, key"#,
        &tenants,
        &names,
        &hashes,
        &statuses,
        &bodies,
    )
    .fetch_all(&mut *tx)
    .await?;
    if inserted.len() == keys.len() {
        return Ok(HashMap::new());
    }
    let new: std::collections::HashSet<(Uuid, String)> = inserted.into_iter().map(|r| (r.tenant_id, r.key)).collect();
    let (tenants, names): (Vec<Uuid>, Vec<String>) =
        tenants.into_iter().zip(names).filter(|(tenant, name)| !new.contains(&(*tenant, name.clone()))).unzip();
    stored(&mut *tx, &tenants, &names).await
}

/// What earlier requests left under these keys (absent keys are left out).
pub(crate) async fn stored(
    db: impl PgExecutor<'_>,
    tenants: &[Uuid],
    keys: &[String],
) -> Result<HashMap<(Uuid, String), StoredKey>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT i.tenant_id, i.key, i.request_hash, i.response_status, i.response_body
           FROM unnest($1::uuid[], $2::text[]) AS k(tenant_id, key)
           JOIN communications.idempotency_keys i ON i.tenant_id = k.tenant_id AND i.key = k.key"#,
        tenants,
        keys,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let response = row.response_status.zip(row.response_body).map(|(status, body)| (status as u16, body));
            ((row.tenant_id, row.key), StoredKey { hash: row.request_hash, response })
        })
        .collect())
}

/// Stores each claimed key's response where it is not the one it was claimed with.
pub(crate) async fn complete(tx: &mut PgConnection, done: &[(TenantId, &str, u16, Value)]) -> Result<(), ApiError> {
    if done.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = done.iter().map(|(tenant, ..)| tenant.0).collect();
    let keys: Vec<&str> = done.iter().map(|(_, key, ..)| *key).collect();
    let statuses: Vec<i16> = done.iter().map(|(_, _, status, _)| *status as i16).collect();
    let bodies: Vec<Value> = done.iter().map(|(.., body)| body.clone()).collect();
    sqlx::query!(
        r#"UPDATE communications.idempotency_keys i SET response_status = d.status, response_body = d.body
           FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::jsonb[]) AS d(tenant_id, key, status, body)
           WHERE i.tenant_id = d.tenant_id AND i.key = d.key"#,
        &tenants,
        &keys as &[&str],
        &statuses,
        &bodies,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Gives up claimed keys whose request was refused: like a request rolled back, it leaves no
/// trace, and the same key may be used again.
pub(crate) async fn release(tx: &mut PgConnection, refused: &[(TenantId, &str)]) -> Result<(), ApiError> {
    if refused.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = refused.iter().map(|(tenant, _)| tenant.0).collect();
    let keys: Vec<&str> = refused.iter().map(|(_, key)| *key).collect();
    sqlx::query!(
        r#"DELETE FROM communications.idempotency_keys i USING unnest($1::uuid[], $2::text[]) AS d(tenant_id, key)
           WHERE i.tenant_id = d.tenant_id AND i.key = d.key"#,
        &tenants,
        &keys as &[&str],
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
