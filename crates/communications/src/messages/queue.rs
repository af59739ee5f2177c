//! Dispatch jobs on the apalis queues (schema `apalis`): one queue per lane, so an urgent
//! message never waits behind a bulk backlog. Jobs are pushed inside the caller's transaction:
//! a message and its job commit together or not at all.

use apalis::prelude::TaskBuilder;
use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
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
    let payload = serde_json::to_vec(&job).map_err(ApiError::internal)?;
    let mut builder = TaskBuilder::new(payload)
        .max_attempts(MAX_ATTEMPTS)
        .idempotency_key(format!("dispatch:{}:{}:{}", job.message_id, job.attempt, job.deferrals));
    if let Some(at) = run_at {
        builder = builder.run_at_timestamp(whole_seconds_not_before(at));
    }
    apalis_postgres::queries::push_tasks(db, queue_name(lane), vec![builder.build()])
        .await
        .map_err(|error| ApiError::internal(error.to_string()))
}
