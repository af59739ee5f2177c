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

/// An envelope as the bulk path stores it first (`tracking::bulk`), as received.
#[derive(Debug)]
pub struct NewEnvelope<'a> {
    pub id: Uuid,
    pub tenant: Option<Uuid>,
    pub provider: &'a str,
    pub kind: &'a str,
    pub provider_id: Option<&'a str>,
    pub body: &'a str,
}

/// Stores many envelopes as received in one statement; returns the ids of those stored (the
/// others' provider ids are on record already: redeliveries, or copies within the batch).
pub async fn insert_envelopes(db: impl PgExecutor<'_>, envelopes: &[NewEnvelope<'_>]) -> Result<Vec<Uuid>, ApiError> {
    let ids: Vec<Uuid> = envelopes.iter().map(|e| e.id).collect();
    let tenants: Vec<Option<Uuid>> = envelopes.iter().map(|e| e.tenant).collect();
    let providers: Vec<&str> = envelopes.iter().map(|e| e.provider).collect();
    let kinds: Vec<&str> = envelopes.iter().map(|e| e.kind).collect();
    let provider_ids: Vec<Option<&str>> = envelopes.iter().map(|e| e.provider_id).collect();
    let bodies: Vec<&str> = envelopes.iter().map(|e| e.body).collect();
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO communications.webhook_envelopes (id, tenant_id, provider, kind, provider_id, body, outcome)
           SELECT id, tenant_id, provider, kind, provider_id, body, 'received'
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
                AS e(id, tenant_id, provider, kind, provider_id, body)
           ON CONFLICT DO NOTHING
           RETURNING id"#,
        &ids,
        &tenants as &[Option<Uuid>],
        &providers as &[&str],
        &kinds as &[&str],
        &provider_ids as &[Option<&str>],
        &bodies as &[&str],
    )
    .fetch_all(db)
    .await?)
}

/// The messages these (provider, provider id) pairs belong to, locked in id order (so that
/// concurrent batches lock alike), whatever their tenant: the caller checks each scope.
pub async fn lock_by_provider_ids(
    db: &mut PgConnection,
    providers: &[&str],
    provider_message_ids: &[&str],
) -> Result<Vec<MessageRow>, ApiError> {
    Ok(sqlx::query_as!(
        MessageRow,
        r#"SELECT id, tenant_id, contact_id, conversation_id, channel AS "channel: Channel", fallback, recipient, content,
                  status AS "status: MessageStatus", status_reason, lane AS "lane: Lane", channel_account_id, provider,
                  provider_message_id, attempts, scheduled_at, metadata, supersedes, superseded_by, created_at,
                  updated_at, sent_at, delivered_at, read_at, failed_at
           FROM communications.messages
           WHERE (provider, provider_message_id) IN
                 (SELECT * FROM unnest($1::text[], $2::text[]))
           ORDER BY id
           FOR UPDATE"#,
        providers as &[&str],
        provider_message_ids as &[&str],
    )
    .fetch_all(db)
    .await?)
}

/// A provider event for the trail, with its dedupe key, as the bulk path writes it.
#[derive(Debug)]
pub struct KeyedEvent {
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    pub status: MessageStatus,
    pub reason: String,
    pub payload: Value,
    pub occurred_at: DateTime<Utc>,
    pub dedupe_key: String,
}

/// Appends provider events in one statement, each unless the same one is on record; returns
/// the (message, dedupe key) of those that were new.
pub async fn record_provider_events(
    db: impl PgExecutor<'_>,
    events: &[KeyedEvent],
) -> Result<Vec<(Uuid, String)>, ApiError> {
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let messages: Vec<Uuid> = events.iter().map(|e| e.message_id).collect();
    let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    let payloads: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.dedupe_key.as_str()).collect();
    let recorded = sqlx::query!(
        r#"INSERT INTO communications.message_events
               (id, tenant_id, message_id, status, reason, source, payload, occurred_at, dedupe_key)
           SELECT id, tenant_id, message_id, status, reason, 'provider', payload, occurred_at, dedupe_key
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[], $7::timestamptz[],
                       $8::text[])
                AS e(id, tenant_id, message_id, status, reason, payload, occurred_at, dedupe_key)
           ON CONFLICT (message_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
           RETURNING message_id, dedupe_key AS "dedupe_key!""#,
        &ids,
        &tenants,
        &messages,
        &statuses as &[&str],
        &reasons as &[&str],
        &payloads as &[&Value],
        &times,
        &keys as &[&str],
    )
    .fetch_all(db)
    .await?;
    Ok(recorded.into_iter().map(|row| (row.message_id, row.dedupe_key)).collect())
}

/// A message's forward move on delivery, as the bulk path writes it: its new status and when it
/// first reached each stage in this batch (`None`: not in this batch).
#[derive(Debug)]
pub struct Advance {
    pub id: Uuid,
    pub status: MessageStatus,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
}

/// Moves messages forward on delivery, as [`advance`] does one by one (never to `failed`: the
/// bulk path leaves failures to the careful one).
pub async fn advance_many(db: impl PgExecutor<'_>, advances: &[Advance]) -> Result<(), ApiError> {
    let ids: Vec<Uuid> = advances.iter().map(|a| a.id).collect();
    let statuses: Vec<&str> = advances.iter().map(|a| a.status.as_str()).collect();
    let sent: Vec<Option<DateTime<Utc>>> = advances.iter().map(|a| a.sent_at).collect();
    let delivered: Vec<Option<DateTime<Utc>>> = advances.iter().map(|a| a.delivered_at).collect();
    let read: Vec<Option<DateTime<Utc>>> = advances.iter().map(|a| a.read_at).collect();
    sqlx::query!(
        r#"UPDATE communications.messages m SET
               status = a.status,
               status_reason = NULL,
               sent_at = COALESCE(m.sent_at, a.sent_at),
               delivered_at = COALESCE(m.delivered_at, a.delivered_at),
               read_at = COALESCE(m.read_at, a.read_at),
               updated_at = now()
           FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[])
                AS a(id, status, sent_at, delivered_at, read_at)
           WHERE m.id = a.id"#,
        &ids,
        &statuses as &[&str],
        &sent as &[Option<DateTime<Utc>>],
        &delivered as &[Option<DateTime<Utc>>],
        &read as &[Option<DateTime<Utc>>],
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records what became of many envelopes (none left to match) in one statement.
pub async fn settle_envelopes(db: impl PgExecutor<'_>, settled: &[(Uuid, &str, Option<Uuid>)]) -> Result<(), ApiError> {
    let ids: Vec<Uuid> = settled.iter().map(|(id, _, _)| *id).collect();
    let outcomes: Vec<&str> = settled.iter().map(|(_, outcome, _)| *outcome).collect();
    let tenants: Vec<Option<Uuid>> = settled.iter().map(|(_, _, tenant)| *tenant).collect();
    sqlx::query!(
        r#"UPDATE communications.webhook_envelopes e
           SET outcome = s.outcome, tenant_id = COALESCE(s.tenant_id, e.tenant_id)
           FROM unnest($1::uuid[], $2::text[], $3::uuid[]) AS s(id, outcome, tenant_id)
           WHERE e.id = s.id"#,
        &ids,
        &outcomes as &[&str],
        &tenants as &[Option<Uuid>],
    )
    .execute(db)
    .await?;
    Ok(())
}
