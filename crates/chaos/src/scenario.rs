//! One scenario: a fresh cluster, simulator, service and tenants; the load with faults injected
//! while it runs; a settling window; then the counts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Row;

use crate::cluster::Cluster;
use crate::load::{self, LoadConfig, LoadStats};
use crate::procs::{self, History, Proc, Shared, Spec};
use crate::report::{self, Fault, OPEN_STATUSES, ScenarioReport};
use crate::setup::{self, Binaries, Tenants};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Baseline: load, no fault.
    None,
    /// SIGKILL `serve` (API and dispatch) K times, restarted after ~1 s.
    KillServe,
    /// Dispatch only in two `switchboard worker` processes; SIGKILL one of them K times.
    KillWorker,
    /// PostgreSQL fast shutdown, 3 s down, start; K times.
    #[value(name = "pg-restart-3s")]
    PgRestart3s,
    /// PostgreSQL crash (immediate shutdown), 30 s down, start; once.
    #[value(name = "pg-restart-30s")]
    PgRestart30s,
    /// As pg-restart-30s, with dispatch in two worker processes.
    #[value(name = "pg-restart-30s-workers")]
    PgRestart30sWorkers,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::None,
        Scenario::KillServe,
        Scenario::KillWorker,
        Scenario::PgRestart3s,
        Scenario::PgRestart30s,
        Scenario::PgRestart30sWorkers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::None => "none",
            Scenario::KillServe => "kill-serve",
            Scenario::KillWorker => "kill-worker",
            Scenario::PgRestart3s => "pg-restart-3s",
            Scenario::PgRestart30s => "pg-restart-30s",
            Scenario::PgRestart30sWorkers => "pg-restart-30s-workers",
        }
    }

    fn with_workers(self) -> bool {
        matches!(self, Scenario::KillWorker | Scenario::PgRestart30sWorkers)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub run: String,
    pub run_dir: PathBuf,
    pub binaries: Binaries,
    pub messages: u32,
    pub rate: f64,
    pub kills: u32,
    pub clients: usize,
    pub settle: Duration,
    /// Once nothing is open, how long `sent` statuses may stand still before counting stops.
    pub status_wait: Duration,
    pub seed: u64,
    pub fsync: bool,
    pub restart_crashed: bool,
    pub strict_statuses: bool,
    pub env: Vec<(String, String)>,
    pub sim_args: Vec<String>,
}

/// xorshift64*: reproducible fault timing from `--seed` without another dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Everything a scenario started, so it can all be stopped whatever went wrong.
#[derive(Debug, Default)]
struct Stage {
    cluster: Option<Cluster>,
    sim: Option<Shared>,
    serve: Option<Shared>,
    workers: Vec<Shared>,
    supervisor: Option<tokio::task::JoinHandle<()>>,
    pool: Option<sqlx::PgPool>,
}

impl Stage {
    async fn teardown(&mut self) -> Vec<History> {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.abort();
        }
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        // The service first (it drains), the simulator after it, the database last.
        let mut order: Vec<Shared> = self.workers.iter().chain(self.serve.iter()).cloned().collect();
        order.extend(self.sim.iter().cloned());
        for proc in &order {
            procs::stop(proc, Duration::from_secs(10)).await;
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.shut_down().await;
        }
        self.sim.iter().chain(self.serve.iter()).chain(self.workers.iter()).map(procs::history).collect()
    }
}

struct Collected {
    faults: Vec<Fault>,
    load: LoadStats,
    settled_secs: Option<f64>,
    channels: std::collections::BTreeMap<load::Category, report::Counts>,
    sim_webhooks: Option<serde_json::Value>,
}

