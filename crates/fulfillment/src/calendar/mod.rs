//! Calendar sync: appointments pushed to the operator's Google calendars and Jobber accounts,
//! busy times pulled from Google, all through the `calendars` crate (the anti-corruption layer:
//! no vendor shape reaches this module).
//!
//! - Work is durable: every change of an appointment writes a sync job per matching connection
//!   in the appointment's own transaction ([`enqueue`]); a job means "make this connection show
//!   this appointment as it is now", so it is idempotent and needs no ordering.
//! - `worker.rs` does the jobs with backoff (a vendor outage or throttling never blocks or loses
//!   a booking) and keeps each appointment's state per connection (`appointment_sync`).
//! - `busy.rs` imports busy times by incremental sync (sync token; a 410 means a full resync),
//!   when a push notification says the calendar changed and on a schedule, and keeps the push
//!   channels renewed.
//! - `connections.rs`: the API to connect and disconnect accounts; `webhooks.rs`: Google's push
//!   notifications and Jobber's webhooks, verified before anything is read.
//! - Credentials are sealed with the master keyring, bound to their connection; a refreshed
//!   credential (Jobber rotates its refresh token on every refresh) is saved before anything else.

pub mod busy;
pub mod connections;
pub mod webhooks;
pub mod worker;

use std::time::Duration;

use calendars::Credentials;
use kernel::crypto::{Envelope, Keyring, associated_data};
use kernel::error::ApiError;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The platform's OAuth apps and endpoints (configuration, never tenant input: a tenant cannot
/// point us at another URL).
#[derive(Debug, Clone, Default)]
pub struct CalendarApps {
    pub google: Option<calendars::GoogleConfig>,
    pub jobber: Option<calendars::JobberConfig>,
    /// Where Google's push notifications reach us (`<base>/api/webhooks/google-calendar`);
    /// empty: no push channels, the schedule alone imports busy times.
    pub public_base_url: String,
    /// Busy times are imported at least this often.
    pub busy_sync_every: Duration,
}

fn bound_to(tenant: Uuid, connection: Uuid) -> Vec<u8> {
    associated_data(&tenant.to_string(), &format!("calendar_connection:{connection}"), "credentials")
}

pub(crate) fn seal(
    keyring: &Keyring,
    tenant: Uuid,
    connection: Uuid,
    credentials: &Credentials,
) -> Result<serde_json::Value, ApiError> {
    let plain = serde_json::to_vec(credentials).map_err(ApiError::internal)?;
    serde_json::to_value(keyring.seal(&plain, &bound_to(tenant, connection))).map_err(ApiError::internal)
}

pub(crate) fn open(
    keyring: &Keyring,
    tenant: Uuid,
    connection: Uuid,
    sealed: &serde_json::Value,
) -> Result<Credentials, ApiError> {
    let envelope: Envelope = serde_json::from_value(sealed.clone()).map_err(ApiError::internal)?;
    let plain = keyring.open(&envelope, &bound_to(tenant, connection)).map_err(ApiError::internal)?;
    serde_json::from_slice(&plain).map_err(ApiError::internal)
}

/// Saves refreshed credentials at once, outside any other transaction: the vendor may already
/// have invalidated the old ones.
pub(crate) async fn save_credentials(
    db: impl PgExecutor<'_>,
    keyring: &Keyring,
    tenant: Uuid,
    connection: Uuid,
    credentials: &Credentials,
) -> Result<(), ApiError> {
    let sealed = seal(keyring, tenant, connection, credentials)?;
    sqlx::query!(
        "UPDATE fulfillment.calendar_connections SET credentials = $2, updated_at = now() WHERE id = $1",
        connection,
        sealed,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Sync work for the appointment on every active connection that shows its resource, in the
/// caller's transaction. Answers how many jobs.
pub(crate) async fn enqueue(tx: &mut PgConnection, tenant: Uuid, appointment: Uuid) -> Result<u64, ApiError> {
    let queued = sqlx::query!(
        r#"WITH targets AS (
               SELECT c.id FROM fulfillment.calendar_connections c
               JOIN fulfillment.appointments a ON a.id = $2 AND a.tenant_id = c.tenant_id
               WHERE c.tenant_id = $1 AND c.status = 'active'
                 AND (c.resource_id IS NULL OR c.resource_id = a.resource_id
                      -- a calendar that shows it now and must lose it (moved to another resource)
                      OR EXISTS (SELECT 1 FROM fulfillment.appointment_sync s
                                 WHERE s.appointment_id = $2 AND s.connection_id = c.id AND s.state = 'synced'))
           ), states AS (
               INSERT INTO fulfillment.appointment_sync (appointment_id, connection_id, tenant_id)
               SELECT $2, id, $1 FROM targets
               ON CONFLICT (appointment_id, connection_id) DO UPDATE SET state = 'pending', updated_at = now()
           )
           INSERT INTO fulfillment.sync_jobs (tenant_id, connection_id, appointment_id)
           SELECT $1, id, $2 FROM targets"#,
        tenant,
        appointment,
    )
    .execute(&mut *tx)
    .await?;
    Ok(queued.rows_affected())
}

/// How long to wait after the `attempts`th attempt failed when the vendor gave no hint: 1 s
/// doubling to ten minutes.
pub(crate) fn backoff(attempts: i32) -> Duration {
    Duration::from_secs((1u64 << (attempts - 1).clamp(0, 10) as u32).min(600))
}
