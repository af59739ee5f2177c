//! Conversations' SQL: lists by activity, one conversation, its thread, and the state changes
//! agents make (each with its change row, in one transaction).

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::pagination::PageRequest;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::messages::model::Channel;

#[derive(Debug, Clone)]
pub struct ConversationRow {
    pub id: Uuid,
    pub contact_id: Uuid,
    pub contact_name: Option<String>,
    pub channel: Channel,
    pub channel_account_id: Option<Uuid>,
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub preview: Option<Value>,
    /// Inbound messages the calling agent has not read (`None` for an operator key).
    pub unread_count: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub booking_id: Option<String>,
    pub service_leg_id: Option<String>,
    pub invoice_id: Option<String>,
    pub appointment_id: Option<Uuid>,
}

/// Which conversations a list shows.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<String>,
    /// `Some(None)`: unassigned; `Some(Some(id))`: that agent's.
    pub assignee: Option<Option<Uuid>>,
    pub channel: Option<Channel>,
    pub contact_id: Option<Uuid>,
    /// Only conversations with messages the agent has not read.
    pub unread_only: bool,
    /// Only conversations about this entity: (booking|service_leg|invoice|appointment, id).
    pub link: Option<(String, String)>,
    pub label: Option<Uuid>,
}

/// A transaction whose statements are planned with their parameters' values every time, never
/// with a cached generic plan: in the list and search queries, which optional filters are set
/// (and how common a searched word is) decides which index serves them.
pub async fn planned_with_values(pool: &sqlx::PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ApiError> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SET LOCAL plan_cache_mode = force_custom_plan").execute(&mut *tx).await?;
    Ok(tx)
}

/// Newest activity first; the cursor is the last conversation of the previous page.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    agent: Option<Uuid>,
    filter: &ListFilter,
    page: PageRequest,
) -> Result<Vec<ConversationRow>, ApiError> {
    // As plain `assignee_id IS NULL` / `= $4` once planned with the values, so the open
    // conversations' index serves both in activity order.
    let (assignee_mode, assignee) = match filter.assignee {
        None => (None, None),
        Some(None) => (Some("none"), None),
        Some(Some(agent)) => (Some("agent"), Some(agent)),
    };
    Ok(sqlx::query_as!(
        ConversationRow,
        r#"SELECT c.id, c.contact_id, k.display_name AS contact_name, c.channel AS "channel: Channel",
                  c.channel_account_id, c.status, c.assignee_id, c.snoozed_until, c.last_message_at,
                  c.last_inbound_at, c.created_at, c.booking_id, c.service_leg_id, c.invoice_id, c.appointment_id,
                  (SELECT m.content FROM communications.messages m WHERE m.conversation_id = c.id
                   ORDER BY m.id DESC LIMIT 1) AS preview,
                  CASE WHEN $9::uuid IS NULL THEN NULL
                       ELSE GREATEST(c.inbound_count - COALESCE(r.read_count, 0), 0) END AS unread_count
           FROM communications.conversations c
           JOIN communications.contacts k ON k.id = c.contact_id
           LEFT JOIN communications.read_cursors r ON r.agent_id = $9 AND r.conversation_id = c.id
           WHERE c.tenant_id = $1
             AND ($2::text IS NULL OR c.status = $2)
             AND ($3::text IS DISTINCT FROM 'none' OR c.assignee_id IS NULL)
             AND ($3::text IS DISTINCT FROM 'agent' OR c.assignee_id = $4)
             AND ($5::text IS NULL OR c.channel = $5)
             AND ($6::uuid IS NULL OR c.contact_id = $6)
             AND (NOT $10 OR c.inbound_count > COALESCE(r.read_count, 0))
             AND ($11::text IS NULL OR $12 = CASE $11 WHEN 'booking' THEN c.booking_id
                                                      WHEN 'service_leg' THEN c.service_leg_id
                                                      WHEN 'invoice' THEN c.invoice_id
                                                      WHEN 'appointment' THEN c.appointment_id::text END)
             AND ($13::uuid IS NULL OR EXISTS (SELECT 1 FROM communications.conversation_labels cl
                                               WHERE cl.conversation_id = c.id AND cl.label_id = $13))
             AND ($7::uuid IS NULL OR (c.last_message_at, c.id) <
                  (SELECT p.last_message_at, p.id FROM communications.conversations p WHERE p.id = $7 AND p.tenant_id = $1))
           ORDER BY c.last_message_at DESC NULLS LAST, c.id DESC
           LIMIT $8"#,
        tenant.0,
        filter.status,
        assignee_mode,
        assignee,
        filter.channel.map(Channel::as_str),
        filter.contact_id,
        page.after,
        page.fetch_limit(),
        agent,
        filter.unread_only,
        filter.link.as_ref().map(|(kind, _)| kind.as_str()),
        filter.link.as_ref().map(|(_, id)| id.as_str()),
        filter.label,
    )
    .fetch_all(db)
    .await?)
}

