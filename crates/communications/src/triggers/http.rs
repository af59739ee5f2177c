//! `POST /api/v1/events` and `/api/v1/trigger-rules`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use kernel::pagination::{Page, PageParams};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::cron::{self, CronInput, CronTrigger};
use super::ingest::EventOutcome;
use super::rules::{self, RuleInput, TriggerRule};
use super::{event, hasura};
use crate::Communications;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(post_event))
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, replace_rule, delete_rule))
        .routes(routes!(list_cron, create_cron))
        .routes(routes!(get_cron, replace_cron, delete_cron))
}

/// Takes a domain event `{"event","occurred_at","data","id"}`, or a Hasura event-trigger or
/// cron-trigger payload as Hasura sends it (configure the trigger's webhook with an `Authorization: Bearer <api key>`
/// header). An event id already processed is acknowledged and changes nothing.
#[utoipa::path(
    post, path = "/api/v1/events", tag = "triggers",
    request_body(content = Object, description = "A domain event or a Hasura event-trigger payload"),
    responses(
        (status = 202, body = EventOutcome, description = "Processed: the messages its rules queued"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn post_event(
    State(module): State<Communications>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<EventOutcome>), ApiError> {
    kernel::extract::require_json(&headers)?;
    let event = match hasura::read(&body) {
        Some(event) => {
            caller.require_admin()?;
            event
        }
        None => {
            let body: Value = kernel::extract::parse_json(&body)?;
            caller.require_admin()?;
            event::parse(body)?
        }
    };
    let outcome = module.ingest_event(caller.tenant_id, event).await?;
    Ok((StatusCode::ACCEPTED, Json(outcome)))
}

#[utoipa::path(
    get, path = "/api/v1/trigger-rules", tag = "triggers", params(PageParams),
    responses((status = 200, body = Page<TriggerRule>), (status = 401, body = ErrorBody))
)]
pub async fn list_rules(
    State(module): State<Communications>,
    caller: Caller,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<TriggerRule>>, ApiError> {
    let page = params.parse()?;
    let rows = rules::list(&module.pool, caller.tenant_id, page).await?;
    Ok(Json(Page::from_rows(rows, page, |rule| rule.id)))
}

#[utoipa::path(
    post, path = "/api/v1/trigger-rules", tag = "triggers", request_body = RuleInput,
    responses((status = 201, body = TriggerRule), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn create_rule(
    State(module): State<Communications>,
    caller: Caller,
    Json(input): Json<RuleInput>,
) -> Result<(StatusCode, Json<TriggerRule>), ApiError> {
    caller.require_admin()?;
    input.validate()?;
    module.template_exists(caller.tenant_id, &input.template_name).await?;
    let rule = rules::insert(&module.pool, caller.tenant_id, &input).await?;
    module.rule_cache.invalidate();
    Ok((StatusCode::CREATED, Json(rule)))
}

#[utoipa::path(
    get, path = "/api/v1/trigger-rules/{id}", tag = "triggers", params(("id" = Uuid, Path)),
    responses((status = 200, body = TriggerRule), (status = 404, body = ErrorBody))
)]
pub async fn get_rule(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<TriggerRule>, ApiError> {
    Ok(Json(rules::find(&module.pool, caller.tenant_id, id).await?))
}

/// Replaces a rule as a whole.
#[utoipa::path(
    put, path = "/api/v1/trigger-rules/{id}", tag = "triggers", params(("id" = Uuid, Path)), request_body = RuleInput,
    responses((status = 200, body = TriggerRule), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn replace_rule(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(input): Json<RuleInput>,
) -> Result<Json<TriggerRule>, ApiError> {
    caller.require_admin()?;
    input.validate()?;
    rules::find(&module.pool, caller.tenant_id, id).await?;
    module.template_exists(caller.tenant_id, &input.template_name).await?;
    let rule = rules::replace(&module.pool, caller.tenant_id, id, &input).await?;
    module.rule_cache.invalidate();
    Ok(Json(rule))
}

#[utoipa::path(
    delete, path = "/api/v1/trigger-rules/{id}", tag = "triggers", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody))
)]
pub async fn delete_rule(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    rules::delete(&module.pool, caller.tenant_id, id).await?;
    module.rule_cache.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/api/v1/cron-triggers", tag = "triggers", params(PageParams),
    responses((status = 200, body = Page<CronTrigger>), (status = 401, body = ErrorBody))
)]
pub async fn list_cron(
    State(module): State<Communications>,
    caller: Caller,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<CronTrigger>>, ApiError> {
    let page = params.parse()?;
    let rows = cron::list(&module.pool, caller.tenant_id, page).await?;
    Ok(Json(Page::from_rows(rows, page, |trigger| trigger.id)))
}

/// Emits the event `name` with `{"scheduled_time","payload"}` as its data on a five-field UTC
/// cron schedule; trigger rules on `name` send the messages.
#[utoipa::path(
    post, path = "/api/v1/cron-triggers", tag = "triggers", request_body = CronInput,
    responses(
        (status = 201, body = CronTrigger), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn create_cron(
    State(module): State<Communications>,
    caller: Caller,
    Json(input): Json<CronInput>,
) -> Result<(StatusCode, Json<CronTrigger>), ApiError> {
    caller.require_admin()?;
    let cron = input.validate()?;
    Ok((StatusCode::CREATED, Json(cron::insert(&module.pool, caller.tenant_id, &cron).await?)))
}

#[utoipa::path(
    get, path = "/api/v1/cron-triggers/{id}", tag = "triggers", params(("id" = Uuid, Path)),
    responses((status = 200, body = CronTrigger), (status = 404, body = ErrorBody))
)]
pub async fn get_cron(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<CronTrigger>, ApiError> {
    Ok(Json(cron::find(&module.pool, caller.tenant_id, id).await?))
}

/// Replaces a cron trigger as a whole; its next run follows the new schedule.
#[utoipa::path(
    put, path = "/api/v1/cron-triggers/{id}", tag = "triggers", params(("id" = Uuid, Path)), request_body = CronInput,
    responses(
        (status = 200, body = CronTrigger), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn replace_cron(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(input): Json<CronInput>,
) -> Result<Json<CronTrigger>, ApiError> {
    caller.require_admin()?;
    let cron = input.validate()?;
    Ok(Json(cron::replace(&module.pool, caller.tenant_id, id, &cron).await?))
}

#[utoipa::path(
    delete, path = "/api/v1/cron-triggers/{id}", tag = "triggers", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody))
)]
pub async fn delete_cron(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    cron::delete(&module.pool, caller.tenant_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
