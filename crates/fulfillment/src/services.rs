//! `/api/v1/services`: what can be booked — a duration, buffers before and after (travel,
//! cleaning), a price — and the surcharges that quotes add by weekday and time of day.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Fulfillment;
use crate::schedule::Window;
use crate::slots::Needs;

pub fn router() -> OpenApiRouter<Fulfillment> {
    OpenApiRouter::new()
        .routes(routes!(list_services, create_service))
        .routes(routes!(get_service, update_service, delete_service))
        .routes(routes!(list_surcharges, add_surcharge))
        .routes(routes!(delete_surcharge))
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceView {
    pub id: Uuid,
    pub name: String,
    pub duration_minutes: i32,
    pub buffer_before_minutes: i32,
    pub buffer_after_minutes: i32,
    pub price_cents: i64,
    /// ISO 4217.
    pub currency: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ServiceView {
    pub(crate) fn needs(&self) -> Needs {
        Needs {
            duration: chrono::Duration::minutes(i64::from(self.duration_minutes)),
            buffer_before: chrono::Duration::minutes(i64::from(self.buffer_before_minutes)),
            buffer_after: chrono::Duration::minutes(i64::from(self.buffer_after_minutes)),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceList {
    pub items: Vec<ServiceView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceInput {
    pub name: String,
    /// 5 to 1440.
    pub duration_minutes: i32,
    /// 0 to 720 each.
    pub buffer_before_minutes: Option<i32>,
    pub buffer_after_minutes: Option<i32>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceUpdate {
    pub name: Option<String>,
    pub duration_minutes: Option<i32>,
    pub buffer_before_minutes: Option<i32>,
    pub buffer_after_minutes: Option<i32>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub active: Option<bool>,
}

fn check_minutes(field: &str, value: Option<i32>, range: std::ops::RangeInclusive<i32>) -> Result<(), ApiError> {
    match value {
        Some(v) if !range.contains(&v) => {
            Err(ApiError::validation(field, format!("must be {} to {} minutes", range.start(), range.end())))
        }
        _ => Ok(()),
    }
}

fn check_service(
    name: Option<&str>,
    duration: Option<i32>,
    before: Option<i32>,
    after: Option<i32>,
    price: Option<i64>,
    currency: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(name) = name {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::validation("name", "must be 1 to 200 characters"));
        }
    }
    check_minutes("duration_minutes", duration, 5..=1440)?;
    check_minutes("buffer_before_minutes", before, 0..=720)?;
    check_minutes("buffer_after_minutes", after, 0..=720)?;
    if price.is_some_and(|p| p < 0) {
        return Err(ApiError::validation("price_cents", "must not be negative"));
    }
    if currency.is_some_and(|c| !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))) {
        return Err(ApiError::validation("currency", "must be an ISO 4217 code such as EUR"));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/services", tag = "fulfillment", responses((status = 200, body = ServiceList)))]
pub async fn list_services(State(module): State<Fulfillment>, caller: Caller) -> Result<Json<ServiceList>, ApiError> {
    let items = sqlx::query_as!(
        ServiceView,
        r#"SELECT id, name, duration_minutes, buffer_before_minutes, buffer_after_minutes, price_cents, currency, active,
                  created_at, updated_at
           FROM fulfillment.services WHERE tenant_id = $1 ORDER BY name, id LIMIT 500"#,
        caller.tenant_id.0,
    )
    .fetch_all(&module.pool)
    .await?;
    Ok(Json(ServiceList { items }))
}

#[utoipa::path(
    post, path = "/api/v1/services", tag = "fulfillment", request_body = ServiceInput,
    responses((status = 201, body = ServiceView), (status = 422, body = ErrorBody))
)]
pub async fn create_service(
    State(module): State<Fulfillment>,
    caller: Caller,
    Json(input): Json<ServiceInput>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    check_service(
        Some(&input.name),
        Some(input.duration_minutes),
        input.buffer_before_minutes,
        input.buffer_after_minutes,
        input.price_cents,
        input.currency.as_deref(),
    )?;
    let created = sqlx::query_as!(
        ServiceView,
        r#"INSERT INTO fulfillment.services (id, tenant_id, name, duration_minutes, buffer_before_minutes,
                                            buffer_after_minutes, price_cents, currency)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           RETURNING id, name, duration_minutes, buffer_before_minutes, buffer_after_minutes, price_cents, currency,
                     active, created_at, updated_at"#,
        Uuid::now_v7(),
        caller.tenant_id.0,
        input.name.trim(),
        input.duration_minutes,
        input.buffer_before_minutes.unwrap_or(0),
        input.buffer_after_minutes.unwrap_or(0),
        input.price_cents.unwrap_or(0),
        input.currency.as_deref().unwrap_or("EUR"),
    )
    .fetch_one(&module.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(crate) async fn find(db: impl PgExecutor<'_>, tenant: Uuid, id: Uuid) -> Result<ServiceView, ApiError> {
    sqlx::query_as!(
        ServiceView,
        r#"SELECT id, name, duration_minutes, buffer_before_minutes, buffer_after_minutes, price_cents, currency, active,
                  created_at, updated_at
           FROM fulfillment.services WHERE tenant_id = $1 AND id = $2"#,
        tenant,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("service"))
}

#[utoipa::path(
    get, path = "/api/v1/services/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 200, body = ServiceView), (status = 404, body = ErrorBody))
)]
pub async fn get_service(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ServiceView>, ApiError> {
    Ok(Json(find(&module.pool, caller.tenant_id.0, id).await?))
}

/// Changes a service; appointments already made keep the times they were given.
#[utoipa::path(
    patch, path = "/api/v1/services/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    request_body = ServiceUpdate,
    responses((status = 200, body = ServiceView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn update_service(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(input): Json<ServiceUpdate>,
) -> Result<Json<ServiceView>, ApiError> {
    check_service(
        input.name.as_deref(),
        input.duration_minutes,
        input.buffer_before_minutes,
        input.buffer_after_minutes,
        input.price_cents,
        input.currency.as_deref(),
    )?;
    let updated = sqlx::query_as!(
        ServiceView,
        r#"UPDATE fulfillment.services SET name = COALESCE($3, name), duration_minutes = COALESCE($4, duration_minutes),
               buffer_before_minutes = COALESCE($5, buffer_before_minutes),
               buffer_after_minutes = COALESCE($6, buffer_after_minutes), price_cents = COALESCE($7, price_cents),
               currency = COALESCE($8, currency), active = COALESCE($9, active), updated_at = now()
           WHERE tenant_id = $1 AND id = $2
           RETURNING id, name, duration_minutes, buffer_before_minutes, buffer_after_minutes, price_cents, currency,
                     active, created_at, updated_at"#,
        caller.tenant_id.0,
        id,
        input.name.as_deref().map(str::trim),
        input.duration_minutes,
        input.buffer_before_minutes,
        input.buffer_after_minutes,
        input.price_cents,
        input.currency,
        input.active,
    )
    .fetch_optional(&module.pool)
    .await?
    .ok_or(ApiError::NotFound("service"))?;
    Ok(Json(updated))
}

/// Deletes a service nobody ever booked; one with appointments is retired instead (409 says
/// so: `active: false` keeps its history).
#[utoipa::path(
    delete, path = "/api/v1/services/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn delete_service(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let deleted =
        sqlx::query!("DELETE FROM fulfillment.services WHERE tenant_id = $1 AND id = $2", caller.tenant_id.0, id)
            .execute(&module.pool)
            .await
            .map_err(|error| match error.as_database_error().and_then(|e| e.code()).as_deref() {
                Some("23503") => ApiError::conflict(None, "the service has appointments: set active to false instead"),
                _ => ApiError::from(error),
            })?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound("service"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SurchargeView {
    pub id: Uuid,
    /// Only this service's quotes; `null`: every service.
    pub service_id: Option<Uuid>,
    pub name: String,
    /// ISO weekdays (1 = Monday) of the appointment's local start.
    pub weekdays: Vec<i16>,
    /// Local `HH:MM` window the start falls in.
    pub starts: String,
    pub ends: String,
    pub percent: Option<i32>,
    pub amount_cents: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SurchargeList {
    pub items: Vec<SurchargeView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SurchargeInput {
    pub service_id: Option<Uuid>,
    pub name: String,
    pub weekdays: Vec<i16>,
    pub starts: String,
    pub ends: String,
    /// Either a percentage of the price (1-1000) …
    pub percent: Option<i32>,
    /// … or a fixed amount.
    pub amount_cents: Option<i64>,
}

pub(crate) async fn surcharges(db: impl PgExecutor<'_>, tenant: Uuid) -> Result<Vec<SurchargeView>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT id, service_id, name, weekdays, starts, ends, percent, amount_cents FROM fulfillment.surcharges
           WHERE tenant_id = $1 ORDER BY id"#,
        tenant,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SurchargeView {
            id: r.id,
            service_id: r.service_id,
            name: r.name,
            weekdays: r.weekdays,
            starts: Window::format(u16::try_from(r.starts).unwrap_or(0)),
            ends: Window::format(u16::try_from(r.ends).unwrap_or(0)),
            percent: r.percent,
            amount_cents: r.amount_cents,
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/surcharges", tag = "fulfillment", responses((status = 200, body = SurchargeList)))]
pub async fn list_surcharges(
    State(module): State<Fulfillment>,
    caller: Caller,
) -> Result<Json<SurchargeList>, ApiError> {
    Ok(Json(SurchargeList { items: surcharges(&module.pool, caller.tenant_id.0).await? }))
}

/// A quote rule: e.g. +25 % for starts on Saturdays, or +30 EUR after 18:00 on weekdays.
#[utoipa::path(
    post, path = "/api/v1/surcharges", tag = "fulfillment", request_body = SurchargeInput,
    responses((status = 201, body = SurchargeView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn add_surcharge(
    State(module): State<Fulfillment>,
    caller: Caller,
    Json(input): Json<SurchargeInput>,
) -> Result<(StatusCode, Json<SurchargeView>), ApiError> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("name", "must be 1 to 200 characters"));
    }
    if input.weekdays.is_empty() || input.weekdays.iter().any(|d| !(1..=7).contains(d)) {
        return Err(ApiError::validation("weekdays", "list ISO weekdays, 1 (Monday) to 7 (Sunday)"));
    }
    let window = Window::parse(&input.starts, &input.ends)
        .ok_or_else(|| ApiError::validation("ends", "starts and ends are HH:MM and it must end after it starts"))?;
    match (input.percent, input.amount_cents) {
        (Some(p), None) if (1..=1000).contains(&p) => {}
        (None, Some(a)) if a > 0 => {}
        (Some(_), None) => return Err(ApiError::validation("percent", "must be 1 to 1000")),
        (None, Some(_)) => return Err(ApiError::validation("amount_cents", "must be positive")),
        _ => return Err(ApiError::validation("percent", "give either percent or amount_cents")),
    }
    if let Some(service) = input.service_id {
        find(&module.pool, caller.tenant_id.0, service).await?;
    }
    let mut weekdays = input.weekdays.clone();
    weekdays.sort_unstable();
    weekdays.dedup();
    let id = Uuid::now_v7();
    sqlx::query!(
        r#"INSERT INTO fulfillment.surcharges (id, tenant_id, service_id, name, weekdays, starts, ends, percent, amount_cents)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"#,
        id,
        caller.tenant_id.0,
        input.service_id,
        name,
        &weekdays,
        window.starts as i16,
        window.ends as i16,
        input.percent,
        input.amount_cents,
    )
    .execute(&module.pool)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(SurchargeView {
            id,
            service_id: input.service_id,
            name: name.to_owned(),
            weekdays,
            starts: Window::format(window.starts),
            ends: Window::format(window.ends),
            percent: input.percent,
            amount_cents: input.amount_cents,
        }),
    ))
}

#[utoipa::path(
    delete, path = "/api/v1/surcharges/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody))
)]
pub async fn delete_surcharge(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let deleted =
        sqlx::query!("DELETE FROM fulfillment.surcharges WHERE tenant_id = $1 AND id = $2", caller.tenant_id.0, id)
            .execute(&module.pool)
            .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound("surcharge"));
    }
    Ok(StatusCode::NO_CONTENT)
}
