//! Building the binaries, the service's environment, and provisioning through the real CLI and
//! REST API: two tenants, platform SES/SNS defaults pointing at the simulator, and channel
//! accounts verified against it — the same calls `demo.rs` and `tests/api` make.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::load::Category;

/// The workspace this binary was built from (crates/chaos/../..).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

#[derive(Debug, Clone)]
pub struct Binaries {
    pub switchboard: PathBuf,
    pub sim: PathBuf,
}

pub fn binaries(release: bool) -> anyhow::Result<Binaries> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let dir = target.join(if release { "release" } else { "debug" });
    let found = Binaries { switchboard: dir.join("switchboard"), sim: dir.join("cpaas-sim") };
    for binary in [&found.switchboard, &found.sim] {
        if !binary.is_file() {
            bail!("{} is missing: build it (drop --no-build)", binary.display());
        }
    }
    Ok(found)
}

/// Pins the binaries in the run directory: the target directory is shared, and a build
/// finishing mid-run must not swap the service under a scenario (or between two of them).
/// A hard link is enough for that (the linker and cargo replace a binary with a new file rather
/// than rewrite it) and costs no disk, which a CI machine full of build output may not have;
/// across file systems it is a copy.
pub fn snapshot(binaries: &Binaries, dir: &Path) -> anyhow::Result<Binaries> {
    std::fs::create_dir_all(dir)?;
    let copy = |from: &Path| -> anyhow::Result<PathBuf> {
        let to = dir.join(from.file_name().context("binary name")?);
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        }
        Ok(to)
    };
    Ok(Binaries { switchboard: copy(&binaries.switchboard)?, sim: copy(&binaries.sim)? })
}

pub async fn build(release: bool) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root()).args(["build", "-p", "switchboard", "-p", "cpaas-sim"]);
    if release {
        command.arg("--release");
    }
    // cargo's output to our stderr, so `--json` keeps stdout clean.
    command.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = command.status().await.context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build -p switchboard -p cpaas-sim failed ({status})");
    }
    Ok(())
}

/// The simulator's fixed identities (see crates/cpaas-sim: `ses::ACCOUNT_ID`, `sns::SES_*_TOPIC`,
/// `SimConfig::sns_topic_arns`, its default region and secrets). Copied rather than imported so
/// that this crate drives the simulator only as an external process; if they drift, SES
/// callbacks are refused and the report shows email statuses behind.
const SIM_REGION: &str = "eu-central-1";
const SIM_ACCOUNT: &str = "123456789012";
const SIM_META_APP_SECRET: &str = "sim-meta-app-secret";
const SIM_TWILIO_TOKEN: &str = "sim-twilio-auth-token";
const SIM_SMS_NUMBER: &str = "+18005550199";

