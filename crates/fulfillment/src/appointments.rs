//! Reservations and appointments. A reservation is a hold on a slot for a short time
//! (`POST /api/v1/reservations`, default 5 minutes); confirming it makes the appointment; an
//! appointment can be booked directly too (`POST /api/v1/appointments`), moved in one step
//! (`reschedule`) and canceled. Whether a slot may be taken is decided by the same `slots::fits`
//! that availability shows, and overlaps are refused by the database's exclusion constraint —
//! so two requests for one slot get one hold and one 409, however they interleave.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, Utc};
use kernel::auth::{Actor, Caller};
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query, parse_json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use kernel::scheduling::AppointmentChange;

use crate::Fulfillment;
use crate::appointments_repository::{self as repository, NewAppointment, Row};
use crate::schedule::Interval;
use crate::{events, quotes, resources, services, slots};

pub fn router() -> OpenApiRouter<Fulfillment> {
    OpenApiRouter::new()
        .routes(routes!(create_reservation))
        .routes(routes!(get_reservation))
        .routes(routes!(confirm_reservation))
        .routes(routes!(list_appointments, create_appointment))
        .routes(routes!(get_appointment))
        .routes(routes!(cancel_appointment))
        .routes(routes!(reschedule_appointment))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppointmentView {
    pub id: Uuid,
    /// `held` (a reservation), `booked`, `canceled` or `expired` (a hold that lapsed).
    pub status: String,
    pub resource_id: Uuid,
    pub service_id: Uuid,
    pub contact_id: Option<Uuid>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The start in the resource's time zone, with its offset.
    pub local_start: String,
    pub time_zone: String,
    /// When a hold lapses.
    pub expires_at: Option<DateTime<Utc>>,
    /// api, sms or agent.
    pub source: String,
    pub title: Option<String>,
    pub note: Option<String>,
    pub price_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub booked_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    /// Where it takes place (Jobber needs an address for its visit).
    pub location: Option<String>,
    /// Its state in each connected calendar.
    pub sync: Vec<SyncView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncView {
    pub connection_id: Uuid,
    /// google or jobber.
    pub provider: String,
    /// pending, synced, removed or failed.
    pub state: String,
    pub last_error: Option<String>,
    pub attempts: i32,
    pub synced_at: Option<DateTime<Utc>>,
    /// A change made on the vendor's side (e.g. the visit deleted in Jobber), with its time.
    pub remote_change: Option<String>,
}

/// Adds each appointment's sync states (one query for all).
async fn with_sync(db: &sqlx::PgPool, mut views: Vec<AppointmentView>) -> Result<Vec<AppointmentView>, ApiError> {
    let ids: Vec<Uuid> = views.iter().map(|v| v.id).collect();
    let rows = sqlx::query!(
        r#"SELECT s.appointment_id, s.connection_id, c.provider, s.state, s.last_error, s.attempts, s.synced_at, s.remote_change
           FROM fulfillment.appointment_sync s JOIN fulfillment.calendar_connections c ON c.id = s.connection_id
           WHERE s.appointment_id = ANY($1) ORDER BY c.created_at"#,
        &ids,
    )
    .fetch_all(db)
    .await?;
    for view in &mut views {
        view.sync = rows
            .iter()
            .filter(|r| r.appointment_id == view.id)
            .map(|r| SyncView {
                connection_id: r.connection_id,
                provider: r.provider.clone(),
                state: r.state.clone(),
                last_error: r.last_error.clone(),
                attempts: r.attempts,
                synced_at: r.synced_at,
                remote_change: r.remote_change.clone(),
            })
            .collect();
    }
    Ok(views)
}

async fn view_of(module: &Fulfillment, tenant: Uuid, id: Uuid) -> Result<AppointmentView, ApiError> {
    let row = repository::find(&module.pool, tenant, id).await?;
    Ok(with_sync(&module.pool, vec![row.into()]).await?.remove(0))
}

/// An appointment changed in a way the rest of the world must hear of: its event for the
/// listeners and its sync work for the connected calendars, in the change's transaction.
async fn announce(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    change: AppointmentChange,
    id: Uuid,
    previous_start: Option<DateTime<Utc>>,
) -> Result<(), ApiError> {
    events::record(tx, tenant, change, id, previous_start).await?;
    crate::calendar::enqueue(tx, tenant, id).await?;
    Ok(())
}

impl From<Row> for AppointmentView {
    fn from(row: Row) -> Self {
        let local_start = row
            .time_zone
            .parse::<chrono_tz::Tz>()
            .map(|tz| row.starts_at.with_timezone(&tz).to_rfc3339())
            .unwrap_or_else(|_| row.starts_at.to_rfc3339());
        Self {
            id: row.id,
            status: if row.lapsed { "expired".into() } else { row.status },
            resource_id: row.resource_id,
            service_id: row.service_id,
            contact_id: row.contact_id,
            start: row.starts_at,
            end: row.ends_at,
            local_start,
            time_zone: row.time_zone,
            expires_at: row.expires_at,
            source: row.source,
            title: row.title,
            note: row.note,
            price_cents: row.price_cents,
            currency: row.currency,
            created_at: row.created_at,
            updated_at: row.updated_at,
            booked_at: row.booked_at,
            canceled_at: row.canceled_at,
            location: row.location,
            sync: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    pub service_id: Uuid,
    pub resource_id: Uuid,
    /// A start that availability offered (RFC 3339).
    pub start: DateTime<Utc>,
    /// The communications contact it is for.
    pub contact_id: Option<Uuid>,
    /// api, sms or agent; default: agent for an agent's session, api for an operator key.
    pub source: Option<String>,
    pub title: Option<String>,
    pub note: Option<String>,
    /// Where it takes place (an address).
    pub location: Option<String>,
    /// Reservations only: how long the hold lasts (30 to 3600 s; default the configured TTL).
    pub hold_seconds: Option<u32>,
}

/// Holds a slot: 201 with the hold and its `expires_at`, 409 when the slot is taken, 422 when
/// it is not a slot (outside working hours, in the past). With `Idempotency-Key`, a repeat
/// answers the first hold; the same key with another body is a 422.
#[utoipa::path(
    post, path = "/api/v1/reservations", tag = "fulfillment", request_body = BookingRequest,
    responses((status = 201, body = AppointmentView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody))
)]
pub async fn create_reservation(
    State(module): State<Fulfillment>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<AppointmentView>), ApiError> {
    take(&module, &caller, &headers, &body, Kind::Hold).await
}

/// Books a slot at once (a hold and its confirmation in one step).
#[utoipa::path(
    post, path = "/api/v1/appointments", tag = "fulfillment", request_body = BookingRequest,
    responses((status = 201, body = AppointmentView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody))
)]
pub async fn create_appointment(
    State(module): State<Fulfillment>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<AppointmentView>), ApiError> {
    take(&module, &caller, &headers, &body, Kind::Booking).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Hold,
    Booking,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(ApiError::validation("Idempotency-Key", "must be 1 to 255 printable ASCII characters"));
    }
    Ok(Some(key.to_owned()))
}

