//! `/api/v1/contacts`: agents (or operator keys) find, edit and merge the tenant's contacts.
//! Another tenant's contact is a 404. A merged contact still answers its GET, with `merged_into`
//! pointing at the survivor, so old links resolve; lists leave it out.

use axum::extract::State;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use kernel::pagination::{Page, PageParams};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::contacts_merge;
use super::contacts_repository::{self as contacts, ContactConversation, ContactRow, Identifier, Search};
use crate::Communications;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(list_contacts))
        .routes(routes!(get_contact, update_contact))
        .routes(routes!(merge_contact))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactView {
    pub id: Uuid,
    pub display_name: Option<String>,
    /// A soft link to the person in an upstream system (free text).
    pub external_id: Option<String>,
    /// IANA zone: quiet hours follow the contact's clock (else the workspace's).
    pub time_zone: Option<String>,
    pub identifiers: Vec<Identifier>,
    /// Set when this contact was merged: the contact that holds its identifiers and
    /// conversations now.
    pub merged_into: Option<Uuid>,
    pub merged_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A contact with its most recent conversations (up to 100; all of them at
/// `/api/v1/conversations?contact_id=`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactDetail {
    #[serde(flatten)]
    pub contact: ContactView,
    pub conversations: Vec<ContactConversation>,
}

fn view(row: ContactRow) -> ContactView {
    ContactView {
        id: row.id,
        display_name: row.display_name,
        external_id: row.external_id,
        time_zone: row.time_zone,
        identifiers: row.identifiers,
        merged_into: row.merged_into,
        merged_at: row.merged_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContactSearch {
    /// Part of the name (any case), of an email address, or of a phone number (its digits).
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The tenant's contacts, newest first; merged contacts are left out.
#[utoipa::path(
    get, path = "/api/v1/contacts", tag = "inbox", params(ContactSearch),
    responses((status = 200, body = Page<ContactView>), (status = 422, body = ErrorBody))
)]
pub async fn list_contacts(
    State(module): State<Communications>,
    caller: Caller,
    Query(search): Query<ContactSearch>,
) -> Result<Json<Page<ContactView>>, ApiError> {
    let page = PageParams { limit: search.limit, cursor: search.cursor.clone() }.parse()?;
    let q = search.q.as_deref();
    if q.is_some_and(|q| q.contains('\0') || q.chars().count() > 200) {
        return Err(ApiError::validation("q", "must be at most 200 characters, without NUL"));
    }
    let rows = contacts::list(&module.pool, caller.tenant_id, &Search::parse(q), page).await?;
    let views: Vec<ContactView> = rows.into_iter().map(view).collect();
    Ok(Json(Page::from_rows(views, page, |c| c.id)))
}

/// A contact with its identifiers and conversations across channels.
#[utoipa::path(
    get, path = "/api/v1/contacts/{id}", tag = "inbox", params(("id" = Uuid, Path)),
    responses((status = 200, body = ContactDetail), (status = 404, body = ErrorBody))
)]
pub async fn get_contact(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ContactDetail>, ApiError> {
    detail(&module, caller, id).await.map(Json)
}

async fn detail(module: &Communications, caller: Caller, id: Uuid) -> Result<ContactDetail, ApiError> {
    let contact = view(contacts::find(&module.pool, caller.tenant_id, id).await?);
    let conversations = contacts::conversations_of(&module.pool, caller.tenant_id, id).await?;
    Ok(ContactDetail { contact, conversations })
}

/// Only what is sent changes; `null` clears a field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContact {
    /// 1 to 200 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    /// 1 to 200 characters of free text.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// IANA zone name (e.g. `Europe/Berlin`) for quiet hours.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub time_zone: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Trimmed; 1 to 200 characters without control characters (NUL is refused by the extractor).
fn short_text(field: &str, value: Option<&String>) -> Result<Option<String>, ApiError> {
    let Some(value) = value.map(|v| v.trim()) else { return Ok(None) };
    if value.is_empty() || value.chars().count() > 200 {
        return Err(ApiError::validation(field, "must be 1 to 200 characters (null clears it)"));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::validation(field, "must not contain control characters"));
    }
    Ok(Some(value.to_owned()))
}

/// Edits the name and the upstream link. A merged contact is a pointer and is not edited (409).
#[utoipa::path(
    patch, path = "/api/v1/contacts/{id}", tag = "inbox", params(("id" = Uuid, Path)), request_body = UpdateContact,
    responses((status = 200, body = ContactDetail), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The contact was merged"),
              (status = 422, body = ErrorBody))
)]
pub async fn update_contact(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<UpdateContact>,
) -> Result<Json<ContactDetail>, ApiError> {
    let display_name = request.display_name.as_ref().map(|v| short_text("display_name", v.as_ref())).transpose()?;
    let external_id = request.external_id.as_ref().map(|v| short_text("external_id", v.as_ref())).transpose()?;
    let time_zone = match &request.time_zone {
        Some(Some(zone)) if zone.parse::<chrono_tz::Tz>().is_err() => {
            return Err(ApiError::validation("time_zone", "must be an IANA zone name such as Europe/Berlin"));
        }
        other => other.clone(),
    };
    let current = contacts::find(&module.pool, caller.tenant_id, id).await?;
    if let Some(survivor) = current.merged_into {
        return Err(ApiError::conflict(None, format!("this contact was merged into {survivor}: edit that one")));
    }
    let display_name = display_name.as_ref().map(Option::as_deref);
    let external_id = external_id.as_ref().map(Option::as_deref);
    let time_zone = time_zone.as_ref().map(Option::as_deref);
    if !contacts::update(&module.pool, caller.tenant_id, id, display_name, external_id, time_zone).await? {
        return Err(ApiError::NotFound("contact"));
    }
    detail(&module, caller, id).await.map(Json)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The contact that remains (the survivor).
    pub into: Uuid,
}

/// Merges this contact into another: identifiers, conversations and messages move to the
/// survivor, this contact remains as a pointer (`merged_into`), and the merge is audited. Where
/// both have an unresolved conversation on the same channel account, this contact's messages move
/// into the survivor's and its conversation is resolved. Repeating a merge changes nothing.
/// Answers the survivor.
#[utoipa::path(
    post, path = "/api/v1/contacts/{id}/merge", tag = "inbox", params(("id" = Uuid, Path)), request_body = MergeRequest,
    responses((status = 200, body = ContactDetail), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Merged into another contact already"),
              (status = 422, body = ErrorBody, description = "Into itself, or into a merged contact"))
)]
pub async fn merge_contact(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<MergeRequest>,
) -> Result<Json<ContactDetail>, ApiError> {
    let mut tx = module.pool.begin().await?;
    contacts_merge::merge(&mut tx, caller, id, request.into).await?;
    tx.commit().await?;
    module.feed.signal();
    detail(&module, caller, request.into).await.map(Json)
}
