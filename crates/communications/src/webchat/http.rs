//! `/api/webchat/{channel_id}/…`: what the widget in a visitor's browser calls. No agent
//! credentials: the visitor is who their token says, and nothing here reaches beyond that
//! visitor's own messages on that channel.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query, parse_json};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use super::repository::{self, Incoming, VisitorMessage, WebchatChannel};
use super::{limits, token};
use crate::Communications;
use crate::inbox::stream::FeedItem;

/// Messages a returning visitor gets back.
const HISTORY: i64 = 100;
const MAX_TEXT: usize = 4096;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The token this browser kept from an earlier visit, if any.
    pub token: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Session {
    /// Keep it (the widget stores it in the browser) and present it as `Authorization: Bearer`.
    pub token: String,
    pub visitor_id: Uuid,
    /// The business's name for the channel.
    pub channel_name: String,
    pub greeting: Option<String>,
    /// The visitor's conversation so far, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<VisitorMessage>,
}

/// Starts or resumes a visitor's chat: a valid token keeps the visitor (and renews the token),
/// anything else starts a new visitor. Answers the conversation so far.
#[utoipa::path(
    post, path = "/api/webchat/{channel_id}/session", tag = "webchat", params(("channel_id" = Uuid, Path)),
    request_body = SessionRequest,
    responses((status = 200, body = Session), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody))
)]
pub async fn session(
    State(module): State<Communications>,
    Path(channel_id): Path<Uuid>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Session>, ApiError> {
    let channel = repository::channel(&module.pool, channel_id).await?;
    check_origin(&headers, &channel)?;
    kernel::extract::require_json(&headers)?;
    let request: SessionRequest = parse_json(&body)?;
    limits::session(&module.pool, address(client.as_ref())).await?;
    let known = request.token.as_deref().and_then(|t| token::open(&module.keyring, channel.tenant_id, channel.id, t));
    let visitor = known.map_or_else(Uuid::now_v7, |visitor| visitor.id);
    let messages = match repository::visitor_contact(&module.pool, channel.tenant_id, visitor).await? {
        Some(contact) => repository::history(&module.pool, &channel, contact, HISTORY).await?,
        None => Vec::new(),
    };
    Ok(Json(Session {
        token: token::issue(&module.keyring, channel.tenant_id, channel.id, visitor),
        visitor_id: visitor,
        channel_name: channel.name,
        greeting: channel.greeting,
        messages,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub text: String,
    /// The widget's id for this message (1-64 letters, digits, `-` or `_`): sending it again
    /// after a lost answer stores it once.
    pub client_id: String,
    /// Given by the visitor, optional: names the contact if it has no name yet.
    pub name: Option<String>,
    /// Given by the visitor, optional and unverified: shown to agents, never used to join the
    /// visitor to a known contact.
    pub email: Option<String>,
    /// The page the visitor writes from.
    pub page: Option<String>,
}

/// A visitor's message: stored in the tenant's inbox like any inbound message. Limited per
/// visitor and per address (429 with `Retry-After`).
#[utoipa::path(
    post, path = "/api/webchat/{channel_id}/messages", tag = "webchat", params(("channel_id" = Uuid, Path)),
    request_body = SendRequest,
    responses((status = 202, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("visitor_token" = []))
)]
pub async fn send(
    State(module): State<Communications>,
    Path(channel_id): Path<Uuid>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<VisitorMessage>), ApiError> {
    let channel = repository::channel(&module.pool, channel_id).await?;
    check_origin(&headers, &channel)?;
    let visitor = bearer_visitor(&module, &channel, &headers)?;
    kernel::extract::require_json(&headers)?;
    let request: SendRequest = parse_json(&body)?;
    let incoming = validate(&request)?;
    limits::message(&module.pool, channel.id, visitor, address(client.as_ref())).await?;
    let mut tx = module.pool.begin().await?;
    let message = repository::receive(&mut tx, &channel, visitor, &incoming).await?;
    tx.commit().await?;
    module.feed.signal();
    Ok((StatusCode::ACCEPTED, Json(message)))
}

fn validate(request: &SendRequest) -> Result<Incoming<'_>, ApiError> {
    let text = request.text.trim();
    if text.is_empty() {
        return Err(ApiError::validation("text", "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(ApiError::validation("text", format!("must be at most {MAX_TEXT} characters")));
    }
    let client_id = request.client_id.as_str();
    let id_ok = (1..=64).contains(&client_id.len())
        && client_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(ApiError::validation("client_id", "must be 1-64 letters, digits, '-' or '_'"));
    }
    let name = line("name", &request.name, 100)?;
    let email = line("email", &request.email, 254)?;
    if email.is_some_and(|e| e.split_once('@').is_none_or(|(local, domain)| local.is_empty() || !domain.contains('.')))
    {
        return Err(ApiError::validation("email", "is not an email address"));
    }
    let page = line("page", &request.page, 2000)?;
    if page.is_some_and(|p| !(p.starts_with("https://") || p.starts_with("http://"))) {
        return Err(ApiError::validation("page", "must be an http(s) URL"));
    }
    Ok(Incoming { text, client_id, name, email, page })
}

/// An optional one-line field: trimmed, `None` when empty.
fn line<'a>(field: &str, value: &'a Option<String>, max: usize) -> Result<Option<&'a str>, ApiError> {
    let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::validation(field, format!("must be one line of at most {max} characters")));
    }
    Ok(Some(value))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeenRequest {
    /// The newest business message the widget has.
    pub up_to: Uuid,
    /// `delivered` (received, chat closed) or `read` (shown in the open chat).
    pub status: SeenStatus,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeenStatus {
    Delivered,
    Read,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Seen {
    /// How many messages' status moved.
    pub updated: usize,
}

/// The visitor's receipts: the agents' ticks move to delivered or read.
#[utoipa::path(
    post, path = "/api/webchat/{channel_id}/seen", tag = "webchat", params(("channel_id" = Uuid, Path)),
    request_body = SeenRequest,
    responses((status = 200, body = Seen), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("visitor_token" = []))
)]
pub async fn seen(
    State(module): State<Communications>,
    Path(channel_id): Path<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Seen>, ApiError> {
    let channel = repository::channel(&module.pool, channel_id).await?;
    check_origin(&headers, &channel)?;
    let visitor = bearer_visitor(&module, &channel, &headers)?;
    kernel::extract::require_json(&headers)?;
    let request: SeenRequest = parse_json(&body)?;
    let Some(contact) = repository::visitor_contact(&module.pool, channel.tenant_id, visitor).await? else {
        return Ok(Json(Seen { updated: 0 }));
    };
    let mut tx = module.pool.begin().await?;
    let read = matches!(request.status, SeenStatus::Read);
    let updated = repository::seen(&mut tx, &channel, contact, request.up_to, read).await?;
    tx.commit().await?;
    if updated > 0 {
        module.feed.signal();
    }
    Ok(Json(Seen { updated }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// The visitor's token (an EventSource cannot send headers).
    pub token: String,
}

/// The business's answers (and the visitor's own messages, from other tabs) as Server-Sent
/// Events named `message`. After a reconnect the widget asks `session` for what it missed.
#[utoipa::path(
    get, path = "/api/webchat/{channel_id}/stream", tag = "webchat", params(("channel_id" = Uuid, Path), StreamParams),
    responses((status = 200, content_type = "text/event-stream", description = "The visitor's messages"),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody))
)]
pub async fn stream(
    State(module): State<Communications>,
    Path(channel_id): Path<Uuid>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let channel = repository::channel(&module.pool, channel_id).await?;
    check_origin(&headers, &channel)?;
    // Connections cost memory for as long as they stay open: they share the sessions' budget.
    limits::session(&module.pool, address(client.as_ref())).await?;
    let visitor =
        token::open(&module.keyring, channel.tenant_id, channel.id, &params.token).ok_or(ApiError::Unauthenticated)?.id;
    // Subscribed before answering: the widget fetches the history once the stream is open, so
    // nothing falls between the two.
    let (live, closing) = module.feed.subscribe();
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(follow(module, Arc::new(channel), visitor, live, closing, sender));
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Passes the visitor's new messages to their stream until they leave, fall behind (they
/// reconnect and refetch) or the server shuts down.
async fn follow(
    module: Communications,
    channel: Arc<WebchatChannel>,
    visitor: Uuid,
    mut live: broadcast::Receiver<Arc<FeedItem>>,
    mut closing: watch::Receiver<bool>,
    sender: mpsc::Sender<Event>,
) {
    // Which of the tenant's conversations are this visitor's, learnt once per conversation.
    let mut mine = HashSet::new();
    let mut others = HashSet::new();
    if *closing.borrow_and_update() {
        return;
    }
    loop {
        let item = tokio::select! {
            _ = closing.changed() => return,
            () = sender.closed() => return,
            received = live.recv() => match received {
                Ok(item) => item,
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let change = &item.change;
        let (Some(conversation), Some(message)) = (change.conversation_id, change.message_id) else { continue };
        let relevant = change.tenant_id == channel.tenant_id
            && matches!(change.kind.as_str(), "message.created" | "conversation.created")
            && !others.contains(&conversation);
        if !relevant {
            continue;
        }
        // A database hiccup ends the stream: the widget reconnects and refetches.
        let Ok(found) = repository::visitor_message(&module.pool, &channel, visitor, message).await else { return };
        match found {
            Some(found) => {
                mine.insert(conversation);
                let Ok(event) = Event::default().event("message").json_data(&found) else { continue };
                if sender.try_send(event).is_err() {
                    return;
                }
            }
            None if !mine.contains(&conversation) => {
                others.insert(conversation);
            }
            None => {}
        }
    }
}

/// The visitor a request's `Authorization: Bearer` token names on this channel.
fn bearer_visitor(module: &Communications, channel: &WebchatChannel, headers: &HeaderMap) -> Result<Uuid, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthenticated)?;
    token::open(&module.keyring, channel.tenant_id, channel.id, presented)
        .map(|visitor| visitor.id)
        .ok_or_else(|| ApiError::InvalidCredentials("the visitor token is not valid for this channel".into()))
}

/// Browsers name the page's origin: our own frame (the widget's iframe) or a page the operator
/// listed. Requests without `Origin` (non-browser clients) carry no page to judge.
fn check_origin(headers: &HeaderMap, channel: &WebchatChannel) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    if is_own_origin(origin, headers)
        || channel.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{origin} is not among this webchat channel's allowed origins")))
    }
}

/// Whether `origin` (`scheme://host[:port]`) is this server as the request reached it (its
/// `Host`): the widget's own frame.
pub fn is_own_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(host))
}

fn address(client: Option<&Extension<ConnectInfo<SocketAddr>>>) -> String {
    client.map_or_else(|| "unknown".to_owned(), |Extension(ConnectInfo(addr))| addr.ip().to_string())
}
