//! Twilio Programmable Messaging (2010-04-01 API): create a message, read the account, and the
//! form bodies of the status, inbound SMS and voice webhooks (see docs/providers/twilio.md).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;

use crate::failures::{FailureKind, pick_failure};
use crate::ledger::{Fate, NewEntry, SentMessage, form_to_json};
use crate::twilio_messages::{POOL_SENDER, StoredMessage, fetch_message, list_messages};
use crate::{SimState, TIMEOUT_HOLD, callbacks, random_hex};

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/2010-04-01/Accounts/{account_sid}/Messages.json", post(create_message).get(list_messages))
        .route("/2010-04-01/Accounts/{account_sid}/Messages/{message_json}", get(fetch_message))
        .route("/2010-04-01/Accounts/{account_json}", get(get_account))
}

/// `{"code","message","more_info","status"}` with `status` echoing the HTTP status.
pub(crate) fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn authenticate_error() -> Response {
    twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
}

/// Basic auth must be `{AccountSid}:{auth token}`; an API key (`SK…:secret`) is accepted with
/// any non-empty secret because the sim does not know API key secrets.
pub(crate) fn is_authenticated(state: &SimState, headers: &HeaderMap, account_sid: &str) -> bool {
    let Some(encoded) =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let decoded = String::from_utf8_lossy(&decoded);
    let Some((user, password)) = decoded.split_once(':') else {
        return false;
    };
    (user == account_sid && password == state.config.twilio_auth_token)
        || (user.starts_with("SK") && !password.is_empty())
}

