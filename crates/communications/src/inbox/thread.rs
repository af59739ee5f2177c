//! A conversation's messages, both directions, in the order they were written.

use axum::extract::State;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use kernel::pagination::{Page, PageParams};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Communications;

/// One message of a thread.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ThreadMessage {
    pub id: Uuid,
    /// inbound (the contact wrote) or outbound (an agent's reply, or a notification).
    pub direction: String,
    pub channel: String,
    pub status: String,
    pub status_reason: Option<String>,
    /// As received or sent; render it as text, never as markup.
    #[schema(value_type = Object)]
    pub content: Value,
    /// The agent who wrote an outbound reply.
    pub author_agent_id: Option<Uuid>,
    pub provider_message_id: Option<String>,
    /// When it was written: the provider's time for inbound messages, ours for outbound.
    pub at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadParams {
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page: older messages.
    pub cursor: Option<String>,
}

/// The conversation's messages, newest first (by when they were written; a webhook that arrives
/// late still takes its place).
#[utoipa::path(
    get, path = "/api/v1/conversations/{id}/messages", tag = "inbox", params(("id" = Uuid, Path), ThreadParams),
    responses((status = 200, body = Page<ThreadMessage>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn thread(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(params): Query<ThreadParams>,
) -> Result<Json<Page<ThreadMessage>>, ApiError> {
    let page = PageParams { limit: params.limit, cursor: params.cursor }.parse()?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM communications.conversations WHERE tenant_id = $1 AND id = $2) AS "exists!""#,
        caller.tenant_id.0,
        id,
    )
    .fetch_one(&module.pool)
    .await?;
    if !exists {
        return Err(ApiError::NotFound("conversation"));
    }
    let rows = sqlx::query_as!(
        ThreadMessage,
        r#"SELECT id, direction, channel, status, status_reason, content,
                  (CASE WHEN metadata->>'author_agent_id' ~ '^[0-9a-f-]{36}$'
                        THEN (metadata->>'author_agent_id')::uuid END) AS author_agent_id,
                  provider_message_id, COALESCE(provider_timestamp, created_at) AS "at!",
                  sent_at, delivered_at, read_at, failed_at
           FROM communications.messages m
           WHERE conversation_id = $1 AND tenant_id = $2
             AND ($3::uuid IS NULL OR (COALESCE(provider_timestamp, created_at), id) <
                  (SELECT COALESCE(p.provider_timestamp, p.created_at), p.id FROM communications.messages p
                   WHERE p.id = $3 AND p.conversation_id = $1))
           ORDER BY COALESCE(provider_timestamp, created_at) DESC, id DESC
           LIMIT $4"#,
        id,
        caller.tenant_id.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(&module.pool)
    .await?;
    Ok(Json(Page::from_rows(rows, page, |m| m.id)))
}
