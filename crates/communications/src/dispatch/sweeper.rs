//! The stuck-message sweeper: messages still `queued` long after they should have left (no
//! worker running, a lost job…), `sending` for that long (recovery cannot take them back), or
//! `unknown` and not yet settled (nor found unknowable) are counted in the `messages_stuck` gauge
//! and logged at error level with their ids, so an alert fires. Unknowable sends (SNS SMS) are
//! counted apart, in `messages_unknowable`.
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
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status = 'queued') AS "queued!",
                  count(*) FILTER (WHERE status = 'sending') AS "sending!",
                  count(*) FILTER (WHERE status = 'unknown' AND checked_at IS NULL) AS "unknown!",
                  count(*) FILTER (WHERE status = 'unknown' AND checked_at IS NOT NULL) AS "unknowable!"
           FROM communications.messages
           WHERE (status = 'queued' AND COALESCE(scheduled_at, created_at) < now() - make_interval(secs => $1))
              OR (status IN ('sending', 'unknown') AND (updated_at < now() - make_interval(secs => $1)
                                                        OR checked_at IS NOT NULL))"#,
        seconds,
    )
    .fetch_one(&mut *tx)
    .await?;
    let count = counts.queued + counts.sending + counts.unknown;
    metrics::gauge!("messages_stuck").set(count as f64);
    for (status, value) in [("queued", counts.queued), ("sending", counts.sending), ("unknown", counts.unknown)] {
        metrics::gauge!("messages_stuck_by_status", "status" => status).set(value as f64);
    }
    metrics::gauge!("messages_unknowable").set(counts.unknowable as f64);
    if count > 0 {
        let ids: Vec<Uuid> = sqlx::query_scalar!(
            r#"SELECT id FROM communications.messages
               WHERE (status = 'queued' AND COALESCE(scheduled_at, created_at) < now() - make_interval(secs => $1))
                  OR (status IN ('sending', 'unknown') AND checked_at IS NULL
                      AND updated_at < now() - make_interval(secs => $1))
               ORDER BY created_at LIMIT $2"#,
            seconds,
            IDS_LOGGED,
        )
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        tracing::error!(
            count,
            queued = counts.queued,
            sending = counts.sending,
            unknown = counts.unknown,
            stuck_after_secs = stuck_after.as_secs(),
            ids = %ids.join(","),
            "messages stuck"
        );
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
