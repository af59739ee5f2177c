//! `switchboard bench`: N messages through the real pipeline — HTTP API → apalis queue →
//! dispatch worker → Twilio adapter → the provider simulator (in process) — with the simulator's
//! ledger as the judge of lost and duplicated messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
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
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub messages: usize,
    pub clients: usize,
    pub accept_seconds: f64,
    pub accepted_per_second: f64,
    /// From the first to the last provider request.
    pub dispatch_seconds: f64,
    pub dispatched_per_second: f64,
    /// Wall time from the first request to the last provider request.
    pub end_to_end_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    pub lost: usize,
    pub duplicated: usize,
}

pub async fn run(settings: &mut Settings, database: &Database, args: BenchArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.clients == 0 {
        bail!("--messages and --clients must be at least 1");
    }
    // The benchmark measures the pipeline, not a provider's rate limit.
    settings.dispatch.sms_rate_per_sec = 1_000_000.0;
    let service = InProcess::start(settings, database).await?;
    let (base, sim) = (service.base.clone(), service.sim.clone());

    let (tenant_id, api_key) = prepare_tenant(&database.pool).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    activate_sms_channel(&client, &base, &api_key).await?;
    sim.clear_ledger();

    let started = Instant::now();
    accept_all(&client, &base, &api_key, &args).await?;
    let accept_seconds = started.elapsed().as_secs_f64();

    let deadline = Instant::now() + Duration::from_secs(300);
    let ledger = loop {
        let ledger: Vec<_> = sim.ledger().into_iter().filter(|e| e.operation == "create_message").collect();
        if ledger.len() >= args.messages || Instant::now() > deadline {
            break ledger;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let end_to_end = started.elapsed().as_secs_f64();
    let report = report(&database.pool, tenant_id, &args, accept_seconds, end_to_end, &ledger).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    service.stop().await
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
    pub(crate) async fn start(settings: &mut Settings, database: &Database) -> anyhow::Result<Self> {
        settings.http.bind = "127.0.0.1:0".parse()?;
        settings.dispatch.in_serve = true;
        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sim_url = format!("http://{}", sim_listener.local_addr()?);
        settings.providers.twilio_api_url = sim_url.clone();
        let app = Application::build(settings, database.pool.clone()).await?;
        let base = format!("http://{}", app.local_addr());
        let config = cpaas_sim::SimConfig { webhook_base: Some(base.clone()), ..Default::default() };
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
    let tenant = identity::tenants::create(pool, "Benchmark", &slug).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = identity::api_keys::issue(pool, tenant.id, "bench").await.map_err(|e| anyhow::anyhow!("{e}"))?;
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

async fn accept_all(client: &reqwest::Client, base: &str, api_key: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let mut tasks = Vec::with_capacity(args.clients);
    for worker in 0..args.clients {
        let (client, url, key, messages, clients) =
            (client.clone(), format!("{base}/api/v1/messages"), api_key.to_owned(), args.messages, args.clients);
        tasks.push(tokio::spawn(async move {
            for n in (worker..messages).step_by(clients) {
                let body = json!({"to": {"phone": recipient(n)}, "channels": "sms", "content": {"text": format!("bench {n}")}});
                let response = client.post(&url).bearer_auth(&key).json(&body).send().await?;
                if response.status() != 202 {
                    bail!("message {n} was not accepted: {}", response.status());
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn recipient(n: usize) -> String {
    format!("+491{n:010}")
}

async fn report(
    pool: &sqlx::PgPool,
    tenant_id: uuid::Uuid,
    args: &BenchArgs,
    accept_seconds: f64,
    end_to_end: f64,
    ledger: &[cpaas_sim::LedgerEntry],
) -> anyhow::Result<BenchReport> {
    let mut by_recipient: HashMap<&str, Vec<&cpaas_sim::LedgerEntry>> = HashMap::new();
    for entry in ledger {
        if let Some(to) = entry.recipient.as_deref() {
            by_recipient.entry(to).or_default().push(entry);
        }
    }
    let lost = (0..args.messages).filter(|n| !by_recipient.contains_key(recipient(*n).as_str())).count();
    let duplicated = by_recipient.values().map(|sends| sends.len().saturating_sub(1)).sum();
    let created: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT recipient, created_at FROM communications.messages WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(pool)
            .await?;
    let mut latencies: Vec<f64> = created
        .iter()
        .filter_map(|(to, at)| {
            let sent = by_recipient.get(to.as_str())?.first()?;
            Some((sent.received_at - *at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let percentile =
        |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    let times: Vec<f64> = ledger.iter().map(|e| e.received_at.timestamp_micros() as f64 / 1e6).collect();
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let last = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let dispatch_seconds = (last - first).max(f64::EPSILON);
    Ok(BenchReport {
        messages: args.messages,
        clients: args.clients,
        accept_seconds,
        accepted_per_second: args.messages as f64 / accept_seconds,
        dispatch_seconds,
        dispatched_per_second: ledger.len() as f64 / dispatch_seconds,
        end_to_end_per_second: ledger.len() as f64 / end_to_end,
        latency_ms_p50: percentile(0.50),
        latency_ms_p95: percentile(0.95),
        latency_ms_p99: percentile(0.99),
        lost,
        duplicated,
    })
}

fn print_text(report: &BenchReport) {
    println!("switchboard bench: {} messages, {} API clients", report.messages, report.clients);
    println!("  accepted    {:>9.0}/s  ({:.2} s)", report.accepted_per_second, report.accept_seconds);
    println!(
        "  dispatched  {:>9.0}/s  ({:.2} s, first to last provider request)",
        report.dispatched_per_second, report.dispatch_seconds
    );
    println!("  end to end  {:>9.0}/s", report.end_to_end_per_second);
    println!(
        "  enqueue → provider request latency: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        report.latency_ms_p50, report.latency_ms_p95, report.latency_ms_p99
    );
    println!("  lost {}, duplicated {} (the simulator's ledger)", report.lost, report.duplicated);
}
