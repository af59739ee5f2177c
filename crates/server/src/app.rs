//! The HTTP application: bound listener plus router, served until a shutdown signal, then
//! given a grace period for in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::http;
use crate::settings::Settings;

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    grace: Duration,
    communications: communications::Communications,
}

impl Application {
    /// Binds `http.bind` (port 0 picks a free port) and builds the router over `pool`.
    pub async fn build(settings: &Settings, pool: PgPool) -> anyhow::Result<Self> {
        http::install_recorder();
        let listener = TcpListener::bind(settings.http.bind)
            .await
            .with_context(|| format!("cannot listen on {} (http.bind)", settings.http.bind))?;
        let communications = communications_module(settings, pool.clone(), listener.local_addr()?)?;
        Ok(Self {
            listener,
            router: http::router(settings, pool, communications.clone()),
            grace: Duration::from_secs(settings.http.shutdown_grace_secs),
            communications,
        })
    }

    /// The communications module this application serves (for workers in the same process).
    pub fn communications(&self) -> communications::Communications {
        self.communications.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish within the grace
    /// period; connections still open after it are dropped.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            let _ = stopping_tx.send(true);
        };
        let server = axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(graceful);
        let grace = self.grace;
        let grace_over = async move {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = server.into_future() => result,
            () = grace_over => {
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over; dropping remaining connections");
                Ok(())
            }
        }
    }
}

/// The communications module: pool, master keys, provider endpoints (webhook URLs derive from
/// `bound` when `providers.public_base_url` is empty).
pub fn communications_module(
    settings: &Settings,
    pool: PgPool,
    bound: SocketAddr,
) -> anyhow::Result<communications::Communications> {
    let keyring = std::sync::Arc::new(settings.secrets.keyring()?);
    Ok(communications::Communications::new(pool, keyring)
        .with_endpoints(settings.providers.endpoints(bound))
        .with_retry(settings.dispatch.retry_policy()))
}

/// Runs the dispatch workers until `shutdown`.
pub async fn run_workers(
    settings: &Settings,
    communications: communications::Communications,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let dispatcher = communications::dispatch::Dispatcher::new(communications, settings.dispatch.rate_defaults());
    let grace = Duration::from_secs(settings.http.shutdown_grace_secs);
    let poll = Duration::from_millis(settings.dispatch.poll_interval_ms);
    let waker = tokio::spawn(crate::queue_waker::run(dispatcher.module.pool.clone(), poll));
    let purger =
        tokio::spawn(crate::queue_waker::purge_on_schedule(dispatcher.module.pool.clone(), sweep_schedule(settings)?));
    let reconcile = communications::dispatch::sweeper::ReconcileSettings {
        settle_after: Duration::from_secs(settings.dispatch.unknown_settle_secs),
        resend_unsettled: settings.dispatch.resend_unsettled,
    };
    let reconciler = tokio::spawn(communications::dispatch::sweeper::run_reconciler(
        dispatcher.module.pool.clone(),
        reconcile,
        sweep_schedule(settings)?,
    ));
    let options = communications::dispatch::worker::WorkerOptions {
        concurrency: settings.dispatch.concurrency,
        poll_interval: poll,
        heartbeat: Duration::from_secs(settings.dispatch.heartbeat_secs),
        grace,
    };
    let result = communications::dispatch::worker::run(dispatcher, options, shutdown)
        .await
        .map_err(|error| anyhow::anyhow!("dispatch workers failed: {error}"));
    waker.abort();
    purger.abort();
    reconciler.abort();
    result
}

/// Starts the stuck-message sweeper (every serve and worker process; one sweeps per round).
pub fn spawn_sweeper(settings: &Settings, pool: PgPool) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let sweeper = communications::dispatch::sweeper::SweeperSettings {
        stuck_after: Duration::from_secs(settings.dispatch.stuck_after_secs),
        schedule: sweep_schedule(settings)?,
        idempotency_retention: Duration::from_secs(settings.dispatch.idempotency_retention_hours * 3600),
    };
    Ok(tokio::spawn(communications::dispatch::sweeper::run(pool, sweeper)))
}

/// Starts the task that tries unmatched status callbacks again (every serve and worker process;
/// row locks give each envelope to one), as often as delayed dispatch jobs are checked.
pub fn spawn_rematcher(
    settings: &Settings,
    communications: communications::Communications,
) -> tokio::task::JoinHandle<()> {
    let poll = Duration::from_millis(settings.dispatch.poll_interval_ms);
    let window = Duration::from_secs(settings.webhooks.unmatched_retry_secs);
    tokio::spawn(communications::tracking::rematch::run(communications, poll, window))
}

/// Starts the cron-trigger poller (every serve and worker process; a row lock gives each firing
/// to one), checking as often as delayed dispatch jobs are.
pub fn spawn_cron_triggers(
    settings: &Settings,
    communications: communications::Communications,
) -> tokio::task::JoinHandle<()> {
    let poll = Duration::from_millis(settings.dispatch.poll_interval_ms);
    tokio::spawn(communications::triggers::cron::run(communications, poll))
}

/// Checked when the settings load; an error here means they were built some other way.
fn sweep_schedule(settings: &Settings) -> anyhow::Result<communications::triggers::cron::CronSchedule> {
    settings.dispatch.sweep().map_err(|message| anyhow::anyhow!("dispatch.sweep_schedule {message}"))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}
