//! Dispatch jobs on the apalis queues (schema `apalis`): one queue per lane, so an urgent
//! message never waits behind a bulk backlog. Jobs are pushed inside the caller's transaction:
//! a message and its job commit together or not at all.

use std::sync::{Arc, OnceLock};

use apalis::prelude::TaskBuilder;
use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::model::Lane;

pub const URGENT_QUEUE: &str = "switchboard.dispatch.urgent";
pub const BULK_QUEUE: &str = "switchboard.dispatch.bulk";
/// apalis re-runs a job whose worker died mid-way; our handler is idempotent (it checks the
/// message's state), so a few attempts only cover crashes. Our own retries are new jobs.
const MAX_ATTEMPTS: usize = 3;

/// One message to dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchJob {
    pub message_id: Uuid,
    pub tenant_id: Uuid,
    /// Our own attempt number (retries are new jobs), part of the job's idempotency key.
    pub attempt: u32,
    /// How often this attempt was put back for the rate limit (also part of the key).
    #[serde(default)]
    pub deferrals: u32,
    /// Set on a job that puts a message back after its worker stopped (or a send is repeated
    /// after settlement): the message's attempt number is the same, the job is a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<Uuid>,
}

impl DispatchJob {
    pub fn new(message_id: Uuid, tenant_id: Uuid, attempt: u32) -> Self {
        Self { message_id, tenant_id, attempt, deferrals: 0, nonce: None }
    }

    /// A new job for a message that goes back to the queue with `attempts` recorded.
    pub fn again(message_id: Uuid, tenant_id: Uuid, attempts: i32) -> Self {
        Self { nonce: Some(Uuid::now_v7()), ..Self::new(message_id, tenant_id, u32::try_from(attempts).unwrap_or(0)) }
    }

    fn idempotency_key(&self) -> String {
        match self.nonce {
            None => format!("dispatch:{}:{}:{}", self.message_id, self.attempt, self.deferrals),
            Some(nonce) => {
                format!("dispatch:{}:{}:{}:{}", self.message_id, self.attempt, self.deferrals, nonce.simple())
            }
        }
    }
}

/// apalis schedules in whole seconds (truncating); rounding up keeps a job from running before
/// its time.
fn whole_seconds_not_before(at: DateTime<Utc>) -> u64 {
    let seconds = at.timestamp().max(0) as u64;
    if at.timestamp_subsec_nanos() > 0 { seconds + 1 } else { seconds }
}

pub fn queue_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Urgent => URGENT_QUEUE,
        Lane::Bulk => BULK_QUEUE,
    }
}

/// Pushes `job` on its lane's queue within the caller's transaction, to run at `run_at` (now if
/// `None`). The idempotency key makes a second push of the same attempt a no-op.
pub async fn enqueue(
    db: &mut PgConnection,
    lane: Lane,
    job: DispatchJob,
    run_at: Option<DateTime<Utc>>,
) -> Result<(), ApiError> {
    enqueue_many(db, &[(lane, job, run_at)]).await
}

/// [`enqueue`] for many jobs: one statement per lane.
pub async fn enqueue_many(
    db: &mut PgConnection,
    jobs: &[(Lane, DispatchJob, Option<DateTime<Utc>>)],
) -> Result<(), ApiError> {
    for lane in [Lane::Urgent, Lane::Bulk] {
        let mut tasks = Vec::new();
        for (_, job, run_at) in jobs.iter().filter(|(job_lane, _, _)| *job_lane == lane) {
            let payload = serde_json::to_vec(job).map_err(ApiError::internal)?;
            let mut builder =
                TaskBuilder::new(payload).max_attempts(MAX_ATTEMPTS).idempotency_key(job.idempotency_key());
            if let Some(at) = run_at {
                builder = builder.run_at_timestamp(whole_seconds_not_before(*at));
            }
            tasks.push(builder.build());
        }
        if !tasks.is_empty() {
            apalis_postgres::queries::push_tasks(db, queue_name(lane), tasks).await.map_err(|error| match error {
                // Kept as the database's error, so an outage still reads as one (a 503).
                apalis_postgres::Error::Database(error) => ApiError::from(error),
                other => ApiError::internal(other.to_string()),
            })?;
        }
    }
    Ok(())
}

/// Wakes the parked dispatch workers of every process once jobs due now are committed.
///
/// apalis-postgres would notify from a row trigger, inside the inserting transaction; PostgreSQL
/// serialises the commits of notifying transactions (a database-wide lock held through the WAL
/// flush), which capped acceptance near the disk's flush rate. Migration `…8000` drops that
/// trigger, and callers wake the workers here after their commit instead. Wake-ups that arrive
/// while a notification is on its way are coalesced into the next one, and the notifying
/// statement writes nothing and does not wait for a flush. The server's queue waker still
/// re-notifies due jobs every poll interval, for jobs that come due later and for writers that
/// do not call this (recovery and settlement, provider callbacks).
#[derive(Debug, Clone)]
pub struct QueueWaker {
    pool: PgPool,
    /// Started on first use, so that building the module needs no runtime.
    sender: Arc<OnceLock<mpsc::UnboundedSender<Lane>>>,
}

impl QueueWaker {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, sender: Arc::default() }
    }

    /// Call after committing a job for `lane` that is due now. Must run on a Tokio runtime.
    pub fn wake(&self, lane: Lane) {
        let sender = self.sender.get_or_init(|| spawn_notifier(self.pool.clone()));
        // The notifier ends only with the last clone of this waker.
        let _ = sender.send(lane);
    }
}

fn spawn_notifier(pool: PgPool) -> mpsc::UnboundedSender<Lane> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Lane>();
    tokio::spawn(async move {
        while let Some(first) = receiver.recv().await {
            let mut queues = vec![queue_name(first)];
            while let Ok(lane) = receiver.try_recv() {
                if !queues.contains(&queue_name(lane)) {
                    queues.push(queue_name(lane));
                }
            }
            if let Err(error) = notify(&pool, &queues).await {
                tracing::warn!(%error, "waking the dispatch workers failed; the queue waker will");
            }
        }
    });
    sender
}

/// One notification per queue, in the shape apalis-postgres listens for (the id is not used to
/// fetch; any value wakes the worker). Without a synchronous commit: a lost wake-up costs at
/// most one poll interval, and the notifying transaction writes nothing else.
async fn notify(pool: &PgPool, queues: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"SELECT set_config('synchronous_commit', 'off', true),
                  pg_notify('apalis::job::insert', json_build_object('job_type', queue, 'id', 'wake')::text)
           FROM unnest($1::text[]) AS queue"#,
        queues as &[&str],
    )
    .fetch_all(pool)
    .await?;
    Ok(())
}
