//! SQL for messages, their events and idempotency keys.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::pagination::PageRequest;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::model::{Channel, EventSource, Lane, MessageStatus};

#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub contact_id: Option<Uuid>,
    pub conversation_id: Option<Uuid>,
    pub channel: Channel,
    pub fallback: Value,
    pub recipient: String,
    pub content: Value,
    pub status: MessageStatus,
    pub status_reason: Option<String>,
    pub lane: Lane,
    pub channel_account_id: Option<Uuid>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub attempts: i32,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub metadata: Value,
    pub supersedes: Option<Uuid>,
    pub superseded_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: Uuid,
    pub status: String,
    pub reason: Option<String>,
    pub source: String,
    pub payload: Option<Value>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub contact_id: Option<Uuid>,
    pub conversation_id: Option<Uuid>,
    pub channel: Channel,
    pub fallback: Value,
    pub recipient: &'a str,
    pub content: Value,
    pub status: MessageStatus,
    pub lane: Lane,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub metadata: Value,
    pub supersedes: Option<Uuid>,
    /// Dispatch attempts already spent (a retry of a message continues its budget).
    pub attempts: i32,
    /// Stored already claimed (`sending`) by this lease with this token: the accepting process
    /// dispatches it itself, without a job (see `dispatch::local`).
    pub claim: Option<(Uuid, Uuid)>,
}

/// Stores a new message with the first entry of its audit trail (its initial status, with
/// `reason`, from `source`).
pub async fn insert(
    db: impl PgExecutor<'_>,
    message: NewMessage<'_>,
    reason: Option<&str>,
    source: EventSource,
) -> Result<(), ApiError> {
    insert_many(db, std::slice::from_ref(&message), &[reason.map(str::to_owned)], source).await
}

/// Stores new messages, each with the first entry of its audit trail (its initial status, with
/// its reason from `reasons`, from `source`), in one statement.
pub async fn insert_many(
    db: impl PgExecutor<'_>,
    messages: &[NewMessage<'_>],
    reasons: &[Option<String>],
    source: EventSource,
) -> Result<(), ApiError> {
    let column = |f: fn(&NewMessage<'_>) -> Value| messages.iter().map(f).collect::<Vec<Value>>();
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let event_ids: Vec<Uuid> = messages.iter().map(|_| Uuid::now_v7()).collect();
    let tenants: Vec<Uuid> = messages.iter().map(|m| m.tenant_id.0).collect();
    let contacts: Vec<Option<Uuid>> = messages.iter().map(|m| m.contact_id).collect();
    let conversations: Vec<Option<Uuid>> = messages.iter().map(|m| m.conversation_id).collect();
    let channels: Vec<&str> = messages.iter().map(|m| m.channel.as_str()).collect();
    let recipients: Vec<&str> = messages.iter().map(|m| m.recipient).collect();
    let statuses: Vec<&str> = messages.iter().map(|m| m.status.as_str()).collect();
    let lanes: Vec<&str> = messages.iter().map(|m| m.lane.as_str()).collect();
    let scheduled: Vec<Option<DateTime<Utc>>> = messages.iter().map(|m| m.scheduled_at).collect();
    let supersedes: Vec<Option<Uuid>> = messages.iter().map(|m| m.supersedes).collect();
    let attempts: Vec<i32> = messages.iter().map(|m| m.attempts).collect();
    let owners: Vec<Option<Uuid>> = messages.iter().map(|m| m.claim.map(|(owner, _)| owner)).collect();
    let claims: Vec<Option<Uuid>> = messages.iter().map(|m| m.claim.map(|(_, claim)| claim)).collect();
    // A message stored claimed was queued first, as far as its trail goes.
    sqlx::query!(
        r#"WITH message AS (
               INSERT INTO communications.messages
                   (id, tenant_id, contact_id, conversation_id, channel, fallback, recipient, content, status, lane,
                    scheduled_at, metadata, supersedes, attempts, claimed_by, claim)
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::jsonb[],
                                    $7::text[], $8::jsonb[], $9::text[], $10::text[], $11::timestamptz[],
                                    $12::jsonb[], $13::uuid[], $17::int4[], $18::uuid[], $19::uuid[])
               RETURNING id, tenant_id, status)
           INSERT INTO communications.message_events (id, tenant_id, message_id, status, reason, source, occurred_at)
           SELECT event.id, message.tenant_id, message.id,
                  CASE WHEN message.status = 'sending' THEN 'queued' ELSE message.status END, event.reason, $16, now()
           FROM message JOIN unnest($1::uuid[], $14::uuid[], $15::text[]) AS event(message_id, id, reason)
                ON event.message_id = message.id"#,
        &ids,
        &tenants,
        &contacts as &[Option<Uuid>],
        &conversations as &[Option<Uuid>],
        &channels as &[&str],
        &column(|m| m.fallback.clone()),
        &recipients as &[&str],
        &column(|m| m.content.clone()),
        &statuses as &[&str],
        &lanes as &[&str],
        &scheduled as &[Option<DateTime<Utc>>],
        &column(|m| m.metadata.clone()),
        &supersedes as &[Option<Uuid>],
        &event_ids,
        reasons as &[Option<String>],
        source.as_str(),
        &attempts,
        &owners as &[Option<Uuid>],
        &claims as &[Option<Uuid>],
    )
    .execute(db)
    .await?;
    Ok(())
}