pub async fn run(scenario: Scenario, options: &Options) -> ScenarioReport {
    let started = Instant::now();
    let dir = options.run_dir.join(scenario.name());
    let seed = options.seed ^ (scenario as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut stage = Stage::default();
    let result = Box::pin(drive(scenario, options, &dir, seed, &mut stage)).await;
    let processes = stage.teardown().await;
    let mut report = ScenarioReport {
        scenario: scenario.name().to_owned(),
        passed: false,
        error: None,
        missed: Vec::new(),
        seed,
        messages: options.messages,
        rate: options.rate,
        faults: Vec::new(),
        load: None,
        settled_secs: None,
        settle_window_secs: options.settle.as_secs(),
        channels: Default::default(),
        logs: processes
            .iter()
            .filter_map(|p| Some((p.role.clone(), report::summarise_log(&dir.join(format!("{}.log", p.role)))?)))
            .collect(),
        processes,
        sim_webhooks: None,
        run_dir: dir.display().to_string(),
        wall_secs: 0.0,
    };
    match result {
        Ok(collected) => {
            report.faults = collected.faults;
            report.load = Some(collected.load);
            report.settled_secs = collected.settled_secs;
            report.channels = collected.channels;
            report.sim_webhooks = collected.sim_webhooks;
        }
        Err(error) => report.error = Some(format!("{error:#}")),
    }
    report.missed = report::missed(&report, options.strict_statuses);
    if let Some(error) = &report.error {
        report.missed.insert(0, format!("the scenario did not complete: {error}"));
    }
    report.passed = report.missed.is_empty();
    report.wall_secs = started.elapsed().as_secs_f64();
    report
}

fn note(scenario: Scenario, epoch: Instant, what: &str) {
    eprintln!("chaos [{}] +{:.1}s {what}", scenario.name(), epoch.elapsed().as_secs_f64());
}

async fn drive(
    scenario: Scenario,
    options: &Options,
    dir: &Path,
    seed: u64,
    stage: &mut Stage,
) -> anyhow::Result<Collected> {
    let epoch = Instant::now();
    std::fs::create_dir_all(dir)?;
    let [pg_port, sim_port, serve_port] = setup::free_ports::<3>()?;
    let cluster = Cluster::create(&dir.join("pg"), pg_port, options.fsync).await?;
    cluster.start().await?;
    cluster.create_database("switchboard").await?;
    let database_url = cluster.url("switchboard");
    stage.cluster = Some(cluster);
    note(scenario, epoch, &format!("PostgreSQL on 127.0.0.1:{pg_port}"));

    // The serve port is fixed for the whole scenario: the simulator posts callbacks to it, and a
    // restarted serve must be found at the same address.
    let serve_addr = format!("127.0.0.1:{serve_port}");
    let sim_addr = format!("127.0.0.1:{sim_port}");
    let base = format!("http://{serve_addr}");
    let env = setup::service_env(&database_url, &serve_addr, &sim_addr, !scenario.with_workers(), &options.env);
    let spec = |role: &str, program: &Path, args: Vec<String>| Spec {
        role: role.to_owned(),
        program: program.to_owned(),
        args,
        env: env.clone(),
        log: dir.join(format!("{role}.log")),
    };
    let mut sim_args: Vec<String> =
        ["--bind", &sim_addr, "--webhook-base", &base, "--auto-callbacks-ms", "200"].map(String::from).into();
    sim_args.extend(options.sim_args.iter().cloned());
    let sim = Proc::new(spec("sim", &options.binaries.sim, sim_args), epoch);
    procs::restart(&sim)?;
    stage.sim = Some(sim);
    let client = reqwest::Client::new();
    setup::wait_http(&client, &format!("http://{sim_addr}/sim/ledger"), Duration::from_secs(30)).await?;

    let switchboard = &options.binaries.switchboard;
    setup::cli(switchboard, &env, &["migrate"]).await?;
    let tenants = setup::provision_cli(switchboard, &env, &options.run).await?;
    let serve = Proc::new(spec("serve", switchboard, vec!["serve".into()]), epoch);
    procs::restart(&serve)?;
    stage.serve = Some(serve.clone());
    setup::wait_http(&client, &format!("{base}/readyz"), Duration::from_secs(90)).await?;
    if scenario.with_workers() {
        for n in 1..=2 {
            let worker = Proc::new(spec(&format!("worker-{n}"), switchboard, vec!["worker".into()]), epoch);
            procs::restart(&worker)?;
            stage.workers.push(worker);
        }
    }
    let all: Vec<Shared> = stage.sim.iter().chain(stage.serve.iter()).chain(stage.workers.iter()).cloned().collect();
    stage.supervisor = Some(tokio::spawn(procs::supervisor(all, options.restart_crashed)));
    setup::provision_channels(&client, &base, &tenants).await.context("provisioning channel accounts")?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&database_url)
        .await?;
    stage.pool = Some(pool.clone());
    note(scenario, epoch, &format!("provisioned; {} messages at {}/s", options.messages, options.rate));

    let config = LoadConfig {
        base: base.clone(),
        run: options.run.clone(),
        messages: options.messages,
        rate: options.rate,
        clients: options.clients,
        give_up_after: options.settle + Duration::from_secs(60),
    };
    let load_start = Instant::now();
    let injector = Injector { scenario, stage, pool: &pool, client: &client, base: &base, epoch, load_start };
    let ((outcomes, load), faults) =
        tokio::join!(load::run(config, &tenants), Box::pin(injector.inject(options, Rng(seed | 1))));
    let faults = faults?;
    note(scenario, epoch, &format!("load done: {} accepted, {} client retries", load.accepted, load.retries));

    let settled_secs = settle(scenario, epoch, &pool, &tenants, options).await;
    let sim_url = format!("http://{sim_addr}");
    let ledger: Vec<serde_json::Value> = client
        .get(format!("{sim_url}/sim/ledger"))
        .timeout(Duration::from_secs(120))
        .send()
        .await?
        .json()
        .await
        .context("reading the simulator's ledger")?;
    let sim_webhooks = match client.get(format!("{sim_url}/sim/webhooks")).send().await {
        Ok(response) if response.status().is_success() => {
            response.json::<serde_json::Value>().await.ok().map(|v| report::summarise_webhooks(&v))
        }
        _ => None,
    };
    let rows = report::message_rows(&pool, &[tenants.a.id, tenants.b.id], &options.run).await?;
    let sends = report::ledger_sends(&ledger, &options.run);
    let channels = report::count(options.messages, &outcomes, &sends, &rows);
    Ok(Collected { faults, load, settled_secs, channels, sim_webhooks })
}

