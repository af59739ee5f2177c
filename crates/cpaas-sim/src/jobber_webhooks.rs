//! Jobber webhooks and the `/sim/jobber/*` control routes.
//!
//! A webhook is a JSON `POST` of `{"data":{"webHookEvent":{topic, appId, accountId, itemId,
//! occurredAt}}}` (only an id: the receiver fetches the item) with `X-Jobber-Hmac-SHA256` =
//! base64(HMAC-SHA256(app client secret, raw body)). It goes to `SimConfig::jobber_webhook_url`,
//! else to `{webhook_base}/api/webhooks/jobber`. The sim plays an app subscribed to the visit
//! topics: `VISIT_CREATE`, `VISIT_UPDATE` and `VISIT_DESTROY` follow the mutations at once, in
//! the background; any topic can be sent on command (`POST /sim/jobber/webhooks`). Each is sent
//! once and must be answered within 1 s (Jobber's limit); the sim does not retry.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::SimState;
use crate::delivery::{Outgoing, Policy, deliver};
use crate::jobber_store::{ACCOUNT_ID, Change};

/// The topics the simulated app is subscribed to, posted after each change.
const SUBSCRIBED: &[&str] = &["VISIT_CREATE", "VISIT_UPDATE", "VISIT_DESTROY"];

/// base64(HMAC-SHA256(client secret, raw body)), the `X-Jobber-Hmac-SHA256` value.
pub(crate) fn signature(client_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(client_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

fn url(state: &SimState) -> anyhow::Result<String> {
    match &state.config.jobber_webhook_url {
        Some(url) => Ok(url.clone()),
        None => Ok(format!("{}/api/webhooks/jobber", state.webhook_base()?)),
    }
}

/// Posts one signed webhook; errors with the first attempt's failure.
pub(crate) async fn post(state: &Arc<SimState>, topic: &str, item_id: &str) -> anyhow::Result<()> {
    let url = url(state)?;
    let body = json!({"data": {"webHookEvent": {
        "topic": topic,
        "appId": state.config.jobber_client_id,
        "accountId": ACCOUNT_ID,
        "itemId": item_id,
        "occurredAt": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, false),
    }}})
    .to_string()
    .into_bytes();
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-jobber-hmac-sha256".to_owned(), signature(&state.config.jobber_client_secret, &body)),
    ];
    deliver(state, Outgoing { method: reqwest::Method::POST, url, headers, body, policy: Policy::Once("jobber") }).await
}

/// The webhooks of the subscribed topics among `changes`, in the background, in order.
pub(crate) fn post_changes(state: &Arc<SimState>, changes: Vec<Change>) {
    let changes: Vec<Change> = changes.into_iter().filter(|(topic, _)| SUBSCRIBED.contains(topic)).collect();
    if changes.is_empty() || url(state).is_err() {
        return;
    }
    let state = Arc::clone(state);
    tokio::spawn(async move {
        for (topic, item_id) in changes {
            if let Err(error) = post(&state, topic, &item_id).await {
                tracing::info!(%error, topic, "jobber webhook not delivered");
            }
        }
    });
}

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/sim/jobber/webhooks", routing::post(send_webhook))
        .route("/sim/jobber/visits", routing::get(list_visits))
}

#[derive(Debug, Deserialize)]
struct WebhookRequest {
    topic: String,
    item_id: String,
}

async fn send_webhook(State(state): State<Arc<SimState>>, Json(request): Json<WebhookRequest>) -> Response {
    match post(&state, &request.topic, &request.item_id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => (StatusCode::BAD_GATEWAY, Json(json!({"error": error.to_string()}))).into_response(),
    }
}

async fn list_visits(State(state): State<Arc<SimState>>) -> Response {
    Json(state.jobber().visits()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The research notes' test vector (computed locally: Jobber's own example used an
    /// unpublished secret).
    #[test]
    fn the_signature_matches_the_test_vector() {
        let body = br#"{"data":{"webHookEvent":{"topic":"APP_CONNECT","appId":"id","accountId":"id","itemId":"id","occurredAt":"ISO8601DateTime"}}}"#;
        assert_eq!(signature("my app's OAuth client secret", body), "+PXo5mRPCuHqX3CePBACS8afHQPY9rXzPlp9AG/a8BI=");
    }
}
