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
use std::collections::HashMap;

use serde_json::json;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::changes;
use crate::Communications;

/// The inbox badge of one agent. Each open conversation's cursor is one index-only lookup (a
/// join would read all of the agent's cursors, resolved conversations' too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
           WHERE c.tenant_id = $1 AND c.status = 'open'
             AND c.inbound_count > COALESCE((SELECT r.read_count FROM communications.read_cursors r
                                             WHERE r.agent_id = $2 AND r.conversation_id = c.id), 0)"#,
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
                  EXISTS (SELECT 1 FROM communications.messages m WHERE m.conversation_id = c.id AND m.id = $3) AS "known!",
                  (SELECT r.read_count FROM communications.read_cursors r
                   WHERE r.agent_id = $4 AND r.conversation_id = c.id) AS previous
           FROM communications.conversations c WHERE c.tenant_id = $1 AND c.id = $2"#,
        tenant,
        id,
        through,
        agent,
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
    // Reading what was read already (a thread opened again) changes nothing anyone sees.
    let moved = row.previous != Some(read);
    if moved {
        let payload = json!({ "unread_count": unread_count });
        changes::append(&mut tx, tenant, "conversation.read", Some(id), None, Some(agent), payload).await?;
    }
    tx.commit().await?;
    if moved {
        module.feed.signal();
    }
    Ok(Json(ReadState { conversation_id: id, unread_count }))
}

/// What decides whether a conversation is unread for the agents of this process's streams.
#[derive(Debug, Clone, Default)]
pub struct ConversationState {
    pub open: bool,
    pub assignee: Option<Uuid>,
    pub inbound_count: i64,
    /// How many inbound messages each asked agent has read (0 without a cursor).
    pub reads: HashMap<Uuid, i64>,
}

/// The current state of `conversations` for `agents`, in one statement: what the feed attaches
/// to changes so that streams keep their badges without a query each.
pub async fn states(
    db: impl PgExecutor<'_>,
    conversations: &[Uuid],
    agents: &[Uuid],
) -> Result<HashMap<Uuid, ConversationState>, ApiError> {
    if conversations.is_empty() || agents.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        r#"SELECT c.id, c.status, c.assignee_id, c.inbound_count, a.agent AS "agent!", COALESCE(r.read_count, 0) AS "read_count!"
           FROM communications.conversations c
           CROSS JOIN unnest($2::uuid[]) AS a(agent)
           LEFT JOIN communications.read_cursors r ON r.agent_id = a.agent AND r.conversation_id = c.id
           WHERE c.id = ANY($1)"#,
        conversations,
        agents,
    )
    .fetch_all(db)
    .await?;
    let mut states: HashMap<Uuid, ConversationState> = HashMap::new();
    for row in rows {
        let state = states.entry(row.id).or_insert_with(|| ConversationState {
            open: row.status == "open",
            assignee: row.assignee_id,
            inbound_count: row.inbound_count,
            reads: HashMap::new(),
        });
        state.reads.insert(row.agent, row.read_count);
    }
    Ok(states)
}

/// One agent's unread open conversations (with their assignees), kept current from the feed's
/// conversation states: the badge of a stream without a query per change.
#[derive(Debug, Clone)]
pub struct AgentUnread {
    agent: Uuid,
    open: HashMap<Uuid, Option<Uuid>>,
}

impl AgentUnread {
    pub async fn load(db: impl PgExecutor<'_>, tenant: Uuid, agent: Uuid) -> Result<Self, ApiError> {
        let rows = sqlx::query!(
            r#"SELECT c.id, c.assignee_id
               FROM communications.conversations c
               WHERE c.tenant_id = $1 AND c.status = 'open'
                 AND c.inbound_count > COALESCE((SELECT r.read_count FROM communications.read_cursors r
                                                 WHERE r.agent_id = $2 AND r.conversation_id = c.id), 0)"#,
            tenant,
            agent,
        )
        .fetch_all(db)
        .await?;
        Ok(Self { agent, open: rows.into_iter().map(|row| (row.id, row.assignee_id)).collect() })
    }

    /// Takes the conversation's current state into account (a state that did not ask about this
    /// agent changes nothing).
    pub fn apply(&mut self, conversation: Uuid, state: &ConversationState) {
        let Some(read) = state.reads.get(&self.agent) else { return };
        if state.open && state.inbound_count > *read {
            self.open.insert(conversation, state.assignee);
        } else {
            self.open.remove(&conversation);
        }
    }

    pub fn summary(&self) -> UnreadSummary {
        let count = |f: &dyn Fn(&Option<Uuid>) -> bool| self.open.values().filter(|a| f(a)).count() as i64;
        UnreadSummary {
            unread: self.open.len() as i64,
            mine: count(&|assignee| *assignee == Some(self.agent)),
            unassigned: count(&|assignee| assignee.is_none()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_badge_follows_conversation_states() {
        let (me, other, conversation) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut unread = AgentUnread { agent: me, open: HashMap::new() };
        let state = |open, assignee, inbound, read| ConversationState {
            open,
            assignee,
            inbound_count: inbound,
            reads: HashMap::from([(me, read)]),
        };
        unread.apply(conversation, &state(true, None, 2, 1));
        assert_eq!(unread.summary(), UnreadSummary { unread: 1, mine: 0, unassigned: 1 });
        unread.apply(conversation, &state(true, Some(me), 2, 1));
        assert_eq!(unread.summary(), UnreadSummary { unread: 1, mine: 1, unassigned: 0 });
        unread.apply(conversation, &state(true, Some(me), 2, 2));
        assert_eq!(unread.summary(), UnreadSummary { unread: 0, mine: 0, unassigned: 0 });
        unread.apply(conversation, &state(true, Some(other), 3, 2));
        assert_eq!(unread.summary(), UnreadSummary { unread: 1, mine: 0, unassigned: 0 });
        unread.apply(conversation, &state(false, Some(other), 3, 2));
        assert_eq!(unread.summary().unread, 0, "resolved conversations leave the badge");
        let not_asked = ConversationState { open: true, inbound_count: 9, ..Default::default() };
        unread.apply(conversation, &not_asked);
        assert_eq!(unread.summary().unread, 0, "a state without my read count changes nothing");
    }
}
