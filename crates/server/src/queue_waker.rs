//! Wakes dispatch workers for delayed jobs as they come due.
//!
//! apalis-postgres wakes parked workers with `NOTIFY apalis::job::insert`. Jobs due at once are
//! announced after their commit by `communications::messages::queue::QueueWaker` (apalis's own
//! insert trigger is dropped: notifying inside the inserting transaction serialised commits); a
//! job scheduled for later (a retry after backoff, a scheduled send, a rate-limit slot), or one
//! pushed by a writer that does not call the waker, would wait for the next heartbeat (30 s).
//! This task sends the same notification, every interval, for each queue that has due jobs; a
//! woken worker drains everything due before it parks again. Like the waker, it commits without
//! waiting for a WAL flush: a notification lost in a crash only costs one interval.

use std::time::Duration;

use sqlx::PgPool;

/// Notifies once per queue with due jobs; returns how many queues were woken.
pub async fn wake_due(pool: &PgPool, queues: &[&str]) -> Result<usize, sqlx::Error> {
    let woken = sqlx::query!(
        r#"SELECT set_config('synchronous_commit', 'off', true) AS "no_flush",
                  count(pg_notify('apalis::job::insert',
                      json_build_object('job_type', job_type, 'id', id, 'run_at', run_at)::text)) AS "woken!"
           FROM (SELECT DISTINCT ON (job_type) job_type, id, run_at FROM apalis.jobs
                 WHERE status = 'Pending' AND run_at <= now() AND job_type = ANY($1)
                 ORDER BY job_type, run_at) AS due"#,
        queues as &[&str],
    )
    .fetch_one(pool)
    .await?
    .woken;
    Ok(usize::try_from(woken).unwrap_or(0))
}

/// Runs until the task is dropped.
pub async fn run(pool: PgPool, interval: Duration) {
    let queues = [communications::messages::queue::URGENT_QUEUE, communications::messages::queue::BULK_QUEUE];
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = wake_due(&pool, &queues).await {
            tracing::warn!(%error, "waking workers for due jobs failed");
        }
    }
}

/// How long a finished dispatch job stays in the queue's table. The message and its events are
/// the record; the job row is only transport, kept for a while for operators to look at.
pub const FINISHED_JOB_RETENTION: Duration = Duration::from_secs(3600);

/// Deletes dispatch jobs of `queues` that finished successfully more than `retention` ago (at
/// most 50,000 per call, so no call holds a long transaction); returns how many. Without this the
/// table grows by a row per message forever.
pub async fn purge_finished(pool: &PgPool, queues: &[&str], retention: Duration) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        r#"DELETE FROM apalis.jobs WHERE id IN (
               SELECT id FROM apalis.jobs
               WHERE status = 'Done' AND done_at < now() - make_interval(secs => $1) AND job_type = ANY($2)
               LIMIT 50000)"#,
        retention.as_secs_f64(),
        queues as &[&str],
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// Purges finished jobs on `schedule` (the sweep's) until the task is dropped.
pub async fn purge_on_schedule(pool: PgPool, schedule: communications::triggers::cron::CronSchedule) {
    let queues = [communications::messages::queue::URGENT_QUEUE, communications::messages::queue::BULK_QUEUE];
    loop {
        schedule.sleep_until_next().await;
        if let Err(error) = purge_finished(&pool, &queues, FINISHED_JOB_RETENTION).await {
            tracing::warn!(%error, "purging finished dispatch jobs failed");
        }
    }
}

/// Hands the jobs a dead dispatch worker had fetched back to the queue at once (apalis would do
/// it only after three missed heartbeats); returns how many. Handlers are idempotent, so a job
/// whose task is in fact still finishing does no harm when it runs again.
pub async fn release_jobs_of(pool: &PgPool, worker: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        r#"UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL
           WHERE lock_by = $1 AND (status = 'Queued' OR status = 'Running')"#,
        worker,
    )
    .execute(pool)
    .await?
    .rows_affected())
}
