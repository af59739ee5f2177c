//! Counting: what the load driver was told, what the simulator's ledger received, and what the
//! database says, joined per message by its token; then a text table and JSON.
//!
//! Per accepted message: *once* = exactly one send the provider accepted; *duplicated* = more
//! than one; *failed* = none, and its chain ended `failed`/`canceled`; *lost* = none, and not
//! failed; *unsettled* = its chain ends `queued`/`sending`/`unknown`/`pending_review`; *behind*
//! = the provider accepted it (and the simulator then reports it delivered) but the database
//! still says `sent`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::load::{Category, LoadStats, Outcome};
use crate::procs::History;

const SEND_OPERATIONS: [&str; 4] = ["send_message", "SendEmail", "create_message", "Publish"];
pub const OPEN_STATUSES: [&str; 4] = ["queued", "sending", "unknown", "pending_review"];

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub accepted: u32,
    pub once: u32,
    pub lost: u32,
    pub duplicated: u32,
    pub failed: u32,
    pub unsettled: u32,
    pub behind: u32,
    /// Accepted, yet no row in the database (an acknowledged commit that vanished).
    pub missing_in_db: u32,
    /// More than one stored message for one Idempotency-Key.
    pub stored_twice: u32,
    /// Never accepted by the API, yet sent by a provider.
    pub sent_unaccepted: u32,
    pub rejected: u32,
    pub gave_up: u32,
    pub client_retries: u32,
    /// Final status of each accepted message's chain.
    pub statuses: BTreeMap<String, u32>,
    /// A few message ids per problem (`lost`, `duplicated`, …), to look up in the kept database.
    pub examples: BTreeMap<&'static str, Vec<String>>,
}

impl Counts {
    fn example(&mut self, problem: &'static str, id: Option<uuid::Uuid>, seq: u32) {
        let list = self.examples.entry(problem).or_default();
        if list.len() < 5 {
            list.push(id.map_or(format!("seq {seq}"), |id| format!("{id} (seq {seq})")));
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub at_secs: f64,
    pub what: String,
    pub recovered_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub passed: bool,
    pub error: Option<String>,
    pub missed: Vec<String>,
    pub seed: u64,
    pub messages: u32,
    pub rate: f64,
    pub faults: Vec<Fault>,
    pub load: Option<LoadStats>,
    /// Seconds from the last fault's recovery (or the end of the load) until nothing (but SNS)
    /// was open; `None` if that never happened within the window.
    pub settled_secs: Option<f64>,
    pub settle_window_secs: u64,
    pub channels: BTreeMap<Category, Counts>,
    pub processes: Vec<History>,
    /// Per process: its log's errors and warnings.
    pub logs: BTreeMap<String, LogSummary>,
    /// `GET /sim/webhooks` summarised, when the simulator has it.
    pub sim_webhooks: Option<Value>,
    pub run_dir: String,
    pub wall_secs: f64,
}

/// What a process logged at warning level and above, most frequent first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogSummary {
    pub errors: u32,
    pub warnings: u32,
    pub top_errors: Vec<String>,
    pub top_warnings: Vec<String>,
}

/// Reads a process's log: JSON lines from switchboard, plain lines from cpaas-sim and from a
/// process's last words (`switchboard: error: …`, panics).
pub fn summarise_log(path: &std::path::Path) -> Option<LogSummary> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut errors: HashMap<String, u32> = HashMap::new();
    let mut warnings: HashMap<String, u32> = HashMap::new();
    for line in text.lines() {
        let (level, message) = match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                let mut message = v["message"].as_str().unwrap_or_default().to_owned();
                if let Some(error) = v["error"].as_str() {
                    message = format!("{message}: {}", error.chars().take(100).collect::<String>());
                }
                (v["level"].as_str().unwrap_or_default().to_owned(), message)
            }
            Err(_) => {
                let plain = plain_message(line);
                let level = if line.contains("panicked") || line.starts_with("switchboard: ") || line.contains("ERROR")
                {
                    "ERROR"
                } else if line.contains("WARN") {
                    "WARN"
                } else {
                    continue;
                };
                (level.to_owned(), plain)
            }
        };
        match level.as_str() {
            "ERROR" => *errors.entry(message).or_default() += 1,
            "WARN" => *warnings.entry(message).or_default() += 1,
            _ => {}
        }
    }
    let top = |map: &HashMap<String, u32>| {
        let mut items: Vec<(&String, &u32)> = map.iter().collect();
        items.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        items.into_iter().take(3).map(|(m, n)| format!("{n}× {m}")).collect()
    };
    Some(LogSummary {
        errors: errors.values().sum(),
        warnings: warnings.values().sum(),
        top_errors: top(&errors),
        top_warnings: top(&warnings),
    })
}

