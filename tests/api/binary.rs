//! The real binary: exit codes, help, the administrative CLI, logs and graceful shutdown.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{PASSWORD, RunningServer, fresh_database, spawn_app_on, switchboard};

#[test]
fn bad_configuration_exits_2_with_one_line_naming_the_key() {
    for (key, value, named) in [
        ("SWITCHBOARD__HTTP__BIND", "nope", "http.bind"),
        ("SWITCHBOARD__DATABASE__MAX_CONNECTIONS", "-1", "database.max_connections"),
        ("SWITCHBOARD__LOG__FORMAT", "xml", "log.format"),
        ("SWITCHBOARD__DISPATCH__SWEEP_SCHEDULE", "every minute", "dispatch.sweep_schedule"),
        ("SWITCHBOARD__DISPATCH__SWEEP_SCHEDULE", "0 0 30 2 *", "dispatch.sweep_schedule"),
        ("SWITCHBOARD__DISPATCH__IDEMPOTENCY_RETENTION_HOURS", "1", "dispatch.idempotency_retention_hours"),
    ] {
        let output = switchboard(&["serve"], &[(key, value)]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{key}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(named), "{stderr}");
    }
}

#[test]
fn every_command_explains_itself() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["tenant", "create", "--help"],
        &["agent", "create", "--help"],
        &["api-key", "create", "--help"],
        &["demo", "--help"],
    ] {
        let output = switchboard(args, &[]).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage:"), "{args:?}");
    }
}

