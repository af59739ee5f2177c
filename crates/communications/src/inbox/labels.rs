//! Labels: a tenant's named colours (names unique regardless of case), put on conversations.
//! `PUT /api/v1/conversations/{id}/labels` replaces a conversation's set; each change is in the
//! change log. [`labels_of`] gives the labels of many conversations at once, for their views.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path};
use kernel::ids::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgExecutor};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::inbound::record_change;
use super::repository as conversations;
use crate::Communications;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(list_labels, create_label))
        .routes(routes!(delete_label))
        .routes(routes!(set_conversation_labels))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LabelView {
    pub id: Uuid,
    pub name: String,
    /// `#rrggbb`.
    pub color: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LabelList {
    pub items: Vec<LabelView>,
}

/// The tenant's labels by name.
#[utoipa::path(get, path = "/api/v1/labels", tag = "inbox", responses((status = 200, body = LabelList)))]
pub async fn list_labels(State(module): State<Communications>, caller: Caller) -> Result<Json<LabelList>, ApiError> {
    let items = sqlx::query_as!(
        LabelView,
        r#"SELECT id, name, color, created_at FROM communications.labels
           WHERE tenant_id = $1 ORDER BY lower(name), id"#,
        caller.tenant_id.0,
    )
    .fetch_all(&module.pool)
    .await?;
    Ok(Json(LabelList { items }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLabel {
    /// 1 to 50 characters, unique in the workspace regardless of case.
    pub name: String,
    /// `#rrggbb`.
    pub color: Option<String>,
}

/// Creates a label; a name the workspace has already (in any case) is a 409.
#[utoipa::path(
    post, path = "/api/v1/labels", tag = "inbox", request_body = CreateLabel,
    responses((status = 201, body = LabelView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn create_label(
    State(module): State<Communications>,
    caller: Caller,
    Json(request): Json<CreateLabel>,
) -> Result<(StatusCode, Json<LabelView>), ApiError> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 50 || name.chars().any(char::is_control) {
        return Err(ApiError::validation("name", "must be 1 to 50 characters without control characters"));
    }
    let color = request.color.as_deref().map(str::to_ascii_lowercase);
    if let Some(color) = &color
        && !(color.len() == 7 && color.starts_with('#') && color[1..].chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(ApiError::validation("color", "must be a colour as #rrggbb"));
    }
    let created = sqlx::query_as!(
        LabelView,
        r#"INSERT INTO communications.labels (id, tenant_id, name, color) VALUES ($1, $2, $3, $4)
           RETURNING id, name, color, created_at"#,
        Uuid::now_v7(),
        caller.tenant_id.0,
        name,
        color,
    )
    .fetch_one(&module.pool)
    .await
    .map_err(|error| {
        let error = ApiError::from(error);
        // The one unique index: (tenant, lower(name)).
        if error.is_unique_violation() {
            ApiError::conflict(Some("name"), format!("a label named `{name}` exists already"))
        } else {
            error
        }
    })?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Deletes a label; the conversations that had it lose it (each change recorded).
#[utoipa::path(
    delete, path = "/api/v1/labels/{id}", tag = "inbox", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody))
)]
pub async fn delete_label(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut tx = module.pool.begin().await?;
    // FOR UPDATE waits for replacements holding the label (KEY SHARE), so the links read next
    // are all of them.
    sqlx::query_scalar!(
        "SELECT id FROM communications.labels WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        caller.tenant_id.0,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("label"))?;
    let had = sqlx::query_scalar!(
        "DELETE FROM communications.conversation_labels WHERE label_id = $1 RETURNING conversation_id",
        id,
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM communications.labels WHERE id = $1", id).execute(&mut *tx).await?;
    let remaining = labels_of(&mut *tx, caller.tenant_id, &had).await?;
    for conversation in had {
        let ids: Vec<Uuid> = remaining.get(&conversation).into_iter().flatten().map(|label| label.id).collect();
        let payload = json!({ "labels": ids });
        record_change(&mut tx, caller.tenant_id.0, "conversation.updated", conversation, None, payload).await?;
    }
    tx.commit().await?;
    module.feed.signal();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLabels {
    /// The label ids the conversation has from now on (at most 50).
    pub labels: Vec<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationLabels {
    pub conversation_id: Uuid,
    pub labels: Vec<LabelView>,
}

/// Replaces the conversation's labels. A label the workspace does not have is a 422 on `labels`.
#[utoipa::path(
    put, path = "/api/v1/conversations/{id}/labels", tag = "inbox", params(("id" = Uuid, Path)), request_body = SetLabels,
    responses((status = 200, body = ConversationLabels), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn set_conversation_labels(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<SetLabels>,
) -> Result<Json<ConversationLabels>, ApiError> {
    let mut wanted = request.labels;
    wanted.sort();
    wanted.dedup();
    if wanted.len() > 50 {
        return Err(ApiError::validation("labels", "at most 50 labels"));
    }
    let tenant = caller.tenant_id;
    let mut tx = module.pool.begin().await?;
    // Concurrent replacements of one conversation's set apply one after the other.
    conversations::lock(&mut tx, tenant, id).await?;
    let changed = replace(&mut tx, tenant, id, &wanted).await?;
    let labels = labels_of(&mut *tx, tenant, &[id]).await?.remove(&id).unwrap_or_default();
    if changed {
        let payload = json!({ "labels": labels.iter().map(|label| label.id).collect::<Vec<_>>() });
        record_change(&mut tx, tenant.0, "conversation.updated", id, None, payload).await?;
    }
    tx.commit().await?;
    if changed {
        module.feed.signal();
    }
    Ok(Json(ConversationLabels { conversation_id: id, labels }))
}

/// Gives the (locked) conversation exactly the labels `wanted`; answers whether anything changed.
async fn replace(
    tx: &mut PgConnection,
    tenant: TenantId,
    conversation: Uuid,
    wanted: &[Uuid],
) -> Result<bool, ApiError> {
    // KEY SHARE: a label cannot be deleted between this check and the insert below.
    let known = sqlx::query_scalar!(
        "SELECT id FROM communications.labels WHERE tenant_id = $1 AND id = ANY($2) FOR KEY SHARE",
        tenant.0,
        wanted,
    )
    .fetch_all(&mut *tx)
    .await?;
    if let Some(unknown) = wanted.iter().find(|id| !known.contains(id)) {
        return Err(ApiError::validation("labels", format!("no such label: {unknown}")));
    }
    let removed = sqlx::query!(
        "DELETE FROM communications.conversation_labels WHERE conversation_id = $1 AND NOT (label_id = ANY($2))",
        conversation,
        wanted,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let added = sqlx::query!(
        r#"INSERT INTO communications.conversation_labels (conversation_id, label_id)
           SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING"#,
        conversation,
        wanted,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(removed + added > 0)
}

/// The labels of each of `conversation_ids` (the tenant's only), by name; conversations without
/// labels are absent from the map.
pub async fn labels_of(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    conversation_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<LabelView>>, ApiError> {
    if conversation_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        r#"SELECT cl.conversation_id, l.id, l.name, l.color, l.created_at
           FROM communications.conversation_labels cl
           JOIN communications.labels l ON l.id = cl.label_id
           WHERE l.tenant_id = $1 AND cl.conversation_id = ANY($2)
           ORDER BY lower(l.name), l.id"#,
        tenant.0,
        conversation_ids,
    )
    .fetch_all(db)
    .await?;
    let mut labels: HashMap<Uuid, Vec<LabelView>> = HashMap::new();
    for row in rows {
        labels.entry(row.conversation_id).or_default().push(LabelView {
            id: row.id,
            name: row.name,
            color: row.color,
            created_at: row.created_at,
        });
    }
    Ok(labels)
}
