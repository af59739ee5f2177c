//! Provider webhooks. Public routes: providers authenticate with signatures (verified over the
//! raw bytes before anything is parsed) and with the verify token of Meta's handshake.
//! A verified envelope is stored before the provider gets its 200; a forged one gets 401/403.

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
    OpenApiRouter::new()
        .routes(routes!(meta_handshake, meta_webhook))
        .routes(routes!(meta_app_webhook))
        .routes(routes!(sns_webhook))
        .routes(routes!(twilio_webhook))
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

fn rejected(error: &cpaas::webhooks::WebhookError) -> ApiError {
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

#[allow(clippy::too_many_arguments)]
async fn record(
    module: &Communications,
    provider: &str,
    kind: &str,
    tenant: Option<Uuid>,
    envelope_id: Option<&str>,
    body: &[u8],
    events: &[cpaas::ProviderEvent],
    correlation: Option<Uuid>,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    let body = String::from_utf8_lossy(body);
    let envelope =
        crate::tracking::TrackedEvent { provider, kind, tenant, envelope_id, body: &body, events, correlation };
    let outcome = module.record_webhook(envelope).await?;
    Ok(axum::Json(Acknowledged { outcome: outcome.as_str() }))
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
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    use secrecy::ExposeSecret;
    let signature = headers.get(cpaas::webhooks::meta::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let secret = module.endpoints.meta_app_secret.expose_secret().as_bytes();
    cpaas::webhooks::meta::verify_signature(secret, signature, &body).map_err(|e| rejected(&e))?;
    let events = cpaas::webhooks::meta::parse(&body).map_err(|e| rejected(&e))?;
    record(&module, "meta", "notification", Some(tenant_id), None, &body, &events, None).await
}

/// The platform Meta app's own callback (WABAs without an override): statuses find their
/// tenant through the message, inbound messages through the receiving phone number.
#[utoipa::path(
    post, path = "/api/webhooks/meta", tag = "webhooks",
    responses((status = 200, body = Acknowledged), (status = 401, body = kernel::error::ErrorBody), (status = 403, body = kernel::error::ErrorBody))
)]
pub async fn meta_app_webhook(
    State(module): State<Communications>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    use secrecy::ExposeSecret;
    let signature = headers.get(cpaas::webhooks::meta::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let secret = module.endpoints.meta_app_secret.expose_secret().as_bytes();
    cpaas::webhooks::meta::verify_signature(secret, signature, &body).map_err(|e| rejected(&e))?;
    let events = cpaas::webhooks::meta::parse(&body).map_err(|e| rejected(&e))?;
    record(&module, "meta", "notification", None, None, &body, &events, None).await
}

/// Amazon SNS: SES delivery events and inbound mail, and subscription confirmations; verified
/// by the SNS message signature against a trusted signing certificate.
#[utoipa::path(
    post, path = "/api/webhooks/aws/sns", tag = "webhooks",
    responses((status = 200, body = Acknowledged), (status = 400, body = kernel::error::ErrorBody), (status = 403, body = kernel::error::ErrorBody))
)]
pub async fn sns_webhook(
    State(module): State<Communications>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    let message = module.sns.verify_body(&body).await.map_err(|e| rejected(&e))?;
    if message.is_subscription_confirmation() {
        if let Some(url) = module.sns.confirmation_url(&message).map_err(|e| rejected(&e))? {
            let confirmed = module.http.get(url).send().await.map(|r| r.status().is_success()).unwrap_or(false);
            tracing::info!(topic = %message.topic_arn, confirmed, "SNS subscription confirmation");
        }
        return record(&module, "sns", "subscription", None, Some(&message.message_id), &body, &[], None).await;
    }
    if !message.is_notification() {
        return record(&module, "sns", "unsubscribe", None, Some(&message.message_id), &body, &[], None).await;
    }
    let events = cpaas::webhooks::ses::parse(&message.message).map_err(|e| rejected(&e))?;
    record(&module, "sns", "notification", None, Some(&message.message_id), &body, &events, None).await
}

/// Twilio callbacks for one tenant: `status` (message status), `inbound` (SMS), `voice` (calls),
/// signed with the tenant's (or the platform's) auth token over the full URL and the form.
#[utoipa::path(
    post, path = "/api/webhooks/twilio/{tenant_id}/{kind}", tag = "webhooks",
    params(("tenant_id" = Uuid, Path), ("kind" = String, Path, description = "status, inbound or voice")),
    responses((status = 200, body = Acknowledged), (status = 401, body = kernel::error::ErrorBody), (status = 403, body = kernel::error::ErrorBody), (status = 404, body = kernel::error::ErrorBody))
)]
pub async fn twilio_webhook(
    State(module): State<Communications>,
    Path((tenant_id, kind)): Path<(Uuid, String)>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    if !matches!(kind.as_str(), "status" | "inbound" | "voice") {
        return Err(ApiError::NotFound("webhook"));
    }
    let params = cpaas::webhooks::twilio::parse_form(&body);
    let signature = headers.get(cpaas::webhooks::twilio::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let url = format!(
        "{}{}",
        module.endpoints.public_base_url.trim_end_matches('/'),
        uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path())
    );
    let tokens = module.twilio_tokens(TenantId(tenant_id)).await?;
    let mut verdict = Err(cpaas::webhooks::WebhookError::MissingSignature);
    for token in &tokens {
        verdict = cpaas::webhooks::twilio::verify_signature(token.as_bytes(), &url, &params, signature);
        if verdict.is_ok() {
            break;
        }
    }
    verdict.map_err(|e| rejected(&e))?;
    let events = cpaas::webhooks::twilio::parse_callback(&params, chrono::Utc::now());
    let sid =
        params.iter().find(|(k, _)| k == "MessageSid" || k == "CallSid").map(|(_, v)| v.as_str()).unwrap_or_default();
    let state = params
        .iter()
        .find(|(k, _)| k == "MessageStatus" || k == "CallStatus" || k == "SmsStatus")
        .map(|(_, v)| v.as_str())
        .unwrap_or("inbound");
    let envelope_id = format!("{kind}:{sid}:{state}");
    let correlation = uri
        .query()
        .and_then(|query| form_urlencoded_pairs(query).find(|(k, _)| k == "correlation_id").map(|(_, v)| v))
        .and_then(|v| v.parse::<Uuid>().ok());
    record(&module, "twilio", &kind, Some(tenant_id), Some(&envelope_id), &body, &events, correlation).await
}

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        Some((key.to_owned(), value.to_owned()))
    })
}