/// A human-formatted tracing line (cpaas-sim's) reduced to level, target and message: colours,
/// the timestamp and the varying `key=value` fields are dropped, so equal events group together.
fn plain_message(line: &str) -> String {
    let mut text = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    let mut words: Vec<&str> = text.split_whitespace().collect();
    if words.first().is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit())) {
        words.remove(0);
    }
    let end = words.iter().position(|w| w.contains('=')).unwrap_or(words.len());
    words[..end].join(" ").chars().take(160).collect()
}

/// A message row, with the token found in its content.
#[derive(Debug)]
pub struct StoredMessage {
    id: uuid::Uuid,
    superseded_by: Option<uuid::Uuid>,
    supersedes: Option<uuid::Uuid>,
    status: String,
    seq: Option<u32>,
}

/// Every sequence number whose token appears in `text`.
fn seqs_in(text: &str, prefix: &str) -> Vec<u32> {
    let mut found: Vec<u32> = text
        .match_indices(prefix)
        .filter_map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            rest[digits.len()..].starts_with('.').then(|| digits.parse().ok())?
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Accepted provider sends per sequence number, from `GET /sim/ledger`.
pub fn ledger_sends(ledger: &[Value], run: &str) -> HashMap<u32, u32> {
    let prefix = format!("chaos-{run}-");
    let mut sends = HashMap::new();
    for entry in ledger {
        let is_send = SEND_OPERATIONS.contains(&entry["operation"].as_str().unwrap_or_default());
        let outcome = entry["outcome"].as_str().unwrap_or_default();
        // `accepted:<later failure>` was accepted too; SNS's opted-out drop answers like a send.
        if !is_send || !(outcome.starts_with("accepted") || outcome.starts_with("dropped")) {
            continue;
        }
        for seq in seqs_in(&entry["body"].to_string(), &prefix) {
            *sends.entry(seq).or_insert(0) += 1;
        }
    }
    sends
}

/// The run's messages, read-only.
pub async fn message_rows(
    pool: &sqlx::PgPool,
    tenants: &[uuid::Uuid],
    run: &str,
) -> anyhow::Result<Vec<StoredMessage>> {
    let prefix = format!("chaos-{run}-");
    let rows = sqlx::query(
        "SELECT id, supersedes, superseded_by, status, content::text AS content
         FROM communications.messages WHERE tenant_id = ANY($1)",
    )
    .bind(tenants)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let content: String = row.try_get("content")?;
            Ok(StoredMessage {
                id: row.try_get("id")?,
                supersedes: row.try_get("supersedes")?,
                superseded_by: row.try_get("superseded_by")?,
                status: row.try_get("status")?,
                seq: seqs_in(&content, &prefix).first().copied(),
            })
        })
        .collect()
}

/// A fallback or retry successor replaces its message: the chain's last status counts.
fn last_status<'a>(by_id: &HashMap<uuid::Uuid, &'a StoredMessage>, mut row: &'a StoredMessage) -> String {
    for _ in 0..100 {
        match row.superseded_by.and_then(|id| by_id.get(&id)) {
            Some(next) => row = next,
            None => break,
        }
    }
    row.status.clone()
}

