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
use crate::supervise::{self, DispatchHealth};

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    grace: Duration,
    communications: communications::Communications,
    fulfillment: fulfillment::Fulfillment,
    /// The liveness of this process's dispatch lanes, when it runs them (`dispatch.in_serve`).
    dispatch: Option<DispatchHealth>,
}

impl Application {
    /// Binds `http.bind` (port 0 picks a free port) and builds the router over `pool`.
    pub async fn build(settings: &Settings, pool: PgPool) -> anyhow::Result<Self> {
        http::install_recorder();
        let listener = TcpListener::bind(settings.http.bind)
            .await
            .with_context(|| format!("cannot listen on {} (http.bind)", settings.http.bind))?;
        let fulfillment = http::fulfillment_module(settings, pool.clone(), listener.local_addr()?)?;
        let communications =
            communications_module(settings, pool.clone(), listener.local_addr()?)?.with_booker(booker(&fulfillment));
        let dispatch = settings.dispatch.in_serve.then(|| DispatchHealth::new(2));
        Ok(Self {
            listener,
            router: http::router(settings, pool, communications.clone(), fulfillment.clone(), dispatch.clone()),
            grace: Duration::from_secs(settings.http.shutdown_grace_secs),
            communications,
            fulfillment,
            dispatch,
        })
    }

    /// The liveness of the dispatch lanes this process runs (`None` without `dispatch.in_serve`).
    pub fn dispatch_health(&self) -> Option<DispatchHealth> {
        self.dispatch.clone()
    }

    /// The communications module this application serves (for workers in the same process).
    pub fn communications(&self) -> communications::Communications {
        self.communications.clone()
    }