struct Injector<'a> {
    scenario: Scenario,
    stage: &'a Stage,
    pool: &'a sqlx::PgPool,
    client: &'a reqwest::Client,
    base: &'a str,
    epoch: Instant,
    load_start: Instant,
}

impl Injector<'_> {
    /// Faults at random moments spread over the load's duration, one after the other.
    async fn inject(&self, options: &Options, mut rng: Rng) -> anyhow::Result<Vec<Fault>> {
        let count = match self.scenario {
            Scenario::None => 0,
            Scenario::PgRestart30s | Scenario::PgRestart30sWorkers => 1,
            _ => options.kills,
        };
        let window = f64::from(options.messages) / options.rate;
        let slot = window / f64::from(count + 1);
        let mut faults = Vec::new();
        for k in 0..count {
            let at = slot * f64::from(k + 1) + (rng.unit() - 0.5) * 0.6 * slot;
            tokio::time::sleep_until((self.load_start + Duration::from_secs_f64(at.max(0.0))).into()).await;
            let at_secs = self.epoch.elapsed().as_secs_f64();
            let what = self.fault(&mut rng).await?;
            let recovered_secs = self.epoch.elapsed().as_secs_f64();
            note(self.scenario, self.epoch, &format!("fault: {what}; recovered"));
            faults.push(Fault { at_secs, what, recovered_secs });
        }
        Ok(faults)
    }

    async fn fault(&self, rng: &mut Rng) -> anyhow::Result<String> {
        let stage = self.stage;
        let cluster = stage.cluster.as_ref().context("no cluster")?;
        match self.scenario {
            Scenario::None => Ok(String::new()),
            Scenario::KillServe => {
                let serve = stage.serve.as_ref().context("no serve")?;
                let sending = self.wait_for_sending().await;
                procs::kill(serve).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                procs::restart(serve)?;
                let readyz = format!("{}/readyz", self.base);
                let ready = setup::wait_http(self.client, &readyz, Duration::from_secs(90));
                let ready = if ready.await.is_ok() { "ready again" } else { "NOT ready within 90 s" };
                Ok(format!("SIGKILL serve with {sending} messages sending, restarted after 1 s, {ready}"))
            }
            Scenario::KillWorker => {
                let index = (rng.unit() * stage.workers.len() as f64) as usize;
                let worker = stage.workers.get(index).context("no worker")?;
                let sending = self.wait_for_sending().await;
                procs::kill(worker).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                procs::restart(worker)?;
                Ok(format!("SIGKILL worker-{} with {sending} messages sending, restarted after 1 s", index + 1))
            }
            Scenario::PgRestart3s => {
                cluster.stop("fast").await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                cluster.start().await?;
                Ok("PostgreSQL fast shutdown, 3 s down, started".into())
            }
            Scenario::PgRestart30s | Scenario::PgRestart30sWorkers => {
                cluster.stop("immediate").await?;
                tokio::time::sleep(Duration::from_secs(30)).await;
                cluster.start().await?;
                Ok("PostgreSQL crash (immediate shutdown), 30 s down, started (crash recovery)".into())
            }
        }
    }

    /// Waits up to a second for a moment with messages mid-send (claimed, provider call open),
    /// so a kill lands mid-dispatch; returns how many there were.
    async fn wait_for_sending(&self) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let sending: i64 = sqlx::query("SELECT count(*) FROM communications.messages WHERE status = 'sending'")
                .fetch_one(self.pool)
                .await
                .and_then(|row| row.try_get(0))
                .unwrap_or(0);
            if sending > 0 || Instant::now() >= deadline {
                return sending;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Polls until no message (SNS aside) is open, then longer while `sent` statuses still catch up
/// with the simulator's callbacks (until none is left, or `status_wait` passed without change);
/// all within the window. `None` if the window passed with messages open.
async fn settle(
    scenario: Scenario,
    epoch: Instant,
    pool: &sqlx::PgPool,
    tenants: &Tenants,
    options: &Options,
) -> Option<f64> {
    let window = options.settle;
    let start = Instant::now();
    let open: Vec<String> = OPEN_STATUSES.iter().map(|s| (*s).to_owned()).collect();
    let mut settled_at: Option<Instant> = None;
    let mut behind_since: (i64, Instant) = (-1, Instant::now());
    let mut last_note = Instant::now();
    loop {
        let counts = sqlx::query(
            "SELECT count(*) FILTER (WHERE status = ANY($2) AND tenant_id <> $3) AS open,
                    count(*) FILTER (WHERE status = 'sent' AND tenant_id <> $3) AS behind,
                    count(*) FILTER (WHERE status = ANY($2) AND tenant_id = $3) AS sns_open
             FROM communications.messages WHERE tenant_id = ANY($1)",
        )
        .bind([tenants.a.id, tenants.b.id])
        .bind(&open)
        .bind(tenants.b.id)
        .fetch_one(pool)
        .await
        .and_then(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?)));
        let now = Instant::now();
        if let Ok((open, behind, sns_open)) = counts {
            settled_at = if open == 0 { settled_at.or(Some(now)) } else { None };
            if behind != behind_since.0 {
                behind_since = (behind, now);
            }
            if last_note.elapsed() >= Duration::from_secs(10) {
                note(
                    scenario,
                    epoch,
                    &format!("settling: open {open}, sent-not-delivered {behind}, SNS open {sns_open}"),
                );
                last_note = now;
            }
            // Settled; statuses caught up, or stopped catching up for a while.
            if open == 0 && (behind == 0 || now - behind_since.1 >= options.status_wait) {
                break;
            }
        }
        if now - start >= window {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    settled_at.map(|at| (at - start).as_secs_f64())
}
