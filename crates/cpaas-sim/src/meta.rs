//! Meta WhatsApp Cloud API (Graph API): sends, Embedded Signup calls, phone-number reads, and the
//! shapes of the webhooks the sim posts (see docs/providers/meta-whatsapp.md).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::failures::{FailureKind, pick_failure};
use crate::ledger::{Fate, NewEntry, SentMessage};
use crate::{SimState, TIMEOUT_HOLD, callbacks, random_hex};

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/{version}/oauth/access_token", get(exchange_code))
        .route("/{version}/{node}/messages", post(send_message))
        .route("/{version}/{node}/register", post(register_phone))
        .route("/{version}/{node}/subscribed_apps", post(subscribe_app))
        .route("/{version}/{node}", get(get_phone_number))
}

/// What the sim has learned about WABAs and phone numbers during Embedded Signup.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    phone_waba: HashMap<String, String>,
    waba_override: HashMap<String, String>,
    token_waba: HashMap<String, String>,
    token_phones: HashMap<String, Vec<String>>,
}

impl Registry {
    /// A subscribe call ties the business token to its WABA, and through the token every phone
    /// number registered with it (Embedded Signup issues one token per customer).
    fn link_token_to_waba(&mut self, token: &str, waba_id: &str) {
        self.token_waba.insert(token.to_owned(), waba_id.to_owned());
        for phone in self.token_phones.get(token).into_iter().flatten() {
            self.phone_waba.insert(phone.clone(), waba_id.to_owned());
        }
    }

    fn link_token_to_phone(&mut self, token: &str, phone_number_id: &str) {
        self.token_phones.entry(token.to_owned()).or_default().push(phone_number_id.to_owned());
        if let Some(waba) = self.token_waba.get(token) {
            self.phone_waba.insert(phone_number_id.to_owned(), waba.clone());
        }
    }

    pub(crate) fn waba_for_phone(&self, phone_number_id: &str) -> String {
        self.phone_waba
            .get(phone_number_id)
            .cloned()
            .unwrap_or_else(|| invented_digits(&format!("waba:{phone_number_id}"), 15))
    }

    /// Where this phone number's `messages` webhooks go: its WABA's override, if any.
    pub(crate) fn override_uri_for_phone(&self, phone_number_id: &str) -> Option<String> {
        self.waba_override.get(&self.waba_for_phone(phone_number_id)).cloned()
    }
}

/// Stable, plausible numeric ids for things the sim was never told about (FNV-1a of a seed).
fn invented_digits(seed: &str, len: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut digits = format!("1{hash:019}");
    digits.truncate(len);
    digits
}

/// The business number as digits (`15550123456`), as webhooks' `metadata.display_phone_number` has it.
pub(crate) fn display_digits(phone_number_id: &str) -> String {
    let tail = invented_digits(&format!("display:{phone_number_id}"), 8);
    format!("1555{}", &tail[1..])
}

fn display_pretty(phone_number_id: &str) -> String {
    let d = display_digits(phone_number_id);
    format!("+1 {}-{}-{}", &d[1..4], &d[4..7], &d[7..])
}

fn fbtrace_id() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&uuid::Uuid::new_v4().as_bytes()[..8])
}

/// Graph error body `{"error":{message,type,code,error_data,fbtrace_id}}` with `(#code) title`.
pub(crate) fn meta_error(status: StatusCode, code: u32, title: &str, details: &str) -> Response {
    let body = json!({"error": {
        "message": format!("(#{code}) {title}"),
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": fbtrace_id(),
    }});
    (status, axum::Json(body)).into_response()
}