fn clean<'a>(field: &str, value: Option<&'a str>, max: usize) -> Result<Option<&'a str>, ApiError> {
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    if value.is_some_and(|v| v.chars().count() > max) {
        return Err(ApiError::validation(field, format!("must be at most {max} characters")));
    }
    Ok(value)
}

async fn take(
    module: &Fulfillment,
    caller: &Caller,
    headers: &HeaderMap,
    body: &Bytes,
    kind: Kind,
) -> Result<(StatusCode, Json<AppointmentView>), ApiError> {
    kernel::extract::require_json(headers)?;
    let key = idempotency_key(headers)?;
    let request: BookingRequest = parse_json(body)?;
    let tenant = caller.tenant_id.0;
    let hash = Sha256::new().chain_update([kind as u8]).chain_update(body).finalize().to_vec();
    let source = match request.source.as_deref() {
        Some(source @ ("api" | "sms" | "agent")) => source,
        Some(_) => return Err(ApiError::validation("source", "must be api, sms or agent")),
        None if matches!(caller.actor, Actor::Agent { .. }) => "agent",
        None => "api",
    };
    let hold = match request.hold_seconds {
        Some(seconds) if !(30..=3600).contains(&seconds) => {
            return Err(ApiError::validation("hold_seconds", "must be 30 to 3600"));
        }
        Some(seconds) => std::time::Duration::from_secs(u64::from(seconds)),
        None => module.hold_ttl,
    };
    let input = TakeInput {
        service_id: request.service_id,
        resource_id: request.resource_id,
        start: request.start,
        contact_id: request.contact_id,
        source,
        title: clean("title", request.title.as_deref(), 200)?,
        note: clean("note", request.note.as_deref(), 2000)?,
        location: clean("location", request.location.as_deref(), 500)?,
        hold,
        kind,
        key: key.as_deref().map(|key| (key, hash.as_slice())),
    };
    let id = take_slot(module, tenant, input).await?;
    Ok((StatusCode::CREATED, Json(view_of(module, tenant, id).await?)))
}

