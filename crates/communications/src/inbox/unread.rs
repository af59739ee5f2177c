//! Unread counts: per-agent read cursors and the inbox badge.
//!
//! A conversation counts its inbound messages (`inbound_count`, kept by a trigger); an agent's
//! cursor holds how many of them the agent has read. Unread is the difference — exact, and one
//! subtraction however long the history. The badge counts open conversations only.

use axum::extract::State;
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::changes;
use crate::Communications;

/// The inbox badge of one agent.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct UnreadSummary {
    /// Open conversations with messages the agent has not read.
    pub unread: i64,
    /// Of those, assigned to the agent.
    pub mine: i64,
    /// Of those, assigned to nobody.
    pub unassigned: i64,
}

pub async fn summary(db: impl PgExecutor<'_>, tenant: Uuid, agent: Uuid) -> Result<UnreadSummary, ApiError> {
    Ok(sqlx::query_as!(
        UnreadSummary,
        r#"SELECT count(*) AS "unread!",
                  count(*) FILTER (WHERE c.assignee_id = $2) AS "mine!",
                  count(*) FILTER (WHERE c.assignee_id IS NULL) AS "unassigned!"
           FROM communications.conversations c
           LEFT JOIN communications.read_cursors r ON r.agent_id = $2 AND r.conversation_id = c.id
           WHERE c.tenant_id = $1 AND c.status = 'open' AND c.inbound_count > COALESCE(r.read_count, 0)"#,
        tenant,
        agent,
    )
    .fetch_one(db)
    .await?)
}

/// The calling agent's unread badge: open conversations with unread messages — all, the
/// agent's, unassigned.
#[utoipa::path(
    get, path = "/api/v1/conversations/summary", tag = "inbox",
    responses((status = 200, body = UnreadSummary), (status = 422, body = ErrorBody, description = "Not an agent"))
)]
pub async fn unread_summary(
    State(module): State<Communications>,
    caller: Caller,
) -> Result<Json<UnreadSummary>, ApiError> {
    let agent = caller.agent_id().ok_or_else(|| ApiError::validation("agent", "unread counts are an agent's"))?;
    Ok(Json(summary(&module.pool, caller.tenant_id.0, agent.0).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    /// Read up to and including this message of the conversation; all of it when absent.
    pub message_id: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadState {
    pub conversation_id: Uuid,
    /// Inbound messages the agent has not read yet.
    pub unread_count: i64,
}

/// Marks the conversation read by the calling agent (through a message, or all of it). A cursor
/// never moves back: marking an older message read changes nothing.
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/read", tag = "inbox", params(("id" = Uuid, Path)),
    request_body(content = Option<ReadRequest>),
    responses((status = 200, body = ReadState), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn mark_read(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Option<Json<ReadRequest>>,
) -> Result<Json<ReadState>, ApiError> {
    let agent = caller.agent_id().ok_or_else(|| ApiError::validation("agent", "only an agent reads conversations"))?.0;
    let through = body.and_then(|Json(request)| request.message_id);
    let tenant = caller.tenant_id.0;
    let mut tx = module.pool.begin().await?;
    let row = sqlx::query!(
        r#"SELECT c.inbound_count,
                  (SELECT count(*) FROM communications.messages m
                   WHERE m.conversation_id = c.id AND m.direction = 'inbound' AND m.id <= $3) AS "through!",
                  EXISTS (SELECT 1 FROM communications.messages m WHERE m.conversation_id = c.id AND m.id = $3) AS "known!"
           FROM communications.conversations c WHERE c.tenant_id = $1 AND c.id = $2"#,
        tenant,
        id,
        through,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("conversation"))?;
    let read = match through {
        None => row.inbound_count,
        Some(_) if !row.known => {
            return Err(ApiError::validation("message_id", "is not a message of this conversation"));
        }
        Some(_) => row.through,
    };
    let read = sqlx::query_scalar!(
        r#"INSERT INTO communications.read_cursors (agent_id, conversation_id, tenant_id, read_count)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (agent_id, conversation_id) DO UPDATE
               SET read_count = GREATEST(read_cursors.read_count, EXCLUDED.read_count), read_at = now()
           RETURNING read_count"#,
        agent,
        id,
        tenant,
        read,
    )
    .fetch_one(&mut *tx)
    .await?;
    let unread_count = (row.inbound_count - read).max(0);
    let payload = json!({ "unread_count": unread_count });
    changes::append(&mut tx, tenant, "conversation.read", Some(id), None, Some(agent), payload).await?;
    tx.commit().await?;
    module.feed.signal();
    Ok(Json(ReadState { conversation_id: id, unread_count }))
}
