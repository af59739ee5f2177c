//! `switchboard bench-missed-call`: the missed-call SLI — the `<Dial action>` webhook reaching
//! us → the auto-reply's request at the provider — measured on the real path: the simulator's
//! Twilio places each call against our TwiML (incoming call, then the dial outcome, signed),
//! the reply carries the next free slots from fulfillment, and goes out through the urgent lane.
//!
//! 1. Idle: `--calls` calls at `--rate` per second.
//! 2. Under a bulk backlog: a `--campaign`-message bulk SMS campaign is accepted (by `--clients`
//!    API clients); it drains at 80 % of `--sms-rate` (the bulk lane's share of the provider's
//!    rate), and the same number of calls is placed while it does.
//!
//! The latency of each call is exact, not sampled from a histogram: the webhook's arrival time
//! (`metadata.missed_call.received_at`, taken before the signature check) against the time the
//! simulator received the SMS request for that caller. The same figure is exported as the
//! Prometheus histogram `missed_call_sms_seconds`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::bench_inbox::Percentiles;
use crate::database::Database;
use crate::settings::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct MissedCallBenchArgs {
    /// Calls placed in each phase.
    #[arg(long, default_value_t = 200)]
    pub calls: usize,
    /// Calls per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Bulk messages in the campaign of phase 2 (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub campaign: usize,
    /// API clients accepting the campaign.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// The SMS provider's rate (messages per second): the campaign gets 80 % of it, so it queues
    /// up and drains at that pace while the calls come in, as a real campaign does.
    #[arg(long, default_value_t = 500.0)]
    pub sms_rate: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct MissedCallBenchReport {
    pub sms_rate_per_second: f64,
    pub idle: Percentiles,
    pub under_backlog: Option<Percentiles>,
    pub campaign: usize,
    pub campaign_accept_seconds: f64,
    /// Bulk messages still waiting for the provider when the first and the last measured call
    /// of phase 2 were placed.
    pub backlog_at_first_call: usize,
    pub backlog_at_last_call: usize,
    /// Calls that got no SMS (must be 0) and that got more than one (must be 0).
    pub missing: usize,
    pub duplicated: usize,
    /// The auto-replies' statuses at the end (all `sent` unless a send's answer was lost).
    pub reply_statuses: HashMap<String, i64>,
    pub targets_ms: Targets,
}

#[derive(Debug, Serialize)]
pub struct Targets {
    pub idle_p95: f64,
    pub under_backlog_p95: f64,
}

pub async fn run(settings: &mut Settings, database: &Database, args: MissedCallBenchArgs) -> anyhow::Result<()> {
    if args.calls == 0 || args.rate <= 0.0 || args.clients == 0 || args.sms_rate <= 0.0 {
        bail!("need --calls ≥ 1, --rate > 0, --clients ≥ 1 and --sms-rate > 0");
    }
    settings.dispatch.sms_rate_per_sec = args.sms_rate;
    let service = crate::bench::InProcess::start(settings, database, None).await?;
    let (base, sim) = (service.base.clone(), service.sim.clone());

    let (tenant, key) = crate::bench::prepare_tenant(&database.pool).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients + 4).build()?;
    crate::bench::activate_sms_channel(&client, &base, &key).await?;
    prepare_business(&client, &base, &key).await?;
    sim.clear_ledger();

    let idle = place_calls(&sim, &database.pool, tenant, &args, "1", false).await?;
    let mut report = MissedCallBenchReport {
        sms_rate_per_second: args.sms_rate,
        idle: idle.latency,
        under_backlog: None,
        campaign: args.campaign,
        campaign_accept_seconds: 0.0,
        backlog_at_first_call: 0,
        backlog_at_last_call: 0,
        missing: idle.missing,
        duplicated: idle.duplicated,
        reply_statuses: HashMap::new(),
        targets_ms: Targets { idle_p95: 100.0, under_backlog_p95: 250.0 },
    };
    if args.campaign > 0 {
        let accepted = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let campaign =
            tokio::spawn(accept_campaign(client.clone(), base.clone(), key.clone(), args.clone(), accepted.clone()));
        // The whole campaign is queued first (it starts draining at once, at the provider's
        // pace); the calls come in while the rest of it drains.
        campaign.await.context("the campaign panicked")??;
        report.campaign_accept_seconds = started.elapsed().as_secs_f64();
        let under = place_calls(&sim, &database.pool, tenant, &args, "2", true).await?;
        report.under_backlog = Some(under.latency);
        report.backlog_at_first_call = under.backlog_first;
        report.backlog_at_last_call = under.backlog_last;
        report.missing += under.missing;
        report.duplicated += under.duplicated;
    }
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM communications.messages WHERE tenant_id = $1 AND metadata ? 'missed_call' GROUP BY 1",
    )
    .bind(tenant)
    .fetch_all(&database.pool)
    .await?;
    report.reply_statuses = statuses.into_iter().collect();
    // What is left of the campaign would go out whenever this database serves next: cancel it.
    sqlx::query(
        "UPDATE communications.messages SET status = 'canceled', status_reason = 'benchmark over', updated_at = now()
         WHERE tenant_id = $1 AND status = 'queued'",
    )
    .bind(tenant)
    .execute(&database.pool)
    .await?;
    // And its jobs, which would otherwise keep the next run's workers busy with nothing.
    sqlx::query(
        "DELETE FROM apalis.jobs WHERE job_type = $2 AND status <> 'Done'
         AND convert_from(job, 'UTF8')::jsonb->>'tenant_id' = $1::text",
    )
    .bind(tenant)
    .bind(communications::messages::queue::BULK_QUEUE)
    .execute(&database.pool)
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    service.stop().await
}

