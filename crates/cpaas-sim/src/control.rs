//! The `/sim/*` control surface: the same operations as `SimHandle`, over HTTP, for the demo and
//! for tests written in other languages.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::{CallSpec, CallbackStatus, FailureRule, InboundSpec, SimState, callbacks, twilio_voice};

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/sim/ledger", get(read_ledger).delete(clear_ledger))
        .route("/sim/webhooks", get(read_webhooks).delete(clear_webhooks))
        .route("/sim/failures", post(add_failure).delete(clear_failures))
        .route("/sim/callbacks", post(post_callbacks))
        .route("/sim/inbound", post(post_inbound))
        .route("/sim/calls", post(place_call).get(read_calls).delete(clear_calls))
        .route("/sim/twilio/opt-outs", get(read_opt_outs).delete(clear_opt_outs))
        .route("/sim/sns/cert.pem", get(sns_certificate))
}

async fn read_ledger(State(state): State<Arc<SimState>>) -> Response {
    Json(state.ledger().entries()).into_response()
}

async fn clear_ledger(State(state): State<Arc<SimState>>) -> StatusCode {
    state.ledger().clear_entries();
    StatusCode::NO_CONTENT
}

async fn read_webhooks(State(state): State<Arc<SimState>>) -> Response {
    Json(state.webhooks().entries()).into_response()
}

async fn clear_webhooks(State(state): State<Arc<SimState>>) -> StatusCode {
    state.webhooks().clear();
    StatusCode::NO_CONTENT
}

async fn add_failure(State(state): State<Arc<SimState>>, Json(rule): Json<FailureRule>) -> StatusCode {
    state.failures().push(rule);
    StatusCode::NO_CONTENT
}

async fn clear_failures(State(state): State<Arc<SimState>>) -> StatusCode {
    state.failures().clear();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct CallbackRequest {
    provider_message_id: String,
    statuses: Vec<CallbackStatus>,
}

fn webhook_failure(error: &anyhow::Error) -> Response {
    (StatusCode::BAD_GATEWAY, Json(json!({"error": error.to_string()}))).into_response()
}

async fn post_callbacks(State(state): State<Arc<SimState>>, Json(request): Json<CallbackRequest>) -> Response {
    match callbacks::post_status_callbacks(&state, &request.provider_message_id, &request.statuses).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => webhook_failure(&error),
    }
}

async fn post_inbound(State(state): State<Arc<SimState>>, Json(inbound): Json<InboundSpec>) -> Response {
    match callbacks::post_inbound(&state, inbound).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => webhook_failure(&error),
    }
}

/// 200 with the call's report, whatever the service answered; 502 when it could not be placed.
async fn place_call(State(state): State<Arc<SimState>>, Json(spec): Json<CallSpec>) -> Response {
    match twilio_voice::place_call(&state, spec).await {
        Ok(report) => Json(report).into_response(),
        Err(error) => webhook_failure(&error),
    }
}

async fn read_calls(State(state): State<Arc<SimState>>) -> Response {
    Json(state.calls().clone()).into_response()
}

async fn clear_calls(State(state): State<Arc<SimState>>) -> StatusCode {
    state.calls().clear();
    StatusCode::NO_CONTENT
}

async fn read_opt_outs(State(state): State<Arc<SimState>>) -> Response {
    Json(state.twilio_opt_outs().list()).into_response()
}

async fn clear_opt_outs(State(state): State<Arc<SimState>>) -> StatusCode {
    state.twilio_opt_outs().clear();
    StatusCode::NO_CONTENT
}

async fn sns_certificate(State(state): State<Arc<SimState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/x-pem-file")], state.signer.certificate_pem().to_owned()).into_response()
}
