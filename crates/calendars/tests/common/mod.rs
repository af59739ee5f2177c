#![allow(clippy::unwrap_used, dead_code)]
//! What the tests against the simulator share: a receiver for push notifications and
//! webhooks, and credentials from a simulated consent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use calendars::{Credentials, Outcome};
use cpaas_sim::{SimHandle, Vendor};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Captured {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Records every request and answers 200.
#[derive(Clone, Default)]
pub struct Receiver {
    pub base: String,
    captured: Arc<Mutex<Vec<Captured>>>,
}

async fn receive(State(receiver): State<Receiver>, request: Request) -> StatusCode {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    receiver.captured.lock().unwrap().push(Captured {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    });
    StatusCode::OK
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver { base: format!("http://{}", listener.local_addr().unwrap()), ..Default::default() };
        let app = Router::new().fallback(receive).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    pub fn received(&self) -> Vec<Captured> {
        self.captured.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (notifications are sent in the background).
    pub async fn wait_for(&self, n: usize) -> Vec<Captured> {
        for _ in 0..250 {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {n} requests, got {:#?}", self.received());
    }
}

/// The credentials a completed consent gives.
pub fn credentials(sim: &SimHandle, vendor: Vendor) -> Credentials {
    let grant = sim.oauth_grant(vendor);
    Credentials {
        access_token: grant.access_token,
        access_expires_at: grant.expires_at,
        refresh_token: grant.refresh_token,
    }
}

/// The result of a call that must not have touched the credentials.
pub fn unchanged<T: std::fmt::Debug>(outcome: Outcome<T>) -> Result<T, calendars::SyncError> {
    assert!(!outcome.credentials_changed, "no refresh expected: {outcome:?}");
    outcome.result
}

/// How many ledger entries the sim has for `operation`.
pub fn count(sim: &SimHandle, operation: &str) -> usize {
    sim.ledger().iter().filter(|e| e.operation == operation).count()
}
