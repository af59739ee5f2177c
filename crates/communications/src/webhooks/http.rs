//! `GET /api/webhooks/meta/{tenant_id}`: Meta's subscription handshake for a tenant's WABA
//! override callback. Public (Meta authenticates with the verify token we gave it).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kernel::error::ApiError;
use kernel::extract::Path;
use kernel::ids::TenantId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Communications;
use crate::channels::repository;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new().routes(routes!(meta_handshake))
}

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
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], challenge).into_response());
        }
    }
    Err(ApiError::Forbidden("the verify token does not match this tenant's WhatsApp channel".into()))
}