/// One entry of the audit trail.
#[derive(Debug)]
pub struct NewEvent<'a> {
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    pub status: MessageStatus,
    pub reason: Option<&'a str>,
    pub source: EventSource,
    /// The raw provider payload, for provider events.
    pub payload: Option<Value>,
    /// When it happened per the provider; now when `None`.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Appends to the audit trail.
pub async fn record_event(db: impl PgExecutor<'_>, event: NewEvent<'_>) -> Result<(), ApiError> {
    let NewEvent { tenant_id, message_id, status, reason, source, payload, occurred_at } = event;
    sqlx::query!(
        r#"INSERT INTO communications.message_events (id, tenant_id, message_id, status, reason, source, payload, occurred_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()))"#,
        Uuid::now_v7(),
        tenant_id,
        message_id,
        status.as_str(),
        reason,
        source.as_str(),
        payload,
        occurred_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find(db: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<MessageRow, ApiError> {
    sqlx::query_as!(
        MessageRow,
        r#"SELECT id, tenant_id, contact_id, conversation_id, channel AS "channel: Channel", fallback, recipient, content,
                  status AS "status: MessageStatus", status_reason, lane AS "lane: Lane", channel_account_id, provider,
                  provider_message_id, attempts, scheduled_at, metadata, supersedes, superseded_by, created_at,
                  updated_at, sent_at, delivered_at, read_at, failed_at
           FROM communications.messages WHERE tenant_id = $1 AND id = $2"#,
        tenant.0,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("message"))
}

/// The message, locked until the transaction ends (dispatch and status changes serialise on it).
pub async fn lock(db: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<MessageRow, ApiError> {
    sqlx::query_as!(
        MessageRow,
        r#"SELECT id, tenant_id, contact_id, conversation_id, channel AS "channel: Channel", fallback, recipient, content,
                  status AS "status: MessageStatus", status_reason, lane AS "lane: Lane", channel_account_id, provider,
                  provider_message_id, attempts, scheduled_at, metadata, supersedes, superseded_by, created_at,
                  updated_at, sent_at, delivered_at, read_at, failed_at
           FROM communications.messages WHERE tenant_id = $1 AND id = $2 FOR UPDATE"#,
        tenant.0,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("message"))
}

/// A message moved from `queued` to `sending` by [`claim_queued`], with the reason its address
/// is suppressed, if it is.
#[derive(Debug)]
pub struct ClaimedRow {
    pub message: MessageRow,
    pub suppressed: Option<String>,
}

/// Moves every message of `ids` (tenant, message) that is `queued` to `sending` and counts the
/// attempt, in one statement; returns the claimed ones (as they were before the claim) with
/// their suppression. A message in any other state is left alone and not returned.
///
/// `(SELECT 'queued')` rather than the literal: the planner cannot then pick the partial index of
/// queued messages, which with statistics from before a backlog looks like one row and means
/// walking the whole backlog for every batch (it did: 3-4 ms per claim at a few thousand queued).
pub async fn claim_queued(
    db: impl PgExecutor<'_>,
    ids: &[(Uuid, Uuid)],
    owner: Uuid,
    claim: Uuid,
) -> Result<Vec<ClaimedRow>, ApiError> {
    let tenants: Vec<Uuid> = ids.iter().map(|(tenant, _)| *tenant).collect();
    let messages: Vec<Uuid> = ids.iter().map(|(_, id)| *id).collect();
    let rows = sqlx::query!(
        r#"UPDATE communications.messages m SET status = 'sending', attempts = m.attempts + 1, updated_at = now(),
                  claimed_by = $3, claim = $4, requested_at = NULL
           FROM unnest($1::uuid[], $2::uuid[]) AS c(tenant_id, id)
           WHERE m.tenant_id = c.tenant_id AND m.id = c.id AND m.status = (SELECT 'queued')
           RETURNING m.id, m.tenant_id, m.contact_id, m.conversation_id, m.channel AS "channel: Channel", m.fallback,
                     m.recipient, m.content, m.status_reason, m.lane AS "lane: Lane", m.channel_account_id, m.provider,
                     m.provider_message_id, m.attempts - 1 AS "attempts!", m.scheduled_at, m.metadata, m.supersedes,
                     m.superseded_by, m.created_at, m.updated_at, m.sent_at, m.delivered_at, m.read_at, m.failed_at,
                     (SELECT s.reason FROM communications.suppressions s
                      WHERE s.tenant_id = m.tenant_id AND s.channel = m.channel AND s.address = lower(m.recipient))
                         AS suppressed"#,
        &tenants,
        &messages,
        owner,
        claim,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ClaimedRow {
            message: MessageRow {
                id: r.id,
                tenant_id: r.tenant_id,
                contact_id: r.contact_id,
                conversation_id: r.conversation_id,
                channel: r.channel,
                fallback: r.fallback,
                recipient: r.recipient,
                content: r.content,
                status: MessageStatus::Queued,
                status_reason: r.status_reason,
                lane: r.lane,
                channel_account_id: r.channel_account_id,
                provider: r.provider,
                provider_message_id: r.provider_message_id,
                attempts: r.attempts,
                scheduled_at: r.scheduled_at,
                metadata: r.metadata,
                supersedes: r.supersedes,
                superseded_by: r.superseded_by,
                created_at: r.created_at,
                updated_at: r.updated_at,
                sent_at: r.sent_at,
                delivered_at: r.delivered_at,
                read_at: r.read_at,
                failed_at: r.failed_at,
            },
            suppressed: r.suppressed,
        })
        .collect())
}

/// A provider's acceptance of a message, as [`record_sent`] stores it.
#[derive(Debug, Clone)]
pub struct SentRow {
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    pub provider: &'static str,
    pub provider_message_id: String,
    pub channel_account_id: Uuid,
}

/// Records several messages as `sent` (those still `sending`, or `unknown` because recovery
/// thought their worker dead while it waited for the database) with a `sent` event each, in one
/// statement.
pub async fn record_sent(db: impl PgExecutor<'_>, sent: &[SentRow]) -> Result<(), ApiError> {
    let event_ids: Vec<Uuid> = sent.iter().map(|_| Uuid::now_v7()).collect();
    let tenants: Vec<Uuid> = sent.iter().map(|s| s.tenant_id).collect();
    let messages: Vec<Uuid> = sent.iter().map(|s| s.message_id).collect();
    let providers: Vec<&str> = sent.iter().map(|s| s.provider).collect();
    let provider_ids: Vec<&str> = sent.iter().map(|s| s.provider_message_id.as_str()).collect();
    let accounts: Vec<Uuid> = sent.iter().map(|s| s.channel_account_id).collect();
    sqlx::query!(
        r#"WITH s AS (
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::uuid[])
                   AS s(event_id, tenant_id, id, provider, provider_message_id, channel_account_id)),
           updated AS (
               UPDATE communications.messages m SET status = 'sent', provider = s.provider,
                      provider_message_id = s.provider_message_id, channel_account_id = s.channel_account_id,
                      status_reason = NULL, sent_at = now(), updated_at = now()
               FROM s WHERE m.tenant_id = s.tenant_id AND m.id = s.id
                 AND m.status IN ((SELECT 'sending'), (SELECT 'unknown')))
           INSERT INTO communications.message_events (id, tenant_id, message_id, status, source, payload, occurred_at)
           SELECT event_id, tenant_id, id, 'sent', 'worker',
                  jsonb_build_object('provider', provider, 'provider_message_id', provider_message_id), now()
           FROM s"#,
        &event_ids,
        &tenants,
        &messages,
        &providers as &[&str],
        &provider_ids as &[&str],
        &accounts,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks claimed messages as in flight just before their provider requests start:
/// `(message, claim, provider)`, each only if that claim still holds it. Returns the ids marked;
/// a message not among them was taken back by recovery (or claimed again) and must not be sent.
///
/// `(SELECT 'sending')`, as in [`claim_queued`] and [`record_sent`]: with the literal the planner
/// may take the partial index of open outcomes, which every message passes through and whose
/// dead entries pile up between vacuums; the generic plan did, and walked them all for each
/// batch (0.2 ms per statement at 3,000 messages, 0.65 ms at 12,000, against 0.03 ms by key).
pub async fn mark_requested(
    db: impl PgExecutor<'_>,
    requests: &[(Uuid, Uuid, &'static str)],
) -> Result<Vec<Uuid>, ApiError> {
    let ids: Vec<Uuid> = requests.iter().map(|(id, _, _)| *id).collect();
    let claims: Vec<Uuid> = requests.iter().map(|(_, claim, _)| *claim).collect();
    let providers: Vec<&str> = requests.iter().map(|(_, _, provider)| *provider).collect();
    Ok(sqlx::query_scalar!(
        r#"UPDATE communications.messages m SET requested_at = now(), requested_via = r.provider
           FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS r(id, claim, provider)
           WHERE m.id = r.id AND m.status = (SELECT 'sending') AND m.claim = r.claim
           RETURNING m.id"#,
        &ids,
        &claims,
        &providers as &[&str],
    )
    .fetch_all(db)
    .await?)
}

pub async fn events(db: impl PgExecutor<'_>, tenant: TenantId, message_id: Uuid) -> Result<Vec<EventRow>, ApiError> {
    Ok(sqlx::query_as!(
        EventRow,
        r#"SELECT id, status, reason, source, payload, occurred_at FROM communications.message_events
           WHERE tenant_id = $1 AND message_id = $2 ORDER BY id"#,
        tenant.0,
        message_id,
    )
    .fetch_all(db)
    .await?)
}

#[derive(Debug, Default)]
pub struct ListFilter {
    pub status: Option<MessageStatus>,
    pub channel: Option<Channel>,
    pub contact_id: Option<Uuid>,
    pub conversation_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    filter: &ListFilter,
    page: PageRequest,
) -> Result<Vec<MessageRow>, ApiError> {
    Ok(sqlx::query_as!(
        MessageRow,
        r#"SELECT id, tenant_id, contact_id, conversation_id, channel AS "channel: Channel", fallback, recipient, content,
                  status AS "status: MessageStatus", status_reason, lane AS "lane: Lane", channel_account_id, provider,
                  provider_message_id, attempts, scheduled_at, metadata, supersedes, superseded_by, created_at,
                  updated_at, sent_at, delivered_at, read_at, failed_at
           FROM communications.messages
           WHERE tenant_id = $1
             AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR channel = $3)
             AND ($4::uuid IS NULL OR contact_id = $4)
             AND ($5::timestamptz IS NULL OR created_at >= $5)
             AND ($6::timestamptz IS NULL OR created_at < $6)
             AND ($7::uuid IS NULL OR id > $7)
             AND ($9::uuid IS NULL OR conversation_id = $9)
           ORDER BY id LIMIT $8"#,
        tenant.0,
        filter.status.map(MessageStatus::as_str),
        filter.channel.map(Channel::as_str),
        filter.contact_id,
        filter.created_after,
        filter.created_before,
        page.after,
        page.fetch_limit(),
        filter.conversation_id,
    )
    .fetch_all(db)
    .await?)
}

pub async fn set_status(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
    status: MessageStatus,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    sqlx::query!(
        r#"UPDATE communications.messages SET status = $3, status_reason = $4, updated_at = now(),
               failed_at = CASE WHEN $3 = 'failed' THEN now() ELSE failed_at END,
               provider = coalesce(provider, requested_via)
           WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        id,
        status.as_str(),
        reason,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The outcome of claiming an idempotency key.
#[derive(Debug)]
pub enum KeyClaim {
    /// First use: go ahead, then [`complete_key`] in the same transaction.
    New,
    /// Used before with this request hash: replay this response.
    Replay { status: u16, body: Value },
    /// Used before with another request.
    Mismatch,
}

/// Claims `key`. A concurrent request with the same key waits here until the first one's
/// transaction ends, then sees its stored response.
pub async fn claim_key(
    db: &mut PgConnection,
    tenant: TenantId,
    key: &str,
    request_hash: &[u8],
) -> Result<KeyClaim, ApiError> {
    let inserted = sqlx::query!(
        r#"INSERT INTO communications.idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING"#,
        tenant.0,
        key,
        request_hash,
    )
    .execute(&mut *db)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(KeyClaim::New);
    }
    let stored = sqlx::query!(
        r#"SELECT request_hash, response_status, response_body FROM communications.idempotency_keys
           WHERE tenant_id = $1 AND key = $2"#,
        tenant.0,
        key,
    )
    .fetch_one(&mut *db)
    .await?;
    if stored.request_hash != request_hash {
        return Ok(KeyClaim::Mismatch);
    }
    match (stored.response_status, stored.response_body) {
        (Some(status), Some(body)) => Ok(KeyClaim::Replay { status: status as u16, body }),
        _ => Err(ApiError::internal("an idempotency key without its response")),
    }
}

pub async fn complete_key(
    db: &mut PgConnection,
    tenant: TenantId,
    key: &str,
    status: u16,
    body: &Value,
) -> Result<(), ApiError> {
    sqlx::query!(
        "UPDATE communications.idempotency_keys SET response_status = $3, response_body = $4 WHERE tenant_id = $1 AND key = $2",
        tenant.0,
        key,
        status as i16,
        body,
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Stops sending to an address on a channel for a tenant (bounces, complaints).
pub async fn suppress(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    channel: Channel,
    address: &str,
    reason: &str,
) -> Result<(), ApiError> {
    sqlx::query!(
        r#"INSERT INTO communications.suppressions (tenant_id, channel, address, reason) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING"#,
        tenant_id,
        channel.as_str(),
        address.to_lowercase(),
        reason,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Why an address is suppressed for a tenant on a channel, if it is.
pub async fn suppression(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    channel: Channel,
    address: &str,
) -> Result<Option<String>, ApiError> {
    Ok(sqlx::query_scalar!(
        "SELECT reason FROM communications.suppressions WHERE tenant_id = $1 AND channel = $2 AND address = $3",
        tenant_id,
        channel.as_str(),
        address.to_lowercase(),
    )
    .fetch_optional(db)
    .await?)
}

/// Whether `tenant` has the conversation (a message may only join its own tenant's).
pub async fn conversation_exists(db: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM communications.conversations WHERE tenant_id = $1 AND id = $2) AS "exists!""#,
        tenant.0,
        id,
    )
    .fetch_one(db)
    .await?)
}