pub(crate) fn run_json(args: &[&str], database_url: &str, stdin: Option<&str>) -> Value {
    let mut child = switchboard(args, &[("DATABASE_URL", database_url)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim().lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap()
}

#[tokio::test]
async fn cli_creates_tenants_agents_and_keys_that_the_api_accepts() {
    let database_url = fresh_database().await;
    let tenant =
        run_json(&["tenant", "create", "--name", "Acme Tours", "--slug", "acme", "--json"], &database_url, None);
    assert_eq!(tenant["slug"], "acme");
    assert!(tenant["tenant_id"].as_str().is_some());
    let agent = run_json(
        &[
            "agent",
            "create",
            "--tenant",
            "acme",
            "--email",
            "ann@acme.test",
            "--name",
            "Ann",
            "--role",
            "admin",
            "--password-stdin",
            "--json",
        ],
        &database_url,
        Some(&format!("{PASSWORD}\n")),
    );
    let key = run_json(&["api-key", "create", "--tenant", "acme", "--json"], &database_url, None);
    assert!(key["api_key_id"].as_str().is_some());

    let app = spawn_app_on(&database_url).await;
    for api_key in [tenant["api_key"].as_str().unwrap(), key["api_key"].as_str().unwrap()] {
        let me: Value = app.get("/api/v1/me", api_key).await.json().await.unwrap();
        assert_eq!(me["tenant"]["id"], tenant["tenant_id"]);
    }
    let login = app.login("acme", "ann@acme.test", PASSWORD).await;
    assert_eq!(login.status(), 200);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["agent"]["id"], agent["agent_id"]);
}

#[tokio::test]
async fn cli_errors_are_one_clear_line() {
    let database_url = fresh_database().await;
    run_json(&["tenant", "create", "--name", "Acme", "--slug", "acme", "--json"], &database_url, None);
    let cases: [(&[&str], &str, &str); 4] = [
        (&["tenant", "create", "--name", "Again", "--slug", "acme"], "", "already exists"),
        (&["tenant", "create", "--name", "Bad", "--slug", "Not Valid"], "", "slug"),
        (&["api-key", "create", "--tenant", "nobody"], "", "no tenant with slug `nobody`"),
        (
            &[
                "agent",
                "create",
                "--tenant",
                "acme",
                "--email",
                "a@acme.test",
                "--name",
                "A",
                "--role",
                "agent",
                "--password-stdin",
            ],
            "short\n",
            "password",
        ),
    ];
    for (args, stdin, expected) in cases {
        let mut child = switchboard(args, &[("DATABASE_URL", &database_url)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_request_id_and_no_secret() {
    let database_url = fresh_database().await;
    let server = RunningServer::start(&["serve"], &[("DATABASE_URL", &database_url)]);
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/api/v1/auth/login"))
        .header("x-request-id", "rid-log-check-7")
        .json(&json!({"workspace": "acme", "email": "ann@acme.test", "password": "hunter2-super-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = server.lines();
    let ours: Vec<&String> = lines.iter().filter(|line| line.contains("rid-log-check-7")).collect();
    assert!(ours.len() >= 2, "the handler's line and the response line: {lines:#?}");
    for line in &ours {
        let value: Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["span"]["request_id"], "rid-log-check-7", "{line}");
    }
    assert!(ours.iter().any(|line| line.contains("login refused")), "{ours:#?}");
    assert!(!lines.iter().any(|line| line.contains("hunter2-super-secret")), "a password reached the log");
    server.stop(Signal::SIGTERM);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let database_url = fresh_database().await;
    let tenant = run_json(&["tenant", "create", "--name", "Acme", "--slug", "acme", "--json"], &database_url, None);
    let server = RunningServer::start(&["serve"], &[("DATABASE_URL", &database_url)]);
    let address = server.address.trim_start_matches("http://").to_owned();
    let body = json!({"email": "late@acme.test", "name": "Late", "role": "agent", "password": PASSWORD}).to_string();
    let (first, rest) = body.split_at(10);

    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/v1/agents HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{first}",
        tenant["api_key"].as_str().unwrap(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut response)).await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let status = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}");
    let app_pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM identity.agents WHERE email = 'late@acme.test'")
        .fetch_one(&app_pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
}

/// The demo prints its banner once it has seeded what the banner's commands use.
async fn wait_for_banner(server: &RunningServer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server.lines().iter().any(|line| line.trim().starts_with("API key:")) {
        assert!(std::time::Instant::now() < deadline, "no banner: {}", server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn demo_prints_working_credentials_once_per_start() {
    let database_url = fresh_database().await;
    let credentials = |server: &RunningServer| {
        let lines = server.lines();
        let find = |label: &str| {
            lines.iter().find_map(|line| line.trim().strip_prefix(label).map(|rest| rest.trim().to_owned())).unwrap()
        };
        let admin = find("admin:");
        let (email, password) = admin.split_once("  password: ").unwrap();
        (find("API key:"), email.trim().to_owned(), password.trim().to_owned())
    };
    let server = RunningServer::start(&["demo"], &[("DATABASE_URL", &database_url)]);
    wait_for_banner(&server).await;
    let (api_key, email, password) = credentials(&server);
    let client = reqwest::Client::new();
    let me: Value =
        client.get(server.url("/api/v1/me")).bearer_auth(&api_key).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["tenant"]["slug"], "demo");
    // The banner comes once the channels its commands send through are there.
    let accounts: Value = client
        .get(server.url("/api/v1/channel-accounts"))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for channel in ["whatsapp", "sms", "email"] {
        let active = accounts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["channel_type"] == channel && a["status"] == "active");
        assert!(active, "an active {channel} account when the banner shows: {accounts}");
    }
    let login = client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"workspace": "demo", "email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    // The inbox is seeded through the real paths: every channel, every state, a booking context.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let seeded = loop {
        let page: Value = client
            .get(server.url("/api/v1/conversations?limit=100"))
            .bearer_auth(&api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= 27 && items.iter().any(|c| !c["link"].is_null()) {
            break items;
        }
        assert!(std::time::Instant::now() < deadline, "the demo inbox was not seeded: {page}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for status in ["open", "snoozed", "resolved"] {
        assert!(seeded.iter().any(|c| c["status"] == status), "a {status} conversation");
    }
    for channel in ["whatsapp", "sms", "email"] {
        assert!(seeded.iter().any(|c| c["channel"] == channel), "a {channel} conversation");
    }
    assert!(seeded.iter().any(|c| c["labels"].as_array().is_some_and(|l| !l.is_empty())), "labels");
    server.stop(Signal::SIGTERM);

    // A second start reuses the workspace and prints a new password; the old one stops working.
    let server = RunningServer::start(&["demo"], &[("DATABASE_URL", &database_url)]);
    wait_for_banner(&server).await;
    let (_, _, new_password) = credentials(&server);
    assert_ne!(new_password, password);
    let old = client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"workspace": "demo", "email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    // … and keeps its inbox as it was: nothing seeded twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let page: Value = client
        .get(server.url("/api/v1/conversations?limit=100"))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().map(Vec::len), Some(seeded.len()));
    server.stop(Signal::SIGTERM);
}

#[tokio::test]
async fn messages_stuck_in_queued_are_counted_and_logged() {
    let database_url = fresh_database().await;
    let tenant = run_json(&["tenant", "create", "--name", "Acme", "--slug", "acme", "--json"], &database_url, None);
    let server = RunningServer::start(
        &["serve"],
        &[
            ("DATABASE_URL", &database_url),
            ("SWITCHBOARD__DISPATCH__IN_SERVE", "false"),
            ("SWITCHBOARD__DISPATCH__STUCK_AFTER_SECS", "1"),
            ("SWITCHBOARD__DISPATCH__SWEEP_SCHEDULE", "* * * * * *"),
        ],
    );
    let client = reqwest::Client::new();
    let accepted: Value = client
        .post(server.url("/api/v1/messages"))
        .bearer_auth(tenant["api_key"].as_str().unwrap())
        .json(&json!({"to": {"phone": "+4915112345678"}, "channels": "sms", "content": {"text": "nobody sends me"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = server.lines().into_iter().find(|l| l.contains("messages stuck") && l.contains(&id));
        if let Some(line) = found {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "no stuck-message alert: {:#?}", server.lines());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logged: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(logged["level"], "ERROR");
    let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "messages_stuck 1"), "{metrics}");
    server.stop(Signal::SIGTERM);
}
