//! Inbound media: the sim invents media for the inbound messages it posts (`InboundSpec::MetaMedia`,
//! `InboundSpec::TwilioMms`) and serves their bytes as the providers do.
//!
//! - Meta: `GET /{version}/{media-id}` (Bearer) answers
//!   `{"messaging_product","url","mime_type","sha256","file_size","id"}`; the `url` points at
//!   `/whatsapp_business/attachments/?mid=…&ext=…&hash=…` (Meta's CDN path), which wants the same
//!   Bearer token and serves the bytes.
//! - Twilio: `GET /2010-04-01/Accounts/{sid}/Messages/{MM…}/Media/{ME…}` (Basic auth) answers
//!   307 to `/sim/storage/twilio/{token}`, a signed storage URL that, like S3's, refuses a
//!   request carrying an `Authorization` header (400: "only one auth mechanism allowed").
//!
//! Every request is in the ledger: `get_media` (Meta lookup), `fetch_media` (Twilio's media
//! resource), `download_media` (the bytes; `body.authorization` says whether an Authorization
//! header came along). Failure rules match by provider and the number that *sent* the media
//! (`ServerError`/`Timeout` → 500, `AuthFailed` → 401, `RateLimited` → 429/400 as for sends), on
//! the lookup (Meta) or the media resource (Twilio).
//!
//! The bytes of media `id` are [`media_bytes`]: deterministic, so a test can check them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::failures::{FailureKind, pick_failure};
use crate::ledger::NewEntry;
use crate::{SimState, TIMEOUT_HOLD, meta, random_hex, twilio};

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/whatsapp_business/attachments/", get(meta_download))
        .route("/2010-04-01/Accounts/{account_sid}/Messages/{message_json}/Media/{media_sid}", get(twilio_media))
        .route("/sim/storage/twilio/{token}", get(twilio_storage))
}

/// What the sim serves for media `id`: a binary header (not valid UTF-8, so a text round trip
/// would show), the id, and every byte value once.
pub fn media_bytes(id: &str) -> Vec<u8> {
    let mut bytes = b"\x89SIM\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(id.as_bytes());
    bytes.extend(0..=255u8);
    bytes
}

#[derive(Debug, Clone)]
struct Medium {
    content_type: String,
    /// Who sent it (failure rules match on it).
    from: String,
    /// Twilio: the account and message it belongs to.
    twilio: Option<(String, String)>,
}

/// The media the sim invented, and the storage tokens its Twilio redirects handed out.
#[derive(Debug, Default)]
pub(crate) struct Store {
    media: HashMap<String, Medium>,
    storage: HashMap<String, String>,
}

/// A new Meta media id (digits, as Meta's are).
fn meta_media_id() -> String {
    format!("{:016}", uuid::Uuid::new_v4().as_u128() % 10_000_000_000_000_000)
}

/// The webhook of an inbound Meta media message (`kind`: image, document, audio, video, sticker).
pub(crate) fn meta_inbound(
    state: &SimState,
    phone_number_id: &str,
    from: &str,
    kind: &str,
    caption: Option<&str>,
    mime_type: &str,
    filename: Option<&str>,
) -> anyhow::Result<(String, Value)> {
    anyhow::ensure!(
        matches!(kind, "image" | "document" | "audio" | "video" | "sticker"),
        "Meta has no {kind:?} media messages"
    );
    let id = meta_media_id();
    state
        .media()
        .media
        .insert(id.clone(), Medium { content_type: mime_type.to_owned(), from: from.to_owned(), twilio: None });
    let mut object = json!({"id": id, "mime_type": mime_type, "sha256": hex::encode(Sha256::digest(media_bytes(&id)))});
    if let Some(caption) = caption.filter(|_| matches!(kind, "image" | "document" | "video")) {
        object["caption"] = json!(caption);
    }
    match kind {
        "document" => object["filename"] = json!(filename.unwrap_or("document.pdf")),
        "audio" => object["voice"] = json!(false),
        "sticker" => object["animated"] = json!(false),
        _ => {}
    }
    meta::inbound_message_webhook(state, phone_number_id, from, kind, object)
}

/// The webhook of an inbound MMS with one medium per content type.
pub(crate) fn twilio_inbound(
    state: &SimState,
    inbound: twilio::InboundForm<'_>,
    content_types: &[String],
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let sid = format!("MM{}", random_hex(32));
    let base = state.base_url();
    let media: Vec<(String, String)> = content_types
        .iter()
        .map(|content_type| {
            let media_sid = format!("ME{}", random_hex(32));
            let url = format!("{base}/2010-04-01/Accounts/{}/Messages/{sid}/Media/{media_sid}", inbound.account_sid);
            let medium = Medium {
                content_type: content_type.clone(),
                from: inbound.from.to_owned(),
                twilio: Some((inbound.account_sid.to_owned(), sid.clone())),
            };
            state.media().media.insert(media_sid, medium);
            (url, content_type.clone())
        })
        .collect();
    twilio::inbound_message(state, inbound, &sid, &media)
}

fn record(state: &SimState, provider: &'static str, operation: &'static str, path: String, body: Value, outcome: &str) {
    state.ledger().record(NewEntry {
        provider,
        operation,
        method: "GET",
        path,
        recipient: None,
        provider_message_id: None,
        body,
        outcome: outcome.to_owned(),
    });
}

