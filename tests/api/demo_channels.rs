//! Issue "channels", as an operator would do it: the `demo` binary with simulated providers,
//! three channels created and verified over HTTP, a test message through each adapter, the
//! simulator's ledger showing provider-shaped requests, and no secret in any log line.

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::helpers::{RunningServer, fresh_database};

const SIGNUP_CODE: &str = "AQB-demo-signup-code-77c1";
const TWILIO_TOKEN: &str = "sim-twilio-auth-token";

fn banner_value(server: &RunningServer, label: &str) -> String {
    server
        .lines()
        .iter()
        .find_map(|line| line.trim().strip_prefix(label).map(|rest| rest.trim().to_owned()))
        .unwrap_or_else(|| panic!("no `{label}` line in {:#?}", server.lines()))
}

#[tokio::test]
async fn channels_are_created_verified_and_used_through_the_simulated_providers() {
    let database_url = fresh_database().await;
    let server = RunningServer::start(&["demo", "--empty"], &[("DATABASE_URL", &database_url)]);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let api_key = banner_value(&server, "API key:");
    let providers = banner_value(&server, "providers:");
    let sim_url = providers.split_whitespace().nth(2).expect("simulator url").to_owned();
    let client = reqwest::Client::new();
    let accounts = server.url("/api/v1/channel-accounts");
    let post = |url: String, body: Value| client.post(url).bearer_auth(&api_key).json(&body).send();

    let bodies = [
        json!({"channel_type": "whatsapp", "display_name": "WA", "config": {"phone_number_id": "106540352242922", "waba_id": "102290129340398", "signup_code": SIGNUP_CODE, "pin": "123456"}}),
        json!({"channel_type": "email", "display_name": "Mail", "config": {"domain": "mail.demo.example", "from_address": "hello@mail.demo.example"}}),
        json!({"channel_type": "sms", "provider": "twilio", "display_name": "SMS", "config": {"account_sid": format!("AC{}", "ab".repeat(16)), "auth_token": TWILIO_TOKEN, "from": "+15005550006"}}),
    ];
    let mut ids = Vec::new();
    for body in bodies {
        let created: Value = post(accounts.clone(), body).await.unwrap().json().await.unwrap();
        ids.push(created["id"].as_str().expect("created").to_owned());
        if created["channel_type"] == "email" {
            assert_eq!(
                created["verification"]["dkim_records"].as_array().map(Vec::len),
                Some(3),
                "DKIM records shown: {created}"
            );
        }
    }
    for id in &ids {
        // Email needs SES to have seen the DNS records: the simulator confirms on the second read.
        let mut status = Value::Null;
        for _ in 0..2 {
            let verified: Value =
                post(format!("{accounts}/{id}/verify"), json!({})).await.unwrap().json().await.unwrap();
            status = verified["status"].clone();
            if status == "active" {
                break;
            }
        }
        assert_eq!(status, "active", "{id}");
    }
    for (id, to) in ids.iter().zip(["+4915112345678", "ann@example.org", "+4915112345678"]) {
        let sent = post(format!("{accounts}/{id}/test-message"), json!({"to": to, "text": "Hello"})).await.unwrap();
        assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    }

    let ledger: Vec<Value> = client.get(format!("{sim_url}/sim/ledger")).send().await.unwrap().json().await.unwrap();
    let find = |provider: &str, operation: &str| {
        ledger
            .iter()
            .find(|e| e["provider"] == provider && e["operation"] == operation)
            .unwrap_or_else(|| panic!("{provider} {operation} not in {ledger:#?}"))
            .clone()
    };
    let whatsapp = find("meta", "send_message");
    assert_eq!(whatsapp["body"]["messaging_product"], "whatsapp");
    assert_eq!(whatsapp["body"]["to"], "+4915112345678");
    assert_eq!(whatsapp["body"]["text"]["body"], "Hello");
    let email = find("ses", "SendEmail");
    assert_eq!(email["body"]["Destination"]["ToAddresses"][0], "ann@example.org");
    assert_eq!(email["body"]["FromEmailAddress"], "hello@mail.demo.example");
    let sms = find("twilio", "create_message");
    assert_eq!(sms["body"]["To"], "+4915112345678");
    assert_eq!(sms["body"]["Body"], "Hello");
    find("meta", "subscribe_app");

    // No secret in any log line (the banner, printed once on purpose, is not a log line).
    let logs: Vec<String> = server.lines().into_iter().filter(|line| line.starts_with('{')).collect();
    assert!(logs.len() > 10, "the logs were captured: {}", logs.len());
    for secret in [SIGNUP_CODE, TWILIO_TOKEN, "simulated-secret-access-key", "sim-meta-app-secret", &api_key] {
        let leaks: Vec<&String> = logs.iter().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} appears in the logs: {leaks:#?}");
    }
    server.stop(Signal::SIGTERM);
}

/// The demo's simulated SES reports delivery through signed SNS notifications from its own
/// certificate host and topics, which the demo (and only the demo) trusts.
#[tokio::test]
async fn the_demos_email_reaches_delivered_from_the_simulators_callbacks() {
    let database_url = fresh_database().await;
    let server = RunningServer::start(&["demo", "--empty"], &[("DATABASE_URL", &database_url)]);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let api_key = banner_value(&server, "API key:");
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(server.url(path)).bearer_auth(&api_key).json(&body).send();
    let created: Value = post(
        "/api/v1/channel-accounts",
        json!({"channel_type": "email", "display_name": "Mail", "config": {"domain": "mail.demo.example", "from_address": "hello@mail.demo.example"}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let account = created["id"].as_str().expect("created").to_owned();
    for _ in 0..2 {
        post(&format!("/api/v1/channel-accounts/{account}/verify"), json!({})).await.unwrap();
    }
    let accepted: Value = post(
        "/api/v1/messages",
        json!({"to": {"email": "ann@example.org"}, "channels": "email", "content": {"subject": "Hello", "text": "Hi"}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = accepted["id"].as_str().unwrap_or_else(|| panic!("{accepted}")).to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let message: Value = client
            .get(server.url(&format!("/api/v1/messages/{id}")))
            .bearer_auth(&api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if message["status"] == "delivered" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {}: {message:#}", message["status"]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused = server.lines().iter().any(|line| line.contains("untrusted certificate") || line.contains("refused"));
    assert!(!refused, "no callback was refused: {:#?}", server.lines());
    server.stop(Signal::SIGTERM);
}
