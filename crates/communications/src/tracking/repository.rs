//! SQL of delivery tracking: webhook envelopes, and messages found by the provider's id.
//!
//! A *tenant scope* is the set of tenants an envelope may concern; empty means any tenant (the
//! platform's own Meta app and SNS topics, where the message itself tells whose it is).

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::messages::model::{Channel, Lane, MessageStatus};
use crate::messages::repository::{MessageRow, NewEvent, lock};

/// Stores a verified envelope as received; `false` when the provider's id for it is on record
/// already (a redelivery).
#[allow(clippy::too_many_arguments)]
pub async fn insert_envelope(
    db: impl PgExecutor<'_>,
    id: Uuid,
    tenant: Option<Uuid>,
    provider: &str,
    kind: &str,
    provider_id: Option<&str>,
    body: &str,
    outcome: &str,
) -> Result<bool, ApiError> {
    let inserted = sqlx::query!(
        r#"INSERT INTO communications.webhook_envelopes (id, tenant_id, provider, kind, provider_id, body, outcome)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"#,
        id,
        tenant,
        provider,
        kind,
        provider_id,
        body,
        outcome,
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// What an envelope that matched no message keeps, to be applied again at `retry_at`.
#[derive(Debug)]
pub struct Pending<'a> {
    pub events: Value,
    pub scope: &'a [Uuid],
    pub correlation: Option<Uuid>,
    pub retry_at: DateTime<Utc>,
}

/// Records what became of an envelope; `pending` keeps an unmatched one for another try, and
/// `None` forgets whatever it kept.
pub async fn settle_envelope(
    db: impl PgExecutor<'_>,
    id: Uuid,
    outcome: &str,
    tenant: Option<Uuid>,
    pending: Option<Pending<'_>>,
) -> Result<(), ApiError> {
    let (events, scope, correlation, retry_at) = match pending {
        Some(p) => (Some(p.events), Some(p.scope), p.correlation, Some(p.retry_at)),
        None => (None, None, None, None),
    };
    sqlx::query!(
        r#"UPDATE communications.webhook_envelopes
           SET outcome = $2, tenant_id = COALESCE($3, tenant_id), events = $4, tenant_scope = $5,
               correlation_id = $6, retry_at = $7
           WHERE id = $1"#,
        id,
        outcome,
        tenant,
        events,
        scope as Option<&[Uuid]>,
        correlation,
        retry_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// An unmatched envelope due for another try.
#[derive(Debug)]
pub struct DueEnvelope {
    pub id: Uuid,
    pub provider: String,
    pub body: String,
    pub events: Option<Value>,
    pub tenant_scope: Vec<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub attempts: i32,
    pub received_at: DateTime<Utc>,
}

/// Locks up to `limit` unmatched envelopes whose retry is due; other processes skip them.
pub async fn lock_due_envelopes(db: &mut PgConnection, limit: i64) -> Result<Vec<DueEnvelope>, ApiError> {
    Ok(sqlx::query_as!(
        DueEnvelope,
        r#"SELECT id, provider, body, events, COALESCE(tenant_scope, '{}') AS "tenant_scope!", correlation_id,
                  attempts, received_at
           FROM communications.webhook_envelopes
           WHERE outcome = 'unmatched' AND retry_at <= now()
           ORDER BY retry_at LIMIT $1
           FOR UPDATE SKIP LOCKED"#,
        limit,
    )
    .fetch_all(db)
    .await?)
}

/// Another try found no message yet: the next one at `retry_at`.
pub async fn retry_envelope_at(db: impl PgExecutor<'_>, id: Uuid, retry_at: DateTime<Utc>) -> Result<(), ApiError> {
    sqlx::query!(
        "UPDATE communications.webhook_envelopes SET attempts = attempts + 1, retry_at = $2 WHERE id = $1",
        id,
        retry_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The message a provider id belongs to, locked, if it belongs to a tenant of `scope`.
pub async fn lock_by_provider_id(
    db: &mut PgConnection,
    provider: &str,
    provider_message_id: &str,
    scope: &[Uuid],
) -> Result<Option<MessageRow>, ApiError> {
    Ok(sqlx::query_as!(
        MessageRow,
        r#"SELECT id, tenant_id, contact_id, conversation_id, channel AS "channel: Channel", fallback, recipient, content,
                  status AS "status: MessageStatus", status_reason, lane AS "lane: Lane", channel_account_id, provider,
                  provider_message_id, attempts, scheduled_at, metadata, supersedes, superseded_by, created_at,
                  updated_at, sent_at, delivered_at, read_at, failed_at
           FROM communications.messages
           WHERE provider = $1 AND provider_message_id = $2 AND (cardinality($3::uuid[]) = 0 OR tenant_id = ANY($3))
           FOR UPDATE"#,
        provider,
        provider_message_id,
        scope,
    )
    .fetch_optional(db)
    .await?)
}

/// Records the provider id of a message whose send outcome is unknown (or not recorded yet), from
/// a callback that carried our correlation id; returns the message, locked.
pub async fn adopt_provider_id(
    db: &mut PgConnection,
    id: Uuid,
    scope: &[Uuid],
    provider: &str,
    provider_message_id: &str,
) -> Result<Option<MessageRow>, ApiError> {
    let adopted = sqlx::query!(
        r#"UPDATE communications.messages SET provider = $3, provider_message_id = $4, updated_at = now()
           WHERE id = $1 AND (cardinality($2::uuid[]) = 0 OR tenant_id = ANY($2)) AND provider_message_id IS NULL
             AND status IN ('sending', 'unknown')
           RETURNING tenant_id"#,
        id,
        scope,
        provider,
        provider_message_id,
    )
    .fetch_optional(&mut *db)
    .await?;
    match adopted {
        Some(row) => lock(db, TenantId(row.tenant_id), id).await.map(Some),
        None => Ok(None),
    }
}

/// Appends a provider event unless the same one is on record; returns whether it was new.
pub async fn record_provider_event(
    db: impl PgExecutor<'_>,
    event: NewEvent<'_>,
    dedupe_key: &str,
) -> Result<bool, ApiError> {
    let inserted = sqlx::query!(
        r#"INSERT INTO communications.message_events
               (id, tenant_id, message_id, status, reason, source, payload, occurred_at, dedupe_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()), $9)
           ON CONFLICT (message_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"#,
        Uuid::now_v7(),
        event.tenant_id,
        event.message_id,
        event.status.as_str(),
        event.reason,
        event.source.as_str(),
        event.payload,
        event.occurred_at,
        dedupe_key,
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Moves a message forward on delivery (the caller decided it is a forward move). The status
/// reason describes the new status: the provider's error for `failed`, nothing otherwise (so an
/// `unknown` message settled by a callback no longer says its outcome is unknown).
pub async fn advance(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: MessageStatus,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query!(
        r#"UPDATE communications.messages SET
               status = $2,
               status_reason = $3,
               sent_at = CASE WHEN $2 IN ('sent', 'delivered', 'read') THEN COALESCE(sent_at, $4) ELSE sent_at END,
               delivered_at = CASE WHEN $2 IN ('delivered', 'read') THEN COALESCE(delivered_at, $4) ELSE delivered_at END,
               read_at = CASE WHEN $2 = 'read' THEN COALESCE(read_at, $4) ELSE read_at END,
               failed_at = CASE WHEN $2 = 'failed' THEN COALESCE(failed_at, $4) ELSE failed_at END,
               updated_at = now()
           WHERE id = $1"#,
        id,
        status.as_str(),
        reason,
        at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The tenant whose WhatsApp channel uses this Meta phone number id.
pub async fn tenant_of_meta_number(db: impl PgExecutor<'_>, phone_number_id: &str) -> Result<Option<Uuid>, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT tenant_id AS "tenant_id!" FROM communications.provider_configs
           WHERE provider = 'meta' AND tenant_id IS NOT NULL AND settings->>'phone_number_id' = $1
           ORDER BY created_at DESC LIMIT 1"#,
        phone_number_id,
    )
    .fetch_optional(db)
    .await?)
}

/// The tenant whose SES configuration sends from the domain of `recipient`, among `scope` (any
/// tenant when empty); the newest configuration wins.
pub async fn tenant_of_mail_domain(
    db: impl PgExecutor<'_>,
    recipient: &str,
    scope: &[Uuid],
) -> Result<Option<Uuid>, ApiError> {
    let domain = recipient.trim().rsplit_once('@').map(|(_, domain)| domain.trim_end_matches('>').to_lowercase());
    let Some(domain) = domain else { return Ok(None) };
    Ok(sqlx::query_scalar!(
        r#"SELECT tenant_id AS "tenant_id!" FROM communications.provider_configs
           WHERE provider = 'ses' AND tenant_id IS NOT NULL AND lower(settings->>'domain') = $1
             AND (cardinality($2::uuid[]) = 0 OR tenant_id = ANY($2))
           ORDER BY created_at DESC LIMIT 1"#,
        domain,
        scope,
    )
    .fetch_optional(db)
    .await?)
}
