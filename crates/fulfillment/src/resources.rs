//! `/api/v1/resources`: who or what is booked (a technician, a vehicle, a room), with a time
//! zone, the usual week's working hours and the exceptions of single days. Another tenant's
//! resource is a 404.

use std::str::FromStr;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Fulfillment;
use crate::schedule::{Exception, ExceptionKind, Schedule, Window};

pub fn router() -> OpenApiRouter<Fulfillment> {
    OpenApiRouter::new()
        .routes(routes!(list_resources, create_resource))
        .routes(routes!(get_resource, update_resource, delete_resource))
        .routes(routes!(set_working_hours))
        .routes(routes!(list_exceptions, add_exception))
        .routes(routes!(delete_exception))
}

const KINDS: [&str; 4] = ["technician", "vehicle", "room", "other"];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HoursView {
    /// ISO weekday: 1 = Monday … 7 = Sunday.
    pub weekday: i16,
    /// Local time `HH:MM`.
    pub starts: String,
    /// Local time `HH:MM` (`24:00`: midnight at the day's end).
    pub ends: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResourceView {
    pub id: Uuid,
    pub name: String,
    /// technician, vehicle, room or other.
    pub kind: String,
    /// IANA time zone; working hours are local to it.
    pub time_zone: String,
    pub active: bool,
    pub working_hours: Vec<HoursView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResourceList {
    pub items: Vec<ResourceView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceInput {
    pub name: String,
    /// technician (default), vehicle, room or other.
    pub kind: Option<String>,
    /// IANA name such as `Europe/Berlin`.
    pub time_zone: String,
    /// Replaces the week when given.
    pub working_hours: Option<Vec<HoursInput>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceUpdate {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub time_zone: Option<String>,
    /// An inactive resource shows no availability and takes no new reservations.
    pub active: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoursInput {
    pub weekday: i16,
    pub starts: String,
    pub ends: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkingHours {
    /// The whole week; days not listed are not worked.
    pub hours: Vec<HoursInput>,
}

struct ResourceRow {
    id: Uuid,
    name: String,
    kind: String,
    time_zone: String,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

pub(crate) fn parse_time_zone(field: &str, text: &str) -> Result<Tz, ApiError> {
    Tz::from_str(text.trim()).map_err(|_| ApiError::validation(field, "is not an IANA time zone such as Europe/Berlin"))
}

fn parse_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::validation("name", "must be 1 to 200 characters"));
    }
    Ok(name)
}

fn parse_kind(kind: Option<&str>) -> Result<&'static str, ApiError> {
    match kind {
        None => Ok("technician"),
        Some(kind) => KINDS
            .into_iter()
            .find(|k| *k == kind)
            .ok_or_else(|| ApiError::validation("kind", "must be technician, vehicle, room or other")),
    }
}

/// A week's hours, checked: weekdays 1-7, `HH:MM` windows, no overlaps within a day.
fn parse_week(field: &str, hours: &[HoursInput]) -> Result<Vec<(i16, Window)>, ApiError> {
    let mut week: Vec<(i16, Window)> = Vec::with_capacity(hours.len());
    for (index, entry) in hours.iter().enumerate() {
        if !(1..=7).contains(&entry.weekday) {
            return Err(ApiError::validation(format!("{field}[{index}].weekday"), "must be 1 (Monday) to 7 (Sunday)"));
        }
        let window = Window::parse(&entry.starts, &entry.ends).ok_or_else(|| {
            ApiError::validation(
                format!("{field}[{index}].ends"),
                "starts and ends are HH:MM and it must end after it starts",
            )
        })?;
        if week.iter().any(|(day, w)| *day == entry.weekday && w.starts < window.ends && window.starts < w.ends) {
            return Err(ApiError::validation(format!("{field}[{index}]"), "overlaps another window of the same day"));
        }
        week.push((entry.weekday, window));
    }
    Ok(week)
}

/// Lists the tenant's resources.
#[utoipa::path(get, path = "/api/v1/resources", tag = "fulfillment", responses((status = 200, body = ResourceList)))]
pub async fn list_resources(State(module): State<Fulfillment>, caller: Caller) -> Result<Json<ResourceList>, ApiError> {
    let rows = sqlx::query_as!(
        ResourceRow,
        r#"SELECT id, name, kind, time_zone, active, created_at, updated_at FROM fulfillment.resources
           WHERE tenant_id = $1 ORDER BY name, id LIMIT 500"#,
        caller.tenant_id.0,
    )
    .fetch_all(&module.pool)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let hours = hours_of(&module.pool, &ids).await?;
    let items = rows
        .into_iter()
        .map(|row| {
            let mine = hours.iter().filter(|(id, _)| *id == row.id).map(|(_, h)| h.clone()).collect();
            view(row, mine)
        })
        .collect();
    Ok(Json(ResourceList { items }))
}

fn view(row: ResourceRow, working_hours: Vec<HoursView>) -> ResourceView {
    ResourceView {
        id: row.id,
        name: row.name,
        kind: row.kind,
        time_zone: row.time_zone,
        active: row.active,
        working_hours,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

async fn hours_of(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<(Uuid, HoursView)>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT resource_id, weekday, starts, ends FROM fulfillment.working_hours
           WHERE resource_id = ANY($1) ORDER BY resource_id, weekday, starts"#,
        ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let view = HoursView {
                weekday: r.weekday,
                starts: Window::format(u16::try_from(r.starts).unwrap_or_default()),
                ends: Window::format(u16::try_from(r.ends).unwrap_or_default()),
            };
            (r.resource_id, view)
        })
        .collect())
}

/// Creates a resource, optionally with its week.
#[utoipa::path(
    post, path = "/api/v1/resources", tag = "fulfillment", request_body = ResourceInput,
    responses((status = 201, body = ResourceView), (status = 422, body = ErrorBody))
)]
pub async fn create_resource(
    State(module): State<Fulfillment>,
    caller: Caller,
    Json(input): Json<ResourceInput>,
) -> Result<(StatusCode, Json<ResourceView>), ApiError> {
    let name = parse_name(&input.name)?;
    let kind = parse_kind(input.kind.as_deref())?;
    let tz = parse_time_zone("time_zone", &input.time_zone)?;
    let week = parse_week("working_hours", input.working_hours.as_deref().unwrap_or_default())?;
    let id = Uuid::now_v7();
    let mut tx = module.pool.begin().await?;
    sqlx::query!(
        "INSERT INTO fulfillment.resources (id, tenant_id, name, kind, time_zone) VALUES ($1, $2, $3, $4, $5)",
        id,
        caller.tenant_id.0,
        name,
        kind,
        tz.name(),
    )
    .execute(&mut *tx)
    .await?;
    replace_week(&mut tx, id, &week).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(find(&module, caller.tenant_id.0, id).await?)))
}

