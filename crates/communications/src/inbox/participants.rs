//! Who takes part in a conversation, each with a role and free attributes: the conversation's
//! contact (`customer` when it starts), and anyone else whose message joins it (an email
//! answered from another address: `participant`). Operators give roles their own meaning
//! (`seeker`, `building_contact`, …) and route on them.

use axum::extract::State;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::inbound::record_change;
use super::repository as conversations;
use crate::Communications;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Participant {
    pub contact_id: Uuid,
    pub contact_name: Option<String>,
    pub role: String,
    #[schema(value_type = Object)]
    pub attributes: Value,
    pub joined_at: DateTime<Utc>,
}

/// Adds the sender of a message to its conversation (once): `customer` when it is the
/// conversation's own contact, else `participant`.
pub async fn join(tx: &mut PgConnection, tenant: Uuid, conversation: Uuid, contact: Uuid) -> Result<(), ApiError> {
    sqlx::query!(
        r#"INSERT INTO communications.conversation_participants (conversation_id, contact_id, tenant_id, role)
           SELECT c.id, $3, $2, CASE WHEN c.contact_id = $3 THEN 'customer' ELSE 'participant' END
           FROM communications.conversations c WHERE c.id = $1
           ON CONFLICT (conversation_id, contact_id) DO NOTHING"#,
        conversation,
        tenant,
        contact,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A merge: the merged contact's participations become the survivor's (where the survivor takes
/// part already, its own row stays).
pub async fn merge(tx: &mut PgConnection, tenant: Uuid, merged: Uuid, survivor: Uuid) -> Result<(), ApiError> {
    sqlx::query!(
        r#"UPDATE communications.conversation_participants p SET contact_id = $3
           WHERE p.tenant_id = $1 AND p.contact_id = $2
             AND NOT EXISTS (SELECT 1 FROM communications.conversation_participants s
                             WHERE s.conversation_id = p.conversation_id AND s.contact_id = $3)"#,
        tenant,
        merged,
        survivor,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "DELETE FROM communications.conversation_participants WHERE tenant_id = $1 AND contact_id = $2",
        tenant,
        merged,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn list(db: &mut PgConnection, conversation: Uuid) -> Result<Vec<Participant>, ApiError> {
    Ok(sqlx::query_as!(
        Participant,
        r#"SELECT p.contact_id, k.display_name AS contact_name, p.role, p.attributes, p.joined_at
           FROM communications.conversation_participants p
           JOIN communications.contacts k ON k.id = p.contact_id
           WHERE p.conversation_id = $1 ORDER BY p.joined_at, p.contact_id"#,
        conversation,
    )
    .fetch_all(&mut *db)
    .await?)
}

/// The conversation's participants, in the order they joined.
#[utoipa::path(
    get, path = "/api/v1/conversations/{id}/participants", tag = "inbox", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<Participant>), (status = 404, body = ErrorBody))
)]
pub async fn participants(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<Participant>>, ApiError> {
    let mut tx = module.pool.begin().await?;
    conversations::lock(&mut tx, caller.tenant_id, id).await?;
    let found = list(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(found))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantRequest {
    /// `[a-z][a-z0-9_]{0,49}`, e.g. `seeker`, `building_contact`.
    pub role: String,
    /// Free attributes (an object of at most 4 KiB).
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

/// Adds a contact of the workspace to the conversation, or changes its role and attributes.
#[utoipa::path(
    put, path = "/api/v1/conversations/{id}/participants/{contact_id}", tag = "inbox",
    params(("id" = Uuid, Path), ("contact_id" = Uuid, Path)), request_body = ParticipantRequest,
    responses((status = 200, body = Vec<Participant>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn put_participant(
    State(module): State<Communications>,
    caller: Caller,
    Path((id, contact)): Path<(Uuid, Uuid)>,
    Json(request): Json<ParticipantRequest>,
) -> Result<Json<Vec<Participant>>, ApiError> {
    let role = request.role.trim();
    let valid_role = role.len() <= 50
        && role.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && role.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_role {
        return Err(ApiError::validation("role", "must be 1 to 50 of a-z, 0-9 and _, starting with a letter"));
    }
    let attributes = request.attributes.unwrap_or_else(|| json!({}));
    if !attributes.is_object() || attributes.to_string().len() > 4096 {
        return Err(ApiError::validation("attributes", "must be an object of at most 4 KiB"));
    }
    let tenant = caller.tenant_id.0;
    let mut tx = module.pool.begin().await?;
    conversations::lock(&mut tx, caller.tenant_id, id).await?;
    let known = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM communications.contacts
                          WHERE tenant_id = $1 AND id = $2 AND merged_into IS NULL) AS "known!""#,
        tenant,
        contact,
    )
    .fetch_one(&mut *tx)
    .await?;
    if !known {
        return Err(ApiError::NotFound("contact"));
    }
    sqlx::query!(
        r#"INSERT INTO communications.conversation_participants (conversation_id, contact_id, tenant_id, role, attributes)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (conversation_id, contact_id) DO UPDATE SET role = EXCLUDED.role, attributes = EXCLUDED.attributes"#,
        id,
        contact,
        tenant,
        role,
        attributes,
    )
    .execute(&mut *tx)
    .await?;
    let payload = json!({ "participant": { "contact_id": contact, "role": role } });
    record_change(&mut tx, tenant, "conversation.updated", id, None, payload).await?;
    let found = list(&mut tx, id).await?;
    tx.commit().await?;
    module.feed.signal();
    Ok(Json(found))
}
