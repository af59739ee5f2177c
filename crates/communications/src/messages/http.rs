//! `/api/v1/messages`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query, parse_json};
use kernel::pagination::{Page, PageParams};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::model::{Channel, Lane, MessageStatus};
use super::repository::{EventRow, ListFilter, MessageRow};
use super::service::{Accepted, SendRequest};
use crate::Communications;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(send_message, list_messages))
        .routes(routes!(get_message))
        .routes(routes!(cancel_message))
        .routes(routes!(approve_message))
        .routes(routes!(reject_message))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    pub status: MessageStatus,
    pub status_reason: Option<String>,
    pub channel: Channel,
    pub recipient: String,
    pub contact_id: Option<Uuid>,
    pub conversation_id: Option<Uuid>,
    pub lane: Lane,
    #[schema(value_type = Object)]
    pub content: Value,
    /// Remaining fallback channels, in order.
    pub fallback_channels: Vec<String>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub supersedes: Option<Uuid>,
    pub superseded_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    /// The audit trail (only on `GET /api/v1/messages/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub status: String,
    pub reason: Option<String>,
    /// api, worker, provider or system.
    pub source: String,
    /// The raw provider payload, for provider events.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    pub occurred_at: DateTime<Utc>,
}

impl From<EventRow> for EventView {
    fn from(row: EventRow) -> Self {
        Self {
            status: row.status,
            reason: row.reason,
            source: row.source,
            payload: row.payload,
            occurred_at: row.occurred_at,
        }
    }
}

fn view(row: MessageRow, events: Option<Vec<EventRow>>) -> MessageView {
    let fallback_channels = row
        .fallback
        .as_array()
        .map(|steps| steps.iter().filter_map(|s| s["channel"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    MessageView {
        id: row.id,
        status: row.status,
        status_reason: row.status_reason,
        channel: row.channel,
        recipient: row.recipient,
        contact_id: row.contact_id,
        conversation_id: row.conversation_id,
        lane: row.lane,
        content: row.content,
        fallback_channels,
        provider: row.provider,
        provider_message_id: row.provider_message_id,
        scheduled_at: row.scheduled_at,
        metadata: row.metadata,
        supersedes: row.supersedes,
        superseded_by: row.superseded_by,
        created_at: row.created_at,
        sent_at: row.sent_at,
        delivered_at: row.delivered_at,
        read_at: row.read_at,
        failed_at: row.failed_at,
        events: events.map(|events| events.into_iter().map(EventView::from).collect()),
    }
}

/// Accepts a message for delivery. With `Idempotency-Key`, the same key and body return the
/// first response again (even concurrently); the same key with another body is 422.
#[utoipa::path(
    post, path = "/api/v1/messages", tag = "messages", request_body = SendRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe; kept 24 h or more")),
    responses(
        (status = 202, body = Accepted, description = "Queued (the message and its dispatch job are stored)"),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody, description = "A field is invalid for a channel of the chain"),
    )
)]
pub async fn send_message(
    State(module): State<Communications>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    kernel::extract::require_json(&headers)?;
    let key = idempotency_key(&headers)?;
    let request: SendRequest = parse_json(&body)?;
    let (status, response) = module.accept_message(caller.tenant_id, request, key.as_deref(), &body).await?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
    Ok((status, Json(response)))
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::validation("Idempotency-Key", "must be 1-255 visible characters"));
    }
    Ok(Some(key.to_owned()))
}

#[utoipa::path(
    get, path = "/api/v1/messages/{id}", tag = "messages", params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody))
)]
pub async fn get_message(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<MessageView>, ApiError> {
    let (message, events) = module.message(caller.tenant_id, id).await?;
    Ok(Json(view(message, Some(events))))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageFilter {
    pub status: Option<MessageStatus>,
    pub channel: Option<Channel>,
    pub contact_id: Option<Uuid>,
    /// The thread of one inbox conversation (both directions).
    pub conversation_id: Option<Uuid>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/messages", tag = "messages", params(MessageFilter),
    responses((status = 200, body = Page<MessageView>), (status = 422, body = ErrorBody))
)]
pub async fn list_messages(
    State(module): State<Communications>,
    caller: Caller,
    Query(filter): Query<MessageFilter>,
) -> Result<Json<Page<MessageView>>, ApiError> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() }.parse()?;
    let list_filter = ListFilter {
        status: filter.status,
        channel: filter.channel,
        contact_id: filter.contact_id,
        conversation_id: filter.conversation_id,
        created_after: filter.created_after,
        created_before: filter.created_before,
    };
    let rows = super::repository::list(&module.pool, caller.tenant_id, &list_filter, page).await?;
    let views: Vec<MessageView> = rows.into_iter().map(|row| view(row, None)).collect();
    Ok(Json(Page::from_rows(views, page, |m| m.id)))
}

#[utoipa::path(
    post, path = "/api/v1/messages/{id}/cancel", tag = "messages", params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Already sent or final"))
)]
pub async fn cancel_message(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<MessageView>, ApiError> {
    Ok(Json(view(module.cancel_message(caller.tenant_id, id).await?, None)))
}

fn reviewer(caller: &Caller) -> String {
    match caller.actor {
        kernel::auth::Actor::ApiKey(id) => format!("api key {id}"),
        kernel::auth::Actor::Agent { id, .. } => format!("agent {id}"),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    pub reason: Option<String>,
}

/// Approves a message waiting in `pending_review`: it is queued for dispatch.
#[utoipa::path(
    post, path = "/api/v1/messages/{id}/approve", tag = "messages", params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Not pending review"))
)]
pub async fn approve_message(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<MessageView>, ApiError> {
    caller.require_admin()?;
    Ok(Json(view(module.approve_message(caller.tenant_id, id, &reviewer(&caller)).await?, None)))
}

/// Rejects a message waiting in `pending_review`: it is canceled with the reason.
#[utoipa::path(
    post, path = "/api/v1/messages/{id}/reject", tag = "messages", params(("id" = Uuid, Path)),
    request_body(content = Option<Rejection>),
    responses((status = 200, body = MessageView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Not pending review"))
)]
pub async fn reject_message(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Option<Json<Rejection>>,
) -> Result<Json<MessageView>, ApiError> {
    caller.require_admin()?;
    let reason = body.and_then(|Json(b)| b.reason);
    Ok(Json(view(module.reject_message(caller.tenant_id, id, &reviewer(&caller), reason.as_deref()).await?, None)))
}
