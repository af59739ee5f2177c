//! A benchmark, not a check (ignored in the test run; `scripts/bench-web` runs it): how long
//! an inbound webhook takes to show in an agent's open inbox list, in a real Chromium. The
//! simulator posts each customer message as Meta would (signed webhook); the page records,
//! with a MutationObserver, when the message's text first appears in the list. Both clocks are
//! this machine's.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cpaas_sim::InboundSpec;
use serde_json::Value;

use super::Browser;
use crate::delivery::whatsapp;
use crate::helpers::spawn_app_with_sim;

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test]
#[ignore = "a benchmark: scripts/bench-web"]
async fn bench_inbound_webhook_to_open_browser_list() {
    let messages: usize = std::env::var("BENCH_WEB_MESSAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(60);
    let gap = Duration::from_millis(std::env::var("BENCH_WEB_GAP_MS").ok().and_then(|n| n.parse().ok()).unwrap_or(250));
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    let browser = Browser::start().await;
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url("/inbox?view=all")).await;
    browser.find("#live.online").await;
    // Records when each probe's text first shows in the list (the list is re-rendered in place).
    browser
        .script(
            "const done = arguments[0]; window.__seen = {};
             const look = () => { const list = document.querySelector('#list'); if (!list) return;
               for (const m of list.textContent.matchAll(/probe-(\\d+)-end/g)) {
                 if (!(m[1] in window.__seen)) window.__seen[m[1]] = Date.now(); } };
             new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
             done(true);",
        )
        .await;

    let mut sent = Vec::with_capacity(messages);
    for i in 0..messages {
        // Ten customers in turn: new rows at first, then rows moving to the top.
        let from = format!("49151100000{}", i % 10);
        sent.push(now_ms());
        sim.post_inbound(InboundSpec::Meta {
            phone_number_id: "106540352242922".into(),
            from,
            text: format!("Where is my bus? probe-{i}-end"),
        })
        .await
        .unwrap();
        tokio::time::sleep(gap).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = browser.script("const done = arguments[0]; done(window.__seen);").await;
        if seen.as_object().is_some_and(|s| s.len() == messages) || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seen = seen.as_object().cloned().unwrap_or_default();
    let mut latencies: Vec<f64> =
        (0..messages).filter_map(|i| seen.get(&i.to_string()).and_then(Value::as_f64).map(|at| at - sent[i])).collect();
    latencies.sort_by(f64::total_cmp);
    let missing = messages - latencies.len();
    let (p50, p95, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default(),
    );
    println!(
        "inbound webhook -> visible in an open browser list: {messages} messages, one every {} ms, \
         p50 {p50:.0} ms, p95 {p95:.0} ms, p99 {p99:.0} ms, max {max:.0} ms, never shown {missing}",
        gap.as_millis()
    );
    println!(
        "{}",
        serde_json::json!({"benchmark": "inbound_to_browser_list", "messages": messages, "gap_ms": gap.as_millis() as u64,
                           "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": max, "missing": missing})
    );
    browser.screenshot("bench-web-list").await;
    assert_eq!(missing, 0, "every message showed in the open list");
}