/// The failure rule (by the media's sender) that fires for this request, if any.
fn failure(state: &SimState, provider: &str, from: &str) -> Option<FailureKind> {
    let applies = |kind| {
        matches!(
            kind,
            FailureKind::ServerError | FailureKind::Timeout | FailureKind::AuthFailed | FailureKind::RateLimited
        )
    };
    pick_failure(state, provider, Some(from), applies)
}

fn bytes_response(id: &str, content_type: &str) -> Response {
    let content_type = header::HeaderValue::from_str(content_type)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], media_bytes(id)).into_response()
}

/// `GET /{version}/{node}` for a media id the sim invented (else `None`: not media).
pub(crate) async fn meta_lookup(state: &SimState, version: &str, node: &str, headers: &HeaderMap) -> Option<Response> {
    let medium = state.media().media.get(node).filter(|m| m.twilio.is_none()).cloned()?;
    let path = format!("/{version}/{node}");
    if meta::bearer_token(headers).is_none() {
        record(state, "meta", "get_media", path, Value::Null, "error:190");
        return Some(meta::token_error());
    }
    if let Some(kind) = failure(state, "meta", &medium.from) {
        let (status, code, title, details) = meta::failure_reply(kind);
        record(state, "meta", "get_media", path, Value::Null, &format!("error:{code}"));
        if kind == FailureKind::Timeout {
            tokio::time::sleep(TIMEOUT_HOLD).await;
        }
        return Some(meta::meta_error(status, code, title, details));
    }
    record(state, "meta", "get_media", path, Value::Null, "accepted");
    let bytes = media_bytes(node);
    let ext = chrono::Utc::now().timestamp();
    let url =
        format!("{}/whatsapp_business/attachments/?mid={node}&ext={ext}&hash={}", state.base_url(), random_hex(24));
    let reply = json!({
        "messaging_product": "whatsapp",
        "url": url,
        "mime_type": medium.content_type,
        "sha256": hex::encode(Sha256::digest(&bytes)),
        "file_size": bytes.len(),
        "id": node,
    });
    Some((StatusCode::OK, axum::Json(reply)).into_response())
}

async fn meta_download(
    State(state): State<Arc<SimState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let id = query.get("mid").cloned().unwrap_or_default();
    let authorization = headers.contains_key(header::AUTHORIZATION);
    let path = "/whatsapp_business/attachments/".to_owned();
    let medium = state.media().media.get(&id).filter(|m| m.twilio.is_none()).cloned();
    let Some(medium) = medium else {
        record(&state, "meta", "download_media", path, json!({"authorization": authorization}), "error:404");
        return StatusCode::NOT_FOUND.into_response();
    };
    if meta::bearer_token(&headers).is_none() {
        record(&state, "meta", "download_media", path, json!({"authorization": authorization}), "error:190");
        return meta::token_error();
    }
    record(&state, "meta", "download_media", path, json!({"authorization": authorization}), "accepted");
    bytes_response(&id, &medium.content_type)
}

async fn twilio_media(
    State(state): State<Arc<SimState>>,
    Path((account_sid, message_sid, media_sid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/2010-04-01/Accounts/{account_sid}/Messages/{message_sid}/Media/{media_sid}");
    if !twilio::is_authenticated(&state, &headers, &account_sid) {
        record(&state, "twilio", "fetch_media", path, Value::Null, "error:20003");
        return twilio::authenticate_error();
    }
    let medium = state.media().media.get(&media_sid).cloned();
    let owner = (account_sid.clone(), message_sid.clone());
    let Some(medium) = medium.filter(|m| m.twilio.as_ref() == Some(&owner)) else {
        record(&state, "twilio", "fetch_media", path, Value::Null, "error:20404");
        return twilio::twilio_error(StatusCode::NOT_FOUND, 20404, "The requested resource was not found");
    };
    if let Some(kind) = failure(&state, "twilio", &medium.from) {
        let (status, code, message) = match kind {
            FailureKind::AuthFailed => (StatusCode::UNAUTHORIZED, 20003, "Authenticate"),
            FailureKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, 20500, "Internal Server Error"),
        };
        record(&state, "twilio", "fetch_media", path, Value::Null, &format!("error:{code}"));
        if kind == FailureKind::Timeout {
            tokio::time::sleep(TIMEOUT_HOLD).await;
        }
        return twilio::twilio_error(status, code, message);
    }
    record(&state, "twilio", "fetch_media", path, Value::Null, "redirected");
    let token = random_hex(40);
    state.media().storage.insert(token.clone(), media_sid);
    let location =
        format!("{}/sim/storage/twilio/{token}?Expires={}", state.base_url(), chrono::Utc::now().timestamp() + 14_400);
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
}

async fn twilio_storage(State(state): State<Arc<SimState>>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    let authorization = headers.contains_key(header::AUTHORIZATION);
    let path = format!("/sim/storage/twilio/{token}");
    let found = {
        let store = state.media();
        store.storage.get(&token).and_then(|id| Some((id.clone(), store.media.get(id)?.clone())))
    };
    let Some((id, medium)) = found else {
        record(&state, "twilio", "download_media", path, json!({"authorization": authorization}), "error:404");
        return StatusCode::NOT_FOUND.into_response();
    };
    if authorization {
        // S3's answer to a presigned URL fetched with an Authorization header as well.
        record(&state, "twilio", "download_media", path, json!({"authorization": true}), "error:InvalidArgument");
        let body = "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified</Message></Error>";
        return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/xml")], body).into_response();
    }
    record(&state, "twilio", "download_media", path, json!({"authorization": false}), "accepted");
    bytes_response(&id, &medium.content_type)
}
