//! The `switchboard` binary's library: configuration, the embedded database, router
//! composition, and the CLI commands. `main.rs` only parses arguments and calls [`run`].

pub mod app;
pub mod bench;
pub mod bench_fulfillment;
pub mod bench_inbox;
pub mod bench_missed_call;
pub mod cli;
pub mod commands;
pub mod database;
pub mod demo;
mod demo_seed;
pub mod gauges;
pub mod http;
pub mod queue_waker;
pub mod settings;
pub mod supervise;
pub mod telemetry;

use anyhow::Context;

use app::Application;
use cli::{Cli, Command, ServeArgs};
use database::Database;
use settings::Settings;

/// Runs one CLI command to completion. The embedded database, if this process started it, is
/// stopped before returning, whatever happened.
pub async fn run(cli: Cli, mut settings: Settings) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    let serving = matches!(command, Command::Serve(_) | Command::Demo(_) | Command::Worker);
    let benchmarking = matches!(
        command,
        Command::Bench(_) | Command::BenchInbox(_) | Command::BenchFulfillment(_) | Command::BenchMissedCall(_)
    );
    if !serving || benchmarking {
        // Keep standard output clean for `--json`: commands log only warnings, to stderr.
        settings.log.level = "warn".into();
    }
    telemetry::init(&settings.log, !serving);
    if external_bench(&command) && settings.database.external_url().is_none() {
        // Not an embedded cluster of its own: the driver must see the service's rows.
        anyhow::bail!("bench --external needs database.url (or DATABASE_URL): the database of the service under test");
    }

    let database = Database::open(&settings.database).await?;
    let result = run_with_database(command, &mut settings, &database).await;
    database.close().await;
    result
}

async fn run_with_database(command: Command, settings: &mut Settings, database: &Database) -> anyhow::Result<()> {
    // A benchmark driving another process's service may be a newer build than it: it must not
    // change the schema under the service it measures.
    if !external_bench(&command) {
        database::migrate(&database.pool).await?;
    }
    let pool = &database.pool;
    match command {
        Command::Migrate => {
            println!("migrations are up to date");
            Ok(())
        }
        Command::Tenant(command) => commands::tenant(pool, command).await,
        Command::Agent(command) => commands::agent(pool, command).await,
        Command::ApiKey(command) => commands::api_key(pool, command).await,
        Command::Keys(cli::KeysCommand::Rotate) => commands::rotate_keys(pool, settings).await,
        Command::PlatformProvider(command) => commands::platform_provider(pool, settings, command).await,
        Command::Serve(args) => serve(settings, args, database).await,
        Command::Worker => {
            let fulfillment = http::fulfillment_module(settings, database.pool.clone(), settings.http.bind)?;
            let communications = app::communications_module(settings, database.pool.clone(), settings.http.bind)?
                .with_booker(app::booker(&fulfillment));
            tracing::info!("switchboard dispatch workers running");
            let _metrics = match settings.worker.metrics_addr()? {
                Some(addr) => Some(supervise::AbortOnDrop(http::serve_metrics(addr).await?)),
                None => None,
            };
            let sweeper = app::spawn_sweeper(settings, database.pool.clone())?;
            let cron = app::spawn_cron_triggers(settings, communications.clone());
            let rematcher = app::spawn_rematcher(settings, communications.clone());
            let wakeups = app::spawn_snooze_wakeups(settings, communications.clone());
            let _holds = supervise::AbortOnDrop(app::spawn_fulfillment_upkeep(settings, communications.pool.clone()));
            let _dialogue = supervise::AbortOnDrop(app::spawn_dialogue(settings, communications.clone()));
            let _gauges = supervise::AbortOnDrop(app::spawn_gauges(settings, communications.pool.clone()));
            let _events = supervise::AbortOnDrop(app::spawn_appointment_relay(&fulfillment, communications.clone()));
            let _sync = app::spawn_calendar_sync(&fulfillment).map(supervise::AbortOnDrop);
            let health = supervise::DispatchHealth::new(2);
            let give_up = std::time::Duration::from_secs(settings.dispatch.give_up_after_secs);
            let result =
                app::run_workers(settings, communications, health, Some(give_up), app::shutdown_signal()).await;
            sweeper.abort();
            cron.abort();
            rematcher.abort();
            wakeups.abort();
            result
        }
        Command::Demo(args) => demo::run(settings, args, database).await,
        Command::Bench(args) => bench::run(settings, database, args).await,
        Command::BenchInbox(args) => bench_inbox::run(settings, database, args).await,
        Command::BenchFulfillment(args) => bench_fulfillment::run(settings, database, args).await,
        Command::BenchMissedCall(args) => bench_missed_call::run(settings, database, args).await,
    }
}

