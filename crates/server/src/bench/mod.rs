//! `switchboard bench`: N messages through the real pipeline — HTTP API → apalis queue →
//! dispatch worker → Twilio adapter → the provider simulator — with the simulator's ledger as
//! the judge of lost and duplicated messages. In process (service and simulator started here) or
//! against an already running `switchboard serve` and `cpaas-sim` (`--external`, `--sim`);
//! sends or Hasura events; flat out or paced; with the CPU each party spent per message.

mod cpu;
mod load;
mod report;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::app::Application;
use crate::database::Database;
use crate::settings::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// How many messages to send.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Give every send its own `Idempotency-Key` header, as careful clients do.
    #[arg(long, conflicts_with = "events")]
    pub idempotency_keys: bool,
    /// Pace the requests (open loop): request n is due n / RATE seconds after the start.
    /// Without it, the clients go flat out.
    #[arg(long, value_name = "MSG_PER_SEC")]
    pub rate: Option<f64>,
    /// Post Hasura event-trigger payloads to /api/v1/events (a trigger rule makes the SMS)
    /// instead of using the send API.
    #[arg(long)]
    pub events: bool,
    /// Drive a running `switchboard serve` at this base URL instead of starting one here; the
    /// database (database.url) must be the service's. Migrations are not run.
    #[arg(long, value_name = "URL", requires = "sim")]
    pub external: Option<String>,
    /// With --external: the base URL of the `cpaas-sim` the service sends to.
    #[arg(long, value_name = "URL", requires = "external")]
    pub sim: Option<String>,
    /// With --external: the service's process id, for its CPU time (default: every process
    /// named `switchboard*` but this one).
    #[arg(long, value_name = "PID", requires = "external")]
    pub server_pid: Option<u32>,
    /// Before measuring, send this many messages (flat out, same mode, another tenant) and
    /// ANALYZE the database: a deployment in use, whose tables hold earlier traffic and whose
    /// statistics autovacuum keeps. 0 measures a fresh database, where the service's prepared
    /// statements are planned against empty tables until autovacuum's first ANALYZE.
    #[arg(long, value_name = "MESSAGES", default_value_t = 2_000)]
    pub warm_up: usize,
    /// Send to this many numbers in turn, as everyday traffic to known customers does: after the
    /// first N messages every recipient is a contact already. Without it each message goes to a
    /// number of its own and creates its contact, acceptance's dearest case.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub recipients: Option<u64>,
    /// The simulator posts Twilio's status callbacks for every message (sent, then delivered,
    /// each `CALLBACK_DELAY` after the last), as a live account does, and the measured window
    /// lasts until every message is delivered: delivery tracking's cost is in the figures.
    /// External: the simulator must have been started with `--auto-callbacks-ms`
    /// (`scripts/bench-external` does so when given this option).
    #[arg(long)]
    pub status_callbacks: bool,
}

/// In process, how long the simulator waits before each status callback: Twilio reports `sent`
/// and then `delivered` within seconds; shorter keeps runs short, and the work is the same.
pub(crate) const CALLBACK_DELAY: Duration = Duration::from_millis(250);

/// The simulator's ledger, in this process or over its control API.
enum Ledger {
    InProcess(cpaas_sim::SimHandle),
    Http { client: reqwest::Client, base: String },
}

impl Ledger {
    async fn clear(&self) -> anyhow::Result<()> {
        match self {
            Self::InProcess(sim) => sim.clear_ledger(),
            Self::Http { client, base } => {
                client.delete(format!("{base}/sim/ledger")).send().await?.error_for_status()?;
            }
        }
        Ok(())
    }