/// Joins the three sources into counts per channel.
pub fn count(
    messages: u32,
    outcomes: &[Outcome],
    sends: &HashMap<u32, u32>,
    rows: &[StoredMessage],
) -> BTreeMap<Category, Counts> {
    let by_id: HashMap<uuid::Uuid, &StoredMessage> = rows.iter().map(|r| (r.id, r)).collect();
    let mut roots: HashMap<u32, Vec<&StoredMessage>> = HashMap::new();
    for row in rows.iter().filter(|r| r.supersedes.is_none()) {
        if let Some(seq) = row.seq {
            roots.entry(seq).or_default().push(row);
        }
    }
    let mut channels: BTreeMap<Category, Counts> = Category::ALL.iter().map(|c| (*c, Counts::default())).collect();
    for seq in 0..messages {
        let category = Category::of(seq);
        let counts = channels.entry(category).or_default();
        let outcome = outcomes.get(seq as usize).cloned().unwrap_or_default();
        let sent = sends.get(&seq).copied().unwrap_or(0);
        let stored = roots.get(&seq).map_or(&[][..], Vec::as_slice);
        counts.client_retries += outcome.retries;
        if stored.len() > 1 {
            counts.stored_twice += 1;
            counts.example("stored twice", outcome.id, seq);
        }
        if sent > 1 {
            counts.duplicated += 1;
            counts.example("duplicated", outcome.id, seq);
        }
        let Some(id) = outcome.id else {
            counts.rejected += u32::from(outcome.rejected.is_some());
            counts.gave_up += u32::from(outcome.gave_up);
            counts.sent_unaccepted += u32::from(sent > 0);
            counts.example("not accepted", None, seq);
            continue;
        };
        counts.accepted += 1;
        let status = match by_id.get(&id).or(stored.first()) {
            Some(row) => last_status(&by_id, row),
            None => {
                counts.missing_in_db += 1;
                counts.example("missing in db", Some(id), seq);
                "missing".to_owned()
            }
        };
        match sent {
            0 if matches!(status.as_str(), "failed" | "canceled") => counts.failed += 1,
            0 => {
                counts.lost += 1;
                counts.example("lost", Some(id), seq);
            }
            1 => counts.once += 1,
            _ => {}
        }
        if OPEN_STATUSES.contains(&status.as_str()) {
            counts.unsettled += 1;
            counts.example("unsettled", Some(id), seq);
        }
        if sent > 0 && status == "sent" && category.has_targets() {
            counts.behind += 1;
            counts.example("behind", Some(id), seq);
        }
        *counts.statuses.entry(status).or_default() += 1;
    }
    channels
}

/// The targets this scenario missed (SNS is reported, never a target).
pub fn missed(report: &ScenarioReport, strict_statuses: bool) -> Vec<String> {
    let mut missed = Vec::new();
    for (category, c) in report.channels.iter().filter(|(c, _)| c.has_targets()) {
        let checks = [
            (c.lost, "lost"),
            (c.duplicated, "duplicated"),
            (c.unsettled, "unsettled"),
            (c.missing_in_db, "missing in the database"),
            (c.stored_twice, "stored twice"),
            (c.rejected, "rejected by the API"),
            (c.gave_up, "never accepted"),
            (if strict_statuses { c.behind } else { 0 }, "statuses behind"),
        ];
        for (n, what) in checks.into_iter().filter(|(n, _)| *n > 0) {
            missed.push(format!("{}: {n} {what}", category.label()));
        }
    }
    for process in &report.processes {
        if !process.unexpected_exits.is_empty() {
            missed.push(format!(
                "{} exited unexpectedly {}× ({})",
                process.role,
                process.unexpected_exits.len(),
                process.unexpected_exits.join(", ")
            ));
        }
    }
    missed
}

