//! The appointments table: what is taken, holds and bookings, and their moves. The exclusion
//! constraint `appointments_no_overlap` is the last word on overlaps; these statements make
//! sure a lapsed hold never stands in its way.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::schedule::Interval;

/// The time taken on a resource within `range`: booked appointments, live holds and imported
/// busy times (each appointment's span includes its buffers).
pub async fn taken(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    resource: Uuid,
    range: Interval,
) -> Result<Vec<Interval>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT lower(blocks) AS "start!", upper(blocks) AS "end!" FROM fulfillment.appointments
           WHERE tenant_id = $1 AND resource_id = $2 AND blocks && tstzrange($3, $4)
             AND status IN ('held', 'booked') AND (status = 'booked' OR expires_at > now())
           UNION ALL
           SELECT lower(during), upper(during) FROM fulfillment.busy_times
           WHERE resource_id = $2 AND tenant_id = $1 AND during && tstzrange($3, $4)"#,
        tenant,
        resource,
        range.start,
        range.end,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| Interval::new(r.start, r.end)).collect())
}

/// Busy times from connected calendars overlapping `blocks` (checked before a hold: the
/// constraint only knows our own appointments).
pub async fn calendar_busy(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    resource: Uuid,
    blocks: Interval,
) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM fulfillment.busy_times
                          WHERE resource_id = $2 AND tenant_id = $1 AND during && tstzrange($3, $4)) AS "busy!""#,
        tenant,
        resource,
        blocks.start,
        blocks.end,
    )
    .fetch_one(db)
    .await?)
}

/// Takes the resource's write lock for this transaction: whoever takes or moves time on one
/// resource goes one after the other. The exclusion constraint alone would still refuse every
/// overlap, but concurrent inserts of overlapping ranges each wait for the other's index entry and
/// deadlock (PostgreSQL then kills one after `deadlock_timeout`: a 500 and a second's delay);
/// this lock makes them queue instead, and the losers get their 409 at once. `FOR NO KEY
/// UPDATE` leaves the appointments' foreign-key checks (`FOR KEY SHARE`) unblocked.
pub async fn lock_resource(tx: &mut PgConnection, tenant: Uuid, resource: Uuid) -> Result<(), ApiError> {
    sqlx::query_scalar!(
        "SELECT id FROM fulfillment.resources WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE",
        tenant,
        resource,
    )
    .fetch_optional(&mut *tx)
    .await?
    .map(drop)
    .ok_or(ApiError::NotFound("resource"))
}

/// Marks the lapsed holds overlapping `blocks` expired, so the constraint stops counting them.
/// Their rows are locked by this transaction: a concurrent confirmation of one waits and then
/// finds it expired.
pub async fn expire_lapsed(
    tx: &mut PgConnection,
    tenant: Uuid,
    resource: Uuid,
    blocks: Interval,
) -> Result<u64, ApiError> {
    Ok(sqlx::query!(
        r#"UPDATE fulfillment.appointments SET status = 'expired', updated_at = now()
           WHERE tenant_id = $1 AND resource_id = $2 AND status = 'held' AND expires_at <= now()
             AND blocks && tstzrange($3, $4)"#,
        tenant,
        resource,
        blocks.start,
        blocks.end,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// Marks every lapsed hold expired (the upkeep loop: keeps the table honest for readers that
/// look at statuses only).
pub async fn expire_all_lapsed(db: impl PgExecutor<'_>) -> Result<u64, ApiError> {
    Ok(sqlx::query!(
        r#"UPDATE fulfillment.appointments SET status = 'expired', updated_at = now()
           WHERE id IN (SELECT id FROM fulfillment.appointments WHERE status = 'held' AND expires_at <= now()
                        ORDER BY expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED)"#,
    )
    .execute(db)
    .await?
    .rows_affected())
}

/// A new appointment or hold, as stored.
#[derive(Debug, Clone)]
pub struct NewAppointment<'a> {
    pub id: Uuid,
    pub tenant: Uuid,
    pub resource: Uuid,
    pub service: Uuid,
    pub contact: Option<Uuid>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub blocks: Interval,
    /// `held` (with `expires_at`) or `booked`.
    pub status: &'static str,
    pub expires_at: Option<DateTime<Utc>>,
    pub source: &'a str,
    pub title: Option<&'a str>,
    pub note: Option<&'a str>,
    pub location: Option<&'a str>,
    pub price_cents: i64,
    pub currency: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: Option<&'a [u8]>,
}

/// Inserts it; `None` when its idempotency key was used before (the caller replays). An
/// overlap is the constraint's error (see `ApiError::is_exclusion_violation`).
pub async fn insert(tx: &mut PgConnection, new: &NewAppointment<'_>) -> Result<Option<Uuid>, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO fulfillment.appointments (id, tenant_id, resource_id, service_id, contact_id, starts_at, ends_at,
                                                blocks, status, expires_at, source, title, note, price_cents, currency,
                                                idempotency_key, request_hash, booked_at, location)
           VALUES ($1, $2, $3, $4, $5, $6, $7, tstzrange($8, $9), $10, $11, $12, $13, $14, $15, $16, $17, $18,
                   CASE WHEN $10 = 'booked' THEN now() END, $19)
           ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
           RETURNING id"#,
        new.id,
        new.tenant,
        new.resource,
        new.service,
        new.contact,
        new.start,
        new.end,
        new.blocks.start,
        new.blocks.end,
        new.status,
        new.expires_at,
        new.source,
        new.title,
        new.note,
        new.price_cents,
        new.currency,
        new.idempotency_key,
        new.request_hash,
        new.location,
    )
    .fetch_optional(&mut *tx)
    .await?)
}

