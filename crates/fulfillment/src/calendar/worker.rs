//! The sync worker: takes due sync jobs and makes each connection show its appointment as it
//! is now — inserted or updated while booked (and on that connection's resource), removed
//! otherwise. Vendor failures wait with backoff (or the vendor's own hint); a refusal for good
//! marks the appointment's state on that connection failed with the reason; revoked credentials
//! mark the connection unauthorized. Nothing here can block or undo a booking.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calendars::{CalendarEvent, Credentials, EventKey, GoogleCalendar, Jobber, JobberLink, SyncError};
use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

use super::backoff;
use crate::Fulfillment;

/// Jobs taken per round.
const BATCH: i64 = 20;
/// A taken job is offered again after this long if its process died before finishing it.
const LEASE_SECS: f64 = 120.0;
/// After this many attempts a job that keeps failing is given up (the state says why).
const MAX_ATTEMPTS: i32 = 15;

/// This process's adapters, one per connection: a Jobber adapter tracks its account's
/// query-cost budget (so it holds back instead of being throttled), and each keeps its HTTP
/// client (building one — TLS roots and all — per job cost more than the job).
#[derive(Debug, Default, Clone)]
pub struct Adapters {
    jobber: Shared<Uuid, Jobber>,
    google: Shared<(Uuid, String), GoogleCalendar>,
}

type Shared<K, V> = Arc<Mutex<HashMap<K, Arc<V>>>>;

impl Adapters {
    fn jobber(&self, connection: Uuid, config: &calendars::JobberConfig) -> Arc<Jobber> {
        let mut adapters = self.jobber.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        adapters.entry(connection).or_insert_with(|| Arc::new(Jobber::new(config.clone()))).clone()
    }

    fn google(&self, connection: Uuid, calendar_id: &str, config: &calendars::GoogleConfig) -> Arc<GoogleCalendar> {
        let mut adapters = self.google.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        adapters
            .entry((connection, calendar_id.to_owned()))
            .or_insert_with(|| {
                Arc::new(GoogleCalendar::new(calendars::GoogleConfig {
                    calendar_id: calendar_id.to_owned(),
                    ..config.clone()
                }))
            })
            .clone()
    }
}

