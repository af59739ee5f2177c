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

/// Arbitrary constant naming the sweeper's advisory lock.
const SWEEPER_LOCK: i64 = 0x0053_5745_4550_4552;
const IDS_LOGGED: i64 = 50;

#[derive(Debug, Clone, Copy)]
pub struct SweeperSettings {
    /// A queued message older than this (and not scheduled for later) is stuck.
    pub stuck_after: Duration,
    pub interval: Duration,
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

/// Sweeps every `interval` until the task is dropped.
pub async fn run(pool: PgPool, settings: SweeperSettings) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = sweep_once(&pool, settings.stuck_after).await {
            tracing::warn!(%error, "the stuck-message sweep failed");
        }
    }
}