/// The human-readable report of one scenario.
pub fn render(r: &ScenarioReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let verdict = if r.error.is_some() {
        "ERROR"
    } else if r.passed {
        "PASS"
    } else {
        "FAIL"
    };
    let _ = writeln!(
        out,
        "\n== {} — {verdict}  ({} messages @ {}/s, seed {}, {:.0}s)",
        r.scenario, r.messages, r.rate, r.seed, r.wall_secs
    );
    if let Some(error) = &r.error {
        let _ = writeln!(out, "   error: {error}");
    }
    for f in &r.faults {
        let _ = writeln!(out, "   fault +{:.1}s: {} (recovered +{:.1}s)", f.at_secs, f.what, f.recovered_secs);
    }
    if let Some(l) = &r.load {
        let _ = writeln!(
            out,
            "   load: {} accepted in {:.1}s ({:.0}/s), latency p50 {} ms p99 {} ms max {} ms; client retries {} \
             (connect {}, timeout {}, 5xx {}, other {}); rejected {}, gave up {}",
            l.accepted,
            l.seconds,
            l.accepted_per_sec,
            l.latency_p50_ms,
            l.latency_p99_ms,
            l.latency_max_ms,
            l.retries,
            l.retries_connect,
            l.retries_timeout,
            l.retries_5xx,
            l.retries_other,
            l.rejected,
            l.gave_up
        );
        if let Some(first) = &l.first_rejection {
            let _ = writeln!(out, "   first rejection: {first}");
        }
    }
    let settled = r.settled_secs.map_or(format!("NOT within {}s", r.settle_window_secs), |s| format!("after {s:.1}s"));
    let _ = writeln!(out, "   settled (nothing but SNS queued/sending/unknown): {settled}");
    if !r.channels.is_empty() {
        let _ = writeln!(
            out,
            "   {:<14}{:>9}{:>7}{:>6}{:>5}{:>8}{:>10}{:>8}  final statuses",
            "channel", "accepted", "once", "lost", "dup", "failed", "unsettled", "behind"
        );
    }
    for (category, c) in &r.channels {
        let statuses: Vec<String> = c.statuses.iter().map(|(s, n)| format!("{s}={n}")).collect();
        let mut extra = Vec::new();
        for (n, what) in [
            (c.missing_in_db, "missing-in-db"),
            (c.stored_twice, "stored-twice"),
            (c.sent_unaccepted, "sent-unaccepted"),
            (c.rejected, "rejected"),
            (c.gave_up, "gave-up"),
        ] {
            if n > 0 {
                extra.push(format!("{what}={n}"));
            }
        }
        let note = if category.has_targets() { "" } else { "  (no target: SNS cannot be settled)" };
        let _ = writeln!(
            out,
            "   {:<14}{:>9}{:>7}{:>6}{:>5}{:>8}{:>10}{:>8}  {} {}{note}",
            category.label(),
            c.accepted,
            c.once,
            c.lost,
            c.duplicated,
            c.failed,
            c.unsettled,
            c.behind,
            statuses.join(" "),
            extra.join(" ")
        );
    }
    for (category, c) in &r.channels {
        for (problem, ids) in &c.examples {
            let _ = writeln!(out, "   e.g. {} {problem}: {}", category.label(), ids.join(", "));
        }
    }
    for p in &r.processes {
        let _ = writeln!(
            out,
            "   process {:<9} starts {}, killed by chaos {}, unexpected exits {}{}; at the end: {}",
            p.role,
            p.starts,
            p.killed_by_chaos,
            p.unexpected_exits.len(),
            if p.unexpected_exits.is_empty() { String::new() } else { format!(" ({})", p.unexpected_exits.join(", ")) },
            p.final_exit.as_deref().unwrap_or("?")
        );
    }
    for (role, log) in &r.logs {
        let _ = writeln!(out, "   {role}.log: {} errors, {} warnings", log.errors, log.warnings);
        for line in log.top_errors.iter().map(|l| ("error", l)).chain(log.top_warnings.iter().map(|l| ("warning", l))) {
            let _ = writeln!(out, "      {} {}", line.0, line.1);
        }
    }
    match r.sim_webhooks.as_ref().and_then(|w| w["providers"].as_object()) {
        Some(providers) => {
            for (provider, s) in providers {
                let _ = writeln!(
                    out,
                    "   sim webhooks {provider:<7} {} posted, {} attempts: delivered {} ({} after a retry), \
                     retrying {}, given up {}",
                    s["webhooks"],
                    s["attempts"],
                    s["delivered"],
                    s["delivered_after_retry"],
                    s["retrying"],
                    s["given_up"]
                );
            }
        }
        None => {
            if let Some(other) = &r.sim_webhooks {
                let _ = writeln!(out, "   sim webhooks: {other}");
            }
        }
    }
    for m in &r.missed {
        let _ = writeln!(out, "   MISSED {m}");
    }
    if r.run_dir.is_empty() {
        let _ = writeln!(out, "   logs: removed (passed; --keep keeps them)");
    } else {
        let _ = writeln!(out, "   logs and database: {}", r.run_dir);
    }
    out
}

