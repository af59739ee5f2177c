//! Gauges read from the database on a schedule, in every serve and worker process (each exports
//! the same values; dashboards take the max): the dispatch queues per lane (BullMQ-style: due,
//! scheduled, running, retrying, failed, and the age of the oldest due job), unsettled messages
//! by status (queued, sending, unknown, pending review), the calendar sync backlog, and this process's database pool.

use std::time::Duration;

use sqlx::PgPool;

use communications::messages::queue::{BULK_QUEUE, URGENT_QUEUE};

/// Samples every `every` until the task is dropped; a failed sample is logged and skipped.
pub async fn run(pool: PgPool, max_connections: u32, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(idle));
        metrics::gauge!("db_pool_connections", "state" => "in_use").set(f64::from(pool.size().saturating_sub(idle)));
        metrics::gauge!("db_pool_connections", "state" => "max").set(f64::from(max_connections));
        if let Err(error) = sample(&pool).await {
            tracing::warn!(%error, "sampling the queue gauges failed");
        }
    }
}

fn lane_of(job_type: &str) -> &'static str {
    if job_type == URGENT_QUEUE { "urgent" } else { "bulk" }
}

async fn sample(pool: &PgPool) -> Result<(), sqlx::Error> {
    let queues = [URGENT_QUEUE, BULK_QUEUE];
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        r#"SELECT job_type,
                  CASE WHEN status = 'Pending' AND attempts > 0 THEN 'retrying'
                       WHEN status = 'Pending' AND run_at <= now() THEN 'due'
                       WHEN status = 'Pending' THEN 'scheduled'
                       WHEN status IN ('Running', 'Queued') THEN 'running'
                       ELSE 'failed' END,
                  count(*)
           FROM apalis.jobs WHERE job_type = ANY($1) AND status NOT IN ('Done')
           GROUP BY 1, 2"#,
    )
    .bind(&queues[..])
    .fetch_all(pool)
    .await?;
    for lane in ["urgent", "bulk"] {
        for state in ["due", "scheduled", "running", "retrying", "failed"] {
            let count: i64 = rows.iter().filter(|(t, s, _)| lane_of(t) == lane && s == state).map(|(_, _, n)| *n).sum();
            metrics::gauge!("queue_jobs", "lane" => lane, "state" => state).set(count as f64);
        }
    }
    let oldest: Vec<(String, f64)> = sqlx::query_as(
        r#"SELECT job_type, EXTRACT(EPOCH FROM now() - min(run_at))::float8
           FROM apalis.jobs WHERE job_type = ANY($1) AND status = 'Pending' AND run_at <= now()
           GROUP BY 1"#,
    )
    .bind(&queues[..])
    .fetch_all(pool)
    .await?;
    for lane in ["urgent", "bulk"] {
        let age = oldest.iter().filter(|(t, _)| lane_of(t) == lane).map(|(_, age)| *age).fold(0.0, f64::max);
        metrics::gauge!("queue_oldest_due_seconds", "lane" => lane).set(age);
    }
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        r#"SELECT status, count(*) FROM communications.messages
           WHERE status IN ('queued', 'sending', 'unknown', 'pending_review')
           GROUP BY 1"#,
    )
    .fetch_all(pool)
    .await?;
    for status in ["queued", "sending", "unknown", "pending_review"] {
        let count = statuses.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
        metrics::gauge!("messages_by_status", "status" => status).set(count as f64);
    }
    match fulfillment::calendar::worker::backlog(pool).await {
        Ok(backlog) => {
            for vendor in ["google", "jobber"] {
                let jobs = backlog.iter().find(|(v, _)| v == vendor).map_or(0, |(_, n)| *n);
                metrics::gauge!("calendar_sync_backlog", "vendor" => vendor).set(jobs as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "sampling the calendar sync backlog failed"),
    }
    Ok(())
}