/// What a hold or a booking asks for, checked at the edge.
pub(crate) struct TakeInput<'a> {
    pub service_id: Uuid,
    pub resource_id: Uuid,
    pub start: DateTime<Utc>,
    pub contact_id: Option<Uuid>,
    pub source: &'a str,
    pub title: Option<&'a str>,
    pub note: Option<&'a str>,
    pub location: Option<&'a str>,
    pub hold: std::time::Duration,
    pub kind: Kind,
    /// The idempotency key and the hash of the request it came with.
    pub key: Option<(&'a str, &'a [u8])>,
}

/// Holds or books a slot (the HTTP API's and the SMS dialogue's way in); answers the id. A
/// repeated key answers the first appointment; the same key with another request is a 422.
pub(crate) async fn take_slot(module: &Fulfillment, tenant: Uuid, input: TakeInput<'_>) -> Result<Uuid, ApiError> {
    let (source, kind) = (input.source.to_owned(), input.kind);
    let result = take_slot_once(module, tenant, input).await;
    let outcome = match (&result, kind) {
        (Ok(_), Kind::Hold) => "held",
        (Ok(_), Kind::Booking) => "booked",
        (Err(ApiError::Conflict { .. }), _) => "taken",
        (Err(ApiError::Validation { .. } | ApiError::NotFound(_)), _) => "refused",
        (Err(_), _) => "error",
    };
    metrics::counter!("bookings_total", "source" => source, "outcome" => outcome).increment(1);
    result
}