pub(crate) fn token_error() -> Response {
    let body = json!({"error": {
        "message": "Invalid OAuth access token - Cannot parse access token",
        "type": "OAuthException",
        "code": 190,
        "fbtrace_id": fbtrace_id(),
    }});
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The injected-failure reply: (HTTP status, Meta code, title, details).
pub(crate) fn failure_reply(kind: FailureKind) -> (StatusCode, u32, &'static str, &'static str) {
    match kind {
        FailureKind::RateLimited => {
            (StatusCode::BAD_REQUEST, 130429, "Rate limit hit", "Cloud API message throughput has been reached.")
        }
        FailureKind::ServerError | FailureKind::Timeout => {
            (StatusCode::INTERNAL_SERVER_ERROR, 131000, "Something went wrong", "Something went wrong.")
        }
        FailureKind::InvalidRecipient => {
            (StatusCode::BAD_REQUEST, 100, "Invalid parameter", "Invalid parameter: to is not a valid phone number.")
        }
        FailureKind::OptedOut => (
            StatusCode::BAD_REQUEST,
            131026,
            "Message Undeliverable",
            "The recipient has opted out of messages from this business.",
        ),
        FailureKind::AuthFailed => (StatusCode::UNAUTHORIZED, 190, "Access token has expired", "Session has expired."),
        FailureKind::AccountSuspended => (
            StatusCode::FORBIDDEN,
            368,
            "Temporarily blocked for policies violations",
            "The WhatsApp Business Account is restricted for a policy violation.",
        ),
        FailureKind::ReEngagementRequired => (
            StatusCode::BAD_REQUEST,
            131047,
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        ),
        // LostAnswer: never matched here (calendar vendors only).
        FailureKind::Undeliverable | FailureKind::MessageRejected | FailureKind::LostAnswer => {
            (StatusCode::BAD_REQUEST, 131026, "Message Undeliverable", "Message Undeliverable.")
        }
    }
}

/// Validates a send body like Meta does; `Err((details))` becomes a code-100 error.
fn validate_send_body(body: &Value) -> Result<(String, &'static str), String> {
    if body.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
        return Err("The parameter messaging_product is required.".to_owned());
    }
    let to = body.get("to").and_then(Value::as_str).filter(|t| !t.trim().is_empty());
    let to = to.ok_or("The parameter to is required.")?;
    let kind = body.get("type").and_then(Value::as_str).unwrap_or("text");
    let kind = match kind {
        "text" => "text",
        "template" => "template",
        "image" => "image",
        "document" => "document",
        "audio" => "audio",
        "video" => "video",
        other => {
            return Err(format!(
                "Param type must be one of {{TEXT, TEMPLATE, IMAGE, DOCUMENT, AUDIO, VIDEO}} - got \"{other}\"."
            ));
        }
    };
    let object = body.get(kind).filter(|o| o.is_object()).ok_or(format!("The parameter {kind} is required."))?;
    match kind {
        "text" => {
            let text = object.get("body").and_then(Value::as_str).filter(|b| !b.is_empty());
            let text = text.ok_or("The parameter text['body'] is required.")?;
            if text.chars().count() > 4096 {
                return Err("Param text['body'] must be at most 4096 characters long.".to_owned());
            }
        }
        "template" => {
            if object.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err("The parameter template['name'] is required.".to_owned());
            }
            if object.pointer("/language/code").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err("The parameter template['language']['code'] is required.".to_owned());
            }
        }
        media => {
            let has_link = object.get("link").and_then(Value::as_str).is_some();
            let has_id = object.get("id").and_then(Value::as_str).is_some();
            if has_link == has_id {
                return Err(format!("Exactly one of {media}['link'] or {media}['id'] is required."));
            }
        }
    }
    Ok((to.to_owned(), kind))
}

fn new_wamid() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(&uuid::Uuid::new_v4().as_bytes()[..12]);
    format!("wamid.{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

async fn send_message(
    State(state): State<Arc<SimState>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let path = format!("/{version}/{phone_number_id}/messages");
    let body: Value =
        serde_json::from_slice(&raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
    let recipient = body.get("to").and_then(Value::as_str).map(str::to_owned);
    let record = |outcome: String, id: Option<String>| {
        state.ledger().record(NewEntry {
            provider: "meta",
            operation: "send_message",
            method: "POST",
            path: path.clone(),
            recipient: recipient.clone(),
            provider_message_id: id,
            body: body.clone(),
            outcome,
        });
    };

    if bearer_token(&headers).is_none() {
        record("error:190".to_owned(), None);
        return token_error();
    }
    let (to, kind) = match validate_send_body(&body) {
        Ok(ok) => ok,
        Err(details) => {
            record("error:100".to_owned(), None);
            return meta_error(StatusCode::BAD_REQUEST, 100, "Invalid parameter", &details);
        }
    };

    let fate = match pick_failure(&state, "meta", Some(&to), |_| true) {
        None => Fate::Delivered,
        Some(FailureKind::Undeliverable) => Fate::Undeliverable,
        Some(FailureKind::Timeout) => {
            record("timeout".to_owned(), None);
            tokio::time::sleep(TIMEOUT_HOLD).await;
            let (status, code, title, details) = failure_reply(FailureKind::Timeout);
            return meta_error(status, code, title, details);
        }
        Some(failure) => {
            let (status, code, title, details) = failure_reply(failure);
            record(format!("error:{code}"), None);
            if code == 190 {
                return token_error();
            }
            return meta_error(status, code, title, details);
        }
    };

    let id = new_wamid();
    let outcome = if fate == Fate::Delivered { "accepted" } else { "accepted:undeliverable" };
    record(outcome.to_owned(), Some(id.clone()));
    state.ledger().remember_message(
        &id,
        SentMessage::Meta {
            phone_number_id: phone_number_id.clone(),
            to: to.clone(),
            biz_opaque_callback_data: body.get("biz_opaque_callback_data").and_then(Value::as_str).map(str::to_owned),
            fate,
        },
    );
    callbacks::schedule_auto_callbacks(&state, &id);

    let wa_id: String = to.chars().filter(char::is_ascii_digit).collect();
    let mut message = json!({"id": id});
    if kind == "template" {
        message["message_status"] = json!("accepted");
    }
    let reply = json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id}],
        "messages": [message],
    });
    (StatusCode::OK, axum::Json(reply)).into_response()
}