    /// The fulfillment module this application serves (its event relay runs beside it).
    pub fn fulfillment(&self) -> fulfillment::Fulfillment {
        self.fulfillment.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish within the grace
    /// period; connections still open after it are dropped.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
        // The inbox's live streams follow this feed; it lives as long as the server.
        let feed = self.communications.feed.clone();
        let pool = self.communications.pool.clone();
        let feed_task = supervise::spawn_loop("change-feed", {
            let feed = feed.clone();
            move || communications::inbox::stream::run_feed(pool.clone(), feed.clone())
        });
        let _feed_task = supervise::AbortOnDrop(feed_task);
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            // Streams never finish by themselves: end them so their connections can close.
            feed.close();
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
    Ok(communications::Communications::new(pool.clone(), keyring)
        .with_batch_pool(crate::database::batch_pool(&pool))
        .with_agents(std::sync::Arc::new(IdentityAgents(pool)))
        .with_endpoints(settings.providers.endpoints(bound))
        .with_retry(settings.dispatch.retry_policy())
        .with_rates(settings.dispatch.rate_defaults()))
}

/// Runs the dispatch workers and their companions (queue waker, finished-job purge, lease
/// heartbeat, recovery of dead processes' messages, settlement of unknown sends), each under a
/// supervisor, until `shutdown`. With `give_up_after`, fails when no lane has run for that long.
pub async fn run_workers(
    settings: &Settings,
    communications: communications::Communications,
    health: DispatchHealth,
    give_up_after: Option<Duration>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use communications::dispatch::{lease, settle};
    use communications::messages::model::Lane;
    let dispatcher = communications::dispatch::Dispatcher::new(communications, settings.dispatch.rate_defaults());
    let pool = dispatcher.module.pool.clone();
    let grace = Duration::from_secs(settings.http.shutdown_grace_secs);
    let poll = Duration::from_millis(settings.dispatch.poll_interval_ms);
    let lease_ttl = settings.dispatch.lease();
    let stale_after = Duration::from_secs(settings.dispatch.stuck_after_secs);
    let settle_settings = settle::SettleSettings {
        callback_wait: Duration::from_secs(settings.dispatch.unknown_settle_secs),
        lookup_after: Duration::from_secs(settings.providers.request_timeout_secs + 5),
        confirm_after: Duration::from_secs(settings.dispatch.twilio_confirm_after_secs),
    };
    let sweep = sweep_schedule(settings)?;
    let lease = dispatcher.lease;
    // Messages this process accepts, due now, it sends itself (up to twice a lane's concurrency
    // at once), without a job.
    let local = communications::dispatch::local::serve(&dispatcher, settings.dispatch.concurrency.max(1) * 2);
    let companions = vec![
        supervise::spawn_loop("queue-waker", {
            let pool = pool.clone();
            move || crate::queue_waker::run(pool.clone(), poll)
        }),
        supervise::spawn_loop("finished-job-purge", {
            let (pool, sweep) = (pool.clone(), sweep.clone());
            move || crate::queue_waker::purge_on_schedule(pool.clone(), sweep.clone())
        }),
        supervise::spawn_loop("dispatch-lease", {
            let pool = pool.clone();
            move || lease::heartbeat(pool.clone(), lease, lease_ttl / 4)
        }),
        supervise::spawn_loop("dispatch-recovery", {
            let dispatcher = dispatcher.clone();
            move || recover(dispatcher.clone(), lease_ttl, stale_after, poll.max(Duration::from_secs(1)))
        }),
        supervise::spawn_loop("dispatch-settlement", {
            let dispatcher = dispatcher.clone();
            move || settle::run(dispatcher.clone(), settle_settings, Duration::from_secs(5))
        }),
    ];
    let options = communications::dispatch::worker::WorkerOptions {
        concurrency: settings.dispatch.concurrency,
        poll_interval: poll,
        heartbeat: Duration::from_secs(settings.dispatch.heartbeat_secs),
        grace,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let lanes: Vec<_> = [Lane::Urgent, Lane::Bulk]
        .into_iter()
        .map(|lane| {
            let pool = pool.clone();
            let release = move |worker: String| {
                let pool = pool.clone();
                async move { crate::queue_waker::release_jobs_of(&pool, &worker).await }
            };
            tokio::spawn(supervise::supervise_lane(
                dispatcher.clone(),
                lane,
                options,
                stop_rx.clone(),
                health.clone(),
                release,
            ))
        })
        .collect();
    let gave_up = async {
        let Some(limit) = give_up_after else { return std::future::pending().await };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if health.down_for() >= limit {
                return limit;
            }
        }
    };
    let result = tokio::select! {
        () = shutdown => Ok(()),
        limit = gave_up => Err(anyhow::anyhow!(
            "no dispatch worker could run for {}s (dispatch.give_up_after_secs): giving up so the process is restarted",
            limit.as_secs()
        )),
    };
    let _ = stop_tx.send(true);
    local.finish(grace).await;
    for lane in lanes {
        let _ = lane.await;
    }
    for companion in companions {
        companion.abort();
    }
    if result.is_ok()
        && let Err(error) = lease.release(&pool).await
    {
        tracing::warn!(%error, "could not give the dispatch lease up; it expires on its own");
    }
    result
}

/// Takes back dead processes' messages every `interval` until the task is dropped.
async fn recover(
    dispatcher: communications::dispatch::Dispatcher,
    ttl: Duration,
    stale_after: Duration,
    interval: Duration,
) {
    use communications::messages::model::Lane;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match communications::dispatch::lease::recover_once(&dispatcher.module.pool, ttl, stale_after).await {
            Ok(Some(recovered)) if recovered.requeued > 0 => {
                dispatcher.module.queue_waker.wake(Lane::Urgent);
                dispatcher.module.queue_waker.wake(Lane::Bulk);
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "recovering stopped workers' messages failed; trying again"),
        }
    }
}

/// Starts the stuck-message sweeper (every serve and worker process; one sweeps per round).
pub fn spawn_sweeper(settings: &Settings, pool: PgPool) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let sweeper = communications::dispatch::sweeper::SweeperSettings {
        stuck_after: Duration::from_secs(settings.dispatch.stuck_after_secs),
        schedule: sweep_schedule(settings)?,
        idempotency_retention: Duration::from_secs(settings.dispatch.idempotency_retention_hours * 3600),
    };
    Ok(supervise::spawn_loop("stuck-sweeper", move || {
        communications::dispatch::sweeper::run(pool.clone(), sweeper.clone())
    }))
}

/// Starts the task that tries unmatched status callbacks again (every serve and worker process;
/// row locks give each envelope to one), as often as delayed dispatch jobs are checked.
pub fn spawn_rematcher(
    settings: &Settings,
    communications: communications::Communications,
) -> tokio::task::JoinHandle<()> {
    let poll = Duration::from_millis(settings.dispatch.poll_interval_ms);
    let window = Duration::from_secs(settings.webhooks.unmatched_retry_secs);
    supervise::spawn_loop("webhook-rematch", move || {
        communications::tracking::rematch::run(communications.clone(), poll, window)
    })
}