async fn take_slot_once(module: &Fulfillment, tenant: Uuid, input: TakeInput<'_>) -> Result<Uuid, ApiError> {
    if let Some((key, hash)) = input.key
        && let Some(id) = replayed(module, tenant, key, hash).await?
    {
        return Ok(id);
    }
    let kind = input.kind;
    let service = services::find(&module.pool, tenant, input.service_id).await?;
    if !service.active {
        return Err(ApiError::validation("service_id", "the service is not offered any more"));
    }
    let needs = service.needs();
    let slot = check_slot(module, tenant, input.resource_id, needs, input.start).await?;
    let price = quotes::price(&module.pool, tenant, &service, &slot.schedule_tz, input.start).await?;
    let new = NewAppointment {
        id: Uuid::now_v7(),
        tenant,
        resource: input.resource_id,
        service: service.id,
        contact: input.contact_id,
        start: input.start,
        end: input.start + needs.duration,
        blocks: needs.blocks(input.start),
        status: if kind == Kind::Hold { "held" } else { "booked" },
        expires_at: (kind == Kind::Hold)
            .then(|| Utc::now() + Duration::from_std(input.hold).unwrap_or_else(|_| Duration::minutes(5))),
        source: input.source,
        title: input.title,
        note: input.note,
        location: input.location,
        price_cents: price.total_cents,
        currency: &service.currency,
        idempotency_key: input.key.map(|(key, _)| key),
        request_hash: input.key.map(|(_, hash)| hash),
    };
    let mut tx = module.pool.begin().await?;
    repository::lock_resource(&mut tx, tenant, new.resource).await?;
    repository::expire_lapsed(&mut tx, tenant, new.resource, new.blocks).await?;
    let inserted = repository::insert(&mut tx, &new).await.map_err(slot_taken)?;
    let Some(id) = inserted else {
        // A concurrent request with the same key won: answer as it was answered.
        drop(tx);
        let (key, hash) = input.key.unwrap_or_default();
        return replayed(module, tenant, key, hash)
            .await?
            .ok_or_else(|| ApiError::internal("idempotency key vanished"));
    };
    if kind == Kind::Booking {
        announce(&mut tx, tenant, AppointmentChange::Booked, id, None).await?;
    }
    tx.commit().await?;
    wake(module);
    Ok(id)
}

/// The appointment first made with this key, or a 422 when the key came with another request.
async fn replayed(module: &Fulfillment, tenant: Uuid, key: &str, hash: &[u8]) -> Result<Option<Uuid>, ApiError> {
    let Some((id, stored)) = repository::by_key(&module.pool, tenant, key).await? else { return Ok(None) };
    if stored != hash {
        return Err(ApiError::validation("Idempotency-Key", "this key was used with a different request"));
    }
    Ok(Some(id))
}

fn slot_taken(error: ApiError) -> ApiError {
    if error.is_exclusion_violation() {
        ApiError::conflict(Some("start"), "the slot is taken: pick another from availability")
    } else {
        error
    }
}

struct CheckedSlot {
    schedule_tz: chrono_tz::Tz,
}

/// Whether an appointment at `start` may be taken on the resource: within its working hours,
/// not in the past, clear of its connected calendars' busy times (422 or 409 naming `start`).
/// Our own appointments are left to the constraint.
async fn check_slot(
    module: &Fulfillment,
    tenant: Uuid,
    resource: Uuid,
    needs: slots::Needs,
    start: DateTime<Utc>,
) -> Result<CheckedSlot, ApiError> {
    let local = start.date_naive();
    let bookable = resources::bookable(&module.pool, tenant, resource, local, local).await?;
    if !bookable.active {
        return Err(ApiError::validation("resource_id", "the resource is not active"));
    }
    let now = Utc::now();
    if start < now {
        return Err(ApiError::validation("start", "is in the past"));
    }
    let appointment = needs.appointment(start);
    let working = bookable.schedule.working(appointment.start - Duration::days(1), appointment.end + Duration::days(1));
    if !slots::fits(&working, &[], needs, start, now) {
        return Err(ApiError::validation("start", "is not within the resource's working hours"));
    }
    if repository::calendar_busy(&module.pool, tenant, resource, needs.blocks(start)).await? {
        return Err(ApiError::conflict(Some("start"), "the slot is busy in a connected calendar"));
    }
    Ok(CheckedSlot { schedule_tz: bookable.schedule.tz })
}

