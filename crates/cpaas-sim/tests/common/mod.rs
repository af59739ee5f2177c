#![allow(clippy::unwrap_used, dead_code)]
//! A tiny webhook receiver that records everything posted to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use cpaas_sim::{SimConfig, SimHandle, Simulator};

#[derive(Clone, Debug)]
pub struct Captured {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Captured {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn form(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_bytes(&self.body).unwrap()
    }
    pub fn form_map(&self) -> HashMap<String, String> {
        self.form().into_iter().collect()
    }
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub base: String,
    captured: Arc<Mutex<Vec<Captured>>>,
    /// Statuses to answer the next POSTs with, first to last (then 200 again).
    refusals: Arc<Mutex<Vec<StatusCode>>>,
}

/// GET with `hub.verify_token=good-token` echoes the challenge (Meta handshake); anything else
/// with GET is refused; every POST is recorded and answered 200, unless a refusal is queued.
async fn receive(State(receiver): State<Receiver>, request: Request) -> (StatusCode, String) {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let captured = Captured {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body,
    };
    receiver.captured.lock().unwrap().push(captured);
    if parts.method == Method::GET {
        let query: HashMap<String, String> =
            serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()).unwrap_or_default();
        if query.get("hub.mode").map(String::as_str) == Some("subscribe")
            && query.get("hub.verify_token").map(String::as_str) == Some("good-token")
        {
            return (StatusCode::OK, query.get("hub.challenge").cloned().unwrap_or_default());
        }
        return (StatusCode::FORBIDDEN, "bad token".to_owned());
    }
    let mut refusals = receiver.refusals.lock().unwrap();
    if refusals.is_empty() {
        return (StatusCode::OK, String::new());
    }
    (refusals.remove(0), "refused by the test receiver".to_owned())
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// On a given address (to come up where a sim was already posting in vain).
    pub async fn start_on(addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let mut receiver =
            Receiver { base: format!("http://{}", listener.local_addr().unwrap()), ..Default::default() };
        let app = Router::new().fallback(receive).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver.base = receiver.base.clone();
        receiver
    }

    /// Answers the next `count` POSTs with `status`.
    pub fn refuse_next(&self, count: usize, status: StatusCode) {
        self.refusals.lock().unwrap().extend(std::iter::repeat_n(status, count));
    }

    pub fn posts(&self) -> Vec<Captured> {
        self.captured.lock().unwrap().iter().filter(|c| c.method == Method::POST).cloned().collect()
    }

    pub fn all(&self) -> Vec<Captured> {
        self.captured.lock().unwrap().clone()
    }

    /// Waits until at least `n` POSTs arrived (for automatic callbacks).
    pub async fn wait_for_posts(&self, n: usize) -> Vec<Captured> {
        for _ in 0..200 {
            let posts = self.posts();
            if posts.len() >= n {
                return posts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {n} webhook posts, got {}", self.posts().len());
    }
}

/// An address nothing listens on (bound, then released).
pub fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Waits until no webhook has a retry to come.
pub async fn wait_for_retries(sim: &SimHandle) {
    for _ in 0..500 {
        if sim.pending_webhook_retries() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("webhook retries still pending: {:#?}", sim.webhook_log());
}

pub async fn start_with_receiver(mut config: SimConfig) -> (SimHandle, Receiver) {
    let receiver = Receiver::start().await;
    config.webhook_base = Some(receiver.base.clone());
    let sim = Simulator::start(config).await.unwrap();
    (sim, receiver)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";

pub async fn twilio_send(sim: &SimHandle, to: &str) -> reqwest::Response {
    client()
        .post(format!("{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", sim.base_url()))
        .basic_auth(TWILIO_SID, Some("sim-twilio-auth-token"))
        .form(&[("To", to), ("From", "+15005550006"), ("Body", "Hello")])
        .send()
        .await
        .unwrap()
}

pub async fn meta_send(sim: &SimHandle, to: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v21.0/1122334455667/messages", sim.base_url()))
        .bearer_auth("token")
        .json(&serde_json::json!({
            "messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "Hi ä"},
        }))
        .send()
        .await
        .unwrap()
}

pub async fn ses_send(sim: &SimHandle, to: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v2/email/outbound-emails", sim.base_url()))
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIA/20250101/eu-central-1/ses/aws4_request")
        .json(&serde_json::json!({
            "FromEmailAddress": "Switchboard <noreply@example.com>",
            "Destination": {"ToAddresses": [to]},
            "Content": {"Simple": {"Subject": {"Data": "Code"}, "Body": {"Text": {"Data": "123456"}}}},
            "EmailTags": [{"Name": "tenant", "Value": "t_42"}],
        }))
        .send()
        .await
        .unwrap()
}

pub async fn sns_publish(sim: &SimHandle, to: &str) -> reqwest::Response {
    client()
        .post(format!("{}/", sim.base_url()))
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIA/20250101/eu-central-1/sns/aws4_request")
        .form(&[
            ("Action", "Publish"),
            ("Version", "2010-03-31"),
            ("PhoneNumber", to),
            ("Message", "Your code is 123456"),
            ("MessageAttributes.entry.1.Name", "AWS.SNS.SMS.SMSType"),
            ("MessageAttributes.entry.1.Value.DataType", "String"),
            ("MessageAttributes.entry.1.Value.StringValue", "Transactional"),
        ])
        .send()
        .await
        .unwrap()
}