async fn exchange_code(
    State(state): State<Arc<SimState>>,
    Path(version): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let code = query.get("code").map(String::as_str).unwrap_or_default();
    let missing =
        ["client_id", "client_secret", "code"].into_iter().find(|k| query.get(*k).is_none_or(String::is_empty));
    let failed = missing.is_some() || code == "invalid";
    state.ledger().record(NewEntry {
        provider: "meta",
        operation: "exchange_code",
        method: "GET",
        path: format!("/{version}/oauth/access_token"),
        recipient: None,
        provider_message_id: None,
        body: serde_json::to_value(&query).unwrap_or_default(),
        outcome: if failed { "error:100" } else { "accepted" }.to_owned(),
    });
    if let Some(key) = missing {
        return meta_oauth_error(&format!("Missing parameter: {key}"));
    }
    if failed {
        return meta_oauth_error("Invalid verification code format.");
    }
    let token = format!("EAASim{}", random_hex(48));
    (StatusCode::OK, axum::Json(json!({"access_token": token, "token_type": "bearer"}))).into_response()
}

fn meta_oauth_error(message: &str) -> Response {
    let body = json!({"error": {
        "message": message,
        "type": "OAuthException",
        "code": 100,
        "fbtrace_id": fbtrace_id(),
    }});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Graph accepts parameters in the query string, a JSON body or a form body; merge them.
fn graph_params(query: &HashMap<String, String>, headers: &HeaderMap, raw: &[u8]) -> (Value, HashMap<String, String>) {
    let mut params = query.clone();
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    let body: Value = if raw.is_empty() {
        Value::Object(serde_json::Map::new())
    } else if is_json || raw.first() == Some(&b'{') {
        serde_json::from_slice(raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))
    } else {
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(raw).unwrap_or_default();
        crate::ledger::form_to_json(&fields)
    };
    if let Some(object) = body.as_object() {
        for (key, value) in object {
            let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            params.insert(key.clone(), text);
        }
    }
    (body, params)
}

async fn register_phone(
    State(state): State<Arc<SimState>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let (body, params) = graph_params(&query, &headers, &raw);
    let token = bearer_token(&headers);
    let pin_ok = params.get("pin").is_some_and(|p| p.len() == 6 && p.chars().all(|c| c.is_ascii_digit()));
    let product_ok = params.get("messaging_product").map(String::as_str) == Some("whatsapp");
    let outcome = match (&token, product_ok && pin_ok) {
        (None, _) => "error:190",
        (Some(_), false) => "error:100",
        (Some(_), true) => "accepted",
    };
    state.ledger().record(NewEntry {
        provider: "meta",
        operation: "register_phone",
        method: "POST",
        path: format!("/{version}/{phone_number_id}/register"),
        recipient: None,
        provider_message_id: None,
        body,
        outcome: outcome.to_owned(),
    });
    let Some(token) = token else { return token_error() };
    if !product_ok {
        return meta_error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "The parameter messaging_product is required.",
        );
    }
    if !pin_ok {
        return meta_error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "The parameter pin must be a 6-digit number.",
        );
    }
    state.meta().link_token_to_phone(&token, &phone_number_id);
    (StatusCode::OK, axum::Json(json!({"success": true}))).into_response()
}

