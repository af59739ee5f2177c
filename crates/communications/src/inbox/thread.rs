//! A conversation's messages (both directions, in the order they were written) and full-text
//! search over the messages of all conversations, in German and English.

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

/// A message that matches a search.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub contact_id: Uuid,
    pub contact_name: Option<String>,
    pub channel: String,
    pub direction: String,
    pub conversation_status: String,
    /// The message's words, plain text (at most 200 characters).
    pub snippet: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words to find (web-search syntax: `"exact phrase"`, `-without`, `or`), matched in German
    /// and English with stemming.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Messages of the tenant's conversations that match `q`, newest first.
///
/// Two ways, because neither serves every word: the newest 2,000 messages are checked one by
/// one (a common word fills the page from them at once, where the index would first collect
/// every one of its hundred thousand matches to sort them); only when they hold too few matches
/// is the GIN index asked for the older ones (a rare word has few, however old).
#[utoipa::path(
    get, path = "/api/v1/conversations/search", tag = "inbox", params(SearchParams),
    responses((status = 200, body = Page<SearchHit>), (status = 422, body = ErrorBody))
)]
pub async fn search(
    State(module): State<Communications>,
    caller: Caller,
    Query(params): Query<SearchParams>,
) -> Result<Json<Page<SearchHit>>, ApiError> {
    let q = params.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() || q.chars().count() > 200 {
        return Err(ApiError::validation("q", "give 1 to 200 characters to search for"));
    }
    let page = PageParams { limit: params.limit, cursor: params.cursor }.parse()?;
    let tenant = caller.tenant_id.0;
    let mut tx = super::repository::planned_with_values(&module.pool).await?;
    let mut hits = sqlx::query_as!(
        SearchHit,
        r#"SELECT m.id AS message_id, m.conversation_id AS "conversation_id!", c.contact_id, k.display_name AS contact_name,
                  m.channel, m.direction, c.status AS conversation_status,
                  left(btrim(regexp_replace(communications.message_text(m.content), '\s+', ' ', 'g')), 200) AS "snippet!",
                  COALESCE(m.provider_timestamp, m.created_at) AS "at!"
           FROM (SELECT * FROM communications.messages
                 WHERE tenant_id = $1 AND conversation_id IS NOT NULL AND ($3::uuid IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT 2000) m
           JOIN communications.conversations c ON c.id = m.conversation_id
           JOIN communications.contacts k ON k.id = c.contact_id
           WHERE m.search @@ (websearch_to_tsquery('english', $2) || websearch_to_tsquery('german', $2))
           ORDER BY m.id DESC LIMIT $4"#,
        tenant,
        q,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(&mut *tx)
    .await?;
    if (hits.len() as i64) < page.fetch_limit() {
        // Where the newest 2,000 end; none: they were all there is.
        let floor = sqlx::query_scalar!(
            r#"SELECT id FROM communications.messages
               WHERE tenant_id = $1 AND conversation_id IS NOT NULL AND ($2::uuid IS NULL OR id < $2)
               ORDER BY id DESC OFFSET 1999 LIMIT 1"#,
            tenant,
            page.after,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(floor) = floor {
            let older = sqlx::query_as!(
                SearchHit,
                r#"WITH found AS MATERIALIZED (
                       SELECT id FROM communications.messages
                       WHERE tenant_id = $1 AND conversation_id IS NOT NULL AND id < $3
                         AND search @@ (websearch_to_tsquery('english', $2) || websearch_to_tsquery('german', $2)))
                   SELECT m.id AS message_id, m.conversation_id AS "conversation_id!", c.contact_id,
                          k.display_name AS contact_name, m.channel, m.direction, c.status AS conversation_status,
                          left(btrim(regexp_replace(communications.message_text(m.content), '\s+', ' ', 'g')), 200) AS "snippet!",
                          COALESCE(m.provider_timestamp, m.created_at) AS "at!"
                   FROM found f
                   JOIN communications.messages m ON m.id = f.id
                   JOIN communications.conversations c ON c.id = m.conversation_id
                   JOIN communications.contacts k ON k.id = c.contact_id
                   ORDER BY m.id DESC LIMIT $4"#,
                tenant,
                q,
                floor,
                page.fetch_limit() - hits.len() as i64,
            )
            .fetch_all(&mut *tx)
            .await?;
            hits.extend(older);
        }
    }
    tx.commit().await?;
    Ok(Json(Page::from_rows(hits, page, |hit| hit.message_id)))
}
