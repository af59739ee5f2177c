//! Appointment events for the rest of the system. Each is written to `fulfillment.outbox` in
//! the transaction that changes the appointment, so a crash cannot lose one or announce a
//! change that was rolled back; a relay hands them to the listener after the commit, in order
//! per appointment, again after a failure (with backoff) until the listener took it. Listeners
//! see each event id at least once and process it once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::scheduling::{AppointmentChange, AppointmentEvent, AppointmentListener};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

/// Events relayed per round.
const BATCH: i64 = 50;

fn kind(change: AppointmentChange) -> &'static str {
    match change {
        AppointmentChange::Booked => "booked",
        AppointmentChange::Rescheduled => "rescheduled",
        AppointmentChange::Canceled => "canceled",
    }
}

/// Records the appointment's change (its state now) in `tx`.
pub(crate) async fn record(
    tx: &mut PgConnection,
    tenant: Uuid,
    change: AppointmentChange,
    appointment: Uuid,
    previous_start: Option<DateTime<Utc>>,
) -> Result<(), ApiError> {
    let event_id = format!("{}:{}", change.event_name(), Uuid::now_v7());
    sqlx::query!(
        r#"INSERT INTO fulfillment.outbox (tenant_id, event_id, kind, appointment_id, data)
           SELECT a.tenant_id, $3, $4, a.id, jsonb_build_object(
                      'appointment_id', a.id, 'contact_id', a.contact_id, 'status', a.status,
                      'start', a.starts_at, 'end', a.ends_at, 'time_zone', r.time_zone,
                      'local_start', to_char(a.starts_at AT TIME ZONE r.time_zone, 'YYYY-MM-DD"T"HH24:MI'),
                      'local_date', to_char(a.starts_at AT TIME ZONE r.time_zone, 'YYYY-MM-DD'),
                      'local_time', to_char(a.starts_at AT TIME ZONE r.time_zone, 'HH24:MI'),
                      'resource', jsonb_build_object('id', r.id, 'name', r.name),
                      'service', jsonb_build_object('id', s.id, 'name', s.name),
                      'title', a.title, 'price_cents', a.price_cents, 'currency', a.currency,
                      'source', a.source, 'previous_start', $5::timestamptz)
           FROM fulfillment.appointments a
           JOIN fulfillment.resources r ON r.id = a.resource_id
           JOIN fulfillment.services s ON s.id = a.service_id
           WHERE a.tenant_id = $1 AND a.id = $2"#,
        tenant,
        appointment,
        event_id,
        kind(change),
        previous_start,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Relays events to `listener` until the task is dropped; woken by `wake` after local commits,
/// and every `poll` for the other processes' events and for retries. A database error ends the
/// loop (its supervisor starts it again).
pub async fn run_relay(pool: PgPool, listener: Arc<dyn AppointmentListener>, wake: Arc<Notify>, poll: Duration) {
    loop {
        match relay_once(&pool, listener.as_ref()).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "relaying appointment events failed");
                return;
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// One round: the due events whose appointment has no earlier event pending, in order.
pub async fn relay_once(pool: &PgPool, listener: &dyn AppointmentListener) -> Result<usize, ApiError> {
    let mut tx = pool.begin().await?;
    let due = sqlx::query!(
        r#"SELECT o.id, o.tenant_id, o.event_id, o.kind, o.appointment_id, o.data, o.occurred_at, o.attempts
           FROM fulfillment.outbox o
           WHERE o.published_at IS NULL AND o.next_attempt_at <= now()
             AND NOT EXISTS (SELECT 1 FROM fulfillment.outbox e
                             WHERE e.appointment_id = o.appointment_id AND e.published_at IS NULL AND e.id < o.id)
           ORDER BY o.id LIMIT $1 FOR UPDATE SKIP LOCKED"#,
        BATCH,
    )
    .fetch_all(&mut *tx)
    .await?;
    let count = due.len();
    for row in due {
        let change = match row.kind.as_str() {
            "booked" => AppointmentChange::Booked,
            "rescheduled" => AppointmentChange::Rescheduled,
            _ => AppointmentChange::Canceled,
        };
        let event = AppointmentEvent {
            id: row.event_id,
            tenant: TenantId(row.tenant_id),
            change,
            appointment_id: row.appointment_id,
            occurred_at: row.occurred_at,
            data: row.data,
        };
        match listener.appointment_changed(event).await {
            Ok(()) => {
                sqlx::query!("UPDATE fulfillment.outbox SET published_at = now() WHERE id = $1", row.id)
                    .execute(&mut *tx)
                    .await?;
            }
            Err(error) => {
                let backoff = 2f64.powi(row.attempts.min(8)).min(300.0);
                tracing::warn!(%error, event_id = row.id, attempts = row.attempts + 1, "an appointment event was not taken");
                sqlx::query!(
                    r#"UPDATE fulfillment.outbox SET attempts = attempts + 1, last_error = $2,
                           next_attempt_at = now() + $3 * interval '1 second'
                       WHERE id = $1"#,
                    row.id,
                    error.to_string(),
                    backoff,
                )
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(count)
}
