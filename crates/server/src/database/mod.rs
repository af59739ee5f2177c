//! The one PostgreSQL database: an external one (`database.url`) or the embedded cluster, and
//! the single migration history (our `migrations/` plus the job queue's own schema).

pub mod embedded;

use std::time::Duration;

use anyhow::Context;
use apalis_postgres::PostgresStorage;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::settings::DatabaseSettings;
use embedded::{EmbeddedPostgres, PgBinaries};

/// The pool, plus the embedded cluster when there is one (stopped by [`Database::close`]).
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    pub async fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let (options, embedded) = match settings.external_url() {
            Some(url) => {
                let options: PgConnectOptions = url.parse().context("database.url is not a valid PostgreSQL URL")?;
                (options, None)
            }
            None => {
                let binaries = PgBinaries::locate(settings.pg_bin_dir())?;
                let timeout = Duration::from_secs(settings.start_timeout_secs);
                let server = EmbeddedPostgres::start(&binaries, &settings.data_dir, timeout).await?;
                (server.connect_options(embedded::DATABASE_NAME), Some(server))
            }
        };
        let options = options.log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
            // sqlx pings every connection it releases (a round trip we cannot turn off) and, by
            // default, again as it hands it out: two idle round trips around every use. Leaving
            // out the second saved 5-8 % of the service's CPU at 800 messages/s (PostgreSQL's
            // moved within the noise). It tells news only of a connection that sat idle long
            // enough for the server to drop it meanwhile; one released moments ago answered then
            // (HikariCP skips its check within 500 ms of a connection's last use, the same way).
            // A drop inside that window costs what a statement in flight at the drop costs.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .context("cannot connect to PostgreSQL")?;
        Ok(Self { pool, embedded })
    }

    pub fn embedded(&self) -> Option<&EmbeddedPostgres> {
        self.embedded.as_ref()
    }

    /// Closes the pool and stops the embedded cluster if this process started it.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(server) = self.embedded {
            server.stop().await;
        }
    }
}

/// How long a pooled connection may have been idle and still be handed out without a ping.
/// Under load every connection is reused within milliseconds; a server restart takes longer.
const PING_IF_IDLE_FOR: Duration = Duration::from_millis(250);

/// Connections the batch statements of the hot path have to themselves, besides `pool`'s.
pub const BATCH_CONNECTIONS: u32 = 8;

/// A pool to the same database as `pool`, with the same timeouts, whose connections keep every
/// statement's generic plan (see `communications::Communications::with_batch_pool`). Connects
/// lazily: a process that never sends opens none.
pub fn batch_pool(pool: &PgPool) -> PgPool {
    let options = (*pool.connect_options()).clone().options([("plan_cache_mode", "force_generic_plan")]);
    pool.options().clone().max_connections(BATCH_CONNECTIONS).min_connections(0).connect_lazy_with(options)
}

/// Every migration, in version order, recorded in one `_sqlx_migrations` table: ours
/// (`migrations/`, one schema per file) and apalis's job-queue tables (schema `apalis`),
/// taken from the apalis-postgres crate itself rather than copied.
pub fn migrator() -> Migrator {
    let ours = sqlx::migrate!("../../migrations");
    let job_queue = PostgresStorage::migrations();
    let mut all: Vec<_> = ours.iter().chain(job_queue.iter()).cloned().collect();
    all.sort_by_key(|migration| migration.version);
    Migrator::with_migrations(all)
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    migrator().run(pool).await.context("database migration failed")
}

/// Whether every known migration has been applied successfully (for `/readyz`).
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM public._sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .or_else(|error| match &error {
            // No history table yet: nothing applied.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(Vec::new()),
            _ => Err(error),
        })?;
    Ok(migrator().iter().all(|migration| applied.contains(&migration.version)))
}
