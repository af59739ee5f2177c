//! What a benchmark run found, judged by the simulator's ledger, as text or JSON.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::BenchArgs;
use super::cpu::CpuReport;
use super::load::{Load, text};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// `send`, `send with keys` or `events`.
    pub api: &'static str,
    /// `in-process` or `external`.
    pub target: &'static str,
    /// Requests per second when paced; absent: flat out.
    pub rate: Option<f64>,
    pub messages: usize,
    pub clients: usize,
    /// How many numbers the messages went to in turn; absent: each to a number of its own.
    pub recipients: Option<u64>,
    /// Messages sent (and ANALYZE run) before the measured ones.
    pub warm_up: usize,
    pub accept_seconds: f64,
    pub accepted_per_second: f64,
    /// From the first to the last provider request.
    pub dispatch_seconds: f64,
    pub dispatched_per_second: f64,
    /// Wall time from the first request to the last provider request.
    pub end_to_end_per_second: f64,
    /// The API's answer time as the clients saw it.
    pub request_ms_p50: f64,
    pub request_ms_p99: f64,
    /// Paced: the latest any request started after its due time.
    pub max_lag_ms: Option<f64>,
    /// Enqueue (`messages.created_at`) → the provider request.
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    /// The client's request → the provider request: all the service adds, batching included.
    pub request_to_provider_ms_p50: f64,
    pub request_to_provider_ms_p95: f64,
    pub request_to_provider_ms_p99: f64,
    pub lost: usize,
    pub duplicated: usize,
    /// With status callbacks: how many of the messages are `delivered` (all, unless some
    /// callbacks were lost); the CPU figures then include delivery tracking.
    pub delivered: Option<usize>,
    pub cpu: CpuReport,
}

/// What a run measured, for [`build`].
#[derive(Debug)]
pub struct Measured {
    pub started_at: DateTime<Utc>,
    pub accept_seconds: f64,
    pub load: Load,
    pub cpu: CpuReport,
    /// `(text, created_at)` of the run's messages.
    pub created: Vec<(String, DateTime<Utc>)>,
    /// With status callbacks: how many messages ended `delivered`.
    pub delivered: Option<usize>,
}

