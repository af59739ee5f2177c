//! Meta WhatsApp Cloud API: the subscription handshakes and the signed event callbacks, per
//! tenant (a WABA's override callback) and for the platform's app as a whole.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kernel::error::ApiError;
use kernel::extract::Path;
use kernel::ids::TenantId;
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::{Acknowledged, record, rejected};
use crate::Communications;
use crate::channels::repository;

/// Echoes `hub.challenge` when `hub.verify_token` is one this tenant gave Meta.
#[utoipa::path(
    get, path = "/api/webhooks/meta/{tenant_id}", tag = "webhooks",
    params(
        ("tenant_id" = Uuid, Path),
        ("hub.mode" = String, Query, description = "`subscribe`"),
        ("hub.verify_token" = String, Query),
        ("hub.challenge" = String, Query),
    ),
    responses(
        (status = 200, content_type = "text/plain", body = String, description = "The challenge, echoed"),
        (status = 403, body = kernel::error::ErrorBody, description = "Unknown verify token"),
    )
)]
pub async fn meta_handshake(
    State(module): State<Communications>,
    Path(tenant_id): Path<Uuid>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = TenantId(tenant_id);
    for provider in repository::meta_providers(&module.pool, tenant).await? {
        let secrets = module.provider_secrets(&provider).await?;
        let Some(expected) = secrets.get("verify_token") else { continue };
        if let Ok(challenge) = cpaas::webhooks::meta::verify_handshake(&query, expected) {
            tracing::info!(tenant_id = %tenant, "Meta webhook subscription verified");
            return Ok(challenge_echo(challenge));
        }
    }
    Err(ApiError::Forbidden("the verify token does not match this tenant's WhatsApp channel".into()))
}

/// Meta's handshake for the platform app's own callback URL (set in the app dashboard): the
/// token must be `providers.meta_verify_token`.
#[utoipa::path(
    get, path = "/api/webhooks/meta", tag = "webhooks",
    params(
        ("hub.mode" = String, Query, description = "`subscribe`"),
        ("hub.verify_token" = String, Query),
        ("hub.challenge" = String, Query),
    ),
    responses(
        (status = 200, content_type = "text/plain", body = String, description = "The challenge, echoed"),
        (status = 400, body = kernel::error::ErrorBody, description = "Not a subscription handshake"),
        (status = 401, body = kernel::error::ErrorBody, description = "No verify token"),
        (status = 403, body = kernel::error::ErrorBody, description = "Wrong verify token, or none configured"),
    )
)]
pub async fn meta_app_handshake(
    State(module): State<Communications>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let expected = module.endpoints.meta_verify_token.expose_secret();
    if expected.is_empty() {
        return Err(ApiError::Forbidden(
            "no app-level verify token is configured (providers.meta_verify_token)".into(),
        ));
    }
    let challenge = cpaas::webhooks::meta::verify_handshake(&query, expected).map_err(|e| rejected("meta", &e))?;
    tracing::info!("Meta app webhook subscription verified");
    Ok(challenge_echo(challenge))
}

fn challenge_echo(challenge: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], challenge).into_response()
}

/// WhatsApp Cloud API events for one tenant (statuses, inbound messages), signed by the
/// platform's Meta app (`X-Hub-Signature-256`).
#[utoipa::path(
    post, path = "/api/webhooks/meta/{tenant_id}", tag = "webhooks",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = Acknowledged), (status = 401, body = kernel::error::ErrorBody), (status = 403, body = kernel::error::ErrorBody))
)]
pub async fn meta_webhook(
    State(module): State<Communications>,
    Path(tenant_id): Path<Uuid>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    let events = verified_events(&module, &headers, &body)?;
    record(&module, "meta", "notification", &[tenant_id], None, &body, &events, None).await
}

/// The platform Meta app's own callback (WABAs without an override): statuses find their
/// tenant through the message, inbound messages through the receiving phone number.
#[utoipa::path(
    post, path = "/api/webhooks/meta", tag = "webhooks",
    responses((status = 200, body = Acknowledged), (status = 401, body = kernel::error::ErrorBody), (status = 403, body = kernel::error::ErrorBody))
)]
pub async fn meta_app_webhook(
    State(module): State<Communications>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    let events = verified_events(&module, &headers, &body)?;
    record(&module, "meta", "notification", &[], None, &body, &events, None).await
}

/// The events of a body signed with the platform app's secret.
fn verified_events(
    module: &Communications,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<cpaas::ProviderEvent>, ApiError> {
    let signature = headers.get(cpaas::webhooks::meta::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let secret = module.endpoints.meta_app_secret.expose_secret().as_bytes();
    cpaas::webhooks::meta::verify_signature(secret, signature, body).map_err(|e| rejected("meta", &e))?;
    cpaas::webhooks::meta::parse(body).map_err(|e| rejected("meta", &e))
}
