//! `/healthz`, `/readyz`, `/metrics` and `/api/openapi.json`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use kernel::extract::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::OpsState;
use crate::database;

pub fn router() -> OpenApiRouter<OpsState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub database: &'static str,
    pub migrations: &'static str,
    /// `ok`, `down` (a dispatch lane of this process is not running; it is being restarted) or
    /// `not_run` (dispatch runs in `switchboard worker` processes).
    pub dispatch: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers, every migration is applied, and the dispatch lanes this
/// process runs are running.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness))
)]
pub async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let check = tokio::time::timeout(Duration::from_secs(2), database::migrations_current(&state.pool)).await;
    let (database, migrations) = match check {
        Ok(Ok(true)) => ("ok", "current"),
        Ok(Ok(false)) => ("ok", "pending"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: database check failed");
            ("unreachable", "unknown")
        }
        Err(_) => ("timeout", "unknown"),
    };
    let dispatch = match &state.dispatch {
        None => "not_run",
        Some(health) if health.ready() => "ok",
        Some(_) => "down",
    };
    let ready = database == "ok" && migrations == "current" && dispatch != "down";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let readiness = Readiness { status: if ready { "ready" } else { "not_ready" }, database, migrations, dispatch };
    (status, Json(readiness))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics() -> impl IntoResponse {
    let handle = super::install_recorder();
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi_json(State(state): State<OpsState>) -> impl IntoResponse {
    axum::Json(state.openapi.as_ref().clone())
}