/// `GET /sim/webhooks` (every attempt at posting a callback, with its delivery id, outcome and
/// whether the simulated provider will try again), per provider: webhooks, attempts, delivered
/// (of which after a retry), still retrying, and given up. Anything else is passed through.
pub fn summarise_webhooks(value: &Value) -> Value {
    let Some(entries) = value.as_array() else { return value.clone() };
    // provider -> delivery -> (attempts, last outcome delivered, a retry is scheduled)
    let mut deliveries: BTreeMap<String, BTreeMap<u64, (u32, bool, bool)>> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for entry in entries {
        let provider = entry["provider"].as_str().unwrap_or("?").to_owned();
        let outcome = entry["outcome"].as_str().unwrap_or("?");
        // "error: <details>" varies per attempt; its class is enough here.
        let class = outcome.split(':').next().unwrap_or(outcome).to_owned();
        *outcomes.entry(format!("{provider} {class}")).or_default() += 1;
        let state = deliveries.entry(provider).or_default().entry(entry["delivery"].as_u64().unwrap_or(0)).or_default();
        state.0 += 1;
        state.1 = outcome == "delivered";
        state.2 = !entry["retry_in_ms"].is_null();
    }
    let providers: BTreeMap<String, Value> = deliveries
        .into_iter()
        .map(|(provider, all)| {
            let count = |f: &dyn Fn(&(u32, bool, bool)) -> bool| all.values().filter(|s| f(s)).count();
            let summary = serde_json::json!({
                "webhooks": all.len(),
                "attempts": all.values().map(|s| u64::from(s.0)).sum::<u64>(),
                "delivered": count(&|s| s.1),
                "delivered_after_retry": count(&|s| s.1 && s.0 > 1),
                "retrying": count(&|s| !s.1 && s.2),
                "given_up": count(&|s| !s.1 && !s.2),
            });
            (provider, summary)
        })
        .collect();
    serde_json::json!({"providers": providers, "attempt_outcomes": outcomes})
}

#[cfg(test)]
mod tests {
    use super::{plain_message, seqs_in};

    #[test]
    fn plain_log_lines_group() {
        let line = "\u{1b}[2m2026-11-26T04:04:57.302581Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m \u{1b}[2mcpaas_sim::callbacks\u{1b}[0m\u{1b}[2m:\u{1b}[0m automatic status callback failed \u{1b}[3merror\u{1b}[0m\u{1b}[2m=\u{1b}[0mPOST http://x";
        assert_eq!(plain_message(line), "WARN cpaas_sim::callbacks: automatic status callback failed");
    }

    #[test]
    fn tokens_are_found_whole() {
        let text = r#"{"text":"chaos-r1-10.","subject":"chaos-r1-10."} chaos-r1-1. chaos-r1-7x chaos-r2-3."#;
        assert_eq!(seqs_in(text, "chaos-r1-"), vec![1, 10]);
    }
}
