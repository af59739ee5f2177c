//! Keeping background work alive. Every loop of a serve or worker process (dispatch lanes,
//! queue waker, sweeper, recovery, settlement, cron triggers, rematcher, lease heartbeat) runs
//! under a supervisor: if it ends or panics it is logged at error level, counted in
//! `background_task_restarts_total{task}`, and started again after a backoff (100 ms doubling to
//! 1 s, so work resumes within a second of the database's return).
//!
//! Dispatch lanes report their liveness to a [`DispatchHealth`], which `/readyz` reads and which
//! tells the `worker` command when to give up (exit non-zero for its orchestrator to restart it).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A task that ran this long before ending starts over from the first backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Aborts the task when dropped, so aborting a supervisor also stops what it supervises.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `make()`'s future in its own task and starts a new one whenever it ends or panics, until
/// the returned handle is aborted.
pub fn spawn_loop<F, Fut>(name: &'static str, make: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let mut task = AbortOnDrop(tokio::spawn(make()));
            match (&mut task.0).await {
                Ok(()) => tracing::error!(task = name, "background task ended; restarting it"),
                Err(error) if error.is_panic() => {
                    tracing::error!(task = name, error = %panic_message(error), "background task panicked; restarting it")
                }
                // Aborted from outside: we are being stopped.
                Err(_) => return,
            }
            metrics::counter!("background_task_restarts_total", "task" => name).increment(1);
            backoff = next_backoff(backoff, started.elapsed());
            tokio::time::sleep(backoff).await;
        }
    })
}

fn next_backoff(previous: Duration, ran_for: Duration) -> Duration {
    if ran_for >= HEALTHY_RUN { FIRST_BACKOFF } else { (previous * 2).min(MAX_BACKOFF) }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    let panic = error.into_panic();
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// How many dispatch lanes of this process are running, and since when none has been.
#[derive(Debug, Clone)]
pub struct DispatchHealth {
    inner: Arc<HealthInner>,
}

#[derive(Debug)]
struct HealthInner {
    expected: usize,
    alive: AtomicUsize,
    /// When the last lane went down while none was up; `None` while at least one is up.
    down_since: std::sync::Mutex<Option<Instant>>,
}

impl DispatchHealth {
    /// For a process that runs `expected` lanes (not yet started: counts as down from now).
    pub fn new(expected: usize) -> Self {
        let inner = HealthInner {
            expected,
            alive: AtomicUsize::new(0),
            down_since: std::sync::Mutex::new(Some(Instant::now())),
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn alive(&self) -> usize {
        self.inner.alive.load(Ordering::SeqCst)
    }

    /// Every expected lane is running.
    pub fn ready(&self) -> bool {
        self.alive() >= self.inner.expected
    }

    fn lane_up(&self) {
        self.inner.alive.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut down) = self.inner.down_since.lock() {
            *down = None;
        }
        metrics::gauge!("dispatch_lanes_alive").set(self.alive() as f64);
    }

    fn lane_down(&self) {
        let left = self.inner.alive.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        if left == 0
            && let Ok(mut down) = self.inner.down_since.lock()
        {
            down.get_or_insert_with(Instant::now);
        }
        metrics::gauge!("dispatch_lanes_alive").set(left as f64);
    }

    /// How long no lane has been running (zero while one is).
    pub fn down_for(&self) -> Duration {
        self.inner.down_since.lock().ok().and_then(|down| down.map(|since| since.elapsed())).unwrap_or_default()
    }
}

/// Runs a lane's worker again and again until `stopping` turns true: a worker that died hands
/// its jobs back at once (`release`) and a new one starts after the backoff.
pub async fn supervise_lane<R, RFut>(
    dispatcher: communications::dispatch::Dispatcher,
    lane: communications::messages::model::Lane,
    options: communications::dispatch::worker::WorkerOptions,
    mut stopping: watch::Receiver<bool>,
    health: DispatchHealth,
    release: R,
) where
    R: Fn(String) -> RFut,
    RFut: Future<Output = Result<u64, sqlx::Error>>,
{
    use communications::dispatch::worker::{run_lane, worker_name};
    let mut backoff = FIRST_BACKOFF;
    while !*stopping.borrow() {
        let started = Instant::now();
        health.lane_up();
        let exit = run_lane(&dispatcher, lane, worker_name(lane), options, stopping.clone()).await;
        health.lane_down();
        let Err(why) = exit.result else { return };
        metrics::counter!("background_task_restarts_total", "task" => format!("dispatch-{}", lane.as_str()))
            .increment(1);
        tracing::error!(lane = lane.as_str(), worker = %exit.worker, %why, "dispatch worker died; starting a new one");
        backoff = next_backoff(backoff, started.elapsed());
        // The dead worker's jobs go to the next worker now rather than after three missed
        // heartbeats; without a database this waits for it.
        loop {
            if wait_or_stop(&mut stopping, backoff).await {
                return;
            }
            match release(exit.worker.clone()).await {
                Ok(count) => {
                    if count > 0 {
                        tracing::info!(lane = lane.as_str(), count, "handed the dead worker's jobs back to the queue");
                    }
                    break;
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot hand the dead worker's jobs back yet");
                    backoff = next_backoff(backoff, Duration::ZERO);
                }
            }
        }
    }
}

/// Sleeps for `wait`; true if `stopping` turned true meanwhile.
async fn wait_or_stop(stopping: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(wait) => None,
        changed = stopping.wait_for(|stop| *stop) => Some(changed.is_ok()),
    };
    stopped.unwrap_or_else(|| *stopping.borrow())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets_after_a_healthy_run() {
        let mut backoff = FIRST_BACKOFF;
        let mut seen = Vec::new();
        for _ in 0..6 {
            backoff = next_backoff(backoff, Duration::ZERO);
            seen.push(backoff.as_millis());
        }
        assert_eq!(seen, [200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(next_backoff(MAX_BACKOFF, HEALTHY_RUN), FIRST_BACKOFF);
    }

    #[tokio::test]
    async fn a_panicking_task_is_started_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let handle = spawn_loop("test", move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
                std::future::pending::<()>().await;
            }
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            while runs.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the task was restarted after each panic");
        handle.abort();
    }

    #[test]
    fn health_counts_lanes_and_time_down() {
        let health = DispatchHealth::new(2);
        assert!(!health.ready());
        health.lane_up();
        health.lane_up();
        assert!(health.ready());
        assert_eq!(health.down_for(), Duration::ZERO);
        health.lane_down();
        assert!(!health.ready());
        assert_eq!(health.down_for(), Duration::ZERO, "one lane still runs");
        health.lane_down();
        assert_eq!(health.alive(), 0);
        std::thread::sleep(Duration::from_millis(5));
        assert!(health.down_for() > Duration::ZERO);
    }
}
