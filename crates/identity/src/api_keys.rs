//! Operator API keys: `sbk_` + 64 hex characters (256 random bits), shown once at creation.
//! Only the SHA-256 digest is stored; the first 12 characters stay visible as the key's prefix.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::{ApiKeyId, TenantId};
use kernel::pagination::PageRequest;
use serde::Serialize;
use sqlx::PgExecutor;

use crate::secrets::{digest, random_token};

pub const KEY_PREFIX: &str = "sbk_";
const VISIBLE_PREFIX_LEN: usize = 12;
/// `last_used_at` is refreshed at most this often, so authentication stays a read.
const LAST_USED_RESOLUTION_SECS: f64 = 60.0;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key just made: the only moment its secret exists outside the caller's hands.
#[derive(Debug)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: String,
}

pub fn parse_name(raw: Option<&str>) -> Result<String, ApiError> {
    let name = raw.unwrap_or_default().trim();
    if name.chars().count() > 200 {
        return Err(ApiError::validation("name", "must be at most 200 characters"));
    }
    Ok(name.to_owned())
}

pub async fn issue(db: impl PgExecutor<'_>, tenant_id: TenantId, name: &str) -> Result<IssuedKey, ApiError> {
    let secret = format!("{KEY_PREFIX}{}", random_token());
    let prefix = &secret[..VISIBLE_PREFIX_LEN];
    let key = sqlx::query_as!(
        ApiKey,
        r#"INSERT INTO identity.api_keys (id, tenant_id, name, prefix, key_hash)
           VALUES ($1, $2, $3, $4, $5)
           RETURNING id AS "id: ApiKeyId", tenant_id AS "tenant_id: TenantId", name, prefix,
                     created_at, last_used_at, revoked_at"#,
        ApiKeyId::new().0,
        tenant_id.0,
        name,
        prefix,
        digest(&secret),
    )
    .fetch_one(db)
    .await?;
    Ok(IssuedKey { key, secret })
}

/// The live keys behind presented secrets, as one statement for a batch of requests (see
/// [`crate::Identity::authenticate_key`]): for each secret, its key and tenant, or `None`.
/// Refreshes `last_used_at` of the stale ones, once per key.
pub async fn authenticate_many(
    pool: &sqlx::PgPool,
    presented: &[String],
) -> Result<Vec<Option<(ApiKeyId, TenantId)>>, ApiError> {
    let digests: Vec<Vec<u8>> = presented.iter().map(|secret| digest(secret)).collect();
    let found = sqlx::query!(
        r#"SELECT key_hash, id AS "id: ApiKeyId", tenant_id AS "tenant_id: TenantId",
                  (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2)) AS "stale!"
           FROM identity.api_keys WHERE key_hash = ANY($1) AND revoked_at IS NULL"#,
        &digests,
        LAST_USED_RESOLUTION_SECS,
    )
    .fetch_all(pool)
    .await?;
    let stale: Vec<uuid::Uuid> = found.iter().filter(|key| key.stale).map(|key| key.id.0).collect();
    if !stale.is_empty() {
        sqlx::query!("UPDATE identity.api_keys SET last_used_at = now() WHERE id = ANY($1)", &stale)
            .execute(pool)
            .await?;
    }
    Ok(digests
        .iter()
        .map(|wanted| found.iter().find(|key| &key.key_hash == wanted).map(|key| (key.id, key.tenant_id)))
        .collect())
}

pub async fn list(db: impl PgExecutor<'_>, tenant_id: TenantId, page: PageRequest) -> Result<Vec<ApiKey>, ApiError> {
    Ok(sqlx::query_as!(
        ApiKey,
        r#"SELECT id AS "id: ApiKeyId", tenant_id AS "tenant_id: TenantId", name, prefix,
                  created_at, last_used_at, revoked_at
           FROM identity.api_keys
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           ORDER BY id LIMIT $3"#,
        tenant_id.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, tenant_id: TenantId, id: ApiKeyId) -> Result<ApiKey, ApiError> {
    sqlx::query_as!(
        ApiKey,
        r#"SELECT id AS "id: ApiKeyId", tenant_id AS "tenant_id: TenantId", name, prefix,
                  created_at, last_used_at, revoked_at
           FROM identity.api_keys WHERE tenant_id = $1 AND id = $2"#,
        tenant_id.0,
        id.0,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("api key"))
}

/// Revokes a key; revoking a revoked key is a no-op that returns it unchanged.
pub async fn revoke(db: impl PgExecutor<'_>, tenant_id: TenantId, id: ApiKeyId) -> Result<ApiKey, ApiError> {
    sqlx::query_as!(
        ApiKey,
        r#"UPDATE identity.api_keys SET revoked_at = COALESCE(revoked_at, now())
           WHERE tenant_id = $1 AND id = $2
           RETURNING id AS "id: ApiKeyId", tenant_id AS "tenant_id: TenantId", name, prefix,
                     created_at, last_used_at, revoked_at"#,
        tenant_id.0,
        id.0,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("api key"))
}