/// Starts the cron-trigger poller (every serve and worker process; a row lock gives each firing
/// to one), checking as often as delayed dispatch jobs are.
pub fn spawn_cron_triggers(
    settings: &Settings,
    communications: communications::Communications,
) -> tokio::task::JoinHandle<()> {
    let poll = Duration::from_millis(settings.dispatch.poll_interval_ms);
    supervise::spawn_loop("cron-triggers", move || communications::triggers::cron::run(communications.clone(), poll))
}

/// Starts the inbox's upkeep: snoozed conversations open when their time comes, and inbound
/// envelopes stored before the inbox are processed (every serve and worker process; row locks
/// give each to one), as often as delayed jobs are checked.
pub fn spawn_snooze_wakeups(
    settings: &Settings,
    communications: communications::Communications,
) -> tokio::task::JoinHandle<()> {
    let poll = Duration::from_millis(settings.dispatch.poll_interval_ms);
    supervise::spawn_loop("inbox-upkeep", move || communications::inbox::run_upkeep(communications.clone(), poll))
}

/// Marks lapsed holds expired every poll interval (every serve and worker process; rows are
/// taken with SKIP LOCKED). Lapsed holds stop blocking at once anyway; this keeps statuses honest.
pub fn spawn_fulfillment_upkeep(settings: &Settings, pool: PgPool) -> tokio::task::JoinHandle<()> {
    let poll = Duration::from_millis(settings.dispatch.poll_interval_ms.max(1000));
    supervise::spawn_loop("fulfillment-upkeep", move || fulfillment::run_upkeep(pool.clone(), poll))
}

/// Relays fulfillment's appointment events to communications (confirmations and reminders by
/// trigger rules, the inbox's view of the appointment), woken by `fulfillment`'s commits in this
/// process and polling for the others'.
pub fn spawn_appointment_relay(
    fulfillment: &fulfillment::Fulfillment,
    communications: communications::Communications,
) -> tokio::task::JoinHandle<()> {
    let listener: std::sync::Arc<dyn kernel::scheduling::AppointmentListener> =
        std::sync::Arc::new(AppointmentNotices(communications));
    let (pool, wake) = (fulfillment.pool.clone(), fulfillment.events.clone());
    supervise::spawn_loop("appointment-events", move || {
        fulfillment::events::run_relay(pool.clone(), listener.clone(), wake.clone(), Duration::from_millis(500))
    })
}

/// Starts the calendar sync worker and the busy-time import (every serve and worker process;
/// jobs and connections are taken with SKIP LOCKED).
pub fn spawn_calendar_sync(fulfillment: &fulfillment::Fulfillment) -> [tokio::task::JoinHandle<()>; 3] {
    let sync = |provider: &'static str, name: &'static str| {
        let module = fulfillment.clone();
        supervise::spawn_loop(name, move || {
            fulfillment::calendar::worker::run(
                module.clone(),
                provider,
                module.sync_wake.clone(),
                Duration::from_millis(500),
            )
        })
    };
    let busy = fulfillment.clone();
    [
        sync("google", "calendar-sync-google"),
        sync("jobber", "calendar-sync-jobber"),
        supervise::spawn_loop("calendar-busy-import", move || {
            fulfillment::calendar::busy::run(busy.clone(), busy.busy_wake.clone(), Duration::from_secs(1))
        }),
    ]
}

/// Samples the database-backed gauges (queues, unsettled messages, calendar backlog, the pool)
/// every 15 seconds.
pub fn spawn_gauges(settings: &Settings, pool: PgPool) -> tokio::task::JoinHandle<()> {
    let max = settings.database.max_connections;
    supervise::spawn_loop("gauges", move || crate::gauges::run(pool.clone(), max, Duration::from_secs(15)))
}

/// Runs the SMS booking dialogue's turns (every serve and worker process; turns are taken with
/// SKIP LOCKED), woken by this process's inbound texts and polling for the others'.
pub fn spawn_dialogue(
    settings: &Settings,
    communications: communications::Communications,
) -> tokio::task::JoinHandle<()> {
    let poll = Duration::from_millis(settings.dispatch.poll_interval_ms.max(200));
    supervise::spawn_loop("sms-dialogue", move || communications::dialogue::worker::run(communications.clone(), poll))
}