pub async fn find(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    agent: Option<Uuid>,
    id: Uuid,
) -> Result<ConversationRow, ApiError> {
    sqlx::query_as!(
        ConversationRow,
        r#"SELECT c.id, c.contact_id, k.display_name AS contact_name, c.channel AS "channel: Channel",
                  c.channel_account_id, c.status, c.assignee_id, c.snoozed_until, c.last_message_at,
                  c.last_inbound_at, c.created_at, c.booking_id, c.service_leg_id, c.invoice_id, c.appointment_id,
                  (SELECT m.content FROM communications.messages m WHERE m.conversation_id = c.id
                   ORDER BY m.id DESC LIMIT 1) AS preview,
                  CASE WHEN $3::uuid IS NULL THEN NULL
                       ELSE GREATEST(c.inbound_count - COALESCE(r.read_count, 0), 0) END AS unread_count
           FROM communications.conversations c
           JOIN communications.contacts k ON k.id = c.contact_id
           LEFT JOIN communications.read_cursors r ON r.agent_id = $3 AND r.conversation_id = c.id
           WHERE c.tenant_id = $1 AND c.id = $2"#,
        tenant.0,
        id,
        agent,
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::NotFound("conversation"))
}

/// The conversation's state and holder, locked for a change.
#[derive(Debug)]
pub struct Locked {
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub snoozed_until: Option<DateTime<Utc>>,
}

pub async fn lock(db: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<Locked, ApiError> {
    sqlx::query_as!(
        Locked,
        "SELECT status, assignee_id, snoozed_until FROM communications.conversations WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tenant.0,
        id,
    )
    .fetch_optional(&mut *db)
    .await?
    .ok_or_else(|| ApiError::NotFound("conversation"))
}

/// Sets the conversation's status, snooze time and assignee as given.
pub async fn update(
    db: &mut PgConnection,
    id: Uuid,
    status: &str,
    snoozed_until: Option<DateTime<Utc>>,
    assignee: Option<Uuid>,
) -> Result<(), ApiError> {
    sqlx::query!(
        r#"UPDATE communications.conversations SET status = $2, snoozed_until = $3, assignee_id = $4, updated_at = now()
           WHERE id = $1"#,
        id,
        status,
        snoozed_until,
        assignee,
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Snoozed conversations whose time has come are open again (each once: the row lock and the
/// status check make concurrent wakers agree); returns (tenant, conversation) of each.
pub async fn wake_due(db: &mut PgConnection) -> Result<Vec<(Uuid, Uuid)>, ApiError> {
    let rows = sqlx::query!(
        r#"UPDATE communications.conversations SET status = 'open', snoozed_until = NULL, updated_at = now()
           WHERE id IN (SELECT id FROM communications.conversations
                        WHERE status = 'snoozed' AND snoozed_until <= now()
                        ORDER BY snoozed_until LIMIT 500 FOR UPDATE SKIP LOCKED)
           RETURNING tenant_id, id"#,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.tenant_id, row.id)).collect())
}
