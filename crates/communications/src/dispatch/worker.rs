//! Running a dispatch lane: one apalis worker on PostgreSQL (`FOR UPDATE SKIP LOCKED` fetches,
//! LISTEN/NOTIFY wake-ups), in the `serve` process or a `switchboard worker` process — any number
//! of them against one database.
//!
//! An apalis worker ends for good at the first database error in its fetch, acknowledgement or
//! heartbeat. [`run_lane`] therefore runs one worker until it ends and says why; the caller
//! (`server`'s supervisor) starts a new one, with a new name, after a short backoff.

use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{BackendExt, BoxDynError, Data, Monitor, ParallelizeExt, WorkerBuilder};
use apalis_postgres::{Config, PostgresStorage};
use tokio::sync::watch;

use super::Dispatcher;
use crate::messages::model::Lane;
use crate::messages::queue::{DispatchJob, queue_name};

async fn handle(job: DispatchJob, dispatcher: Data<Dispatcher>) -> Result<(), BoxDynError> {
    dispatcher.dispatch(job).await.map_err(|error| Box::new(error) as BoxDynError)
}

/// How the workers run.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Jobs each lane's worker runs at once.
    pub concurrency: usize,
    pub poll_interval: Duration,
    /// A worker silent for three heartbeats is dead: its jobs go to the others.
    pub heartbeat: Duration,
    /// In-flight jobs get this long to finish on shutdown.
    pub grace: Duration,
}

/// How a lane's worker ended.
#[derive(Debug)]
pub struct LaneExit {
    /// The worker's name (`lock_by` of the jobs it held).
    pub worker: String,
    /// `Ok` when it stopped because `stopping` said so; otherwise why it died.
    pub result: Result<(), String>,
}

/// A unique worker name for `lane`.
pub fn worker_name(lane: Lane) -> String {
    format!("switchboard-dispatch-{}-{}", lane.as_str(), uuid::Uuid::now_v7().simple())
}

/// Runs one worker named `name` for `lane` until it dies or `stopping` turns true (then in-flight
/// jobs get the grace period).
pub async fn run_lane(
    dispatcher: &Dispatcher,
    lane: Lane,
    name: String,
    options: WorkerOptions,
    mut stopping: watch::Receiver<bool>,
) -> LaneExit {
    let WorkerOptions { concurrency, poll_interval, heartbeat, grace } = options;
    let worker_dispatcher = dispatcher.clone();
    let worker = name.clone();
    let monitor = Monitor::new().register(move |_restarts| {
        let config = Config::default()
            .queue(queue_name(lane))
            .batch_size(concurrency)
            .heartbeat_interval(heartbeat)
            .missed_heartbeats(3)
            // A fetched job is already `Queued` with our worker's name, which is all that
            // orphan recovery needs; a separate `Running` mark would be one more write per job.
            .lock_tasks(false);
        // NOTIFY wakes workers for jobs due now; the interval finds delayed jobs (retries,
        // scheduled sends) once they come due.
        let backend = PostgresStorage::<DispatchJob>::new(&worker_dispatcher.module.pool)
            .with_config(config)
            .with_pubsub()
            .poll_with_interval(poll_interval);
        WorkerBuilder::new(worker.clone())
            .backend(backend)
            .data(worker_dispatcher.clone())
            // Jobs wait for their batch without holding a connection, so the pool no longer
            // bounds how many run: this does.
            .concurrency(concurrency)
            .parallelize(tokio::spawn)
            .build(handle)
    });
    let context = monitor.context();
    let running = monitor.run();
    tokio::pin!(running);
    let stop_requested = async {
        while !*stopping.borrow_and_update() {
            if stopping.changed().await.is_err() {
                // The sender is gone: nobody can ask us to stop any more.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        result = &mut running => {
            let why = match result {
                Ok(()) => "the worker ended".to_owned(),
                Err(error) => error.to_string(),
            };
            LaneExit { worker: name, result: Err(why) }
        }
        () = stop_requested => {
            tracing::info!(lane = lane.as_str(), "dispatch worker: no new jobs, finishing the ones in flight");
            let _ = context.shutdown();
            if tokio::time::timeout(grace, &mut running).await.is_err() {
                tracing::warn!(lane = lane.as_str(), grace_secs = grace.as_secs(), "dispatch jobs still running after the grace period");
            }
            LaneExit { worker: name, result: Ok(()) }
        }
    }
}
