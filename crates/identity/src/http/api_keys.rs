//! `/api/v1/api-keys`: operators and admins manage the workspace's API keys.

use axum::extract::State;
use axum::http::StatusCode;
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use kernel::ids::ApiKeyId;
use kernel::pagination::{Page, PageParams};
use serde::{Deserialize, Serialize};

use crate::Identity;
use crate::api_keys::{self, ApiKey};

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// A label, e.g. "backoffice integration".
    pub name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The key itself. Shown this once; only a digest is stored.
    pub api_key: String,
}

#[utoipa::path(
    get, path = "/api/v1/api-keys", tag = "api-keys",
    params(PageParams),
    responses((status = 200, body = Page<ApiKey>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn list_api_keys(
    State(identity): State<Identity>,
    caller: Caller,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<ApiKey>>, ApiError> {
    caller.require_admin()?;
    let page = params.parse()?;
    let rows = api_keys::list(&identity.pool, caller.tenant_id, page).await?;
    Ok(Json(Page::from_rows(rows, page, |key| key.id.0)))
}

#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "api-keys",
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, body = CreatedApiKey, description = "The key, shown once"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn create_api_key(
    State(identity): State<Identity>,
    caller: Caller,
    Json(body): Json<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    caller.require_admin()?;
    let name = api_keys::parse_name(body.name.as_deref())?;
    let issued = api_keys::issue(&identity.pool, caller.tenant_id, &name).await?;
    tracing::info!(tenant_id = %caller.tenant_id, api_key_id = %issued.key.id, "api key created");
    Ok((StatusCode::CREATED, Json(CreatedApiKey { key: issued.key, api_key: issued.secret })))
}

#[utoipa::path(
    get, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = ApiKeyId, Path, description = "The key's id")),
    responses((status = 200, body = ApiKey), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn get_api_key(
    State(identity): State<Identity>,
    caller: Caller,
    Path(id): Path<ApiKeyId>,
) -> Result<Json<ApiKey>, ApiError> {
    caller.require_admin()?;
    Ok(Json(api_keys::get(&identity.pool, caller.tenant_id, id).await?))
}

/// Revokes a key at once; revoking it again changes nothing.
#[utoipa::path(
    post, path = "/api/v1/api-keys/{id}/revoke", tag = "api-keys",
    params(("id" = ApiKeyId, Path, description = "The key's id")),
    responses((status = 200, body = ApiKey), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn revoke_api_key(
    State(identity): State<Identity>,
    caller: Caller,
    Path(id): Path<ApiKeyId>,
) -> Result<Json<ApiKey>, ApiError> {
    caller.require_admin()?;
    let key = api_keys::revoke(&identity.pool, caller.tenant_id, id).await?;
    identity.forget_keys();
    tracing::info!(tenant_id = %caller.tenant_id, api_key_id = %id, "api key revoked");
    Ok(Json(key))
}
