//! Private notes on a conversation, for agents only. They live in their own table, never in
//! `messages`, so no send path can ever deliver one to the contact.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use kernel::auth::{Actor, Caller};
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use kernel::pagination::{Page, PageParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::inbound::record_change;
use crate::Communications;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new().routes(routes!(list_notes, create_note))
}

pub const MAX_NOTE_CHARS: usize = 10_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NoteView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub text: String,
    /// `agent` or `api key`.
    pub author: String,
    /// The agent who wrote it; null when an operator API key did.
    pub author_agent_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

struct NoteRow {
    id: Uuid,
    conversation_id: Uuid,
    text: String,
    author_agent_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

fn view(row: NoteRow) -> NoteView {
    NoteView {
        id: row.id,
        conversation_id: row.conversation_id,
        text: row.text,
        author: if row.author_agent_id.is_some() { "agent" } else { "api key" }.into(),
        author_agent_id: row.author_agent_id,
        created_at: row.created_at,
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNote {
    /// 1 to 10000 characters, not only blanks.
    pub text: String,
}

/// Adds a private note to the conversation (never sent to the contact).
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/notes", tag = "inbox", params(("id" = Uuid, Path)), request_body = CreateNote,
    responses((status = 201, body = NoteView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn create_note(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<CreateNote>,
) -> Result<(StatusCode, Json<NoteView>), ApiError> {
    if request.text.trim().is_empty() || request.text.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::validation("text", format!("must be 1 to {MAX_NOTE_CHARS} characters, not only blanks")));
    }
    let (agent, key) = match caller.actor {
        Actor::Agent { id, .. } => (Some(id.0), None),
        Actor::ApiKey(key) => (None, Some(key.0)),
    };
    let mut tx = module.pool.begin().await?;
    // Inserted only if the conversation is the tenant's: another tenant's is a 404.
    let row = sqlx::query_as!(
        NoteRow,
        r#"INSERT INTO communications.conversation_notes (id, tenant_id, conversation_id, author_agent_id, api_key_id, text)
           SELECT $1, c.tenant_id, c.id, $4, $5, $6 FROM communications.conversations c
           WHERE c.tenant_id = $2 AND c.id = $3
           RETURNING id, conversation_id, text, author_agent_id, created_at"#,
        Uuid::now_v7(),
        caller.tenant_id.0,
        id,
        agent,
        key,
        request.text,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("conversation"))?;
    let preview: String = row.text.chars().take(140).collect();
    let payload = json!({ "note_id": row.id, "author_agent_id": row.author_agent_id, "preview": preview });
    record_change(&mut tx, caller.tenant_id.0, "note.created", id, None, payload).await?;
    tx.commit().await?;
    module.feed.signal();
    Ok((StatusCode::CREATED, Json(view(row))))
}

/// The conversation's notes, oldest first.
#[utoipa::path(
    get, path = "/api/v1/conversations/{id}/notes", tag = "inbox", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<NoteView>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn list_notes(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<NoteView>>, ApiError> {
    let page = params.parse()?;
    let exists = sqlx::query_scalar!(
        "SELECT 1 FROM communications.conversations WHERE tenant_id = $1 AND id = $2",
        caller.tenant_id.0,
        id
    )
    .fetch_optional(&module.pool)
    .await?;
    if exists.is_none() {
        return Err(ApiError::NotFound("conversation"));
    }
    let rows = sqlx::query_as!(
        NoteRow,
        r#"SELECT id, conversation_id, text, author_agent_id, created_at FROM communications.conversation_notes
           WHERE tenant_id = $1 AND conversation_id = $2 AND ($3::uuid IS NULL OR id > $3)
           ORDER BY id LIMIT $4"#,
        caller.tenant_id.0,
        id,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(&module.pool)
    .await?;
    Ok(Json(Page::from_rows(rows.into_iter().map(view).collect(), page, |note| note.id)))
}