#[utoipa::path(
    get, path = "/api/v1/reservations/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 200, body = AppointmentView), (status = 404, body = ErrorBody))
)]
pub async fn get_reservation(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<AppointmentView>, ApiError> {
    Ok(Json(view_of(&module, caller.tenant_id.0, id).await?))
}

/// Wakes this process's event relay and calendar sync after a commit.
pub(crate) fn wake(module: &Fulfillment) {
    module.events.notify_one();
    // Both vendors' workers wait on it: wake every waiter, and leave a permit for one that is busy.
    module.sync_wake.notify_waiters();
    module.sync_wake.notify_one();
}

/// Turns a live hold into a booked appointment (the same id). A hold that lapsed is 410 Gone;
/// confirming twice answers the appointment.
#[utoipa::path(
    post, path = "/api/v1/reservations/{id}/confirm", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 200, body = AppointmentView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 410, body = ErrorBody))
)]
pub async fn confirm_reservation(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<AppointmentView>, ApiError> {
    let tenant = caller.tenant_id.0;
    confirm_hold(&module, tenant, id).await?;
    Ok(Json(view_of(&module, tenant, id).await?))
}

/// Turns a live hold into a booked appointment: 410 when it lapsed, 409 when it is neither held
/// nor booked; an appointment already booked is an answer, not an error.
pub(crate) async fn confirm_hold(module: &Fulfillment, tenant: Uuid, id: Uuid) -> Result<(), ApiError> {
    let result = confirm_hold_once(module, tenant, id).await;
    let outcome = match &result {
        Ok(()) => "booked",
        Err(ApiError::Gone(_)) => "lapsed",
        Err(ApiError::Conflict { .. } | ApiError::NotFound(_)) => "refused",
        Err(_) => "error",
    };
    metrics::counter!("bookings_total", "source" => "confirmation", "outcome" => outcome).increment(1);
    result
}

async fn confirm_hold_once(module: &Fulfillment, tenant: Uuid, id: Uuid) -> Result<(), ApiError> {
    let mut tx = module.pool.begin().await?;
    let confirmed = sqlx::query!(
        r#"UPDATE fulfillment.appointments SET status = 'booked', booked_at = now(), updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND status = 'held' AND expires_at > now()"#,
        tenant,
        id,
    )
    .execute(&mut *tx)
    .await?;
    if confirmed.rows_affected() == 1 {
        announce(&mut tx, tenant, AppointmentChange::Booked, id, None).await?;
    }
    tx.commit().await?;
    wake(module);
    if confirmed.rows_affected() == 0 {
        let row = repository::find(&module.pool, tenant, id).await?;
        match (row.status.as_str(), row.lapsed) {
            ("booked", _) => {}
            ("expired", _) | ("held", true) => {
                let at = row.expires_at.map(|at| at.to_rfc3339()).unwrap_or_default();
                return Err(ApiError::Gone(format!("the hold lapsed at {at}: reserve the slot again")));
            }
            _ => return Err(ApiError::conflict(Some("status"), format!("the reservation is {}", row.status))),
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    pub resource_id: Option<Uuid>,
    /// held, booked, canceled or expired.
    pub status: Option<String>,
    /// Starts from (default: now).
    pub from: Option<DateTime<Utc>>,
    /// Starts before (default: 30 days after `from`; at most a year after it).
    pub to: Option<DateTime<Utc>>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppointmentList {
    pub items: Vec<AppointmentView>,
}

#[utoipa::path(
    get, path = "/api/v1/appointments", tag = "fulfillment", params(ListParams),
    responses((status = 200, body = AppointmentList), (status = 422, body = ErrorBody))
)]
pub async fn list_appointments(
    State(module): State<Fulfillment>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<AppointmentList>, ApiError> {
    if params.status.as_deref().is_some_and(|s| !matches!(s, "held" | "booked" | "canceled" | "expired")) {
        return Err(ApiError::validation("status", "must be held, booked, canceled or expired"));
    }
    let from = params.from.unwrap_or_else(Utc::now);
    let to = params.to.unwrap_or(from + Duration::days(30));
    crate::availability::check_range(from, to)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "must be 1 to 500"));
    }
    let rows = repository::list(
        &module.pool,
        caller.tenant_id.0,
        params.resource_id,
        params.status.as_deref(),
        from,
        to,
        limit,
    )
    .await?;
    let items = with_sync(&module.pool, rows.into_iter().map(AppointmentView::from).collect()).await?;
    Ok(Json(AppointmentList { items }))
}