/// A plumber with hours every day and a one-hour service (the reply offers three slots), calls
/// forwarded to the owner, quiet hours off (the campaign runs whatever the hour).
async fn prepare_business(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<()> {
    let week: Vec<Value> = (1..=7).map(|d| json!({"weekday": d, "starts": "07:00", "ends": "19:00"})).collect();
    let post = |path: &str, body: Value| client.post(format!("{base}{path}")).bearer_auth(key).json(&body).send();
    let resource =
        post("/api/v1/resources", json!({"name": "Plumber", "time_zone": "Europe/Berlin", "working_hours": week}));
    anyhow::ensure!(resource.await?.status() == 201, "creating the resource failed");
    let service = post("/api/v1/services", json!({"name": "Visit", "duration_minutes": 60}));
    anyhow::ensure!(service.await?.status() == 201, "creating the service failed");
    let policy = json!({"quiet_hours": null, "missed_call": {"forward_to": "+4930123456"}, "booking": {"slots": 3}});
    let patched = client.patch(format!("{base}/api/v1/messaging-policy")).bearer_auth(key).json(&policy).send().await?;
    anyhow::ensure!(patched.status() == 200, "setting the policy failed: {}", patched.text().await?);
    Ok(())
}

async fn accept_campaign(
    client: reqwest::Client,
    base: String,
    key: String,
    args: MissedCallBenchArgs,
    accepted: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let (client, base, key, next, accepted) =
            (client.clone(), base.clone(), key.clone(), next.clone(), accepted.clone());
        let total = args.campaign;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let body = json!({"to": {"phone": format!("+4917{i:08}")}, "channels": "sms", "lane": "bulk",
                                  "content": {"text": "Spring offer: 20% off a boiler service this month."}});
                let response =
                    client.post(format!("{base}/api/v1/messages")).bearer_auth(&key).json(&body).send().await?;
                anyhow::ensure!(response.status() == 202, "campaign message refused: {}", response.status());
                accepted.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

struct Phase {
    latency: Percentiles,
    missing: usize,
    duplicated: usize,
    backlog_first: usize,
    backlog_last: usize,
}

/// Places the calls at the configured rate (callers `+49152<phase><seq>`), then waits for their
/// replies and measures each one.
async fn place_calls(
    sim: &cpaas_sim::SimHandle,
    pool: &sqlx::PgPool,
    tenant: uuid::Uuid,
    args: &MissedCallBenchArgs,
    phase: &str,
    count_backlog: bool,
) -> anyhow::Result<Phase> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let mut callers = Vec::with_capacity(args.calls);
    let (mut backlog_first, mut backlog_last) = (0, 0);
    let mut placing = Vec::with_capacity(args.calls);
    for i in 0..args.calls {
        ticker.tick().await;
        if count_backlog && i == 0 {
            backlog_first = backlog(pool, tenant).await?;
        }
        if count_backlog && i + 1 == args.calls {
            backlog_last = backlog(pool, tenant).await?;
        }
        let caller = format!("+49152{phase}{i:06}");
        callers.push(caller.clone());
        let spec = cpaas_sim::CallSpec {
            account_sid: format!("AC{}", "0123456789abcdef".repeat(2)),
            webhook_id: Some(tenant.to_string()),
            from: caller,
            to: "+15005550006".into(),
            outcome: cpaas_sim::DialOutcome::NoAnswer,
            ..Default::default()
        };
        let sim = sim.clone();
        placing.push(tokio::spawn(async move { sim.place_call(spec).await }));
    }
    for call in placing {
        let report = call.await??;
        anyhow::ensure!(report.answer == "twiml", "a call was not answered with TwiML: {report:?}");
    }
    // Every reply's request at the provider, by caller.
    let deadline = Instant::now() + Duration::from_secs(60);
    let requests = loop {
        let mut requests: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        // Sends only: a settlement's lookup names the recipient too.
        for entry in sim.ledger().into_iter().filter(|e| e.operation == "create_message") {
            if let Some(to) = entry.recipient.filter(|to| to.starts_with(&format!("+49152{phase}"))) {
                requests.entry(to).or_default().push(entry.received_at);
            }
        }
        if requests.len() >= callers.len() || Instant::now() > deadline {
            break requests;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let received: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        r#"SELECT recipient, (metadata->'missed_call'->>'received_at')::timestamptz FROM communications.messages
           WHERE tenant_id = $1 AND metadata ? 'missed_call' AND recipient LIKE $2"#,
    )
    .bind(tenant)
    .bind(format!("+49152{phase}%"))
    .fetch_all(pool)
    .await?;
    let received: HashMap<String, DateTime<Utc>> = received.into_iter().collect();
    let mut millis = Vec::with_capacity(callers.len());
    let (mut missing, mut duplicated) = (0, 0);
    for caller in &callers {
        match (requests.get(caller), received.get(caller)) {
            (Some(sent), Some(arrived)) => {
                duplicated += sent.len() - 1;
                let first = sent.iter().min().copied().unwrap_or(*arrived);
                millis.push((first - *arrived).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
            _ => missing += 1,
        }
    }
    Ok(Phase { latency: Percentiles::of(millis), missing, duplicated, backlog_first, backlog_last })
}

/// Bulk messages not yet handed to the provider.
async fn backlog(pool: &sqlx::PgPool, tenant: uuid::Uuid) -> anyhow::Result<usize> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM communications.messages WHERE tenant_id = $1 AND lane = 'bulk' AND status IN ('queued', 'sending')",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

fn print_text(report: &MissedCallBenchReport) {
    let line = |name: &str, p: &Percentiles, target: f64| {
        println!(
            "  {name:<28} p50 {:>7.1} ms   p95 {:>7.1} ms   p99 {:>7.1} ms   ({} calls; target p95 ≤ {target} ms)",
            p.p50, p.p95, p.p99, p.samples
        );
    };
    println!(
        "missed call → auto-reply SMS at the provider (webhook received → SMS request); SMS rate {}/s",
        report.sms_rate_per_second
    );
    line("idle", &report.idle, report.targets_ms.idle_p95);
    if let Some(under) = &report.under_backlog {
        line("under a bulk backlog", under, report.targets_ms.under_backlog_p95);
        println!(
            "  campaign: {} bulk messages accepted in {:.1} s; backlog {} at the first call, {} at the last",
            report.campaign, report.campaign_accept_seconds, report.backlog_at_first_call, report.backlog_at_last_call
        );
    }
    println!(
        "  missing replies: {}   duplicated: {}   reply statuses: {:?}",
        report.missing, report.duplicated, report.reply_statuses
    );
}
