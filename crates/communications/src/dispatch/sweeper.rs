//! The stuck-message sweeper: messages still `queued` long after they should have left (no
//! worker running, a lost job, a provider outage beyond the retry budget…) are counted in the
//! `messages_stuck` gauge and logged at error level with their ids, so an alert fires.
//!
//! Every worker process runs the loop; a transaction-scoped advisory lock lets only one of them
//! sweep per round, so replicas don't multiply the log lines.

use std::time::Duration;

use kernel::error::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::triggers::cron::CronSchedule;

/// Arbitrary constant naming the sweeper's advisory lock.
const SWEEPER_LOCK: i64 = 0x0053_5745_4550_4552;
const IDS_LOGGED: i64 = 50;

#[derive(Debug, Clone)]
pub struct SweeperSettings {
    /// A queued message older than this (and not scheduled for later) is stuck.
    pub stuck_after: Duration,
    /// When to sweep (a cron schedule, UTC).
    pub schedule: CronSchedule,
    /// Idempotency keys are answered for at least this long, then forgotten.
    pub idempotency_retention: Duration,
}

/// Forgets idempotency keys older than `retention`; returns how many.
pub async fn purge_idempotency_keys(pool: &PgPool, retention: Duration) -> Result<u64, ApiError> {
    Ok(sqlx::query!(
        "DELETE FROM communications.idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        retention.as_secs_f64(),
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// One sweep: returns how many messages are stuck, or `None` when another process holds the
/// sweep this round.
pub async fn sweep_once(pool: &PgPool, stuck_after: Duration) -> Result<Option<i64>, ApiError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#, SWEEPER_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let seconds = stuck_after.as_secs_f64();
    let count: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM communications.messages
           WHERE status = 'queued' AND COALESCE(scheduled_at, created_at) < now() - make_interval(secs => $1)"#,
        seconds,
    )
    .fetch_one(&mut *tx)
    .await?;
    metrics::gauge!("messages_stuck").set(count as f64);
    if count > 0 {
        let ids: Vec<Uuid> = sqlx::query_scalar!(
            r#"SELECT id FROM communications.messages
               WHERE status = 'queued' AND COALESCE(scheduled_at, created_at) < now() - make_interval(secs => $1)
               ORDER BY created_at LIMIT $2"#,
            seconds,
            IDS_LOGGED,
        )
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        tracing::error!(count, stuck_after_secs = stuck_after.as_secs(), ids = %ids.join(","), "messages stuck in queued");
    }
    tx.commit().await?;
    Ok(Some(count))
}

/// Sweeps on its schedule until the task is dropped.
pub async fn run(pool: PgPool, settings: SweeperSettings) {
    loop {
        settings.schedule.sleep_until_next().await;
        match sweep_once(&pool, settings.stuck_after).await {
            // The process that swept this round also forgets expired idempotency keys.
            Ok(Some(_)) => {
                if let Err(error) = purge_idempotency_keys(&pool, settings.idempotency_retention).await {
                    tracing::warn!(%error, "purging idempotency keys failed");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "the stuck-message sweep failed"),
        }
    }
}

/// Arbitrary constant naming the reconciler's advisory lock.
const RECONCILER_LOCK: i64 = 0x0052_4543_4f4e_4349;

#[derive(Debug, Clone, Copy)]
pub struct ReconcileSettings {
    /// How long an outcome may stay open before it is acted on (well above provider timeouts).
    pub settle_after: Duration,
    /// Send `unknown` messages again that no callback settled: safe only where the providers'
    /// callbacks carry our correlation id (Meta's `biz_opaque_callback_data`, SES's tag, Twilio's
    /// status callback URL; SNS SMS has no callbacks), hence opt-in.
    pub resend_unsettled: bool,
}

/// One reconciliation round: messages stuck in `sending` (their worker died) become `unknown`;
/// with `resend_unsettled`, `unknown` messages without a provider id after the settle window are
/// queued again. Returns (interrupted, resent), or `None` when another process holds the round.
pub async fn reconcile_once(pool: &PgPool, settings: ReconcileSettings) -> Result<Option<(usize, usize)>, ApiError> {
    use crate::messages::model::{EventSource, Lane, MessageStatus};
    use crate::messages::queue::{self, DispatchJob};
    use crate::messages::repository::{self as messages, NewEvent};

    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#, RECONCILER_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let seconds = settings.settle_after.as_secs_f64();
    let interrupted = sqlx::query!(
        r#"UPDATE communications.messages SET status = 'unknown', updated_at = now(),
               status_reason = 'the dispatch was interrupted: its worker is gone'
           WHERE status = 'sending' AND updated_at < now() - make_interval(secs => $1)
           RETURNING id, tenant_id"#,
        seconds,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in &interrupted {
        let event = NewEvent {
            tenant_id: row.tenant_id,
            message_id: row.id,
            status: MessageStatus::Unknown,
            reason: Some("the dispatch was interrupted; the provider may have the message"),
            source: EventSource::System,
            payload: None,
            occurred_at: None,
        };
        messages::record_event(&mut *tx, event).await?;
    }
    let mut resent = 0;
    if settings.resend_unsettled {
        let unsettled = sqlx::query!(
            r#"UPDATE communications.messages SET status = 'queued', updated_at = now(),
                   status_reason = 'no provider callback settled it: sending again'
               WHERE status = 'unknown' AND provider_message_id IS NULL
                 AND updated_at < now() - make_interval(secs => $1)
               RETURNING id, tenant_id, lane AS "lane: Lane", attempts"#,
            seconds,
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &unsettled {
            let reason = format!("no provider callback within {}s: sending again", settings.settle_after.as_secs());
            let event = NewEvent {
                tenant_id: row.tenant_id,
                message_id: row.id,
                status: MessageStatus::Queued,
                reason: Some(&reason),
                source: EventSource::System,
                payload: None,
                occurred_at: None,
            };
            messages::record_event(&mut *tx, event).await?;
            // Each claim counted an attempt, so this attempt number has not been used by a job.
            let attempt = u32::try_from(row.attempts).unwrap_or(0);
            let job = DispatchJob { message_id: row.id, tenant_id: row.tenant_id, attempt, deferrals: 0 };
            queue::enqueue(&mut tx, row.lane, job, None).await?;
        }
        resent = unsettled.len();
    }
    tx.commit().await?;
    if !interrupted.is_empty() || resent > 0 {
        tracing::warn!(interrupted = interrupted.len(), resent, "reconciled messages whose outcome was open");
    }
    Ok(Some((interrupted.len(), resent)))
}

/// Reconciles on `schedule` until the task is dropped.
pub async fn run_reconciler(pool: PgPool, settings: ReconcileSettings, schedule: CronSchedule) {
    loop {
        schedule.sleep_until_next().await;
        if let Err(error) = reconcile_once(&pool, settings).await {
            tracing::warn!(%error, "reconciliation failed");
        }
    }
}
