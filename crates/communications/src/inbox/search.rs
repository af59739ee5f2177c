//! Full-text search over the messages of a tenant's conversations, German and English, newest
//! first.
//!
//! No single plan serves every query: a common word has a hundred thousand matches, which the
//! GIN index would all collect before the newest 25 could be picked, while walking back from the
//! newest message finds them at once; a rare word is the opposite, and the planner's statistics
//! cannot tell a never-seen reference from a frequent one. So, in steps:
//! 1. the newest 2,000 messages (before the cursor) are checked one by one;
//! 2. for more, the GIN index alone is asked for up to 1,000 older matches — all of them, when
//!    the words are rare, and then sorted;
//! 3. 1,000 or more: the words are frequent, so older windows of 2,000 are walked until the
//!    page is full.

use axum::extract::State;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Query};
use kernel::pagination::{Page, PageParams};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Communications;

/// Messages checked one by one per step.
const WINDOW: i64 = 2_000;
/// Matches the index gathers before the words count as frequent.
const PROBE: i64 = 1_000;
/// Windows walked at most in step 3 (the words are frequent there, so few are needed).
const MAX_WINDOWS: usize = 50;

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
    let (tenant, wanted) = (caller.tenant_id.0, page.fetch_limit());
    let mut tx = module.pool.begin().await?;
    let (mut hits, mut floor) = window(&mut tx, tenant, q, page.after, wanted).await?;
    if (hits.len() as i64) < wanted
        && let Some(before) = floor
    {
        let found = probe(&mut tx, tenant, q, before).await?;
        if (found.len() as i64) < PROBE {
            let mut newest = found;
            newest.sort_unstable_by(|a, b| b.cmp(a));
            newest.truncate((wanted - hits.len() as i64) as usize);
            hits.extend(by_ids(&mut tx, &newest).await?);
        } else {
            for _ in 0..MAX_WINDOWS {
                let Some(before) = floor else { break };
                let (more, next) = window(&mut tx, tenant, q, Some(before), wanted - hits.len() as i64).await?;
                hits.extend(more);
                floor = next;
                if hits.len() as i64 >= wanted {
                    break;
                }
            }
        }
    }
    tx.commit().await?;
    Ok(Json(Page::from_rows(hits, page, |hit| hit.message_id)))
}

/// Matches among the newest `WINDOW` messages before `before`, and where that window ends
/// (`None`: no older messages).
async fn window(
    tx: &mut PgConnection,
    tenant: Uuid,
    q: &str,
    before: Option<Uuid>,
    limit: i64,
) -> Result<(Vec<SearchHit>, Option<Uuid>), ApiError> {
    let hits = sqlx::query_as!(
        SearchHit,
        r#"SELECT m.id AS message_id, m.conversation_id AS "conversation_id!", c.contact_id, k.display_name AS contact_name,
                  m.channel, m.direction, c.status AS conversation_status,
                  left(btrim(regexp_replace(communications.message_text(m.content), '\s+', ' ', 'g')), 200) AS "snippet!",
                  COALESCE(m.provider_timestamp, m.created_at) AS "at!"
           FROM (SELECT * FROM communications.messages
                 WHERE tenant_id = $1 AND conversation_id IS NOT NULL AND ($3::uuid IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $5) m
           JOIN communications.conversations c ON c.id = m.conversation_id
           JOIN communications.contacts k ON k.id = c.contact_id
           WHERE m.search @@ (websearch_to_tsquery('english', $2) || websearch_to_tsquery('german', $2))
           ORDER BY m.id DESC LIMIT $4"#,
        tenant,
        q,
        before,
        limit,
        WINDOW,
    )
    .fetch_all(&mut *tx)
    .await?;
    let floor = sqlx::query_scalar!(
        r#"SELECT id FROM communications.messages
           WHERE tenant_id = $1 AND conversation_id IS NOT NULL AND ($2::uuid IS NULL OR id < $2)
           ORDER BY id DESC OFFSET $3 LIMIT 1"#,
        tenant,
        before,
        WINDOW - 1,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok((hits, floor))
}

/// Up to `PROBE` ids of matching messages older than `before`, through the GIN index only (in
/// no particular order).
async fn probe(tx: &mut PgConnection, tenant: Uuid, q: &str, before: Uuid) -> Result<Vec<Uuid>, ApiError> {
    // Only a bitmap scan may answer: a walk or a sequential scan could read the whole history
    // for a rare word.
    sqlx::query!("SET LOCAL enable_seqscan = off").execute(&mut *tx).await?;
    sqlx::query!("SET LOCAL enable_indexscan = off").execute(&mut *tx).await?;
    let ids = sqlx::query_scalar!(
        r#"SELECT id FROM communications.messages
           WHERE tenant_id = $1 AND conversation_id IS NOT NULL AND id < $3
             AND search @@ (websearch_to_tsquery('english', $2) || websearch_to_tsquery('german', $2))
           LIMIT $4"#,
        tenant,
        q,
        before,
        PROBE,
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!("RESET enable_seqscan").execute(&mut *tx).await?;
    sqlx::query!("RESET enable_indexscan").execute(&mut *tx).await?;
    Ok(ids)
}

async fn by_ids(tx: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<SearchHit>, ApiError> {
    Ok(sqlx::query_as!(
        SearchHit,
        r#"SELECT m.id AS message_id, m.conversation_id AS "conversation_id!", c.contact_id, k.display_name AS contact_name,
                  m.channel, m.direction, c.status AS conversation_status,
                  left(btrim(regexp_replace(communications.message_text(m.content), '\s+', ' ', 'g')), 200) AS "snippet!",
                  COALESCE(m.provider_timestamp, m.created_at) AS "at!"
           FROM communications.messages m
           JOIN communications.conversations c ON c.id = m.conversation_id
           JOIN communications.contacts k ON k.id = c.contact_id
           WHERE m.id = ANY($1)
           ORDER BY m.id DESC"#,
        ids,
    )
    .fetch_all(&mut *tx)
    .await?)
}
