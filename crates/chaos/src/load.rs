//! The load driver: `messages` sends at `rate` per second over keep-alive connections to
//! `POST /api/v1/messages`, round-robin over the four channel/provider pairs. Each message
//! carries a unique token (`chaos-<run>-<seq>`) in its text, so the simulator's ledger can be
//! counted per message whatever the provider does with it, and the same token as its
//! Idempotency-Key: a request that fails (refused connection while serve is down, 5xx, a
//! timeout) is sent again with the same key until it is accepted, as a real client would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::setup::Tenants;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Whatsapp,
    Email,
    SmsTwilio,
    SmsSns,
}

impl Category {
    pub const ALL: [Category; 4] = [Category::Whatsapp, Category::Email, Category::SmsTwilio, Category::SmsSns];

    pub fn of(seq: u32) -> Self {
        Self::ALL[seq as usize % Self::ALL.len()]
    }

    pub fn label(self) -> &'static str {
        match self {
            Category::Whatsapp => "whatsapp/meta",
            Category::Email => "email/ses",
            Category::SmsTwilio => "sms/twilio",
            Category::SmsSns => "sms/sns",
        }
    }

    /// SNS SMS has no delivery callbacks, so an interrupted send can never be settled: it is
    /// reported but held to no target.
    pub fn has_targets(self) -> bool {
        self != Category::SmsSns
    }
}

pub fn token(run: &str, seq: u32) -> String {
    // The trailing dot ends the number, so `…-1.` is never found inside `…-10.`.
    format!("chaos-{run}-{seq}.")
}