/// What communications may ask fulfillment when a customer books by SMS.
pub fn booker(fulfillment: &fulfillment::Fulfillment) -> std::sync::Arc<dyn kernel::scheduling::SlotBooker> {
    std::sync::Arc::new(FulfillmentBooker(fulfillment.clone()))
}

#[derive(Debug)]
struct FulfillmentBooker(fulfillment::Fulfillment);

impl kernel::scheduling::SlotBooker for FulfillmentBooker {
    fn next_slots(
        &self,
        tenant: kernel::ids::TenantId,
        service: Option<uuid::Uuid>,
        after: chrono::DateTime<chrono::Utc>,
        count: usize,
    ) -> kernel::directory::Answer<'_, Vec<kernel::scheduling::OfferedSlot>> {
        Box::pin(async move { self.0.next_slots(tenant.0, service, after, count).await })
    }

    fn hold(
        &self,
        tenant: kernel::ids::TenantId,
        slot: kernel::scheduling::OfferedSlot,
        contact: uuid::Uuid,
        key: String,
    ) -> kernel::directory::Answer<'_, Result<kernel::scheduling::Booked, kernel::scheduling::BookingRefusal>> {
        Box::pin(async move { self.0.hold_slot(tenant.0, &slot, contact, &key).await })
    }

    fn confirm(
        &self,
        tenant: kernel::ids::TenantId,
        hold: uuid::Uuid,
    ) -> kernel::directory::Answer<'_, Result<kernel::scheduling::Booked, kernel::scheduling::BookingRefusal>> {
        Box::pin(async move { self.0.confirm_slot(tenant.0, hold).await })
    }

    fn release(&self, tenant: kernel::ids::TenantId, hold: uuid::Uuid) -> kernel::directory::Answer<'_, ()> {
        Box::pin(async move { self.0.release_hold(tenant.0, hold).await })
    }

    fn set_location(
        &self,
        tenant: kernel::ids::TenantId,
        appointment: uuid::Uuid,
        location: String,
    ) -> kernel::directory::Answer<'_, ()> {
        Box::pin(async move { self.0.set_location(tenant.0, appointment, &location).await })
    }
}

/// Communications hears about appointments: a moved or canceled appointment's pending
/// reminders are canceled, then the event goes to the trigger rules like any domain event.
#[derive(Debug)]
struct AppointmentNotices(communications::Communications);

impl kernel::scheduling::AppointmentListener for AppointmentNotices {
    fn appointment_changed(&self, event: kernel::scheduling::AppointmentEvent) -> kernel::directory::Answer<'_, ()> {
        use kernel::scheduling::AppointmentChange;
        Box::pin(async move {
            if matches!(event.change, AppointmentChange::Rescheduled | AppointmentChange::Canceled) {
                let reason = format!(
                    "the appointment was {}",
                    if event.change == AppointmentChange::Canceled { "canceled" } else { "moved" }
                );
                let id = event.appointment_id.to_string();
                self.0.cancel_scheduled_about(event.tenant, ("appointment", &id), &event.id, &reason).await?;
            }
            let body = serde_json::json!({
                "id": event.id, "event": event.change.event_name(),
                "occurred_at": event.occurred_at.to_rfc3339(), "data": event.data,
            });
            let incoming = communications::triggers::event::parse(body)?;
            self.0.ingest_event(event.tenant, incoming).await?;
            Ok(())
        })
    }
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

/// The inbox asks identity whether an agent exists before assigning a conversation to it.
#[derive(Debug)]
struct IdentityAgents(PgPool);

impl kernel::directory::AgentDirectory for IdentityAgents {
    fn is_agent(
        &self,
        tenant: kernel::ids::TenantId,
        agent: kernel::ids::AgentId,
    ) -> kernel::directory::Answer<'_, bool> {
        Box::pin(async move {
            match identity::agents::get(&self.0, tenant, agent).await {
                Ok(_) => Ok(true),
                Err(kernel::error::ApiError::NotFound(_)) => Ok(false),
                Err(error) => Err(error),
            }
        })
    }
}
