//! Provider webhooks. Public routes: providers authenticate with signatures (verified over the
//! raw bytes before anything is parsed) and with the verify token of Meta's handshake. A
//! verified envelope is stored before the provider gets its 200; a forged one gets 401/403, and a
//! signed one from a source we do not expect (an SNS topic nobody configured) is kept for audit
//! and answered 403.

mod meta;
mod sns;
mod twilio;

use kernel::error::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Communications;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(meta::meta_handshake, meta::meta_webhook))
        .routes(routes!(meta::meta_app_handshake, meta::meta_app_webhook))
        .routes(routes!(sns::sns_webhook))
        .routes(routes!(twilio::twilio_webhook))
}

fn rejected(provider: &'static str, error: &cpaas::webhooks::WebhookError) -> ApiError {
    let reason = match (error.http_status(), error) {
        (_, cpaas::webhooks::WebhookError::MissingSignature) => "signature_missing",
        (401, _) => "signature_invalid",
        (403, _) => "forbidden",
        _ => "bad_request",
    };
    metrics::counter!("webhooks_rejected_total", "provider" => provider, "reason" => reason).increment(1);
    match error.http_status() {
        401 => ApiError::InvalidCredentials(error.to_string()),
        403 => ApiError::Forbidden(error.to_string()),
        400 => ApiError::BadRequest { message: error.to_string(), field: None },
        _ => ApiError::BadGateway(error.to_string()),
    }
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Acknowledged {
    /// applied, unmatched, stored, duplicate or ignored.
    pub outcome: &'static str,
}

/// Stores a verified envelope and applies its events; `tenants` are those it may concern
/// (empty: any, the message tells).
#[allow(clippy::too_many_arguments)]
async fn record(
    module: &Communications,
    provider: &str,
    kind: &str,
    tenants: &[Uuid],
    envelope_id: Option<&str>,
    body: &[u8],
    events: &[cpaas::ProviderEvent],
    correlation: Option<Uuid>,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    let body = String::from_utf8_lossy(body);
    let envelope =
        crate::tracking::TrackedEvent { provider, kind, tenants, envelope_id, body: &body, events, correlation };
    let outcome = module.record_webhook(envelope).await?;
    Ok(axum::Json(Acknowledged { outcome: outcome.as_str() }))
}