/// Settings the suite sets (before `--env`, which overrides them); docs/chaos.md explains each.
pub fn suite_defaults() -> Vec<(String, String)> {
    [
        // An interrupted send is settled by callbacks, else sent again, within half a minute...
        ("SWITCHBOARD__DISPATCH__UNKNOWN_SETTLE_SECS", "30"),
        ("SWITCHBOARD__DISPATCH__RESEND_UNSETTLED", "true"),
        // ...checked every 5 s instead of every minute, so it fits the 2-minute settling target.
        ("SWITCHBOARD__DISPATCH__SWEEP_SCHEDULE", "*/5 * * * * *"),
        // Twilio does not retry status callbacks: one lost while serve was down is asked about.
        // Sooner than the default minute, so statuses can catch up within the settling window.
        ("SWITCHBOARD__DISPATCH__TWILIO_CONFIRM_AFTER_SECS", "5"),
        // One channel account per channel takes the whole load: rate limits would only queue it.
        ("SWITCHBOARD__DISPATCH__WHATSAPP_RATE_PER_SEC", "100000"),
        ("SWITCHBOARD__DISPATCH__EMAIL_RATE_PER_SEC", "100000"),
        ("SWITCHBOARD__DISPATCH__SMS_RATE_PER_SEC", "100000"),
        ("SWITCHBOARD__HTTP__SHUTDOWN_GRACE_SECS", "2"),
        ("SWITCHBOARD__LOG__FORMAT", "json"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `SWITCHBOARD__DISPATCH__X` for `dispatch.x`.
fn env_name(key: &str) -> String {
    format!("SWITCHBOARD__{}", key.replace('.', "__").to_uppercase())
}

/// The suite's defaults this build of the service knows (it refuses unknown settings, and they
/// change as the dispatcher does), then `extra`; and the defaults it had to leave out. Probed
/// with `switchboard migrate` against a closed port: settings are checked before anything else,
/// and a refusal exits 2 naming the key.
pub async fn effective_settings(
    binary: &Path,
    extra: &[(String, String)],
) -> anyhow::Result<(Vec<(String, String)>, Vec<String>)> {
    let mut defaults = suite_defaults();
    let mut dropped = Vec::new();
    loop {
        let mut env = defaults.clone();
        env.extend(extra.iter().cloned());
        env.push(("SWITCHBOARD__DATABASE__URL".into(), "postgres://chaos-probe@127.0.0.1:1/none".into()));
        let mut command = tokio::process::Command::new(binary);
        clean_env(&mut command);
        command.arg("migrate").envs(env).stdin(std::process::Stdio::null()).kill_on_drop(true);
        // Accepted settings get as far as connecting (and then fail, or wait for the database).
        let Ok(output) = tokio::time::timeout(Duration::from_secs(5), command.output()).await else { break };
        let output = output.context("cannot run switchboard")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let Some(problem) = stderr.split("invalid configuration: ").nth(1).filter(|_| output.status.code() == Some(2))
        else {
            break;
        };
        let key = problem.split(':').next().unwrap_or_default().trim();
        let name = env_name(key);
        let before = defaults.len();
        defaults.retain(|(k, _)| *k != name);
        if defaults.len() == before {
            bail!("the service refuses its configuration: {}", problem.trim());
        }
        let why = problem.split(": ").nth(1).unwrap_or("refused");
        dropped.push(format!("{key} ({})", why.split(", expected").next().unwrap_or(why).trim()));
    }
    defaults.extend(extra.iter().cloned());
    Ok((defaults, dropped))
}

fn clean_env(command: &mut tokio::process::Command) {
    for (key, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
        if key.starts_with("SWITCHBOARD") || key == "DATABASE_URL" || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
}

/// The service's environment: the wiring to the cluster and the simulator (as `demo.rs` points
/// providers at its in-process simulator), then `settings` (the suite's defaults and `--env`),
/// last so that `--env` can override anything.
pub fn service_env(
    database_url: &str,
    bind: &str,
    sim_addr: &str,
    in_serve: bool,
    settings: &[(String, String)],
) -> Vec<(String, String)> {
    let sim_url = format!("http://{sim_addr}");
    let topics = ["switchboard-ses-events", "switchboard-ses-inbound"]
        .map(|topic| format!("arn:aws:sns:{SIM_REGION}:{SIM_ACCOUNT}:{topic}"))
        .join(",");
    let mut env: Vec<(String, String)> = Vec::new();
    env.extend(
        [
            ("SWITCHBOARD__DATABASE__URL", database_url.to_owned()),
            ("SWITCHBOARD__HTTP__BIND", bind.to_owned()),
            ("SWITCHBOARD__DISPATCH__IN_SERVE", in_serve.to_string()),
            ("SWITCHBOARD__PROVIDERS__META_GRAPH_URL", sim_url.clone()),
            ("SWITCHBOARD__PROVIDERS__TWILIO_API_URL", sim_url.clone()),
            ("SWITCHBOARD__PROVIDERS__AWS_ENDPOINT_URL", sim_url),
            ("SWITCHBOARD__PROVIDERS__AWS_REGION", SIM_REGION.to_owned()),
            ("SWITCHBOARD__PROVIDERS__META_APP_ID", "1000000000000001".to_owned()),
            ("SWITCHBOARD__PROVIDERS__META_APP_SECRET", SIM_META_APP_SECRET.to_owned()),
            ("SWITCHBOARD__PROVIDERS__SNS_CERT_HOSTS", sim_addr.to_owned()),
            ("SWITCHBOARD__PROVIDERS__SNS_CERT_ALLOW_HTTP", "true".to_owned()),
            ("SWITCHBOARD__PROVIDERS__SNS_TOPIC_ARNS", topics),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    // Later entries win when the child's environment is built: `--env` may override the wiring.
    env.extend(settings.iter().cloned());
    env
}

/// Runs a `switchboard` CLI command to completion; its standard output.
pub async fn cli(binary: &Path, env: &[(String, String)], args: &[&str]) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new(binary);
    clean_env(&mut command);
    let output = command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("cannot run switchboard")?;
    if !output.status.success() {
        bail!(
            "switchboard {} failed ({}): {}",
            args.first().copied().unwrap_or_default(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: uuid::Uuid,
    pub api_key: String,
}

/// Tenant A sends WhatsApp (Meta), email (SES, platform default) and SMS (Twilio, its own
/// account); tenant B sends SMS through the platform's SNS (one SMS account per tenant).
#[derive(Debug, Clone)]
pub struct Tenants {
    pub a: Tenant,
    pub b: Tenant,
}

impl Tenants {
    pub fn for_category(&self, category: Category) -> &Tenant {
        if category == Category::SmsSns { &self.b } else { &self.a }
    }
}

/// Platform defaults and the tenants, through the CLI (the service need not be running).
pub async fn provision_cli(binary: &Path, env: &[(String, String)], run: &str) -> anyhow::Result<Tenants> {
    let aws = json!({"access_key_id": "AKIASIMULATED0000001", "secret_access_key": "simulated-secret-access-key"});
    let mut sns = aws.clone();
    sns["origination_number"] = json!(SIM_SMS_NUMBER);
    for (provider, config) in [("ses", aws), ("sns", sns)] {
        cli(binary, env, &["platform-provider", "set", "--provider", provider, "--config", &config.to_string()])
            .await?;
    }
    let mut tenants = Vec::new();
    for (name, slug) in [("Chaos A", format!("chaos-a-{run}")), ("Chaos B", format!("chaos-b-{run}"))] {
        let out = cli(binary, env, &["tenant", "create", "--name", name, "--slug", &slug, "--json"]).await?;
        let created: Value = serde_json::from_str(out.trim()).with_context(|| format!("tenant create said {out}"))?;
        tenants.push(Tenant {
            id: created["tenant_id"].as_str().context("tenant_id")?.parse()?,
            api_key: created["api_key"].as_str().context("api_key")?.to_owned(),
        });
    }
    let b = tenants.pop().context("tenant b")?;
    let a = tenants.pop().context("tenant a")?;
    Ok(Tenants { a, b })
}

/// The channel accounts, created and verified over HTTP as an operator would.
pub async fn provision_channels(client: &reqwest::Client, base: &str, tenants: &Tenants) -> anyhow::Result<()> {
    let twilio_sid = format!("AC{}", "0123456789abcdef".repeat(2));
    let accounts = [
        (
            &tenants.a,
            json!({"channel_type": "whatsapp", "display_name": "WA", "config": {
            "phone_number_id": "106540352242922", "waba_id": "102290129340398", "signup_code": "AQB-chaos-code"}}),
        ),
        (
            &tenants.a,
            json!({"channel_type": "email", "display_name": "Mail", "config": {
            "domain": "mail.chaos.example", "from_address": "tours@mail.chaos.example"}}),
        ),
        (
            &tenants.a,
            json!({"channel_type": "sms", "provider": "twilio", "display_name": "SMS", "config": {
            "account_sid": twilio_sid, "auth_token": SIM_TWILIO_TOKEN, "from": "+15005550006"}}),
        ),
        (&tenants.b, json!({"channel_type": "sms", "display_name": "SMS", "config": {}})),
    ];
    let url = format!("{base}/api/v1/channel-accounts");
    for (tenant, body) in accounts {
        let response = client.post(&url).bearer_auth(&tenant.api_key).json(&body).send().await?;
        let status = response.status();
        let created: Value = response.json().await.unwrap_or_default();
        let id = created["id"].as_str().with_context(|| format!("creating {} ({status}): {created}", body))?;
        // SES reports the domain verified on its second look.
        let mut verified = Value::Null;
        for _ in 0..3 {
            verified =
                client.post(format!("{url}/{id}/verify")).bearer_auth(&tenant.api_key).send().await?.json().await?;
            if verified["status"] == "active" {
                break;
            }
        }
        if verified["status"] != "active" {
            bail!("channel account {} did not become active: {verified}", body["channel_type"]);
        }
    }
    Ok(())
}

/// Polls `GET {base}{path}` until it answers 200.
pub async fn wait_http(client: &reqwest::Client, url: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let ok = client.get(url).timeout(Duration::from_secs(3)).send().await.is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{url} did not answer 200 within {}s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `N` distinct TCP ports on 127.0.0.1 that are free now, below Linux's ephemeral range
/// (32768-60999). The port the kernel picks for port 0 is from that range, and between our check
/// and the service's bind an outgoing connection (the service's own to PostgreSQL, the
/// simulator's webhooks) could take it: a CI run failed with "Address already in use" that way.
/// Distinct, because none of them is bound until its process starts: picked one by one, two of
/// them came out equal in a CI run, and PostgreSQL took the port meant for `serve`.
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let mut ports = [0u16; N];
    let mut found = 0;
    for _ in 0..1000 {
        if found == N {
            break;
        }
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if !ports[..found].contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports[found] = port;
            found += 1;
        }
    }
    if found < N {
        bail!("not {N} free ports between 20000 and 32000 on 127.0.0.1");
    }
    Ok(ports)
}
