//! The dispatch pipeline with real worker processes: rate limits across processes, the urgent
//! lane under a bulk backlog.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, spawn_app_with_sim, switchboard};

async fn twilio_sms(app: &TestApp, tenant: &TestTenant) {
    let created: Value = app
        .post("/api/v1/channel-accounts", &tenant.api_key, json!({"channel_type": "sms", "provider": "twilio", "display_name": "SMS",
            "config": {"account_sid": format!("AC{}", "0123456789abcdef".repeat(2)), "auth_token": "sim-twilio-auth-token", "from": "+15005550006"}}))
        .await
        .json()
        .await
        .unwrap();
    let verified: Value = app
        .post(
            &format!("/api/v1/channel-accounts/{}/verify", created["id"].as_str().unwrap()),
            &tenant.api_key,
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verified["status"], "active");
}

/// Accepts `count` SMS concurrently (16 at a time).
async fn send_many(app: &TestApp, tenant: &TestTenant, count: usize, lane: &str, prefix: u32) {
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let (client, url, key, lane) =
            (app.client.clone(), app.url("/api/v1/messages"), tenant.api_key.clone(), lane.to_owned());
        tasks.push(tokio::spawn(async move {
            for n in (worker..count).step_by(16) {
                let body = json!({"to": {"phone": format!("+49{prefix}{n:07}")}, "channels": "sms", "content": {"text": "x"}, "lane": lane});
                let response = client.post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 202);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn worker_process(app: &TestApp, sim_url: &str, extra: &[(&str, &str)]) -> std::process::Child {
    let database_url = app.database_url();
    let mut env: Vec<(&str, &str)> = vec![
        ("DATABASE_URL", &database_url),
        ("SWITCHBOARD__PROVIDERS__TWILIO_API_URL", sim_url),
        ("SWITCHBOARD__PROVIDERS__PUBLIC_BASE_URL", &app.address),
        ("SWITCHBOARD__DISPATCH__POLL_INTERVAL_MS", "100"),
        ("SWITCHBOARD__LOG__LEVEL", "warn"),
    ];
    env.extend_from_slice(extra);
    switchboard(&["worker"], &env).stdout(std::process::Stdio::null()).spawn().expect("spawn worker")
}

fn stop(mut child: std::process::Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let _ = child.wait();
}

#[tokio::test]
async fn two_worker_processes_keep_to_the_rate_limit() {
    const RATE: f64 = 40.0;
    const MESSAGES: usize = 440;
    // The app serves the API without workers; two worker processes do the sending.
    let (app, sim) = spawn_app_with_sim(|settings| settings.dispatch.in_serve = false).await;
    let tenant = app.create_tenant("alpine").await;
    twilio_sms(&app, &tenant).await;
    send_many(&app, &tenant, MESSAGES, "urgent", 151).await;
    let rate = RATE.to_string();
    let extra = [("SWITCHBOARD__DISPATCH__SMS_RATE_PER_SEC", rate.as_str())];
    let workers = [worker_process(&app, &sim.base_url(), &extra), worker_process(&app, &sim.base_url(), &extra)];

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut sends = Vec::new();
    while Instant::now() < deadline {
        sends = sim.ledger().into_iter().filter(|e| e.operation == "create_message").collect::<Vec<_>>();
        if sends.len() >= MESSAGES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    workers.into_iter().for_each(stop);
    if sends.len() != MESSAGES {
        let states: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT status, coalesce(status_reason, ''), count(*) FROM communications.messages GROUP BY 1, 2",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let jobs: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT job_type, status, count(*) FROM apalis.jobs GROUP BY 1, 2")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        panic!("sent {} of {MESSAGES}; messages {states:?}; jobs {jobs:?}", sends.len());
    }
    let mut times: Vec<f64> = sends.iter().map(|e| e.received_at.timestamp_micros() as f64 / 1e6).collect();
    times.sort_by(f64::total_cmp);
    println!("{MESSAGES} sends over {:.2}s", times[MESSAGES - 1] - times[0]);
    let mut per_second = std::collections::BTreeMap::new();
    for t in &times {
        *per_second.entry((t - times[0]) as u64).or_insert(0) += 1;
    }
    println!("sends per second: {per_second:?}");
    // The first second's worth is the burst; after it the limiter alone sets the pace.
    let burst = RATE as usize;
    let measured = (MESSAGES - burst) as f64 / (times[MESSAGES - 1] - times[0]);
    let error = (measured - RATE).abs() / RATE;
    println!(
        "rate limit {RATE}/s, measured {measured:.2}/s over {:.2}s ({:.1}% off)",
        times[MESSAGES - 1] - times[0],
        error * 100.0
    );
    assert!(error <= 0.05, "measured {measured:.2}/s against a limit of {RATE}/s");
}

#[tokio::test]
async fn an_urgent_message_does_not_wait_behind_a_bulk_backlog() {
    let (app, sim) = spawn_app_with_sim(|settings| {
        // A backlog that takes a minute at this rate.
        settings.dispatch.sms_rate_per_sec = 5.0;
    })
    .await;
    // One tenant, one SMS account: the campaign and the confirmation share the provider's rate.
    let campaign = app.create_tenant("alpine").await;
    twilio_sms(&app, &campaign).await;
    send_many(&app, &campaign, 300, "bulk", 160).await;
    let transactional = campaign.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let accepted: Value = app
        .post("/api/v1/messages", &transactional.api_key, json!({"to": {"phone": "+4917000000001"}, "channels": "sms", "content": {"text": "Your booking is confirmed"}}))
        .await
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    loop {
        let message: Value =
            app.get(&format!("/api/v1/messages/{id}"), &transactional.api_key).await.json().await.unwrap();
        if message["status"] == "sent" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the urgent message waited: {message}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = started.elapsed();
    let bulk_sent = sim
        .ledger()
        .iter()
        .filter(|e| e.operation == "create_message" && e.recipient.as_deref().is_some_and(|r| r.starts_with("+49160")))
        .count();
    println!("urgent message sent after {waited:?} with {} bulk messages still waiting", 300 - bulk_sent);
    assert!(bulk_sent < 300, "the bulk backlog was still there");
}
