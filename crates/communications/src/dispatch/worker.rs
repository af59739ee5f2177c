//! Running the dispatch workers: one apalis worker per lane on PostgreSQL (`FOR UPDATE SKIP
//! LOCKED` fetches, LISTEN/NOTIFY wake-ups), in the `serve` process or a `switchboard worker`
//! process — any number of them against one database.

use std::future::Future;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{BackendExt, BoxDynError, Data, Monitor, ParallelizeExt, WorkerBuilder};
use apalis_postgres::{Config, PostgresStorage};

use super::Dispatcher;
use crate::messages::queue::{BULK_QUEUE, DispatchJob, URGENT_QUEUE};

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

/// Runs the urgent and bulk workers until `shutdown` completes.
pub async fn run(
    dispatcher: Dispatcher,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxDynError> {
    let WorkerOptions { concurrency, poll_interval, heartbeat, grace } = options;
    let mut monitor = Monitor::new().shutdown_timeout(grace);
    for (lane, queue) in [("urgent", URGENT_QUEUE), ("bulk", BULK_QUEUE)] {
        let dispatcher = dispatcher.clone();
        monitor = monitor.register(move |index| {
            let config = Config::default()
                .queue(queue)
                .batch_size(concurrency)
                .heartbeat_interval(heartbeat)
                .missed_heartbeats(3)
                // A fetched job is already `Queued` with our worker's name, which is all that
                // orphan recovery needs; a separate `Running` mark would be one more write per job.
                .lock_tasks(false);
            // NOTIFY wakes workers for jobs due now; the interval finds delayed jobs (retries,
            // scheduled sends) once they come due.
            let backend = PostgresStorage::<DispatchJob>::new(&dispatcher.module.pool)
                .with_config(config)
                .with_pubsub()
                .poll_with_interval(poll_interval);
            WorkerBuilder::new(format!("switchboard-dispatch-{lane}-{index}-{}", uuid::Uuid::now_v7().simple()))
                .backend(backend)
                .data(dispatcher.clone())
                // Jobs wait for their batch without holding a connection, so the pool no longer
                // bounds how many run: this does.
                .concurrency(concurrency)
                .parallelize(tokio::spawn)
                .build(handle)
        });
    }
    monitor
        .run_with_signal(async move {
            shutdown.await;
            tracing::info!("dispatch workers: no new jobs, finishing the ones in flight");
            Ok(())
        })
        .await
        .map_err(|error| Box::new(error) as BoxDynError)
}