/// The appointment stored under an idempotency key, with the hash of the request that made it.
pub async fn by_key(db: impl PgExecutor<'_>, tenant: Uuid, key: &str) -> Result<Option<(Uuid, Vec<u8>)>, ApiError> {
    let row = sqlx::query!(
        r#"SELECT id, request_hash FROM fulfillment.appointments WHERE tenant_id = $1 AND idempotency_key = $2"#,
        tenant,
        key,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.id, r.request_hash.unwrap_or_default())))
}

/// An appointment as the API shows it.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub service_id: Uuid,
    pub contact_id: Option<Uuid>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub source: String,
    pub title: Option<String>,
    pub note: Option<String>,
    pub price_cents: i64,
    pub currency: String,
    pub time_zone: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub booked_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub location: Option<String>,
    /// Whether a hold has lapsed (judged by the database's clock).
    pub lapsed: bool,
}

pub async fn find(db: impl PgExecutor<'_>, tenant: Uuid, id: Uuid) -> Result<Row, ApiError> {
    sqlx::query_as!(
        Row,
        r#"SELECT a.id, a.resource_id, a.service_id, a.contact_id, a.starts_at, a.ends_at, a.status, a.expires_at,
                  a.source, a.title, a.note, a.price_cents, a.currency, r.time_zone, a.created_at, a.updated_at,
                  a.booked_at, a.canceled_at, a.location, (a.status = 'held' AND a.expires_at <= now()) AS "lapsed!"
           FROM fulfillment.appointments a JOIN fulfillment.resources r ON r.id = a.resource_id
           WHERE a.tenant_id = $1 AND a.id = $2"#,
        tenant,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("appointment"))
}

/// The tenant's appointments starting in `[from, to)`, optionally of one resource and status.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    resource: Option<Uuid>,
    status: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Row>, ApiError> {
    Ok(sqlx::query_as!(
        Row,
        r#"SELECT a.id, a.resource_id, a.service_id, a.contact_id, a.starts_at, a.ends_at, a.status, a.expires_at,
                  a.source, a.title, a.note, a.price_cents, a.currency, r.time_zone, a.created_at, a.updated_at,
                  a.booked_at, a.canceled_at, a.location, (a.status = 'held' AND a.expires_at <= now()) AS "lapsed!"
           FROM fulfillment.appointments a JOIN fulfillment.resources r ON r.id = a.resource_id
           WHERE a.tenant_id = $1 AND ($2::uuid IS NULL OR a.resource_id = $2)
             AND ($3::text IS NULL OR a.status = $3) AND a.starts_at >= $4 AND a.starts_at < $5
           ORDER BY a.starts_at, a.id LIMIT $6"#,
        tenant,
        resource,
        status,
        from,
        to,
        limit,
    )
    .fetch_all(db)
    .await?)
}