    /// The Twilio message creations it recorded.
    async fn sends(&self) -> anyhow::Result<Vec<cpaas_sim::LedgerEntry>> {
        let entries = match self {
            Self::InProcess(sim) => sim.ledger(),
            Self::Http { client, base } => client
                .get(format!("{base}/sim/ledger"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
                .context("reading the simulator's ledger")?,
        };
        Ok(entries.into_iter().filter(|e| e.operation == "create_message").collect())
    }
}

pub async fn run(settings: &mut Settings, database: &Database, args: BenchArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.clients == 0 {
        bail!("--messages and --clients must be at least 1");
    }
    if args.rate.is_some_and(|rate| !(rate.is_finite() && rate > 0.0)) {
        bail!("--rate must be a positive number of messages per second");
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let (service, base, ledger) = match (&args.external, &args.sim) {
        (Some(base), Some(sim)) => {
            let ledger = Ledger::Http { client: client.clone(), base: sim.trim_end_matches('/').to_owned() };
            (None, base.trim_end_matches('/').to_owned(), ledger)
        }
        _ => {
            // The benchmark measures the pipeline, not a provider's rate limit.
            settings.dispatch.sms_rate_per_sec = 1_000_000.0;
            let callbacks = args.status_callbacks.then_some(CALLBACK_DELAY);
            let service = InProcess::start(settings, database, callbacks).await?;
            let (base, ledger) = (service.base.clone(), Ledger::InProcess(service.sim.clone()));
            (Some(service), base, ledger)
        }
    };
    let result = measure(&database.pool, &client, &base, &ledger, &args).await;
    if let Some(service) = service {
        service.stop().await?;
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report::print_text(&report);
    }
    Ok(())
}

async fn measure(
    pool: &sqlx::PgPool,
    client: &reqwest::Client,
    base: &str,
    ledger: &Ledger,
    args: &BenchArgs,
) -> anyhow::Result<report::BenchReport> {
    if args.warm_up > 0 {
        warm_up(pool, client, base, args).await.context("warming up")?;
    }
    let (tenant_id, api_key) = prepare_tenant(pool).await?;
    activate_sms_channel(client, base, &api_key).await?;
    if args.events {
        load::prepare_events(client, base, &api_key).await?;
    }
    ledger.clear().await?;

    let postmaster = cpu::Scope::find_postmaster(pool).await?;
    let scope = cpu::Scope { external: args.external.is_some(), server_pid: args.server_pid, postmaster };
    let cpu_before = cpu::Sample::take(scope)?;
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let load = load::run(client, base, &api_key, args).await?;
    let accept_seconds = started.elapsed().as_secs_f64();
    wait_for_dispatch(pool, tenant_id).await?;
    let delivered = match args.status_callbacks {
        true => Some(wait_for_delivery(pool, tenant_id).await?),
        false => None,
    };
    let cpu_after = cpu::Sample::take(scope)?;

    let sends = ledger.sends().await?;
    let created: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT COALESCE(content->>'text', ''), created_at FROM communications.messages WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    let cpu = cpu_before.report(&cpu_after, args.messages, scope);
    let measured = report::Measured { started_at, accept_seconds, load, cpu, created, delivered };
    Ok(report::build(args, measured, &sends))
}

/// `args.warm_up` messages through a tenant of their own, then ANALYZE: what autovacuum has done
/// in any deployment that has run for a minute. On a fresh database the service's statements are
/// prepared while the tables are empty, and their cached plans (a sequential scan of `messages`
/// for the sent-record, say) stay until statistics change: the cost of each batch then grows
/// with the table, which no deployment in use sees.
async fn warm_up(pool: &sqlx::PgPool, client: &reqwest::Client, base: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let (tenant_id, api_key) = prepare_tenant(pool).await?;
    activate_sms_channel(client, base, &api_key).await?;
    if args.events {
        load::prepare_events(client, base, &api_key).await?;
    }
    let warm = BenchArgs { messages: args.warm_up, rate: None, ..args.clone() };
    load::run(client, base, &api_key, &warm).await?;
    wait_for_dispatch(pool, tenant_id).await?;
    // Its callbacks would otherwise land in the measured window.
    if args.status_callbacks {
        wait_for_delivery(pool, tenant_id).await?;
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}

/// Waits until none of the run's messages (all stored: every request was answered) is left to
/// hand to the provider, at most five minutes. Asks the database rather than the simulator: its
/// ledger comes whole, and fetching it again and again would cost more CPU than the run.
async fn wait_for_dispatch(pool: &sqlx::PgPool, tenant_id: uuid::Uuid) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // `unknown` is pending: settlement resolves it, by sending again if need be.
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM communications.messages
             WHERE tenant_id = $1 AND status IN ('queued', 'sending', 'unknown')",
        )
        .bind(tenant_id)
        .fetch_one(pool)
        .await?;
        if pending == 0 || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every message of the tenant is delivered (or five minutes have passed) and says
/// how many are. Fails early when none is after half a minute: the simulator posts no callbacks.
async fn wait_for_delivery(pool: &sqlx::PgPool, tenant_id: uuid::Uuid) -> anyhow::Result<usize> {
    let started = Instant::now();
    loop {
        let (delivered, total): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'delivered'), count(*)
             FROM communications.messages WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_one(pool)
        .await?;
        let elapsed = started.elapsed();
        if delivered == 0 && elapsed > Duration::from_secs(30) {
            bail!(
                "no message was delivered in 30 s: does the simulator post status callbacks (cpaas-sim --auto-callbacks-ms)?"
            );
        }
        if delivered == total || elapsed > Duration::from_secs(300) {
            return Ok(usize::try_from(delivered).unwrap_or(0));
        }
        // The count reads all the tenant's messages (several ms): polled often, it would show in
        // PostgreSQL's figures. The window then ends up to this much late, at no CPU cost.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The service with its dispatch workers and the simulated Twilio, in this process, for a
/// benchmark: on a free port, the simulator's webhooks pointing back at it.
pub(crate) struct InProcess {
    pub base: String,
    pub sim: cpaas_sim::SimHandle,
    stop: tokio::sync::watch::Sender<bool>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// `callbacks`: the simulator posts status callbacks this long apart after each send.
    pub(crate) async fn start(
        settings: &mut Settings,
        database: &Database,
        callbacks: Option<Duration>,
    ) -> anyhow::Result<Self> {
        settings.http.bind = "127.0.0.1:0".parse()?;
        settings.dispatch.in_serve = true;
        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sim_url = format!("http://{}", sim_listener.local_addr()?);
        settings.providers.twilio_api_url = sim_url.clone();
        let app = Application::build(settings, database.pool.clone()).await?;
        let base = format!("http://{}", app.local_addr());
        let config =
            cpaas_sim::SimConfig { webhook_base: Some(base.clone()), auto_callbacks: callbacks, ..Default::default() };
        let (router, sim) = cpaas_sim::Simulator::router(config)?;
        sim.set_base_url(&sim_url);
        tokio::spawn(async move { axum::serve(sim_listener, router).await });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let settings = settings.clone();
        let shutdown = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        };
        let serving = tokio::spawn(async move { super::serve_with_workers_until(&settings, app, shutdown).await });
        Ok(Self { base, sim, stop, serving })
    }

    /// Stops the service and waits for it to finish.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.serving.await.context("the service panicked")?
    }
}

/// A fresh tenant for this run (its id scopes the latency query) and its API key.
pub(crate) async fn prepare_tenant(pool: &sqlx::PgPool) -> anyhow::Result<(uuid::Uuid, String)> {
    let slug = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let slug = identity::tenants::Slug::parse(&slug[..30]).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The cause chain matters here: against an external database the schema may not be ours.
    let tenant = identity::tenants::create(pool, "Benchmark", &slug).await.context("creating the benchmark tenant")?;
    let key = identity::api_keys::issue(pool, tenant.id, "bench").await.context("issuing the benchmark API key")?;
    Ok((tenant.id.0, key.secret))
}

pub(crate) async fn activate_sms_channel(client: &reqwest::Client, base: &str, api_key: &str) -> anyhow::Result<()> {
    let config = json!({"account_sid": format!("AC{}", "0123456789abcdef".repeat(2)), "auth_token": "sim-twilio-auth-token", "from": "+15005550006"});
    let created: Value = client
        .post(format!("{base}/api/v1/channel-accounts"))
        .bearer_auth(api_key)
        .json(&json!({"channel_type": "sms", "provider": "twilio", "display_name": "Benchmark SMS", "config": config}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().context("creating the benchmark channel failed")?;
    let verified: Value = client
        .post(format!("{base}/api/v1/channel-accounts/{id}/verify"))
        .bearer_auth(api_key)
        .send()
        .await?
        .json()
        .await?;
    if verified["status"] != "active" {
        bail!("the benchmark channel did not activate: {verified}");
    }
    Ok(())
}
