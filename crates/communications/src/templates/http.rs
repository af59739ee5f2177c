//! `/api/v1/templates`: operators (and admin agents) write templates; any caller of the tenant
//! may read and preview them.

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

use super::service::{CreateTemplate, Rendered, TemplateRecord, UpdateTemplate};
use crate::Communications;
use crate::messages::model::Channel;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template, update_template, delete_template))
        .routes(routes!(preview_template))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TemplateFilter {
    /// Only templates of this trigger event (e.g. `booking.confirmed`).
    pub trigger_event: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    pub channel: Channel,
    /// Falls back to its language, then to the template's default locale.
    pub locale: Option<String>,
    /// What the template's expressions refer to (`{{ booking.ref }}` → `{"booking":{"ref":…}}`).
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
}

#[utoipa::path(
    get, path = "/api/v1/templates", tag = "templates", params(TemplateFilter),
    responses((status = 200, body = Page<TemplateRecord>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn list_templates(
    State(module): State<Communications>,
    caller: Caller,
    Query(filter): Query<TemplateFilter>,
) -> Result<Json<Page<TemplateRecord>>, ApiError> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() }.parse()?;
    let event = filter.trigger_event.as_deref().map(str::trim).filter(|e| !e.is_empty());
    let rows = module.templates(caller.tenant_id, event, page).await?;
    Ok(Json(Page::from_rows(rows, page, |t| t.id)))
}

#[utoipa::path(
    post, path = "/api/v1/templates", tag = "templates", request_body = CreateTemplate,
    responses(
        (status = 201, body = TemplateRecord),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A template of that name exists (`field`: `name`)"),
        (status = 422, body = ErrorBody, description = "A field is invalid (named in `field`, e.g. `variants[0].body.text` for a template syntax error)"),
    )
)]
pub async fn create_template(
    State(module): State<Communications>,
    caller: Caller,
    Json(body): Json<CreateTemplate>,
) -> Result<(StatusCode, Json<TemplateRecord>), ApiError> {
    caller.require_admin()?;
    let created = module.create_template(caller.tenant_id, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get, path = "/api/v1/templates/{id}", tag = "templates", params(("id" = Uuid, Path)),
    responses((status = 200, body = TemplateRecord), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn get_template(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<TemplateRecord>, ApiError> {
    Ok(Json(module.template(caller.tenant_id, id).await?))
}

/// Changes what is sent; `variants`, when sent, replaces every variant.
#[utoipa::path(
    patch, path = "/api/v1/templates/{id}", tag = "templates", params(("id" = Uuid, Path)),
    request_body = UpdateTemplate,
    responses(
        (status = 200, body = TemplateRecord), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn update_template(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateTemplate>,
) -> Result<Json<TemplateRecord>, ApiError> {
    caller.require_admin()?;
    Ok(Json(module.update_template(caller.tenant_id, id, body).await?))
}

#[utoipa::path(
    delete, path = "/api/v1/templates/{id}", tag = "templates", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn delete_template(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    module.delete_template(caller.tenant_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renders the template as a send would, without sending: the variant used (after locale
/// fallback) and the content.
#[utoipa::path(
    post, path = "/api/v1/templates/{id}/preview", tag = "templates", params(("id" = Uuid, Path)),
    request_body = PreviewRequest,
    responses(
        (status = 200, body = Rendered),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "No variant for the channel (`channel`), a bad `locale`, or a missing variable (`variables.<path>`)"),
    )
)]
pub async fn preview_template(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<PreviewRequest>,
) -> Result<Json<Rendered>, ApiError> {
    let variables = body.variables.unwrap_or(Value::Null);
    let rendered =
        module.preview_template(caller.tenant_id, id, body.channel, body.locale.as_deref(), &variables).await?;
    Ok(Json(rendered))
}