pub fn build(args: &BenchArgs, mut measured: Measured, ledger: &[cpaas_sim::LedgerEntry]) -> BenchReport {
    // By the SMS's text (Twilio's `Body`), which no two requests share; numbers may repeat.
    let mut by_text: HashMap<&str, Vec<&cpaas_sim::LedgerEntry>> = HashMap::new();
    for entry in ledger {
        if let Some(body) = entry.body.get("Body").and_then(serde_json::Value::as_str) {
            by_text.entry(body).or_default().push(entry);
        }
    }
    let lost = (0..args.messages).filter(|n| !by_text.contains_key(text(*n, args.events).as_str())).count();
    let duplicated = by_text.values().map(|sends| sends.len().saturating_sub(1)).sum();
    let mut latencies: Vec<f64> = measured
        .created
        .iter()
        .filter_map(|(body, at)| {
            let sent = by_text.get(body.as_str())?.first()?;
            Some((sent.received_at - *at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    let mut from_request: Vec<f64> = measured
        .load
        .sent_at
        .iter()
        .filter_map(|(n, at)| {
            let sent = by_text.get(text(*n, args.events).as_str())?.first()?;
            Some((sent.received_at - *at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    let first = ledger.iter().map(|e| e.received_at).min();
    let last = ledger.iter().map(|e| e.received_at).max();
    let seconds = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| match (from, to) {
        (Some(from), Some(to)) => ((to - from).num_microseconds().unwrap_or(0) as f64 / 1e6).max(f64::EPSILON),
        _ => f64::NAN,
    };
    let dispatch_seconds = seconds(first, last);
    let end_to_end_seconds = seconds(Some(measured.started_at), last);
    BenchReport {
        api: api(args),
        target: if args.external.is_some() { "external" } else { "in-process" },
        rate: args.rate,
        messages: args.messages,
        clients: args.clients,
        recipients: args.recipients,
        warm_up: args.warm_up,
        accept_seconds: measured.accept_seconds,
        accepted_per_second: args.messages as f64 / measured.accept_seconds,
        dispatch_seconds,
        dispatched_per_second: ledger.len() as f64 / dispatch_seconds,
        end_to_end_per_second: ledger.len() as f64 / end_to_end_seconds,
        request_ms_p50: percentile(&mut measured.load.request_ms, 0.50),
        request_ms_p99: percentile(&mut measured.load.request_ms, 0.99),
        max_lag_ms: args.rate.map(|_| measured.load.max_lag_ms),
        latency_ms_p50: percentile(&mut latencies, 0.50),
        latency_ms_p95: percentile(&mut latencies, 0.95),
        latency_ms_p99: percentile(&mut latencies, 0.99),
        request_to_provider_ms_p50: percentile(&mut from_request, 0.50),
        request_to_provider_ms_p95: percentile(&mut from_request, 0.95),
        request_to_provider_ms_p99: percentile(&mut from_request, 0.99),
        lost,
        duplicated,
        delivered: measured.delivered,
        cpu: measured.cpu,
    }
}

fn api(args: &BenchArgs) -> &'static str {
    match (args.events, args.idempotency_keys) {
        (true, _) => "events",
        (false, true) => "send with keys",
        (false, false) => "send",
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(((values.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

pub fn print_text(report: &BenchReport) {
    let pace = match report.rate {
        Some(rate) => format!("paced at {rate}/s"),
        None => "flat out".to_owned(),
    };
    let to = match report.recipients {
        Some(count) => format!("{count} numbers in turn"),
        None => "a number each".to_owned(),
    };
    let callbacks = if report.delivered.is_some() { ", with status callbacks" } else { "" };
    println!(
        "switchboard bench: {} messages to {to}, {} API clients; {}, {}, {pace}{callbacks}; after {} warm-up messages",
        report.messages, report.clients, report.api, report.target, report.warm_up
    );
    // Paced, throughput is the rate by construction: what a run shows is latency and cost.
    if report.rate.is_none() {
        print_throughput(report);
    }
    println!(
        "  enqueue → provider request latency: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        report.latency_ms_p50, report.latency_ms_p95, report.latency_ms_p99
    );
    println!(
        "  request → provider request latency: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        report.request_to_provider_ms_p50, report.request_to_provider_ms_p95, report.request_to_provider_ms_p99
    );
    print!("  API answer: p50 {:.1} ms, p99 {:.1} ms", report.request_ms_p50, report.request_ms_p99);
    match report.max_lag_ms {
        Some(lag) => println!("; latest start {lag:.1} ms behind schedule"),
        None => println!(),
    }
    let cpu = &report.cpu;
    println!(
        "  CPU ms/message: machine {:.3} (and {:.3} stolen), {}",
        cpu.machine_ms_per_message,
        cpu.steal_ms_per_message,
        parties(
            [cpu.postgres_ms_per_message, cpu.service_ms_per_message],
            [cpu.sim_ms_per_message, cpu.driver_ms_per_message],
            3
        ),
    );
    let switches = &cpu.switches_per_message;
    println!(
        "  context switches/message: machine {:.1}, {}",
        switches.machine,
        parties([switches.postgres, switches.service], [switches.sim, switches.driver], 1),
    );
    println!(
        "  machine busy {:.0} % of {} cores over the measured {:.2} s (first request to all {})",
        cpu.machine_busy * 100.0,
        cpu.cores,
        cpu.window_seconds,
        if report.delivered.is_some() { "delivered" } else { "dispatched" }
    );
    if report.rate.is_some() {
        print_throughput(report);
    }
    println!("  lost {}, duplicated {} (the simulator's ledger)", report.lost, report.duplicated);
    if let Some(delivered) = report.delivered {
        println!("  delivered {delivered} of {} (status callbacks applied)", report.messages);
    }
}

/// "postgres …, service …, sim …, driver …" to `precision` decimals; in process the simulator
/// and the driver have no figures of their own (they are the service's).
fn parties([postgres, service]: [f64; 2], [sim, driver]: [Option<f64>; 2], precision: usize) -> String {
    let optional = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.precision$}"));
    let in_process = if sim.is_none() { " (with sim and driver)" } else { "" };
    format!(
        "postgres {postgres:.precision$}, service {service:.precision$}{in_process}, sim {}, driver {}",
        optional(sim),
        optional(driver)
    )
}

fn print_throughput(report: &BenchReport) {
    println!("  accepted    {:>9.0}/s  ({:.2} s)", report.accepted_per_second, report.accept_seconds);
    println!(
        "  dispatched  {:>9.0}/s  ({:.2} s, first to last provider request)",
        report.dispatched_per_second, report.dispatch_seconds
    );
    println!("  end to end  {:>9.0}/s", report.end_to_end_per_second);
}