fn failure_reply(kind: FailureKind) -> (StatusCode, u32, &'static str) {
    match kind {
        FailureKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests"),
        FailureKind::ServerError | FailureKind::Timeout => {
            (StatusCode::INTERNAL_SERVER_ERROR, 20500, "Internal Server Error")
        }
        FailureKind::InvalidRecipient => (StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number"),
        FailureKind::OptedOut => (StatusCode::BAD_REQUEST, 21610, "Attempt to send to unsubscribed recipient"),
        FailureKind::AuthFailed | FailureKind::AccountSuspended => (StatusCode::UNAUTHORIZED, 20003, "Authenticate"),
        // Accepted and failed later (Undeliverable, MessageRejected) or not matched (ReEngagement,
        // LostAnswer).
        FailureKind::Undeliverable
        | FailureKind::MessageRejected
        | FailureKind::ReEngagementRequired
        | FailureKind::LostAnswer => (StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number"),
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// E.164 or a channel address such as `whatsapp:+4915…`.
fn is_valid_to(to: &str) -> bool {
    let number = to.split_once(':').map_or(to, |(_, n)| n);
    number.strip_prefix('+').is_some_and(|d| (7..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()))
}

fn rfc2822_now() -> String {
    crate::twilio_messages::rfc2822(chrono::Utc::now())
}

async fn create_message(
    State(state): State<Arc<SimState>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw).unwrap_or_default();
    let body = form_to_json(&fields);
    let to = field(&fields, "To").map(str::to_owned);
    let path = format!("/2010-04-01/Accounts/{account_sid}/Messages.json");
    let record = |outcome: String, id: Option<String>| {
        state.ledger().record(NewEntry {
            provider: "twilio",
            operation: "create_message",
            method: "POST",
            path: path.clone(),
            recipient: to.clone(),
            provider_message_id: id,
            body: body.clone(),
            outcome,
        });
    };
    if !is_authenticated(&state, &headers, &account_sid) {
        record("error:20003".to_owned(), None);
        return authenticate_error();
    }
    let validation = match &to {
        None => Some((21604, "A 'To' phone number is required.")),
        Some(to) if !is_valid_to(to) => Some((21211, "Invalid 'To' Phone Number")),
        _ if field(&fields, "From").is_none() && field(&fields, "MessagingServiceSid").is_none() => {
            Some((21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message"))
        }
        _ if field(&fields, "Body").is_none()
            && field(&fields, "MediaUrl").is_none()
            && field(&fields, "ContentSid").is_none() =>
        {
            Some((21619, "A text message body or media urls must be specified."))
        }
        _ if field(&fields, "Body").is_some_and(|b| b.chars().count() > 1600) => {
            Some((21617, "The concatenated message body exceeds the 1600 character limit."))
        }
        _ => None,
    };
    if let Some((code, message)) = validation {
        record(format!("error:{code}"), None);
        return twilio_error(StatusCode::BAD_REQUEST, code, message);
    }
    let to = to.clone().unwrap_or_default();

    // The handset texted STOP (or another opt-out keyword) to this sender: Twilio refuses the
    // send, as it does for `FailureKind::OptedOut`, and creates no message.
    if state.twilio_opt_outs().blocks(&account_sid, field(&fields, "From"), &to) {
        let (status, code, message) = failure_reply(FailureKind::OptedOut);
        record(format!("error:{code}"), None);
        return twilio_error(status, code, message);
    }

    let applies = |kind| kind != FailureKind::ReEngagementRequired;
    let fate = match pick_failure(&state, "twilio", Some(&to), applies) {
        None => Fate::Delivered,
        Some(FailureKind::Undeliverable) => Fate::Undeliverable,
        Some(FailureKind::MessageRejected) => Fate::Rejected,
        Some(FailureKind::Timeout) => {
            record("timeout".to_owned(), None);
            tokio::time::sleep(TIMEOUT_HOLD).await;
            let (status, code, message) = failure_reply(FailureKind::Timeout);
            return twilio_error(status, code, message);
        }
        Some(kind) => {
            let (status, code, message) = failure_reply(kind);
            record(format!("error:{code}"), None);
            return twilio_error(status, code, message);
        }
    };

    let media: Vec<&str> = fields.iter().filter(|(k, _)| k == "MediaUrl").map(|(_, v)| v.as_str()).collect();
    let sid = format!("{}{}", if media.is_empty() { "SM" } else { "MM" }, random_hex(32));
    let outcome = match fate {
        Fate::Undeliverable => "accepted:undeliverable",
        Fate::Rejected => "accepted:rejected",
        _ => "accepted",
    };
    record(outcome.to_owned(), Some(sid.clone()));
    let from = field(&fields, "From").map(str::to_owned);
    let service = field(&fields, "MessagingServiceSid").map(str::to_owned);
    state.ledger().remember_message(
        &sid,
        SentMessage::Twilio {
            account_sid: account_sid.clone(),
            from: from.clone().unwrap_or_else(|| POOL_SENDER.to_owned()),
            to: to.clone(),
            messaging_service_sid: service.clone(),
            status_callback: field(&fields, "StatusCallback").map(str::to_owned),
            fate,
        },
    );
    let now = chrono::Utc::now();
    let message = StoredMessage {
        sid: sid.clone(),
        account_sid,
        // Without a `From`, a Messaging Service picks the sender later.
        from,
        to,
        body: field(&fields, "Body").unwrap_or_default().to_owned(),
        num_media: media.len(),
        messaging_service_sid: service.clone(),
        direction: "outbound-api",
        // With a Messaging Service Twilio answers `accepted` before it has picked a sender.
        status: if service.is_some() { "accepted" } else { "queued" }.to_owned(),
        error_code: None,
        date_created: now,
        date_updated: now,
        date_sent: None,
    };
    let reply = message.to_json();
    state.twilio_messages().add(message);
    callbacks::schedule_auto_callbacks(&state, &sid);
    (StatusCode::CREATED, axum::Json(reply)).into_response()
}

async fn get_account(
    State(state): State<Arc<SimState>>,
    Path(account_json): Path<String>,
    headers: HeaderMap,
) -> Response {
    let account_sid = account_json.strip_suffix(".json").unwrap_or(&account_json).to_owned();
    let path = format!("/2010-04-01/Accounts/{account_json}");
    let authorised = is_authenticated(&state, &headers, &account_sid);
    let outcome = if !account_json.ends_with(".json") {
        "error:20404"
    } else if !authorised {
        "error:20003"
    } else {
        "accepted"
    };
    state.ledger().record(NewEntry {
        provider: "twilio",
        operation: "get_account",
        method: "GET",
        path,
        recipient: None,
        provider_message_id: None,
        body: serde_json::Value::Null,
        outcome: outcome.to_owned(),
    });
    if !account_json.ends_with(".json") {
        return twilio_error(StatusCode::NOT_FOUND, 20404, "The requested resource was not found");
    }
    if !authorised {
        return authenticate_error();
    }
    let created = "Mon, 01 Jan 2024 00:00:00 +0000";
    let reply = json!({
        "sid": account_sid,
        "friendly_name": "Switchboard Sim",
        "status": "active",
        "type": "Full",
        "auth_token": state.config.twilio_auth_token,
        "owner_account_sid": account_sid,
        "date_created": created,
        "date_updated": created,
        "uri": format!("/2010-04-01/Accounts/{account_sid}.json"),
        "subresource_uris": {"messages": format!("/2010-04-01/Accounts/{account_sid}/Messages.json")},
    });
    (StatusCode::OK, axum::Json(reply)).into_response()
}

/// The status callback form for one status, and where it goes.
pub(crate) fn status_callback(
    state: &SimState,
    sid: &str,
    message: &SentMessage,
    status: &str,
    error_code: Option<u32>,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let SentMessage::Twilio { account_sid, from, to, messaging_service_sid, status_callback, .. } = message else {
        anyhow::bail!("not a Twilio message");
    };
    let url = match status_callback {
        Some(url) => url.clone(),
        None => format!("{}/api/webhooks/twilio/{account_sid}/status", state.webhook_base()?),
    };
    let mut form = vec![
        ("AccountSid".to_owned(), account_sid.clone()),
        ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
        ("From".to_owned(), from.clone()),
        ("MessageSid".to_owned(), sid.to_owned()),
        ("MessageStatus".to_owned(), status.to_owned()),
        ("SmsSid".to_owned(), sid.to_owned()),
        ("SmsStatus".to_owned(), status.to_owned()),
        ("To".to_owned(), to.clone()),
    ];
    if let Some(service) = messaging_service_sid {
        form.push(("MessagingServiceSid".to_owned(), service.clone()));
    }
    if let Some(code) = error_code {
        form.push(("ErrorCode".to_owned(), code.to_string()));
    }
    if matches!(status, "delivered" | "undelivered") {
        form.push(("RawDlrDoneDate".to_owned(), chrono::Utc::now().format("%y%m%d%H%M").to_string()));
    }
    Ok((url, form))
}

/// An inbound SMS webhook form (geo fields present but empty, as Twilio sends them).
pub(crate) fn inbound_sms(
    state: &SimState,
    account_sid: &str,
    from: &str,
    to: &str,
    body: &str,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let sid = format!("SM{}", random_hex(32));
    let inbound = InboundForm { webhook_id: account_sid, account_sid, from, to, body };
    inbound_message(state, inbound, &sid, &[])
}

/// What an inbound message form says, and where it goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InboundForm<'a> {
    /// The id in the webhook URL (`/api/webhooks/twilio/{webhook_id}/inbound`): the number's
    /// webhook URL is whatever its owner configured.
    pub webhook_id: &'a str,
    pub account_sid: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub body: &'a str,
}

/// An inbound SMS/MMS webhook form with `media` as (`MediaUrlN`, `MediaContentTypeN`) pairs.
pub(crate) fn inbound_message(
    state: &SimState,
    inbound: InboundForm<'_>,
    sid: &str,
    media: &[(String, String)],
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let InboundForm { webhook_id, account_sid, from, to, body } = inbound;
    let url = format!("{}/api/webhooks/twilio/{webhook_id}/inbound", state.webhook_base()?);
    // Twilio applies an opt-out or opt-in keyword on receipt, whether or not the webhook gets
    // through, and still passes the message on.
    state.twilio_opt_outs().inbound(account_sid, from, to, body);
    let num_media = media.len().to_string();
    let mut form: Vec<(String, String)> = [
        ("ToCountry", ""),
        ("ToState", ""),
        ("ToCity", ""),
        ("ToZip", ""),
        ("FromCountry", ""),
        ("FromState", ""),
        ("FromCity", ""),
        ("FromZip", ""),
        ("NumMedia", num_media.as_str()),
        ("NumSegments", "1"),
        ("SmsStatus", "received"),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (index, (media_url, content_type)) in media.iter().enumerate() {
        form.push((format!("MediaContentType{index}"), content_type.clone()));
        form.push((format!("MediaUrl{index}"), media_url.clone()));
    }
    for key in ["SmsMessageSid", "SmsSid", "MessageSid"] {
        form.push((key.to_owned(), sid.to_owned()));
    }
    form.push(("AccountSid".to_owned(), account_sid.to_owned()));
    form.push(("From".to_owned(), from.to_owned()));
    form.push(("To".to_owned(), to.to_owned()));
    form.push(("Body".to_owned(), body.to_owned()));
    // Received messages are Message resources too: a lookup must tell them from ours.
    let now = chrono::Utc::now();
    state.twilio_messages().add(StoredMessage {
        sid: sid.to_owned(),
        account_sid: account_sid.to_owned(),
        from: Some(from.to_owned()),
        to: to.to_owned(),
        body: body.to_owned(),
        num_media: media.len(),
        messaging_service_sid: None,
        direction: "inbound",
        status: "received".to_owned(),
        error_code: None,
        date_created: now,
        date_updated: now,
        date_sent: Some(now),
    });
    Ok((url, form))
}

/// A voice status callback for an inbound call nobody answered.
pub(crate) fn missed_call(
    state: &SimState,
    account_sid: &str,
    from: &str,
    to: &str,
    call_status: &str,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let url = format!("{}/api/webhooks/twilio/{account_sid}/voice", state.webhook_base()?);
    let form = vec![
        ("AccountSid".to_owned(), account_sid.to_owned()),
        ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
        ("CallSid".to_owned(), format!("CA{}", random_hex(32))),
        ("CallStatus".to_owned(), call_status.to_owned()),
        ("Direction".to_owned(), "inbound".to_owned()),
        ("From".to_owned(), from.to_owned()),
        ("To".to_owned(), to.to_owned()),
        ("CallDuration".to_owned(), "0".to_owned()),
        ("Duration".to_owned(), "0".to_owned()),
        ("Timestamp".to_owned(), rfc2822_now()),
        ("CallbackSource".to_owned(), "call-progress-events".to_owned()),
        ("SequenceNumber".to_owned(), "0".to_owned()),
    ];
    Ok((url, form))
}