/// `switchboard bench --external`: it drives a service running elsewhere, in that service's database.
fn external_bench(command: &Command) -> bool {
    matches!(command, Command::Bench(args) if args.external.is_some())
}

async fn serve(settings: &mut Settings, args: ServeArgs, database: &Database) -> anyhow::Result<()> {
    if let Some(bind) = args.bind {
        settings.http.bind = bind;
    }
    let app = Application::build(settings, database.pool.clone()).await?;
    log_listening(&app, database);
    serve_with_workers(settings, app).await
}

/// Serves HTTP and, when `dispatch.in_serve`, the dispatch workers, until a signal stops both.
pub async fn serve_with_workers(settings: &Settings, app: Application) -> anyhow::Result<()> {
    serve_with_workers_until(settings, app, app::shutdown_signal).await
}

/// As [`serve_with_workers`], stopping when `shutdown()` futures complete (one for the HTTP
/// server, one for the workers).
pub async fn serve_with_workers_until<F, Fut>(settings: &Settings, app: Application, shutdown: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let sweeper = app::spawn_sweeper(settings, app.communications().pool.clone())?;
    let cron = app::spawn_cron_triggers(settings, app.communications());
    let rematcher = app::spawn_rematcher(settings, app.communications());
    let wakeups = app::spawn_snooze_wakeups(settings, app.communications());
    let _holds = supervise::AbortOnDrop(app::spawn_fulfillment_upkeep(settings, app.communications().pool));
    let _dialogue = supervise::AbortOnDrop(app::spawn_dialogue(settings, app.communications()));
    let _gauges = supervise::AbortOnDrop(app::spawn_gauges(settings, app.communications().pool));
    let _events = supervise::AbortOnDrop(app::spawn_appointment_relay(&app.fulfillment(), app.communications()));
    let _sync = app::spawn_calendar_sync(&app.fulfillment()).map(supervise::AbortOnDrop);
    let workers = app.dispatch_health().map(|health| {
        let settings = settings.clone();
        let communications = app.communications();
        let stop = shutdown();
        // Never gives up: HTTP keeps serving, and /readyz reports the lanes that are down.
        tokio::spawn(async move { app::run_workers(&settings, communications, health, None, stop).await })
    });
    let served = app.run_until_stopped(shutdown()).await.context("HTTP server failed");
    if let Some(workers) = workers {
        workers.await.context("dispatch workers panicked")??;
    }
    sweeper.abort();
    cron.abort();
    rematcher.abort();
    wakeups.abort();
    served
}

fn log_listening(app: &Application, database: &Database) {
    let address = app.local_addr();
    match database.embedded() {
        Some(server) => {
            tracing::info!(%address, data_dir = %server.data_dir().display(), "switchboard listening (embedded PostgreSQL)")
        }
        None => tracing::info!(%address, "switchboard listening"),
    }
}

/// Loads the settings; `main` turns an error into exit code 2.
pub fn load_settings() -> Result<Settings, settings::ConfigError> {
    Settings::load(&settings::config_dir())
}