async fn subscribe_app(
    State(state): State<Arc<SimState>>,
    Path((version, waba_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let (body, params) = graph_params(&query, &headers, &raw);
    let record = |outcome: &str| {
        state.ledger().record(NewEntry {
            provider: "meta",
            operation: "subscribe_app",
            method: "POST",
            path: format!("/{version}/{waba_id}/subscribed_apps"),
            recipient: None,
            provider_message_id: None,
            body: body.clone(),
            outcome: outcome.to_owned(),
        });
    };
    let Some(token) = bearer_token(&headers) else {
        record("error:190");
        return token_error();
    };
    if let Some(uri) = params.get("override_callback_uri").filter(|u| !u.is_empty()) {
        let Some(verify_token) = params.get("verify_token").filter(|t| !t.is_empty()) else {
            record("error:100");
            return meta_error(
                StatusCode::BAD_REQUEST,
                100,
                "Invalid parameter",
                "The parameter verify_token is required.",
            );
        };
        if uri.len() > 200 {
            record("error:100");
            return meta_error(
                StatusCode::BAD_REQUEST,
                100,
                "Invalid parameter",
                "override_callback_uri must be at most 200 characters.",
            );
        }
        // Real Meta verifies a new callback before it will deliver to it.
        if let Err(reason) = verify_callback(&state, uri, verify_token).await {
            record("error:2200");
            return meta_error(
                StatusCode::BAD_REQUEST,
                2200,
                "Callback verification failed",
                &format!("Callback verification failed with the following errors: {reason}"),
            );
        }
        state.meta().waba_override.insert(waba_id.clone(), uri.clone());
    }
    state.meta().link_token_to_waba(&token, &waba_id);
    record("accepted");
    (StatusCode::OK, axum::Json(json!({"success": true}))).into_response()
}

/// The GET handshake: `hub.mode=subscribe`, `hub.verify_token`, `hub.challenge`; the endpoint
/// must answer 200 with exactly the challenge.
async fn verify_callback(state: &SimState, uri: &str, verify_token: &str) -> Result<(), String> {
    let challenge = (uuid::Uuid::new_v4().as_u128() % 10_000_000_000).to_string();
    let mut url = url::Url::parse(uri).map_err(|e| format!("invalid URL: {e}"))?;
    url.query_pairs_mut()
        .append_pair("hub.mode", "subscribe")
        .append_pair("hub.challenge", &challenge)
        .append_pair("hub.verify_token", verify_token);
    let response = state.http.get(url).send().await.map_err(|e| format!("couldn't connect to server: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP Status Code = {}", status.as_u16()));
    }
    if text.trim() != challenge {
        return Err("The URL couldn't be validated. Response does not match challenge".to_owned());
    }
    Ok(())
}

async fn get_phone_number(
    State(state): State<Arc<SimState>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // Media ids are Graph nodes too.
    if let Some(media) = crate::media::meta_lookup(&state, &version, &phone_number_id, &headers).await {
        return media;
    }
    let authorised = bearer_token(&headers).is_some();
    state.ledger().record(NewEntry {
        provider: "meta",
        operation: "get_phone_number",
        method: "GET",
        path: format!("/{version}/{phone_number_id}"),
        recipient: None,
        provider_message_id: None,
        body: serde_json::to_value(&query).unwrap_or_default(),
        outcome: if authorised { "accepted" } else { "error:190" }.to_owned(),
    });
    if !authorised {
        return token_error();
    }
    let all = json!({
        "display_phone_number": display_pretty(&phone_number_id),
        "verified_name": "Switchboard Sim",
        "quality_rating": "GREEN",
        "messaging_limit_tier": "TIER_1K",
        "throughput": {"level": "STANDARD"},
        "code_verification_status": "VERIFIED",
        "name_status": "APPROVED",
        "status": "CONNECTED",
        "platform_type": "CLOUD_API",
    });
    // Graph returns only `id` plus the requested fields (a default set when none are named).
    let requested: Vec<&str> = match query.get("fields") {
        Some(fields) => fields.split(',').map(str::trim).collect(),
        None => vec!["display_phone_number", "verified_name", "quality_rating"],
    };
    let mut reply = serde_json::Map::new();
    for field in requested {
        if let Some(value) = all.get(field) {
            reply.insert(field.to_owned(), value.clone());
        }
    }
    reply.insert("id".to_owned(), json!(phone_number_id));
    (StatusCode::OK, axum::Json(Value::Object(reply))).into_response()
}

/// Where a phone number's webhooks go and the `entry[]` envelope around one `value`.
fn webhook_envelope(state: &SimState, phone_number_id: &str, value: Value) -> anyhow::Result<(String, Value)> {
    let (target, waba_id) = {
        let registry = state.meta();
        (registry.override_uri_for_phone(phone_number_id), registry.waba_for_phone(phone_number_id))
    };
    let url = match target {
        Some(uri) => uri,
        None => format!("{}/api/webhooks/meta", state.webhook_base()?),
    };
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"field": "messages", "value": value}]}],
    });
    Ok((url, body))
}