fn body(run: &str, seq: u32) -> Value {
    let token = token(run, seq);
    // Many recipients, as notifications have, so contacts are created in bulk too.
    let phone = format!("+49151{:07}", seq % 5000);
    match Category::of(seq) {
        Category::Whatsapp => json!({"to": {"phone": phone}, "channels": "whatsapp", "content": {"text": token}}),
        Category::Email => json!({"to": {"email": format!("chaos{}@example.org", seq % 5000)}, "channels": "email",
                                  "content": {"subject": token, "text": token}}),
        Category::SmsTwilio | Category::SmsSns => {
            json!({"to": {"phone": phone}, "channels": "sms", "content": {"text": token}})
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub base: String,
    pub run: String,
    pub messages: u32,
    pub rate: f64,
    pub clients: usize,
    /// A message still not accepted this long after its first try is given up.
    pub give_up_after: Duration,
}

/// What happened to one message's requests.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The message id the API answered (the same on every replay of the key).
    pub id: Option<uuid::Uuid>,
    /// A 4xx other than 408/409/429: the request itself was refused (a bug in the suite or the service).
    pub rejected: Option<String>,
    pub gave_up: bool,
    pub retries: u32,
    pub latency: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadStats {
    pub accepted: u32,
    pub rejected: u32,
    pub gave_up: u32,
    /// Requests sent again with the same key, and why.
    pub retries: u32,
    pub retries_connect: u32,
    pub retries_timeout: u32,
    pub retries_5xx: u32,
    pub retries_other: u32,
    pub seconds: f64,
    pub accepted_per_sec: f64,
    /// From a message's first try to its acceptance, retries included.
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    pub latency_max_ms: u64,
    pub first_rejection: Option<String>,
}

enum Attempt {
    Accepted(uuid::Uuid),
    Rejected(String),
    Retry(&'static str),
}

async fn attempt(client: &reqwest::Client, url: &str, key: &str, api_key: &str, body: &Value) -> Attempt {
    let response = match client.post(url).bearer_auth(api_key).header("Idempotency-Key", key).json(body).send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => return Attempt::Retry("timeout"),
        Err(error) if error.is_connect() => return Attempt::Retry("connect"),
        // A connection reset mid-request (serve killed) or a closed keep-alive connection.
        Err(_) => return Attempt::Retry("other"),
    };
    let status = response.status();
    if status.is_server_error() {
        return Attempt::Retry("5xx");
    }
    if matches!(status.as_u16(), 408 | 409 | 429) {
        return Attempt::Retry("other");
    }
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Attempt::Rejected(format!("{status}: {text}"));
    }
    match serde_json::from_str::<Value>(&text).ok().and_then(|v| v["id"].as_str()?.parse().ok()) {
        Some(id) => Attempt::Accepted(id),
        None => Attempt::Rejected(format!("{status} without an id: {text}")),
    }
}

/// Sends one message until it is accepted, refused, or given up; counts retries by kind.
async fn send_one(
    client: reqwest::Client,
    config: Arc<LoadConfig>,
    api_key: String,
    seq: u32,
    kinds: Arc<std::sync::Mutex<[u32; 4]>>,
) -> Outcome {
    let url = format!("{}/api/v1/messages", config.base);
    let key = token(&config.run, seq);
    let body = body(&config.run, seq);
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt(&client, &url, &key, &api_key, &body).await {
            Attempt::Accepted(id) => {
                outcome.id = Some(id);
                break;
            }
            Attempt::Rejected(why) => {
                outcome.rejected = Some(why);
                break;
            }
            Attempt::Retry(kind) => {
                if started.elapsed() >= config.give_up_after {
                    outcome.gave_up = true;
                    break;
                }
                outcome.retries += 1;
                let index = ["connect", "timeout", "5xx", "other"].iter().position(|k| *k == kind).unwrap_or(3);
                kinds.lock().unwrap_or_else(|e| e.into_inner())[index] += 1;
                // Jittered by the sequence number, so retries after an outage do not all land at once.
                let jitter = Duration::from_millis(u64::from(seq % 97));
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    outcome.latency = started.elapsed();
    outcome
}

/// Runs the whole load; one outcome per sequence number.
pub async fn run(config: LoadConfig, tenants: &Tenants) -> (Vec<Outcome>, LoadStats) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.clients)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default();
    let config = Arc::new(config);
    // At most `clients` requests in flight: messages released while all are busy wait their turn
    // (a client library's connection pool), so a stalled service backs the load up, as it would.
    let permits = Arc::new(tokio::sync::Semaphore::new(config.clients));
    let kinds = Arc::new(std::sync::Mutex::new([0u32; 4]));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(config.messages as usize);
    for seq in 0..config.messages {
        let due = started + Duration::from_secs_f64(f64::from(seq) / config.rate);
        tokio::time::sleep_until(due.into()).await;
        let (client, config, kinds, permits) = (client.clone(), config.clone(), kinds.clone(), permits.clone());
        let api_key = tenants.for_category(Category::of(seq)).api_key.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            send_one(client, config, api_key, seq, kinds).await
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.unwrap_or_default());
    }
    let seconds = started.elapsed().as_secs_f64();
    let kinds = *kinds.lock().unwrap_or_else(|e| e.into_inner());
    let mut latencies: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.id.is_some())
        .map(|o| u64::try_from(o.latency.as_millis()).unwrap_or(u64::MAX))
        .collect();
    latencies.sort_unstable();
    let percentile =
        |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied();
    let accepted = latencies.len() as u32;
    let stats = LoadStats {
        accepted,
        rejected: outcomes.iter().filter(|o| o.rejected.is_some()).count() as u32,
        gave_up: outcomes.iter().filter(|o| o.gave_up).count() as u32,
        retries: outcomes.iter().map(|o| o.retries).sum(),
        retries_connect: kinds[0],
        retries_timeout: kinds[1],
        retries_5xx: kinds[2],
        retries_other: kinds[3],
        seconds,
        accepted_per_sec: f64::from(accepted) / seconds.max(0.001),
        latency_p50_ms: percentile(0.5).unwrap_or(0),
        latency_p99_ms: percentile(0.99).unwrap_or(0),
        latency_max_ms: latencies.last().copied().unwrap_or(0),
        first_rejection: outcomes.iter().find_map(|o| o.rejected.clone()),
    };
    (outcomes, stats)
}