async fn replace_week(tx: &mut sqlx::PgConnection, resource: Uuid, week: &[(i16, Window)]) -> Result<(), ApiError> {
    sqlx::query!("DELETE FROM fulfillment.working_hours WHERE resource_id = $1", resource).execute(&mut *tx).await?;
    let days: Vec<i16> = week.iter().map(|(d, _)| *d).collect();
    let starts: Vec<i16> = week.iter().map(|(_, w)| w.starts as i16).collect();
    let ends: Vec<i16> = week.iter().map(|(_, w)| w.ends as i16).collect();
    sqlx::query!(
        r#"INSERT INTO fulfillment.working_hours (resource_id, weekday, starts, ends)
           SELECT $1, * FROM unnest($2::smallint[], $3::smallint[], $4::smallint[])"#,
        resource,
        &days,
        &starts,
        &ends,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn find(module: &Fulfillment, tenant: Uuid, id: Uuid) -> Result<ResourceView, ApiError> {
    let row = sqlx::query_as!(
        ResourceRow,
        r#"SELECT id, name, kind, time_zone, active, created_at, updated_at FROM fulfillment.resources
           WHERE tenant_id = $1 AND id = $2"#,
        tenant,
        id,
    )
    .fetch_optional(&module.pool)
    .await?
    .ok_or(ApiError::NotFound("resource"))?;
    let hours = hours_of(&module.pool, &[id]).await?.into_iter().map(|(_, h)| h).collect();
    Ok(view(row, hours))
}

#[utoipa::path(
    get, path = "/api/v1/resources/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 200, body = ResourceView), (status = 404, body = ErrorBody))
)]
pub async fn get_resource(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ResourceView>, ApiError> {
    Ok(Json(find(&module, caller.tenant_id.0, id).await?))
}

/// Renames, re-kinds, moves to another time zone (its hours stay the same local hours) or
/// (de)activates a resource.
#[utoipa::path(
    patch, path = "/api/v1/resources/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    request_body = ResourceUpdate,
    responses((status = 200, body = ResourceView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn update_resource(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(input): Json<ResourceUpdate>,
) -> Result<Json<ResourceView>, ApiError> {
    let name = input.name.as_deref().map(parse_name).transpose()?;
    let kind = input.kind.as_deref().map(|k| parse_kind(Some(k))).transpose()?;
    let tz = input.time_zone.as_deref().map(|t| parse_time_zone("time_zone", t)).transpose()?;
    let updated = sqlx::query!(
        r#"UPDATE fulfillment.resources SET name = COALESCE($3, name), kind = COALESCE($4, kind),
               time_zone = COALESCE($5, time_zone), active = COALESCE($6, active), updated_at = now()
           WHERE tenant_id = $1 AND id = $2"#,
        caller.tenant_id.0,
        id,
        name,
        kind,
        tz.map(|tz| tz.name()),
        input.active,
    )
    .execute(&module.pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::NotFound("resource"));
    }
    Ok(Json(find(&module, caller.tenant_id.0, id).await?))
}

/// Deletes a resource that never had an appointment; one with appointments is deactivated
/// instead (409 says so).
#[utoipa::path(
    delete, path = "/api/v1/resources/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn delete_resource(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let deleted =
        sqlx::query!("DELETE FROM fulfillment.resources WHERE tenant_id = $1 AND id = $2", caller.tenant_id.0, id)
            .execute(&module.pool)
            .await
            .map_err(|error| match error.as_database_error().and_then(|e| e.code()).as_deref() {
                Some("23503") => ApiError::conflict(None, "the resource has appointments: set active to false instead"),
                _ => ApiError::from(error),
            })?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound("resource"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the resource's usual week.
#[utoipa::path(
    put, path = "/api/v1/resources/{id}/working-hours", tag = "fulfillment", params(("id" = Uuid, Path)),
    request_body = WorkingHours,
    responses((status = 200, body = ResourceView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn set_working_hours(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(input): Json<WorkingHours>,
) -> Result<Json<ResourceView>, ApiError> {
    let week = parse_week("hours", &input.hours)?;
    let mut tx = module.pool.begin().await?;
    lock(&mut *tx, caller.tenant_id.0, id).await?;
    replace_week(&mut tx, id, &week).await?;
    tx.commit().await?;
    Ok(Json(find(&module, caller.tenant_id.0, id).await?))
}

/// The resource (locked until the transaction ends), or 404.
async fn lock(db: impl PgExecutor<'_>, tenant: Uuid, id: Uuid) -> Result<(), ApiError> {
    sqlx::query_scalar!("SELECT id FROM fulfillment.resources WHERE tenant_id = $1 AND id = $2 FOR UPDATE", tenant, id)
        .fetch_optional(db)
        .await?
        .map(drop)
        .ok_or(ApiError::NotFound("resource"))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExceptionView {
    pub id: Uuid,
    /// The local date.
    pub day: NaiveDate,
    /// `closed` (all day, or between starts and ends) or `open` (extra hours).
    pub kind: String,
    pub starts: Option<String>,
    pub ends: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExceptionList {
    pub items: Vec<ExceptionView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionInput {
    pub day: NaiveDate,
    pub kind: String,
    pub starts: Option<String>,
    pub ends: Option<String>,
    pub note: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/resources/{id}/exceptions", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 200, body = ExceptionList), (status = 404, body = ErrorBody))
)]
pub async fn list_exceptions(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ExceptionList>, ApiError> {
    find(&module, caller.tenant_id.0, id).await?;
    let rows = sqlx::query!(
        "SELECT id, day, kind, starts, ends, note FROM fulfillment.hours_exceptions WHERE resource_id = $1 ORDER BY day, id",
        id,
    )
    .fetch_all(&module.pool)
    .await?;
    let fmt = |m: Option<i16>| m.map(|m| Window::format(u16::try_from(m).unwrap_or_default()));
    let items = rows
        .into_iter()
        .map(|r| ExceptionView {
            id: r.id,
            day: r.day,
            kind: r.kind,
            starts: fmt(r.starts),
            ends: fmt(r.ends),
            note: r.note,
        })
        .collect();
    Ok(Json(ExceptionList { items }))
}

/// A holiday, a closure for some hours, or extra hours on one local day.
#[utoipa::path(
    post, path = "/api/v1/resources/{id}/exceptions", tag = "fulfillment", params(("id" = Uuid, Path)),
    request_body = ExceptionInput,
    responses((status = 201, body = ExceptionView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn add_exception(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(input): Json<ExceptionInput>,
) -> Result<(StatusCode, Json<ExceptionView>), ApiError> {
    if !matches!(input.kind.as_str(), "closed" | "open") {
        return Err(ApiError::validation("kind", "must be closed or open"));
    }
    let window = match (input.starts.as_deref(), input.ends.as_deref()) {
        (None, None) if input.kind == "closed" => None,
        (Some(starts), Some(ends)) => Some(Window::parse(starts, ends).ok_or_else(|| {
            ApiError::validation("ends", "starts and ends are HH:MM and it must end after it starts")
        })?),
        (None, None) => return Err(ApiError::validation("starts", "extra hours need starts and ends")),
        (None, Some(_)) => return Err(ApiError::validation("starts", "give both starts and ends, or neither")),
        (Some(_), None) => return Err(ApiError::validation("ends", "give both starts and ends, or neither")),
    };
    let note = input.note.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 500) {
        return Err(ApiError::validation("note", "must be at most 500 characters"));
    }
    let mut tx = module.pool.begin().await?;
    lock(&mut *tx, caller.tenant_id.0, id).await?;
    let exception = Uuid::now_v7();
    sqlx::query!(
        r#"INSERT INTO fulfillment.hours_exceptions (id, resource_id, day, kind, starts, ends, note)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        exception,
        id,
        input.day,
        input.kind,
        window.map(|w| w.starts as i16),
        window.map(|w| w.ends as i16),
        note,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(ExceptionView {
            id: exception,
            day: input.day,
            kind: input.kind,
            starts: window.map(|w| Window::format(w.starts)),
            ends: window.map(|w| Window::format(w.ends)),
            note: note.map(str::to_owned),
        }),
    ))
}

#[utoipa::path(
    delete, path = "/api/v1/resources/{id}/exceptions/{exception_id}", tag = "fulfillment",
    params(("id" = Uuid, Path), ("exception_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody))
)]
pub async fn delete_exception(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path((id, exception)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let deleted = sqlx::query!(
        r#"DELETE FROM fulfillment.hours_exceptions e USING fulfillment.resources r
           WHERE e.id = $3 AND e.resource_id = r.id AND r.id = $2 AND r.tenant_id = $1"#,
        caller.tenant_id.0,
        id,
        exception,
    )
    .execute(&module.pool)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound("exception"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A resource as scheduling needs it.
#[derive(Debug, Clone)]
pub(crate) struct Bookable {
    pub active: bool,
    pub schedule: Schedule,
}

/// The resource's schedule (zone, week, exceptions in the local dates around `from`..`to`).
pub(crate) async fn bookable(
    db: &sqlx::PgPool,
    tenant: Uuid,
    id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Bookable, ApiError> {
    let row = sqlx::query!(
        "SELECT id, time_zone, active FROM fulfillment.resources WHERE tenant_id = $1 AND id = $2",
        tenant,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("resource"))?;
    let tz =
        Tz::from_str(&row.time_zone).map_err(|_| ApiError::internal(format!("stored time zone {}", row.time_zone)))?;
    let hours = sqlx::query!("SELECT weekday, starts, ends FROM fulfillment.working_hours WHERE resource_id = $1", id)
        .fetch_all(db)
        .await?;
    let mut week: [Vec<Window>; 7] = Default::default();
    for h in hours {
        let window = Window { starts: u16::try_from(h.starts).unwrap_or(0), ends: u16::try_from(h.ends).unwrap_or(0) };
        if let Some(day) = week.get_mut(usize::try_from(h.weekday - 1).unwrap_or(7)) {
            day.push(window);
        }
    }
    let exceptions = sqlx::query!(
        r#"SELECT day, kind, starts, ends FROM fulfillment.hours_exceptions
           WHERE resource_id = $1 AND day BETWEEN $2 AND $3"#,
        id,
        from - chrono::Duration::days(2),
        to + chrono::Duration::days(2),
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|e| Exception {
        day: e.day,
        kind: if e.kind == "open" { ExceptionKind::Open } else { ExceptionKind::Closed },
        window: e
            .starts
            .zip(e.ends)
            .map(|(s, en)| Window { starts: u16::try_from(s).unwrap_or(0), ends: u16::try_from(en).unwrap_or(0) }),
    })
    .collect();
    Ok(Bookable { active: row.active, schedule: Schedule { tz, week, exceptions } })
}
