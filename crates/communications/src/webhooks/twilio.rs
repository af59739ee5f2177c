//! Twilio's callbacks for one tenant, signed with its (or the platform's) auth token.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use kernel::error::ApiError;
use kernel::extract::Path;
use kernel::ids::TenantId;
use uuid::Uuid;

use super::{Acknowledged, record, rejected};
use crate::Communications;

/// Twilio callbacks for one tenant: `status` (message status), `inbound` (SMS), and the calls'
/// `voice` (a call comes in), `voice-dial` (the forwarded leg's outcome) and `voice-status`,
/// which answer TwiML (see `crate::voice`). Signed with the tenant's (or the platform's) auth
/// token over the full URL and the form.
#[utoipa::path(
    post, path = "/api/webhooks/twilio/{tenant_id}/{kind}", tag = "webhooks",
    params(("tenant_id" = Uuid, Path), ("kind" = String, Path, description = "status, inbound, voice, voice-dial or voice-status")),
    responses((status = 200, body = Acknowledged, description = "JSON for messages; TwiML (text/xml) for voice"), (status = 401, body = kernel::error::ErrorBody), (status = 403, body = kernel::error::ErrorBody), (status = 404, body = kernel::error::ErrorBody))
)]
pub async fn twilio_webhook(
    State(module): State<Communications>,
    Path((tenant_id, kind)): Path<(Uuid, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let received_at = chrono::Utc::now();
    let voice = crate::voice::KINDS.contains(&kind.as_str());
    if !voice && !matches!(kind.as_str(), "status" | "inbound") {
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
    for token in tokens.iter() {
        verdict = cpaas::webhooks::twilio::verify_signature(token.as_bytes(), &url, &params, signature);
        if verdict.is_ok() {
            break;
        }
    }
    verdict.map_err(|e| rejected("twilio", &e))?;
    if voice {
        return module.voice_webhook(tenant_id, &kind, &params, &body, received_at).await;
    }
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
    Ok(record(&module, "twilio", &kind, &[tenant_id], Some(&envelope_id), &body, &events, correlation)
        .await?
        .into_response())
}

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        Some((key.to_owned(), value.to_owned()))
    })
}
