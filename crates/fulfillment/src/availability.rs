//! `GET /api/v1/availability`: the free slots of a service over a range, per resource —
//! working hours (in the resource's zone) minus booked appointments, live holds and busy times
//! from connected calendars, each with its buffers.

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Query};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Fulfillment;
use crate::appointments_repository as repository;
use crate::schedule::Interval;
use crate::{resources, services, slots};

pub fn router() -> OpenApiRouter<Fulfillment> {
    OpenApiRouter::new().routes(routes!(availability))
}

/// Longest range one request may ask about.
const MAX_RANGE_DAYS: i64 = 366;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AvailabilityParams {
    pub service_id: Option<Uuid>,
    /// One resource; default: every active resource.
    pub resource_id: Option<Uuid>,
    /// RFC 3339; default now.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339; default 7 days after `from`; at most a year after it.
    pub to: Option<DateTime<Utc>>,
    /// Minutes between offered starts (5 to 1440); default the service's duration.
    pub interval_minutes: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The start in the resource's time zone, with its offset.
    pub local_start: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResourceSlots {
    pub resource_id: Uuid,
    pub time_zone: String,
    pub slots: Vec<Slot>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Availability {
    pub service_id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub resources: Vec<ResourceSlots>,
}

pub(crate) fn check_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), ApiError> {
    if to <= from {
        return Err(ApiError::validation("to", "must be after from"));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(ApiError::validation("to", "the range may span at most a year"));
    }
    Ok(())
}

/// Free slots for a service. Every slot shown can be reserved (the reservation checks the same
/// rule); a booked or held slot is never shown.
#[utoipa::path(
    get, path = "/api/v1/availability", tag = "fulfillment", params(AvailabilityParams),
    responses((status = 200, body = Availability), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn availability(
    State(module): State<Fulfillment>,
    caller: Caller,
    Query(params): Query<AvailabilityParams>,
) -> Result<Json<Availability>, ApiError> {
    let tenant = caller.tenant_id.0;
    let service_id = params.service_id.ok_or_else(|| ApiError::validation("service_id", "is required"))?;
    let now = Utc::now();
    let from = params.from.unwrap_or(now);
    let to = params.to.unwrap_or(from + Duration::days(7));
    check_range(from, to)?;
    if params.interval_minutes.is_some_and(|m| !(5..=1440).contains(&m)) {
        return Err(ApiError::validation("interval_minutes", "must be 5 to 1440"));
    }
    let service = services::find(&module.pool, tenant, service_id).await?;
    let step = Duration::minutes(params.interval_minutes.unwrap_or(i64::from(service.duration_minutes)));
    let ids = match params.resource_id {
        Some(id) => vec![id],
        None => {
            sqlx::query_scalar!(
                "SELECT id FROM fulfillment.resources WHERE tenant_id = $1 AND active ORDER BY name, id LIMIT 100",
                tenant,
            )
            .fetch_all(&module.pool)
            .await?
        }
    };
    let mut resources = Vec::with_capacity(ids.len());
    for id in ids {
        let (tz, slots) = free_slots(&module, tenant, &service, id, Interval::new(from, to), step, now).await?;
        resources.push(ResourceSlots {
            resource_id: id,
            time_zone: tz.name().to_owned(),
            slots: slots
                .into_iter()
                .map(|s| Slot { start: s.start, end: s.end, local_start: s.start.with_timezone(&tz).to_rfc3339() })
                .collect(),
        });
    }
    Ok(Json(Availability { service_id, from, to, resources }))
}

/// The free slots of `service` on `resource` within `range`, starting every `step`, none before
/// `now`; and the resource's zone. Inactive services and resources have none.
pub(crate) async fn free_slots(
    module: &Fulfillment,
    tenant: Uuid,
    service: &services::ServiceView,
    resource: Uuid,
    range: Interval,
    step: Duration,
    now: DateTime<Utc>,
) -> Result<(chrono_tz::Tz, Vec<Interval>), ApiError> {
    let (from, to) = (range.start, range.end);
    let needs = service.needs();
    let bookable = resources::bookable(&module.pool, tenant, resource, from.date_naive(), to.date_naive()).await?;
    if !(service.active && bookable.active) {
        return Ok((bookable.schedule.tz, Vec::new()));
    }
    let working = bookable.schedule.working(from, to);
    // What is taken around the range too: a neighbour's buffer can reach into it.
    let reach = Interval::new(from - needs.buffer_after - needs.duration, to + needs.buffer_before + needs.duration);
    let taken = repository::taken(&module.pool, tenant, resource, reach).await?;
    Ok((bookable.schedule.tz, slots::free(&working, &taken, needs, step, now.max(from))))
}
