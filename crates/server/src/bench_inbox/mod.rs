//! `switchboard bench-inbox`: the agents' inbox at volume. Seeds a tenant (100k conversations,
//! 1M messages by default), then measures through the real HTTP API with agents' sessions:
//! conversation lists (25 with unread counts: all, mine, unassigned), the unread badge, search,
//! and the time from an inbound WhatsApp webhook to its event on agents' live streams while 200
//! streams are connected.

mod seed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::Application;
use crate::database::Database;
use crate::settings::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct InboxBenchArgs {
    #[arg(long, default_value_t = 100_000)]
    pub conversations: i64,
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: i64,
    /// Live streams connected while inbound messages arrive.
    #[arg(long, default_value_t = 200)]
    pub streams: usize,
    /// Requests measured per list variant and for search.
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Inbound messages sent while the streams listen, at `--inbound-rate` per second.
    #[arg(long, default_value_t = 300)]
    pub inbound: usize,
    #[arg(long, default_value_t = 20.0)]
    pub inbound_rate: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Milliseconds at the 50th, 95th and 99th percentile.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of(mut millis: Vec<f64>) -> Self {
        millis.sort_by(f64::total_cmp);
        let at = |p: f64| millis.get(((millis.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
        Self { samples: millis.len(), p50: at(0.50), p95: at(0.95), p99: at(0.99) }
    }
}

#[derive(Debug, Serialize)]
pub struct InboxBenchReport {
    pub conversations: i64,
    pub messages: i64,
    pub seed_seconds: f64,
    pub list_all: Percentiles,
    pub list_mine: Percentiles,
    pub list_unassigned: Percentiles,
    pub unread_summary: Percentiles,
    pub search: Percentiles,
    /// The agent web UI's inbox page (Mine) and the page with a conversation open, server time
    /// plus the local HTTP round trip.
    pub inbox_page: Percentiles,
    pub inbox_page_with_thread: Percentiles,
    pub streams: usize,
    pub inbound: usize,
    pub inbound_per_second: f64,
    /// Webhook sent → event read on a stream, over every stream's delivery.
    pub inbound_to_stream: Percentiles,
    /// Deliveries that never came (should be 0).
    pub missed_deliveries: usize,
}

const AGENTS: usize = 10;
const PASSWORD: &str = "bench-password-0123";
const META_SECRET: &str = "bench-meta-app-secret";

pub async fn run(settings: &mut Settings, database: &Database, args: InboxBenchArgs) -> anyhow::Result<()> {
    if args.conversations < 1 || args.messages < args.conversations || args.streams < 1 || args.samples < 1 {
        bail!("need --conversations ≥ 1, --messages ≥ --conversations, --streams ≥ 1, --samples ≥ 1");
    }
    settings.http.bind = "127.0.0.1:0".parse()?;
    settings.dispatch.in_serve = false;
    settings.providers.meta_app_secret = META_SECRET.to_owned().into();
    let app = Application::build(settings, database.pool.clone()).await?;
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(app.run_until_stopped(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    }));

    let pool = &database.pool;
    let (tenant, slug, emails, agent_ids) = prepare(pool).await?;
    eprintln!("seeding {} conversations, {} messages…", args.conversations, args.messages);
    let seeded = seed::seed(pool, tenant, &agent_ids, args.conversations, args.messages).await?;
    eprintln!("seeded in {:.0} s; measuring", seeded.seconds);
    let mut sessions = Vec::with_capacity(AGENTS);
    for email in &emails {
        sessions.push(login(&base, &slug, email).await?);
    }
    let lists = |query: &'static str| format!("{base}/api/v1/conversations?limit=25{query}");
    let list_all = measure(&sessions, &lists(""), args.samples).await?;
    let list_mine = measure(&sessions, &lists("&assignee=me&status=open"), args.samples).await?;
    let list_unassigned = measure(&sessions, &lists("&assignee=unassigned&status=open"), args.samples).await?;
    let unread_summary = measure(&sessions, &format!("{base}/api/v1/conversations/summary"), args.samples).await?;
    let search = measure_search(&sessions, &base, args.conversations, args.samples).await?;
    let inbox_page = measure(&sessions, &format!("{base}/inbox?view=mine"), args.samples).await?;
    let some: Value = sessions[0].get(format!("{base}/api/v1/conversations?limit=1")).send().await?.json().await?;
    let open = some["items"][0]["id"].as_str().context("no conversation to open")?.to_owned();
    let inbox_page_with_thread = measure(&sessions, &format!("{base}/inbox?view=all&c={open}"), args.samples).await?;
    let (inbound_to_stream, missed, rate) = measure_streams(&sessions, &base, tenant, &args).await?;
    let report = InboxBenchReport {
        conversations: seeded.conversations,
        messages: seeded.messages,
        seed_seconds: seeded.seconds,
        list_all,
        list_mine,
        list_unassigned,
        unread_summary,
        search,
        inbox_page,
        inbox_page_with_thread,
        streams: args.streams,
        inbound: args.inbound,
        inbound_per_second: rate,
        inbound_to_stream,
        missed_deliveries: missed,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    let _ = stop.send(true);
    serving.await.context("the service panicked")??;
    Ok(())
}

/// A fresh tenant with its agents (one password hash for all: argon2 is slow on purpose).
async fn prepare(pool: &sqlx::PgPool) -> anyhow::Result<(uuid::Uuid, String, Vec<String>, Vec<uuid::Uuid>)> {
    let slug_text = format!("inbox-{}", uuid::Uuid::now_v7().simple());
    let slug = identity::tenants::Slug::parse(&slug_text[..30]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tenant = identity::tenants::create(pool, "Inbox benchmark", &slug).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let password = identity::agents::NewPassword::parse(PASSWORD.to_owned()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = identity::agents::hash_password(password).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut emails, mut ids) = (Vec::new(), Vec::new());
    for n in 0..AGENTS {
        let email = format!("agent{n}@bench.example");
        let parsed = identity::agents::Email::parse(&email).map_err(|e| anyhow::anyhow!("{e}"))?;
        let agent = identity::agents::create(
            pool,
            identity::agents::NewAgent {
                tenant_id: tenant.id,
                email: &parsed,
                name: &format!("Agent {n}"),
                role: kernel::auth::Role::Agent,
                password_hash: &hash,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        emails.push(email);
        ids.push(agent.id.0);
    }
    Ok((tenant.id.0, slug_text[..30].to_owned(), emails, ids))
}

/// A client sending the agent's session cookie with every request.
async fn login(base: &str, workspace: &str, email: &str) -> anyhow::Result<reqwest::Client> {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"workspace": workspace, "email": email, "password": PASSWORD}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("login of {email} failed: {}", response.status());
    }
    let session = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok()?.split(';').next())
        .find(|pair| pair.starts_with("sb_session="))
        .context("the login set no session cookie")?
        .to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("cookie", session.parse()?);
    Ok(reqwest::Client::builder().default_headers(headers).build()?)
}

/// `samples` GETs of `url`, one at a time, rotating through the agents (after a warm-up).
async fn measure(sessions: &[reqwest::Client], url: &str, samples: usize) -> anyhow::Result<Percentiles> {
    let mut millis = Vec::with_capacity(samples);
    for n in 0..samples + 20 {
        let client = &sessions[n % sessions.len()];
        let started = Instant::now();
        let response = client.get(url).send().await?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        response.bytes().await?;
        if n >= 20 {
            millis.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(Percentiles::of(millis))
}

async fn measure_search(
    sessions: &[reqwest::Client],
    base: &str,
    conversations: i64,
    samples: usize,
) -> anyhow::Result<Percentiles> {
    let mut millis = Vec::with_capacity(samples);
    for n in 0..samples + 20 {
        let word = seed::WORDS[(n * 7) % seed::WORDS.len()];
        // Single words, two words, and a reference only one old message has.
        let q = match n % 3 {
            0 => word.to_owned(),
            1 => format!("{word} {}", seed::WORDS[(n * 13 + 5) % seed::WORDS.len()]),
            _ => format!("ref{}x{}", (n as i64 * 31) % conversations, n % 10),
        };
        let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/conversations/search"), [("q", q.as_str())])?;
        let started = Instant::now();
        let response = sessions[n % sessions.len()].get(url).send().await?;
        if !response.status().is_success() {
            bail!("search {q}: {}", response.status());
        }
        response.bytes().await?;
        if n >= 20 {
            millis.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(Percentiles::of(millis))
}

type Arrivals = Arc<Mutex<HashMap<usize, Vec<Instant>>>>;

/// Connects the streams, sends inbound webhooks at the given rate, and measures each stream's
/// delivery of each; answers the percentiles, the deliveries that never came, and the rate.
async fn measure_streams(
    sessions: &[reqwest::Client],
    base: &str,
    tenant: uuid::Uuid,
    args: &InboxBenchArgs,
) -> anyhow::Result<(Percentiles, usize, f64)> {
    let arrivals: Arrivals = Arc::default();
    let mut readers = Vec::with_capacity(args.streams);
    for n in 0..args.streams {
        // Each stream its own connection, as 200 browser tabs would be.
        let response = sessions[n % sessions.len()].get(format!("{base}/api/v1/stream")).send().await?;
        if !response.status().is_success() {
            bail!("stream {n}: {}", response.status());
        }
        readers.push(tokio::spawn(read_stream(response, arrivals.clone())));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let webhook = reqwest::Client::new();
    let url = format!("{base}/api/webhooks/meta/{tenant}");
    let interval = Duration::from_secs_f64(1.0 / args.inbound_rate.max(0.1));
    let mut sent_at = HashMap::with_capacity(args.inbound);
    let started = Instant::now();
    for n in 0..args.inbound {
        tokio::time::sleep_until((started + interval * n as u32).into()).await;
        let contact = 1 + (n as i64 * 7919) % args.conversations;
        let body = meta_text(&seed::phone(contact), &format!("bench-marker-{n} wann fährt der Bus"), n).to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(META_SECRET.as_bytes())?;
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        sent_at.insert(n, Instant::now());
        let response = webhook
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await?;
        if response.status() != 200 {
            bail!("inbound webhook {n}: {}", response.status());
        }
    }
    let rate = args.inbound as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for reader in &readers {
        reader.abort();
    }
    let arrivals = arrivals.lock().map_err(|_| anyhow::anyhow!("a stream reader panicked"))?;
    let mut millis = Vec::new();
    let mut delivered = 0;
    for (n, at) in &arrivals.iter().flat_map(|(n, ats)| ats.iter().map(move |at| (n, at))).collect::<Vec<_>>() {
        if let Some(sent) = sent_at.get(n) {
            millis.push(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
            delivered += 1;
        }
    }
    let missed = (args.inbound * args.streams).saturating_sub(delivered);
    Ok((Percentiles::of(millis), missed, rate))
}

/// Records when each `bench-marker-N` message event arrives on this stream.
async fn read_stream(mut response: reqwest::Response, arrivals: Arrivals) {
    let mut buffer = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let now = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let Some(data) = frame.lines().find_map(|line| line.strip_prefix("data:")) else { continue };
            let Ok(event) = serde_json::from_str::<Value>(data.trim()) else { continue };
            let marker = event
                .pointer("/payload/preview")
                .and_then(Value::as_str)
                .and_then(|text| text.strip_prefix("bench-marker-")?.split(' ').next()?.parse::<usize>().ok());
            if let (Some(n), Ok(mut arrivals)) = (marker, arrivals.lock()) {
                arrivals.entry(n).or_default().push(now);
            }
        }
    }
}

/// A Meta webhook carrying one text message from `phone`.
fn meta_text(phone: &str, text: &str, n: usize) -> Value {
    let wa_id = phone.trim_start_matches('+');
    json!({"object": "whatsapp_business_account", "entry": [{"id": "bench-waba", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "bench-number"},
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, "id": format!("wamid.bench.{}.{n}", uuid::Uuid::now_v7().simple()),
                      "timestamp": chrono::Utc::now().timestamp().to_string(), "type": "text", "text": {"body": text}}]
    }}]}]})
}

fn print_text(report: &InboxBenchReport) {
    let line = |name: &str, p: &Percentiles| {
        println!(
            "  {name:<22} p50 {:>7.1} ms  p95 {:>7.1} ms  p99 {:>7.1} ms  ({} samples)",
            p.p50, p.p95, p.p99, p.samples
        )
    };
    println!(
        "switchboard bench-inbox: {} conversations, {} messages (seeded in {:.0} s)",
        report.conversations, report.messages, report.seed_seconds
    );
    line("list 25, all", &report.list_all);
    line("list 25, mine", &report.list_mine);
    line("list 25, unassigned", &report.list_unassigned);
    line("unread badge", &report.unread_summary);
    line("search", &report.search);
    line("inbox page (web UI)", &report.inbox_page);
    line("inbox page + thread", &report.inbox_page_with_thread);
    println!(
        "  inbound → stream with {} streams, {} messages at {:.1}/s:",
        report.streams, report.inbound, report.inbound_per_second
    );
    line("webhook → event", &report.inbound_to_stream);
    println!("  missed deliveries: {}", report.missed_deliveries);
}
