//! The `switchboard` binary's library: configuration, the embedded database, router
//! composition, and the CLI commands. `main.rs` only parses arguments and calls [`run`].

pub mod app;
pub mod cli;
pub mod commands;
pub mod database;
pub mod http;
pub mod settings;
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
    let serving = matches!(command, Command::Serve(_) | Command::Demo(_));
    if !serving {
        // Keep standard output clean for `--json`: commands log only warnings, to stderr.
        settings.log.level = "warn".into();
    }
    telemetry::init(&settings.log, !serving);

    let database = Database::open(&settings.database).await?;
    let result = run_with_database(command, &mut settings, &database).await;
    database.close().await;
    result
}

async fn run_with_database(command: Command, settings: &mut Settings, database: &Database) -> anyhow::Result<()> {
    database::migrate(&database.pool).await?;
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
        Command::Serve(args) => serve(settings, args, database, None).await,
        Command::Demo(args) => {
            let demo = commands::prepare_demo(pool).await?;
            serve(settings, args, database, Some(demo)).await
        }
    }
}

async fn serve(
    settings: &mut Settings,
    args: ServeArgs,
    database: &Database,
    demo: Option<commands::DemoCredentials>,
) -> anyhow::Result<()> {
    if let Some(bind) = args.bind {
        settings.http.bind = bind;
    }
    let app = Application::build(settings, database.pool.clone()).await?;
    let address = app.local_addr();
    match database.embedded() {
        Some(server) => {
            tracing::info!(%address, data_dir = %server.data_dir().display(), "switchboard listening (embedded PostgreSQL)")
        }
        None => tracing::info!(%address, "switchboard listening"),
    }
    if let Some(demo) = demo {
        print_demo(&demo, address);
    }
    app.run_until_stopped(app::shutdown_signal()).await.context("HTTP server failed")
}

fn print_demo(demo: &commands::DemoCredentials, address: std::net::SocketAddr) {
    println!(
        "\nSwitchboard demo is running at http://{address}\n\
         \x20 workspace:  {slug}\n\
         \x20 admin:      {email}  password: {password}\n\
         \x20 API key:    {key}\n\
         \x20 try:        curl -H 'Authorization: Bearer {key}' http://{address}/api/v1/me\n\
         These credentials are new on every start and are not shown again.\n",
        slug = demo.slug,
        email = demo.admin_email,
        password = demo.admin_password,
        key = demo.api_key,
    );
}

/// Loads the settings; `main` turns an error into exit code 2.
pub fn load_settings() -> Result<Settings, settings::ConfigError> {
    Settings::load(&settings::config_dir())
}