fn metadata(phone_number_id: &str) -> Value {
    json!({"display_phone_number": display_digits(phone_number_id), "phone_number_id": phone_number_id})
}

/// A `statuses[]` webhook for one status (`sent`, `delivered`, `read` or `failed`).
pub(crate) fn status_webhook(
    state: &SimState,
    message_id: &str,
    message: &SentMessage,
    status: &str,
) -> anyhow::Result<(String, Value)> {
    let SentMessage::Meta { phone_number_id, to, biz_opaque_callback_data, .. } = message else {
        anyhow::bail!("not a Meta message");
    };
    // A status happens once; posting it again is a redelivery of the same event, as Meta's are.
    let now = state.status_time(message_id, status);
    let mut entry = json!({
        "id": message_id,
        "status": status,
        "timestamp": now.to_string(),
        "recipient_id": to.chars().filter(char::is_ascii_digit).collect::<String>(),
    });
    if let Some(data) = biz_opaque_callback_data {
        entry["biz_opaque_callback_data"] = json!(data);
    }
    if status == "failed" {
        entry["errors"] = json!([{
            "code": 131026,
            "title": "Message undeliverable",
            "message": "Message undeliverable",
            "error_data": {"details": "Message Undeliverable."},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }]);
    } else {
        let mut conversation = json!({"id": random_hex(32), "origin": {"type": "service"}});
        if status == "sent" {
            conversation["expiration_timestamp"] = json!((now + 86_400).to_string());
        }
        entry["conversation"] = conversation;
        entry["pricing"] =
            json!({"billable": true, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"});
    }
    let value = json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(phone_number_id),
        "statuses": [entry],
    });
    webhook_envelope(state, phone_number_id, value)
}

/// An inbound text message webhook.
pub(crate) fn inbound_webhook(
    state: &SimState,
    phone_number_id: &str,
    from: &str,
    text: &str,
) -> anyhow::Result<(String, Value)> {
    inbound_message_webhook(state, phone_number_id, from, "text", json!({"body": text}))
}

/// An inbound message webhook of type `kind`, its object `object`.
pub(crate) fn inbound_message_webhook(
    state: &SimState,
    phone_number_id: &str,
    from: &str,
    kind: &str,
    object: Value,
) -> anyhow::Result<(String, Value)> {
    let wa_id: String = from.chars().filter(char::is_ascii_digit).collect();
    let last4 = &wa_id[wa_id.len().saturating_sub(4)..];
    let value = json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(phone_number_id),
        "contacts": [{"profile": {"name": format!("Sim User {last4}")}, "wa_id": wa_id}],
        "messages": [{
            "from": wa_id,
            "id": new_wamid(),
            "timestamp": chrono::Utc::now().timestamp().to_string(),
            "type": kind,
            kind: object,
        }],
    });
    webhook_envelope(state, phone_number_id, value)
}

/// Serialises like Meta: non-ASCII escaped as `\uXXXX`, so a receiver that re-serialises
/// the JSON instead of checking the raw bytes breaks its own signature check, as in production.
pub(crate) fn serialize_ascii_json(value: &Value) -> Vec<u8> {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_json_escapes_non_ascii() {
        let bytes = serialize_ascii_json(&json!({"t": "ä😮"}));
        assert_eq!(String::from_utf8_lossy(&bytes), r#"{"t":"\u00e4\ud83d\ude2e"}"#);
        let back: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        assert_eq!(back["t"], "ä😮");
    }

    #[test]
    fn invented_ids_are_stable_digits() {
        let a = invented_digits("x", 15);
        assert_eq!(a, invented_digits("x", 15));
        assert_eq!(a.len(), 15);
        assert!(a.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(display_digits("123").len(), 11);
    }
}