/// Does one vendor's sync jobs (`google` or `jobber`: each runs at its own pace, so Jobber's
/// cost budget never slows Google down) until the task is dropped; woken after local commits,
/// polling for the rest.
pub async fn run(module: Fulfillment, provider: &'static str, wake: Arc<Notify>, poll: Duration) {
    let adapters = Adapters::default();
    loop {
        match run_once(&module, provider, &adapters).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "calendar sync round failed");
                return;
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

struct Job {
    id: i64,
    tenant_id: Uuid,
    connection_id: Uuid,
    appointment_id: Uuid,
    attempts: i32,
}

/// One round: takes due jobs and does them, one vendor conversation per appointment and
/// connection; connections in parallel, each connection's jobs in turn (a vendor's budget is
/// per account).
pub async fn run_once(module: &Fulfillment, provider: &str, adapters: &Adapters) -> Result<usize, ApiError> {
    let jobs = sqlx::query_as!(
        Job,
        r#"UPDATE fulfillment.sync_jobs j SET attempts = attempts + 1,
               next_attempt_at = now() + $2 * interval '1 second'
           WHERE j.id IN (SELECT s.id FROM fulfillment.sync_jobs s
                          JOIN fulfillment.calendar_connections c ON c.id = s.connection_id AND c.provider = $3
                          WHERE s.done_at IS NULL AND s.next_attempt_at <= now()
                            AND (c.hold_until IS NULL OR c.hold_until <= now())
                          ORDER BY s.id LIMIT $1 FOR UPDATE OF s SKIP LOCKED)
           RETURNING j.id, j.tenant_id, j.connection_id, j.appointment_id, j.attempts"#,
        BATCH,
        LEASE_SECS,
        provider,
    )
    .fetch_all(&module.pool)
    .await?;
    let count = jobs.len();
    // Jobs for the same appointment and connection are one piece of work (the newest; finishing
    // it finishes the older ones).
    let mut newest: Vec<Job> = Vec::with_capacity(jobs.len());
    for job in jobs {
        match newest.iter_mut().find(|j| j.appointment_id == job.appointment_id && j.connection_id == job.connection_id)
        {
            Some(kept) if kept.id < job.id => *kept = job,
            Some(_) => {}
            None => newest.push(job),
        }
    }
    let mut by_connection: HashMap<Uuid, Vec<Job>> = HashMap::new();
    for job in newest {
        by_connection.entry(job.connection_id).or_default().push(job);
    }
    let mut running = tokio::task::JoinSet::new();
    for (_, jobs) in by_connection {
        let (module, adapters) = (module.clone(), adapters.clone());
        running.spawn(async move {
            for job in jobs {
                if let Err(error) = process(&module, &adapters, &job).await {
                    // Our own failure (the database): the lease brings the job back.
                    tracing::warn!(%error, job = job.id, "a calendar sync job failed here");
                }
            }
        });
    }
    while running.join_next().await.is_some() {}
    Ok(count)
}

/// What the vendor call ended in.
enum Done {
    Synced(Value),
    Removed(Value),
    /// Nothing there and nothing to do.
    Nothing,
}

async fn process(module: &Fulfillment, adapters: &Adapters, job: &Job) -> Result<(), ApiError> {
    let mut tx = module.pool.begin().await?;
    process_in(module, adapters, &mut tx, job).await?;
    tx.commit().await?;
    Ok(())
}

async fn process_in(
    module: &Fulfillment,
    adapters: &Adapters,
    tx: &mut sqlx::PgConnection,
    job: &Job,
) -> Result<(), ApiError> {
    // The appointment's state on this connection, locked: two processes never talk to the vendor
    // about the same appointment at once (Jobber's creations are not idempotent).
    let state = sqlx::query!(
        r#"SELECT external FROM fulfillment.appointment_sync WHERE appointment_id = $1 AND connection_id = $2 FOR UPDATE"#,
        job.appointment_id,
        job.connection_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(state) = state else {
        return finish_job(tx, job.id, None).await;
    };
    let connection = sqlx::query!(
        r#"SELECT provider, resource_id, calendar_id, credentials, status FROM fulfillment.calendar_connections WHERE id = $1"#,
        job.connection_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(connection) = connection.filter(|c| c.status == "active") else {
        set_state(tx, job, "failed", &state.external, Some("the connection is not active")).await?;
        return finish_job(tx, job.id, None).await;
    };
    let appointment = sqlx::query!(
        r#"SELECT a.status, a.resource_id, a.starts_at, a.ends_at, a.title, a.note, a.location, r.time_zone, r.name AS resource,
                  s.name AS service
           FROM fulfillment.appointments a JOIN fulfillment.resources r ON r.id = a.resource_id
           JOIN fulfillment.services s ON s.id = a.service_id WHERE a.id = $1"#,
        job.appointment_id,
    )
    .fetch_one(&mut *tx)
    .await?;
    let wanted = appointment.status == "booked" && connection.resource_id.is_none_or(|r| r == appointment.resource_id);
    let event = CalendarEvent {
        key: EventKey::from_uuid(job.appointment_id),
        title: appointment
            .title
            .clone()
            .unwrap_or_else(|| format!("{} – {}", appointment.service, appointment.resource)),
        description: appointment.note.clone(),
        start: appointment.starts_at,
        end: appointment.ends_at,
        time_zone: appointment.time_zone.clone(),
        location: appointment.location.clone(),
    };
    let mut credentials = super::open(&module.keyring, job.tenant_id, job.connection_id, &connection.credentials)?;
    let apps = module.calendars.clone();
    let (outcome, changed) = match connection.provider.as_str() {
        "google" => match &apps.google {
            Some(config) => {
                let calendar_id = connection.calendar_id.clone().unwrap_or_default();
                let adapter = adapters.google(job.connection_id, &calendar_id, config);
                google(&adapter, &mut credentials, &event, wanted, &state.external).await
            }
            None => (Err((unconfigured("Google"), None)), false),
        },
        _ => match &apps.jobber {
            Some(config) => {
                let adapter = adapters.jobber(job.connection_id, config);
                jobber(&adapter, &mut credentials, &event, wanted, &state.external).await
            }
            None => (Err((unconfigured("Jobber"), None)), false),
        },
    };
    if changed {
        super::save_credentials(&module.pool, &module.keyring, job.tenant_id, job.connection_id, &credentials).await?;
    }
    match outcome {
        Ok(Done::Synced(external)) => {
            set_state(tx, job, "synced", &external, None).await?;
            finish_job(tx, job.id, None).await
        }
        Ok(Done::Removed(external)) => {
            set_state(tx, job, "removed", &external, None).await?;
            finish_job(tx, job.id, None).await
        }
        Ok(Done::Nothing) => {
            set_state(tx, job, "removed", &state.external, None).await?;
            finish_job(tx, job.id, None).await
        }
        Err((error, external)) => {
            let kind = match &error {
                SyncError::Retryable { .. } => "retryable",
                SyncError::RateLimited { .. } => "rate_limited",
                SyncError::Unauthorized { .. } => "unauthorized",
                SyncError::Permanent { .. } | SyncError::SyncTokenExpired => "permanent",
            };
            let vendor = if connection.provider == "google" { "google" } else { "jobber" };
            metrics::counter!("calendar_sync_failures_total", "vendor" => vendor, "kind" => kind).increment(1);
            failed(tx, job, error, external.as_ref().unwrap_or(&state.external)).await
        }
    }
}

type Outcome = (Result<Done, (SyncError, Option<Value>)>, bool);

async fn google(
    adapter: &GoogleCalendar,
    credentials: &mut Credentials,
    event: &CalendarEvent,
    wanted: bool,
    external: &Value,
) -> Outcome {
    let shown = external.get("event").is_some();
    let record = json!({ "event": event.key.as_str() });
    match (wanted, shown) {
        (true, false) => {
            let outcome = adapter.insert(credentials, event).await;
            (outcome.result.map(|()| Done::Synced(record)).map_err(|e| (e, None)), outcome.credentials_changed)
        }
        (true, true) => {
            let outcome = adapter.update(credentials, event).await;
            (outcome.result.map(|()| Done::Synced(record)).map_err(|e| (e, None)), outcome.credentials_changed)
        }
        (false, true) => {
            let outcome = adapter.delete(credentials, &event.key).await;
            (outcome.result.map(|()| Done::Removed(json!({}))).map_err(|e| (e, None)), outcome.credentials_changed)
        }
        (false, false) => (Ok(Done::Nothing), false),
    }
}

fn unconfigured(vendor: &str) -> SyncError {
    SyncError::Permanent { code: "configuration".into(), reason: format!("no {vendor} app is configured") }
}

async fn jobber(
    adapter: &Jobber,
    credentials: &mut Credentials,
    event: &CalendarEvent,
    wanted: bool,
    external: &Value,
) -> Outcome {
    let mut link: JobberLink = serde_json::from_value(external.clone()).unwrap_or_default();
    let has_visit = link.visit.is_some();
    let customer = calendars::Customer { company_name: Some(event.title.clone()), ..calendars::Customer::default() };
    let as_value = |link: &JobberLink| serde_json::to_value(link).unwrap_or_default();
    match (wanted, has_visit) {
        (true, false) => {
            let outcome = adapter.create(credentials, &mut link, &customer, event).await;
            let value = as_value(&link);
            // Whatever happened, the ids Jobber gave are kept: a retry resumes, never repeats.
            (
                outcome.result.map(|()| Done::Synced(value.clone())).map_err(|e| (e, Some(value))),
                outcome.credentials_changed,
            )
        }
        (true, true) => {
            let outcome = adapter.reschedule(credentials, &link, event).await;
            (outcome.result.map(|()| Done::Synced(as_value(&link))).map_err(|e| (e, None)), outcome.credentials_changed)
        }
        (false, true) => {
            let outcome = adapter.cancel(credentials, &mut link).await;
            let value = as_value(&link);
            (
                outcome.result.map(|()| Done::Removed(value.clone())).map_err(|e| (e, Some(value))),
                outcome.credentials_changed,
            )
        }
        (false, false) => (Ok(Done::Nothing), false),
    }
}

async fn set_state(
    tx: &mut sqlx::PgConnection,
    job: &Job,
    state: &str,
    external: &Value,
    error: Option<&str>,
) -> Result<(), ApiError> {
    sqlx::query!(
        r#"UPDATE fulfillment.appointment_sync SET state = $3, external = $4, last_error = $5, attempts = $6,
               synced_at = CASE WHEN $3 IN ('synced', 'removed') THEN now() ELSE synced_at END, updated_at = now()
           WHERE appointment_id = $1 AND connection_id = $2"#,
        job.appointment_id,
        job.connection_id,
        state,
        external,
        error,
        job.attempts,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Marks the job (and any older duplicates of it) done, or due again at `retry_at`.
async fn finish_job(tx: &mut sqlx::PgConnection, id: i64, retry_at: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    match retry_at {
        None => {
            sqlx::query!(
                r#"UPDATE fulfillment.sync_jobs SET done_at = now()
                   WHERE done_at IS NULL AND (appointment_id, connection_id) =
                         (SELECT appointment_id, connection_id FROM fulfillment.sync_jobs WHERE id = $1) AND id <= $1"#,
                id,
            )
            .execute(&mut *tx)
            .await?;
        }
        Some(at) => {
            sqlx::query!("UPDATE fulfillment.sync_jobs SET next_attempt_at = $2 WHERE id = $1", id, at)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

async fn failed(tx: &mut sqlx::PgConnection, job: &Job, error: SyncError, external: &Value) -> Result<(), ApiError> {
    let reason = error.to_string();
    let retry = match &error {
        SyncError::Retryable { retry_after, .. } => Some(retry_after.unwrap_or_else(|| backoff(job.attempts))),
        SyncError::RateLimited { retry_after } => {
            // The vendor asked us to wait: not a failed attempt, and the account's other jobs
            // wait too instead of being refused one by one.
            let wait = retry_after.unwrap_or_else(|| backoff(job.attempts));
            sqlx::query!(
                "UPDATE fulfillment.sync_jobs SET attempts = GREATEST(attempts - 1, 0) WHERE id = $1",
                job.id,
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                r#"UPDATE fulfillment.calendar_connections
                   SET hold_until = GREATEST(hold_until, now() + $2 * interval '1 second') WHERE id = $1"#,
                job.connection_id,
                wait.as_secs_f64(),
            )
            .execute(&mut *tx)
            .await?;
            Some(wait)
        }
        SyncError::Unauthorized { .. } => {
            sqlx::query!(
                r#"UPDATE fulfillment.calendar_connections SET status = 'unauthorized', status_reason = $2, updated_at = now()
                   WHERE id = $1"#,
                job.connection_id,
                reason,
            )
            .execute(&mut *tx)
            .await?;
            None
        }
        SyncError::Permanent { .. } | SyncError::SyncTokenExpired => None,
    };
    match retry.filter(|_| job.attempts < MAX_ATTEMPTS) {
        Some(wait) => {
            tracing::info!(job = job.id, attempts = job.attempts, %reason, "calendar sync will try again");
            set_state(tx, job, "pending", external, Some(&reason)).await?;
            let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::minutes(10));
            finish_job(tx, job.id, Some(at)).await?;
        }
        None => {
            tracing::warn!(job = job.id, attempts = job.attempts, %reason, "calendar sync gave up on an appointment");
            set_state(tx, job, "failed", external, Some(&reason)).await?;
            finish_job(tx, job.id, None).await?;
        }
    }
    Ok(())
}

/// Sync jobs waiting, by vendor (`calendar_sync_backlog`).
pub async fn backlog(pool: &sqlx::PgPool) -> Result<Vec<(String, i64)>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT c.provider, count(*) AS "jobs!" FROM fulfillment.sync_jobs s
           JOIN fulfillment.calendar_connections c ON c.id = s.connection_id
           WHERE s.done_at IS NULL GROUP BY c.provider"#,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.provider, r.jobs)).collect())
}
