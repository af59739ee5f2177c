//! `/api/v1/channel-accounts`: operators (and admin agents) manage channels; any caller of the
//! tenant may read them. Secrets go in, masks come out.

use axum::extract::State;
use axum::http::StatusCode;
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use kernel::pagination::{Page, PageParams};
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::service::{ChannelAccountView, CreateAccount, ProviderView};
use super::test_message::{TestMessage, TestMessageReceipt};
use super::{ChannelType, LifecycleAction, ProviderKind};
use crate::Communications;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(list_channel_accounts, create_channel_account))
        .routes(routes!(get_channel_account, update_channel_account))
        .routes(routes!(verify_channel_account))
        .routes(routes!(suspend_channel_account))
        .routes(routes!(reactivate_channel_account))
        .routes(routes!(revoke_channel_account))
        .routes(routes!(send_test_message))
        .routes(routes!(add_provider))
        .routes(routes!(update_provider, remove_provider))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannelAccount {
    pub channel_type: ChannelType,
    /// meta (whatsapp), ses (email), sns or twilio (sms); omit for webchat. Defaults per channel.
    pub provider: Option<ProviderKind>,
    pub display_name: String,
    /// Typed per provider, secrets included (they are encrypted and only ever shown masked).
    #[schema(value_type = Object)]
    pub config: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannelAccount {
    pub display_name: Option<String>,
    /// Merged over the primary provider's configuration: send only what changes.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// Recorded with a suspension or revocation.
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddProvider {
    pub provider: ProviderKind,
    /// 0 = primary; default: after the existing ones.
    pub priority: Option<i32>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[schema(value_type = Object)]
    pub config: Value,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    pub priority: Option<i32>,
    pub enabled: Option<bool>,
    /// Merged over the current configuration: send only what changes.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
}

#[utoipa::path(
    get, path = "/api/v1/channel-accounts", tag = "channels", params(PageParams),
    responses((status = 200, body = Page<ChannelAccountView>), (status = 401, body = ErrorBody))
)]
pub async fn list_channel_accounts(
    State(module): State<Communications>,
    caller: Caller,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<ChannelAccountView>>, ApiError> {
    let page = params.parse()?;
    let rows = module.channel_accounts(caller.tenant_id, page).await?;
    Ok(Json(Page::from_rows(rows, page, |account| account.id)))
}

#[utoipa::path(
    post, path = "/api/v1/channel-accounts", tag = "channels", request_body = CreateChannelAccount,
    responses(
        (status = 201, body = ChannelAccountView, description = "Created, pending verification"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The workspace already has an account of that channel type"),
        (status = 422, body = ErrorBody, description = "A field is invalid (named in `field`, e.g. `config.from_address`)"),
    )
)]
pub async fn create_channel_account(
    State(module): State<Communications>,
    caller: Caller,
    Json(body): Json<CreateChannelAccount>,
) -> Result<(StatusCode, Json<ChannelAccountView>), ApiError> {
    caller.require_admin()?;
    let input = CreateAccount {
        channel_type: body.channel_type,
        provider: body.provider,
        display_name: body.display_name,
        config: body.config,
    };
    let created = module.create_channel_account(caller.tenant_id, input).await?;
    let created = if created.channel_type == ChannelType::Email {
        // Show the DKIM records at once; a provider failure is recorded, not fatal.
        module.prepare_email_identity(caller.tenant_id, created.id).await?
    } else {
        created
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get, path = "/api/v1/channel-accounts/{id}", tag = "channels",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ChannelAccountView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn get_channel_account(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ChannelAccountView>, ApiError> {
    Ok(Json(module.channel_account(caller.tenant_id, id).await?))
}

#[utoipa::path(
    patch, path = "/api/v1/channel-accounts/{id}", tag = "channels",
    params(("id" = Uuid, Path)), request_body = UpdateChannelAccount,
    responses((status = 200, body = ChannelAccountView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn update_channel_account(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateChannelAccount>,
) -> Result<Json<ChannelAccountView>, ApiError> {
    caller.require_admin()?;
    if body.display_name.is_none() && body.config.is_none() {
        return Err(ApiError::validation("display_name", "send display_name and/or config"));
    }
    if let Some(config) = &body.config {
        module.update_primary_config(caller.tenant_id, id, config).await?;
    }
    if let Some(name) = &body.display_name {
        module.rename_channel_account(caller.tenant_id, id, name).await?;
    }
    Ok(Json(module.channel_account(caller.tenant_id, id).await?))
}

async fn change_status(
    module: &Communications,
    caller: Caller,
    id: Uuid,
    action: LifecycleAction,
    body: Option<Json<StatusChange>>,
) -> Result<Json<ChannelAccountView>, ApiError> {
    caller.require_admin()?;
    let reason = body.and_then(|Json(b)| b.reason);
    Ok(Json(module.change_channel_status(caller.tenant_id, id, action, reason.as_deref()).await?))
}

/// Proves the channel with its provider; activates it once the provider confirms. For email,
/// the answer may still be pending (DKIM records not yet published): call again later.
#[utoipa::path(
    post, path = "/api/v1/channel-accounts/{id}/verify", tag = "channels",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = ChannelAccountView, description = "Verified (active), or still pending with what is missing in `verification`"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Not pending verification"),
        (status = 422, body = ErrorBody, description = "The provider refused the configuration"),
        (status = 502, body = ErrorBody, description = "The provider is unavailable"),
    )
)]
pub async fn verify_channel_account(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ChannelAccountView>, ApiError> {
    caller.require_admin()?;
    Ok(Json(module.verify_channel_account(caller.tenant_id, id).await?))
}

#[utoipa::path(
    post, path = "/api/v1/channel-accounts/{id}/suspend", tag = "channels",
    params(("id" = Uuid, Path)), request_body(content = Option<StatusChange>),
    responses((status = 200, body = ChannelAccountView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Not active"))
)]
pub async fn suspend_channel_account(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Option<Json<StatusChange>>,
) -> Result<Json<ChannelAccountView>, ApiError> {
    change_status(&module, caller, id, LifecycleAction::Suspend, body).await
}

#[utoipa::path(
    post, path = "/api/v1/channel-accounts/{id}/reactivate", tag = "channels",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ChannelAccountView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Not suspended"))
)]
pub async fn reactivate_channel_account(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ChannelAccountView>, ApiError> {
    change_status(&module, caller, id, LifecycleAction::Reactivate, None).await
}

#[utoipa::path(
    post, path = "/api/v1/channel-accounts/{id}/revoke", tag = "channels",
    params(("id" = Uuid, Path)), request_body(content = Option<StatusChange>),
    responses((status = 200, body = ChannelAccountView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Already revoked"))
)]
pub async fn revoke_channel_account(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Option<Json<StatusChange>>,
) -> Result<Json<ChannelAccountView>, ApiError> {
    change_status(&module, caller, id, LifecycleAction::Revoke, body).await
}

/// Sends one message at once through the primary provider, to prove the channel works.
#[utoipa::path(
    post, path = "/api/v1/channel-accounts/{id}/test-message", tag = "channels",
    params(("id" = Uuid, Path)), request_body = TestMessage,
    responses(
        (status = 200, body = TestMessageReceipt, description = "The provider accepted it"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Not active"),
        (status = 422, body = ErrorBody, description = "The provider refused the message or the account"),
        (status = 429, body = ErrorBody), (status = 502, body = ErrorBody),
    )
)]
pub async fn send_test_message(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<TestMessage>,
) -> Result<Json<TestMessageReceipt>, ApiError> {
    caller.require_admin()?;
    Ok(Json(module.send_test_message(caller.tenant_id, id, body).await?))
}

#[utoipa::path(
    post, path = "/api/v1/channel-accounts/{id}/providers", tag = "channels",
    params(("id" = Uuid, Path)), request_body = AddProvider,
    responses((status = 201, body = ProviderView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn add_provider(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<AddProvider>,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    caller.require_admin()?;
    let view =
        module.add_provider(caller.tenant_id, id, body.provider, body.priority, body.enabled, &body.config).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    patch, path = "/api/v1/channel-accounts/{id}/providers/{provider_id}", tag = "channels",
    params(("id" = Uuid, Path), ("provider_id" = Uuid, Path)), request_body = UpdateProvider,
    responses((status = 200, body = ProviderView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn update_provider(
    State(module): State<Communications>,
    caller: Caller,
    Path((id, provider_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateProvider>,
) -> Result<Json<ProviderView>, ApiError> {
    caller.require_admin()?;
    let view = module
        .update_provider(caller.tenant_id, id, provider_id, body.priority, body.enabled, body.config.as_ref())
        .await?;
    Ok(Json(view))
}

#[utoipa::path(
    delete, path = "/api/v1/channel-accounts/{id}/providers/{provider_id}", tag = "channels",
    params(("id" = Uuid, Path), ("provider_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The last provider"))
)]
pub async fn remove_provider(
    State(module): State<Communications>,
    caller: Caller,
    Path((id, provider_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    module.remove_provider(caller.tenant_id, id, provider_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