#[utoipa::path(
    get, path = "/api/v1/appointments/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 200, body = AppointmentView), (status = 404, body = ErrorBody))
)]
pub async fn get_appointment(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<AppointmentView>, ApiError> {
    Ok(Json(view_of(&module, caller.tenant_id.0, id).await?))
}

/// Cancels a hold or an appointment; its time is free at once. Canceling twice is the same.
#[utoipa::path(
    post, path = "/api/v1/appointments/{id}/cancel", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 200, body = AppointmentView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn cancel_appointment(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<AppointmentView>, ApiError> {
    let tenant = caller.tenant_id.0;
    let mut tx = module.pool.begin().await?;
    let was = sqlx::query_scalar!(
        "SELECT status FROM fulfillment.appointments WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tenant,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("appointment"))?;
    sqlx::query!(
        r#"UPDATE fulfillment.appointments SET status = 'canceled', canceled_at = now(), updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND status IN ('held', 'booked')"#,
        tenant,
        id,
    )
    .execute(&mut *tx)
    .await?;
    // Only a booked appointment was announced; a hold that goes away concerns nobody else.
    if was == "booked" {
        announce(&mut tx, tenant, AppointmentChange::Canceled, id, None).await?;
    }
    tx.commit().await?;
    wake(&module);
    let view = view_of(&module, tenant, id).await?;
    if view.status == "expired" {
        return Err(ApiError::conflict(Some("status"), "the hold had lapsed already"));
    }
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    pub start: DateTime<Utc>,
    /// Move to another resource too (default: the same).
    pub resource_id: Option<Uuid>,
}

/// Moves a booked appointment (or a live hold) in one step: the new slot is taken and the old
/// one freed together, or nothing changes (409 when the new slot is taken).
#[utoipa::path(
    post, path = "/api/v1/appointments/{id}/reschedule", tag = "fulfillment", params(("id" = Uuid, Path)),
    request_body = RescheduleRequest,
    responses((status = 200, body = AppointmentView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody))
)]
pub async fn reschedule_appointment(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<RescheduleRequest>,
) -> Result<Json<AppointmentView>, ApiError> {
    let tenant = caller.tenant_id.0;
    let current = repository::find(&module.pool, tenant, id).await?;
    if current.lapsed || !matches!(current.status.as_str(), "held" | "booked") {
        let status = if current.lapsed { "expired" } else { current.status.as_str() };
        return Err(ApiError::conflict(Some("status"), format!("a {status} appointment cannot move")));
    }
    let service = services::find(&module.pool, tenant, current.service_id).await?;
    let needs = service.needs();
    let resource = request.resource_id.unwrap_or(current.resource_id);
    check_slot(&module, tenant, resource, needs, request.start).await?;
    let blocks: Interval = needs.blocks(request.start);
    let mut tx = module.pool.begin().await?;
    repository::lock_resource(&mut tx, tenant, resource).await?;
    repository::expire_lapsed(&mut tx, tenant, resource, blocks).await?;
    let moved = sqlx::query!(
        r#"UPDATE fulfillment.appointments SET resource_id = $3, starts_at = $4, ends_at = $5, blocks = tstzrange($6, $7),
               updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND (status = 'booked' OR (status = 'held' AND expires_at > now()))"#,
        tenant,
        id,
        resource,
        request.start,
        request.start + needs.duration,
        blocks.start,
        blocks.end,
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| slot_taken(ApiError::from(e)))?;
    if moved.rows_affected() == 0 {
        return Err(ApiError::conflict(Some("status"), "the appointment changed meanwhile: fetch it again"));
    }
    if current.status == "booked" {
        announce(&mut tx, tenant, AppointmentChange::Rescheduled, id, Some(current.starts_at)).await?;
    }
    tx.commit().await?;
    wake(&module);
    Ok(Json(view_of(&module, tenant, id).await?))
}
