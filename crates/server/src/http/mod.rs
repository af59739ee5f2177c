//! Router composition and the cross-cutting HTTP layers.

mod errors;
mod health;
mod metrics;
mod openapi;
mod request_id;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::middleware::{from_fn, from_fn_with_state};
use communications::Communications;
use identity::Identity;
use sqlx::PgPool;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::settings::Settings;

/// Shared by the operational routes.
#[derive(Clone)]
pub struct OpsState {
    pub pool: PgPool,
    pub openapi: std::sync::Arc<utoipa::openapi::OpenApi>,
    /// This process's dispatch lanes, when it runs them.
    pub dispatch: Option<crate::supervise::DispatchHealth>,
}

impl std::fmt::Debug for OpsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsState").finish_non_exhaustive()
    }
}

pub fn router(
    settings: &Settings,
    pool: PgPool,
    communications: Communications,
    fulfillment: fulfillment::Fulfillment,
    dispatch: Option<crate::supervise::DispatchHealth>,
) -> Router {
    let identity = Identity::new(pool.clone(), settings.auth.clone());

    let (api, mut openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(identity::http::router().with_state(identity.clone()))
        .merge(communications::channels::http::router().with_state(communications.clone()))
        .merge(communications::messages::http::router().with_state(communications.clone()))
        .merge(communications::templates::http::router().with_state(communications.clone()))
        .merge(communications::triggers::http::router().with_state(communications.clone()))
        .merge(communications::inbox::http::router().with_state(communications.clone()))
        .merge(communications::inbox::contacts_http::router().with_state(communications.clone()))
        .merge(communications::inbox::labels::router().with_state(communications.clone()))
        .merge(communications::inbox::notes::router().with_state(communications.clone()))
        .merge(communications::inbox::canned::router().with_state(communications.clone()))
        .merge(communications::policy::http::router().with_state(communications.clone()))
        .merge(communications::compliance::router().with_state(communications.clone()))
        .merge(communications::queues::router().with_state(communications.clone()))
        .merge(fulfillment::router().with_state(fulfillment.clone()))
        .split_for_parts();
    let api = api.layer(from_fn_with_state(identity.clone(), identity::http::authenticate));
    // The agent web UI: pages and their assets, beside the API it is built on.
    let web = web::router(communications.clone(), identity, settings.http.body_limit_bytes);

    // Providers authenticate webhooks with signatures and tokens, not our credentials.
    let (webhooks, webhooks_doc) =
        communications::webhooks::router().with_state(communications.clone()).split_for_parts();
    openapi.merge(webhooks_doc);
    // Website visitors authenticate with their webchat token.
    let (webchat, webchat_doc) = communications::webchat::router().with_state(communications).split_for_parts();
    openapi.merge(webchat_doc);
    // Calendar vendors push with their own signatures and tokens.
    let (calendar_hooks, calendar_doc) = fulfillment::webhooks_router().with_state(fulfillment).split_for_parts();
    openapi.merge(calendar_doc);

    let (ops, ops_doc) = health::router().split_for_parts();
    openapi.merge(ops_doc);
    let ops = ops.with_state(OpsState { pool, openapi: std::sync::Arc::new(openapi), dispatch });

    let timeout = Duration::from_secs(settings.http.request_timeout_secs);
    Router::new()
        .merge(ops)
        .merge(api)
        .merge(web)
        .merge(webhooks)
        .merge(webchat)
        .merge(calendar_hooks)
        .fallback(errors::route_not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
                .layer(from_fn(request_id::drop_unacceptable))
                .layer(SetRequestIdLayer::x_request_id(request_id::MakeRequestId))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_id::make_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(errors::panic_response))
                .layer(from_fn(metrics::record))
                .layer(from_fn(errors::ensure_json_errors))
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
                .layer(DefaultBodyLimit::max(settings.http.body_limit_bytes)),
        )
}

pub use metrics::install_recorder;

/// The fulfillment module with its hold time and calendar apps (push channels point at
/// `providers.public_base_url`, or at `bound`).
pub fn fulfillment_module(
    settings: &Settings,
    pool: PgPool,
    bound: std::net::SocketAddr,
) -> anyhow::Result<fulfillment::Fulfillment> {
    let keyring = std::sync::Arc::new(settings.secrets.keyring()?);
    Ok(fulfillment::Fulfillment::new(pool, keyring)
        .with_hold_ttl(Duration::from_secs(settings.fulfillment.hold_ttl_secs))
        .with_calendars(settings.calendars.apps(&settings.providers, bound)))
}

/// A listener with only `GET /metrics` (and `/healthz`), for processes without the API (the
/// worker): Prometheus scrapes it like a serve process.
pub async fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context;
    install_recorder();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (worker.metrics_bind)"))?;
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(health::metrics))
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tracing::info!(%addr, "worker metrics listening");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the worker's metrics listener stopped");
        }
    }))
}
