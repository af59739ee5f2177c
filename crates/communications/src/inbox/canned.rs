//! Canned responses: a tenant's reusable replies, picked by short code (`/thanks`) while an agent
//! writes. Short codes are unique per tenant.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use kernel::pagination::{Page, PageParams};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Communications;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new().routes(routes!(list_canned, create_canned)).routes(routes!(update_canned, delete_canned))
}

pub const MAX_TEXT_CHARS: usize = 4_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CannedResponse {
    pub id: Uuid,
    pub short_code: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn short_code(value: &str) -> Result<&str, ApiError> {
    let valid = (1..=50).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid { Ok(value) } else { Err(ApiError::validation("short_code", "must be 1 to 50 of a-z, 0-9, _ and -")) }
}

fn text(value: &str) -> Result<&str, ApiError> {
    if value.trim().is_empty() || value.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::validation("text", format!("must be 1 to {MAX_TEXT_CHARS} characters, not only blanks")));
    }
    Ok(value)
}

/// The one unique index of the table: (tenant, short code).
fn taken(error: sqlx::Error, code: &str) -> ApiError {
    let error = ApiError::from(error);
    if error.is_unique_violation() {
        ApiError::conflict(Some("short_code"), format!("the short code `{code}` is taken"))
    } else {
        error
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CannedSearch {
    /// The start of a short code, or part of the text (any case).
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The tenant's canned responses by short code.
#[utoipa::path(
    get, path = "/api/v1/canned-responses", tag = "inbox", params(CannedSearch),
    responses((status = 200, body = Page<CannedResponse>), (status = 422, body = ErrorBody))
)]
pub async fn list_canned(
    State(module): State<Communications>,
    caller: Caller,
    Query(search): Query<CannedSearch>,
) -> Result<Json<Page<CannedResponse>>, ApiError> {
    let page = PageParams { limit: search.limit, cursor: search.cursor.clone() }.parse()?;
    let q = search.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.contains('\0') || q.chars().count() > 200) {
        return Err(ApiError::validation("q", "must be at most 200 characters, without NUL"));
    }
    let escaped = q.map(|q| {
        q.to_lowercase()
            .chars()
            .flat_map(|c| if matches!(c, '%' | '_' | '\\') { vec!['\\', c] } else { vec![c] })
            .collect::<String>()
    });
    // A leading slash is how agents type a short code in the composer.
    let prefix = escaped.as_deref().map(|q| format!("{}%", q.trim_start_matches('/')));
    let contains = escaped.as_deref().map(|q| format!("%{q}%"));
    // Keyset on the short code (unique per tenant); the cursor is the last row's id.
    let rows = sqlx::query_as!(
        CannedResponse,
        r#"SELECT id, short_code, text, created_at, updated_at FROM communications.canned_responses
           WHERE tenant_id = $1
             AND ($2::text IS NULL OR short_code LIKE $2 OR text ILIKE $3)
             AND ($4::uuid IS NULL OR short_code >
                  (SELECT p.short_code FROM communications.canned_responses p WHERE p.tenant_id = $1 AND p.id = $4))
           ORDER BY short_code LIMIT $5"#,
        caller.tenant_id.0,
        prefix,
        contains,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(&module.pool)
    .await?;
    Ok(Json(Page::from_rows(rows, page, |row| row.id)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCanned {
    /// 1 to 50 of a-z, 0-9, `_` and `-`; unique in the workspace.
    pub short_code: String,
    /// 1 to 4000 characters.
    pub text: String,
}

#[utoipa::path(
    post, path = "/api/v1/canned-responses", tag = "inbox", request_body = CreateCanned,
    responses((status = 201, body = CannedResponse), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn create_canned(
    State(module): State<Communications>,
    caller: Caller,
    Json(request): Json<CreateCanned>,
) -> Result<(StatusCode, Json<CannedResponse>), ApiError> {
    let code = short_code(&request.short_code)?;
    let text = text(&request.text)?;
    let created = sqlx::query_as!(
        CannedResponse,
        r#"INSERT INTO communications.canned_responses (id, tenant_id, short_code, text) VALUES ($1, $2, $3, $4)
           RETURNING id, short_code, text, created_at, updated_at"#,
        Uuid::now_v7(),
        caller.tenant_id.0,
        code,
        text,
    )
    .fetch_one(&module.pool)
    .await
    .map_err(|error| taken(error, code))?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Only what is sent changes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCanned {
    pub short_code: Option<String>,
    pub text: Option<String>,
}

#[utoipa::path(
    patch, path = "/api/v1/canned-responses/{id}", tag = "inbox", params(("id" = Uuid, Path)), request_body = UpdateCanned,
    responses((status = 200, body = CannedResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody))
)]
pub async fn update_canned(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<UpdateCanned>,
) -> Result<Json<CannedResponse>, ApiError> {
    let code = request.short_code.as_deref().map(short_code).transpose()?;
    let text = request.text.as_deref().map(text).transpose()?;
    let updated = sqlx::query_as!(
        CannedResponse,
        r#"UPDATE communications.canned_responses SET
               short_code = COALESCE($3, short_code), text = COALESCE($4, text), updated_at = now()
           WHERE tenant_id = $1 AND id = $2
           RETURNING id, short_code, text, created_at, updated_at"#,
        caller.tenant_id.0,
        id,
        code,
        text,
    )
    .fetch_optional(&module.pool)
    .await
    .map_err(|error| taken(error, code.unwrap_or_default()))?
    .ok_or(ApiError::NotFound("canned response"))?;
    Ok(Json(updated))
}

#[utoipa::path(
    delete, path = "/api/v1/canned-responses/{id}", tag = "inbox", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody))
)]
pub async fn delete_canned(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let deleted = sqlx::query!(
        "DELETE FROM communications.canned_responses WHERE tenant_id = $1 AND id = $2",
        caller.tenant_id.0,
        id
    )
    .execute(&module.pool)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound("canned response"));
    }
    Ok(StatusCode::NO_CONTENT)
}
