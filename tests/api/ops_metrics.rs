//! Every metric a Grafana dashboard or a Prometheus rule names is exported after real traffic:
//! sends (one failing, one rate-limited), a forged webhook, a signed one, a missed call and its
//! dialogue, an opt-out, bookings, a calendar connection — then `/metrics` is read.

use std::collections::BTreeSet;
use std::time::Duration;

use cpaas_sim::{DialOutcome, FailureKind, FailureRule};
use serde_json::{Value, json};

use crate::helpers::{repo_root, spawn_app_with_sim};
use crate::missed_calls::{business, call, reply, wait_for_texts};

/// Keywords, and the aggregation operators (which may take `by (…)` before their parentheses).
const PROMQL_WORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "start",
    "end",
    "le",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// The metric names a PromQL expression selects: identifiers that are not functions (followed
/// by `(`), keywords, label names in `by (…)`, or inside `{…}`, `[…]` and strings.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::with_capacity(expr.len());
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut quote: Option<char> = None;
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{') => depth_brace += 1,
            (None, '}') => depth_brace -= 1,
            (None, '[') => depth_bracket += 1,
            (None, ']') => depth_bracket -= 1,
            (None, c) if depth_brace == 0 && depth_bracket == 0 => cleaned.push(c),
            _ => {}
        }
        if quote.is_some() || depth_brace > 0 || depth_bracket > 0 {
            cleaned.push(' ');
        }
    }
    let chars: Vec<char> = cleaned.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut grouping = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let preceded_by_digit = start > 0 && (chars[start - 1].is_ascii_digit() || chars[start - 1] == '.');
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            if matches!(word.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right") {
                grouping = true;
                continue;
            }
            if grouping || preceded_by_digit || next == Some('(') || PROMQL_WORDS.contains(&word.as_str()) {
                continue;
            }
            names.insert(word);
        } else {
            if c == ')' {
                grouping = false;
            }
            i += 1;
        }
    }
    names
}

/// Every `expr` of the dashboards and the alert rules.
fn expressions() -> Vec<String> {
    let root = repo_root();
    let mut exprs = Vec::new();
    let dashboards = root.join("config/grafana/dashboards");
    for entry in std::fs::read_dir(&dashboards).expect("dashboards") {
        let path = entry.expect("entry").path();
        let board: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        collect_exprs(&board, &mut exprs);
    }
    let alerts = std::fs::read_to_string(root.join("config/prometheus/alerts.yml")).expect("alerts");
    let lines: Vec<&str> = alerts.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((indent, rest)) = line.split_once("expr:") else { continue };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            // A block scalar: the following lines indented deeper than `expr:`.
            let own = indent.len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > own)
                .map(|l| l.trim())
                .collect();
            exprs.push(block.join(" "));
        } else {
            exprs.push(rest.to_owned());
        }
    }
    exprs
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn promql_names_are_found_and_functions_are_not() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{route=~"/api/.*"}[5m]))) > 0.5"#,
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["http_request_duration_seconds_bucket"]);
    let ratio = metric_names("sum(rate(messages_failed_total[10m])) / (sum(rate(messages_dispatched_total[10m])) > 0)");
    assert_eq!(ratio.into_iter().collect::<Vec<_>>(), ["messages_dispatched_total", "messages_failed_total"]);
    assert!(expressions().len() > 20, "the dashboards and rules were read");
}

#[tokio::test]
async fn every_metric_a_dashboard_or_alert_names_is_exported_after_real_traffic() {
    let (app, sim) = spawn_app_with_sim(|settings| settings.dispatch.sms_rate_per_sec = 5.0).await;
    let (tenant, resource, service) = business(&app, false).await;
    app.quiet_hours_off(&tenant).await;

    // Sends: one accepted, one failing for good, one throttled by the provider, a bulk burst
    // that waits for its rate slots.
    sim.add_failure(FailureRule {
        provider: Some("twilio".into()),
        recipient: Some("+4915100000301".into()),
        kind: FailureKind::InvalidRecipient,
        probability: 1.0,
        remaining: Some(1),
    });
    sim.add_failure(FailureRule {
        provider: Some("twilio".into()),
        recipient: Some("+4915100000302".into()),
        kind: FailureKind::RateLimited,
        probability: 1.0,
        remaining: Some(1),
    });
    for (i, lane) in
        [(300, "urgent"), (301, "urgent"), (302, "urgent")].into_iter().chain((310..320).map(|i| (i, "bulk")))
    {
        let body = json!({"to": {"phone": format!("+4915100000{i}")}, "channels": "sms", "content": {"text": "Hi"}, "lane": lane});
        assert_eq!(app.post("/api/v1/messages", &tenant.api_key, body).await.status(), 202);
    }
    // A forged webhook, and the simulator's signed ones (the missed call and its dialogue).
    let forged = reqwest::Client::new()
        .post(app.url(&format!("/api/webhooks/twilio/{}/inbound", tenant.id)))
        .form(&[("From", "+4915100000399"), ("Body", "hi")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let caller = "+4915100000350";
    sim.place_call(call(&tenant, caller, DialOutcome::NoAnswer)).await.unwrap();
    wait_for_texts(&sim, caller, 1).await;
    reply(&sim, &tenant, caller, "I'd rather talk to someone").await;
    wait_for_texts(&sim, caller, 2).await;
    // An opted-out caller: the call is recorded, no SMS.
    let stopped = "+4915100000351";
    reply(&sim, &tenant, stopped, "STOP").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.place_call(call(&tenant, stopped, DialOutcome::Busy)).await.unwrap();
    // Bookings: a hold, the same slot again (taken), and a calendar that fails to sync.
    let slots: Value = app
        .get(&format!("/api/v1/availability?service_id={service}&resource_id={resource}"), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    let start = slots["resources"][0]["slots"][3]["start"].as_str().unwrap().to_owned();
    let hold = json!({"service_id": service, "resource_id": resource, "start": start});
    assert_eq!(app.post("/api/v1/reservations", &tenant.api_key, hold.clone()).await.status(), 201);
    assert_eq!(app.post("/api/v1/reservations", &tenant.api_key, hold).await.status(), 409);

    // Everything settles (retries, the dialogue, the gauges' first samples): read /metrics until
    // nothing is missing, for at most 20 s.
    let mut wanted = BTreeSet::new();
    for expr in expressions() {
        wanted.extend(metric_names(&expr));
    }
    // Prometheus's own series, per scrape target.
    wanted.remove("up");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (exported, missing) = loop {
        let exported = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
        let present: BTreeSet<&str> =
            exported.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
        let missing: Vec<String> = wanted.iter().filter(|name| !present.contains(name.as_str())).cloned().collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break (exported, missing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(missing.is_empty(), "named by a dashboard or rule but not exported: {missing:?}\n\n{exported}");
    assert!(wanted.len() > 30, "{wanted:?}");
}
