//! The requests a benchmark makes: sends through `POST /api/v1/messages` (optionally with
//! idempotency keys) or Hasura events through `POST /api/v1/events`, flat out or paced.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::BenchArgs;

/// The Hasura trigger (and template) the event mode's rule listens to.
const TRIGGER: &str = "bench_booking_confirmed";
/// The event mode's SMS: these around the booking's reference.
const BOOKED_BEFORE: &str = "Your booking ";
const BOOKED_AFTER: &str = " is confirmed";

/// What the clients observed.
#[derive(Debug, Default)]
pub struct Load {
    /// Each request's round trip, in ms.
    pub request_ms: Vec<f64>,
    /// When each request (by number) was sent, on the clock the simulator's ledger uses.
    pub sent_at: Vec<(usize, chrono::DateTime<chrono::Utc>)>,
    /// Paced: how long after its due time the latest request started, in ms.
    pub max_lag_ms: f64,
}

/// The event mode's template and rule: a confirmed booking texts its customer.
pub async fn prepare_events(client: &reqwest::Client, base: &str, api_key: &str) -> anyhow::Result<()> {
    let template = json!({
        "name": TRIGGER,
        "default_locale": "en",
        "variants": [{"channel": "sms", "locale": "en", "body": {"text": format!("{BOOKED_BEFORE}{{{{ data.new.booking_ref }}}}{BOOKED_AFTER}")}}]
    });
    created(client, &format!("{base}/api/v1/templates"), api_key, &template).await.context("creating the template")?;
    let rule = json!({
        "name": "Benchmark booking confirmations",
        "event": TRIGGER,
        "conditions": [{"path": "data.new.status", "equals": "CONFIRMED", "changed": true}],
        "template_name": TRIGGER,
        "audience": [{"phone": "data.new.customer_phone"}],
        "channels": ["sms"]
    });
    created(client, &format!("{base}/api/v1/trigger-rules"), api_key, &rule)
        .await
        .context("creating the trigger rule")?;
    Ok(())
}

