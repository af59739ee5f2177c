//! Busy times from Google calendars: imported by incremental sync (the sync token from the
//! last round; Google's 410 → a full resync that replaces what we had), when a push
//! notification says the calendar changed and at least every `busy_sync_every`. Push channels
//! are opened when a public address is configured and renewed a day before they expire.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use calendars::{BusyChanges, BusyTime, GoogleCalendar, SyncError};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use kernel::error::ApiError;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::Fulfillment;
use crate::schedule::instant;

/// Push channels live this long (Google caps them; we renew a day early).
const CHANNEL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Imports busy times until the task is dropped; `wake` is notified by push notifications.
pub async fn run(module: Fulfillment, wake: Arc<Notify>, poll: Duration) {
    loop {
        match run_once(&module).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "busy-time import round failed");
                return;
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// One round: every Google connection that is due (asked for, or not synced for a while). A
/// connection is claimed first (its request cleared, its sync time set), so no other process
/// imports it meanwhile and no lock is held while Google answers; a push arriving during the
/// import asks again.
pub async fn run_once(module: &Fulfillment) -> Result<usize, ApiError> {
    let Some(config) = module.calendars.google.clone() else { return Ok(0) };
    let every = module.calendars.busy_sync_every.as_secs_f64();
    let due = sqlx::query!(
        r#"UPDATE fulfillment.calendar_connections c SET sync_requested_at = NULL, last_synced_at = now()
           FROM fulfillment.resources r
           WHERE r.id = c.resource_id AND c.id IN (
               SELECT id FROM fulfillment.calendar_connections
               WHERE provider = 'google' AND status = 'active'
                 AND (last_synced_at IS NULL OR last_synced_at < now() - $1 * interval '1 second'
                      -- Asked for by a push: at most once a second per calendar (our own inserts
                      -- make Google push too; a burst of bookings must not become a burst of syncs).
                      OR (sync_requested_at IS NOT NULL AND last_synced_at < now() - interval '1 second'))
               ORDER BY sync_requested_at NULLS LAST LIMIT 5 FOR UPDATE SKIP LOCKED)
           RETURNING c.id, c.tenant_id, c.resource_id AS "resource_id!", c.calendar_id AS "calendar_id!", c.credentials,
                     c.sync_token, c.channel_id, c.channel_expires_at, r.time_zone"#,
        every,
    )
    .fetch_all(&module.pool)
    .await?;
    let count = due.len();
    for connection in due {
        let adapter = GoogleCalendar::new(calendars::GoogleConfig {
            calendar_id: connection.calendar_id.clone(),
            ..config.clone()
        });
        let mut credentials =
            super::open(&module.keyring, connection.tenant_id, connection.id, &connection.credentials)?;
        let mut outcome = adapter.busy(&mut credentials, connection.sync_token.as_deref()).await;
        let mut changed = outcome.credentials_changed;
        if matches!(outcome.result, Err(SyncError::SyncTokenExpired)) {
            outcome = adapter.busy(&mut credentials, None).await;
            changed |= outcome.credentials_changed;
        }
        if changed {
            super::save_credentials(&module.pool, &module.keyring, connection.tenant_id, connection.id, &credentials)
                .await?;
        }
        let tz = Tz::from_str(&connection.time_zone).unwrap_or(chrono_tz::UTC);
        let mut tx = module.pool.begin().await?;
        match outcome.result {
            Ok(changes) => {
                apply(&mut tx, connection.tenant_id, connection.id, connection.resource_id, tz, &changes).await?;
                sqlx::query!(
                    r#"UPDATE fulfillment.calendar_connections SET sync_token = $2, last_sync_error = NULL, updated_at = now()
                       WHERE id = $1"#,
                    connection.id,
                    changes.next_sync_token,
                )
                .execute(&mut *tx)
                .await?;
            }
            Err(error) => {
                let unauthorized = matches!(error, SyncError::Unauthorized { .. });
                tracing::warn!(%error, connection = %connection.id, "importing busy times failed");
                sqlx::query!(
                    r#"UPDATE fulfillment.calendar_connections SET last_sync_error = $2,
                           status = CASE WHEN $3 THEN 'unauthorized' ELSE status END,
                           status_reason = CASE WHEN $3 THEN $2 ELSE status_reason END, updated_at = now()
                       WHERE id = $1"#,
                    connection.id,
                    error.to_string(),
                    unauthorized,
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        let channel = (connection.channel_id, connection.channel_expires_at);
        renew_channel(module, &adapter, &mut credentials, connection.id, connection.tenant_id, channel).await?;
    }
    Ok(count)
}

/// The instants a busy time covers; an all-day event is its days in the resource's zone.
fn interval(time: &BusyTime, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let midnight = |day: &NaiveDate| instant(tz, day.and_time(chrono::NaiveTime::MIN));
    match time {
        BusyTime::At { start, end } => (*start, *end),
        BusyTime::AllDay { start, end } => (midnight(start), midnight(end)),
    }
}

async fn apply(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    connection: Uuid,
    resource: Uuid,
    tz: Tz,
    changes: &BusyChanges,
) -> Result<(), ApiError> {
    if changes.full_sync {
        sqlx::query!("DELETE FROM fulfillment.busy_times WHERE connection_id = $1", connection)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query!(
        "DELETE FROM fulfillment.busy_times WHERE connection_id = $1 AND external_id = ANY($2)",
        connection,
        &changes.removed,
    )
    .execute(&mut *tx)
    .await?;
    let busy: Vec<_> = changes
        .busy
        .iter()
        .map(|b| (b.external_id.clone(), interval(&b.time, tz)))
        .filter(|(_, (s, e))| e > s)
        .collect();
    let ids: Vec<String> = busy.iter().map(|(id, _)| id.clone()).collect();
    let starts: Vec<DateTime<Utc>> = busy.iter().map(|(_, (s, _))| *s).collect();
    let ends: Vec<DateTime<Utc>> = busy.iter().map(|(_, (_, e))| *e).collect();
    sqlx::query!(
        r#"INSERT INTO fulfillment.busy_times (tenant_id, resource_id, connection_id, external_id, during)
           SELECT $1, $2, $3, t.id, tstzrange(t.s, t.e) FROM unnest($4::text[], $5::timestamptz[], $6::timestamptz[]) AS t(id, s, e)
           ON CONFLICT (connection_id, external_id) DO UPDATE SET during = EXCLUDED.during, resource_id = EXCLUDED.resource_id"#,
        tenant,
        resource,
        connection,
        &ids,
        &starts,
        &ends,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Opens a push channel for the calendar, or a new one a day before the old one expires.
async fn renew_channel(
    module: &Fulfillment,
    adapter: &GoogleCalendar,
    credentials: &mut calendars::Credentials,
    connection: Uuid,
    tenant: Uuid,
    (channel, expires_at): (Option<String>, Option<DateTime<Utc>>),
) -> Result<(), ApiError> {
    let base = module.calendars.public_base_url.trim_end_matches('/');
    let fresh = channel.is_some() && expires_at.is_some_and(|at| at > Utc::now() + chrono::Duration::days(1));
    if base.is_empty() || fresh {
        return Ok(());
    }
    let (id, token) = (Uuid::now_v7().to_string(), kernel::crypto::random_token());
    let address = format!("{base}/api/webhooks/google-calendar");
    let outcome = adapter.watch(credentials, &id, &address, &token, CHANNEL_TTL).await;
    if outcome.credentials_changed {
        super::save_credentials(&module.pool, &module.keyring, tenant, connection, credentials).await?;
    }
    match outcome.result {
        Ok(opened) => {
            sqlx::query!(
                r#"UPDATE fulfillment.calendar_connections SET channel_id = $2, channel_token = $3, channel_resource = $4,
                       channel_expires_at = $5, updated_at = now() WHERE id = $1"#,
                connection,
                opened.id,
                token,
                opened.resource_id,
                opened.expires_at,
            )
            .execute(&module.pool)
            .await?;
        }
        Err(error) => tracing::warn!(%error, %connection, "opening a push channel failed; the schedule still imports"),
    }
    Ok(())
}