async fn created(client: &reqwest::Client, url: &str, api_key: &str, body: &Value) -> anyhow::Result<()> {
    let response = client.post(url).bearer_auth(api_key).json(body).send().await?;
    let status = response.status();
    if status != StatusCode::CREATED {
        bail!("{url} answered {status}: {}", response.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Makes `args.messages` requests from `args.clients` clients. Clients take the next request
/// from a shared counter; paced, request n is due at start + n / rate and a client sleeps until
/// then, so a slow service makes requests late but never bunches them ahead of schedule.
pub async fn run(client: &reqwest::Client, base: &str, api_key: &str, args: &BenchArgs) -> anyhow::Result<Load> {
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let (client, base, key, next, run_id, args) =
            (client.clone(), base.to_owned(), api_key.to_owned(), next.clone(), run_id.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut load = Load::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= args.messages {
                    return Ok::<_, anyhow::Error>(load);
                }
                if let Some(rate) = args.rate {
                    let due = start + Duration::from_secs_f64(n as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    load.max_lag_ms = load.max_lag_ms.max(due.elapsed().as_secs_f64() * 1000.0);
                }
                let sent = Instant::now();
                load.sent_at.push((n, chrono::Utc::now()));
                let to = recipient(n, args.recipients);
                if args.events {
                    post_event(&client, &base, &key, n, &to).await?;
                } else {
                    let key_header = args.idempotency_keys.then(|| format!("bench-{run_id}-{n}"));
                    post_message(&client, &base, &key, n, &to, key_header).await?;
                }
                load.request_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut total = Load { request_ms: Vec::with_capacity(args.messages), sent_at: Vec::new(), max_lag_ms: 0.0 };
    for task in tasks {
        let load = task.await??;
        total.request_ms.extend(load.request_ms);
        total.sent_at.extend(load.sent_at);
        total.max_lag_ms = total.max_lag_ms.max(load.max_lag_ms);
    }
    Ok(total)
}

/// The SMS recipient of request `n`, whichever way it is made: a number of its own, or one of
/// `recipients` in turn.
pub fn recipient(n: usize, recipients: Option<u64>) -> String {
    let number = recipients.map_or(n as u64, |count| n as u64 % count);
    format!("+491{number:010}")
}

/// What request `n`'s SMS says, whichever way it is made. Numbers may repeat (`--recipients`),
/// texts never: the run's accounting matches the ledger by them.
pub fn text(n: usize, events: bool) -> String {
    if events { format!("{BOOKED_BEFORE}{}{BOOKED_AFTER}", booking_ref(n)) } else { format!("bench {n}") }
}

fn booking_ref(n: usize) -> String {
    format!("BK-{n:07}")
}

async fn post_message(
    client: &reqwest::Client,
    base: &str,
    api_key: &str,
    n: usize,
    to: &str,
    idempotency_key: Option<String>,
) -> anyhow::Result<()> {
    let body = json!({"to": {"phone": to}, "channels": "sms", "content": {"text": text(n, false)}});
    let mut request = client.post(format!("{base}/api/v1/messages")).bearer_auth(api_key).json(&body);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await?;
    if !accepted(response.status()) {
        bail!("message {n} was not accepted: {} {}", response.status(), response.text().await.unwrap_or_default());
    }
    Ok(())
}

async fn post_event(client: &reqwest::Client, base: &str, api_key: &str, n: usize, to: &str) -> anyhow::Result<()> {
    let response = client
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(api_key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(hasura_event(n, to))
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    if !accepted(status) {
        bail!("event {n} was not accepted: {status} {text}");
    }
    // Only the number of messages is checked: the driver shares the machine with the service,
    // so it reads no more of the answer than that.
    #[derive(serde::Deserialize)]
    struct Outcome {
        messages: Vec<serde::de::IgnoredAny>,
    }
    let outcome: Outcome = serde_json::from_str(&text).with_context(|| format!("event {n}: {status} {text}"))?;
    if outcome.messages.len() != 1 {
        bail!("event {n} should have made exactly one message: {status} {text}");
    }
    Ok(())
}

fn accepted(status: StatusCode) -> bool {
    matches!(status, StatusCode::OK | StatusCode::CREATED | StatusCode::ACCEPTED)
}

/// A Hasura event-trigger payload as Hasura posts it: a booking row updated to CONFIRMED, with
/// an event id of its own (Hasura's are UUIDs). Written as text: the driver shares the machine
/// with the service, and building a JSON tree per request cost it a third more than a send's.
fn hasura_event(n: usize, to: &str) -> String {
    let row = |status: &str| {
        format!(r#"{{"id": {n}, "booking_ref": "{}", "status": "{status}", "customer_phone": "{to}"}}"#, booking_ref(n))
    };
    format!(
        r#"{{"event": {{"session_variables": {{"x-hasura-role": "admin"}}, "op": "UPDATE", "data": {{"old": {old}, "new": {new}}}, "trace_context": {{"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}}}}, "created_at": "{at}", "id": "{id}", "delivery_info": {{"max_retries": 3, "current_retry": 0}}, "trigger": {{"name": "{TRIGGER}"}}, "table": {{"schema": "public", "name": "bookings"}}}}"#,
        old = row("PENDING"),
        new = row("CONFIRMED"),
        at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f"),
        id = uuid::Uuid::now_v7(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hasura_payload_is_json_with_the_booking() {
        let to = super::recipient(42, None);
        let event: serde_json::Value = serde_json::from_str(&super::hasura_event(42, &to)).expect("JSON");
        assert_eq!(event["trigger"]["name"], super::TRIGGER);
        assert_eq!(event["event"]["data"]["new"]["booking_ref"], "BK-0000042");
        assert_eq!(event["event"]["data"]["new"]["customer_phone"], to);
        assert_eq!(event["event"]["data"]["old"]["status"], "PENDING");
        assert_eq!(super::text(42, true), "Your booking BK-0000042 is confirmed");
        // Read as Hasura's payloads are, without the intermediate tree: the path measured.
        let read = communications::triggers::hasura::read(super::hasura_event(42, &to).as_bytes()).expect("read");
        assert_eq!(read.document["data"]["new"]["booking_ref"], "BK-0000042");
    }

    #[test]
    fn numbers_are_each_requests_own_or_taken_in_turn() {
        assert_eq!(super::recipient(42, None), "+4910000000042");
        assert_eq!(super::recipient(42, Some(10)), "+4910000000002");
        assert_ne!(super::text(2, false), super::text(12, false));
    }
}
