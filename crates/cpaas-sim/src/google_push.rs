//! Google Calendar push notifications, and the `/sim/google/*` control routes that play the
//! calendar's user (adding, moving and deleting their own events).
//!
//! A notification is a `POST` with an empty body to the channel's address, carrying
//! `X-Goog-Channel-ID`, `X-Goog-Channel-Token` (when the watch set one),
//! `X-Goog-Channel-Expiration`, `X-Goog-Resource-ID`, `X-Goog-Resource-URI`,
//! `X-Goog-Resource-State` and `X-Goog-Message-Number`. The first message of a channel is
//! `sync` (number 1); every change to the calendar's events is then `exists`, numbered on.
//! A channel watches the events *collection*, which still exists when one event is deleted, so
//! `not_exists` is sent only when the calendar itself goes (`DELETE /sim/google/calendars/{id}`).
//! Notifications are sent in the background, once each (no retries).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SimState;
use crate::delivery::{Outgoing, Policy, deliver};
use crate::google_calendar::error_response;
use crate::google_store::{Channel, GoogleError};

/// The channel's view of what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResourceState {
    Sync,
    Exists,
    NotExists,
}

impl ResourceState {
    fn as_str(self) -> &'static str {
        match self {
            ResourceState::Sync => "sync",
            ResourceState::Exists => "exists",
            ResourceState::NotExists => "not_exists",
        }
    }
}

pub(crate) fn resource_uri(state: &SimState, calendar: &str) -> String {
    format!("{}/calendar/v3/calendars/{calendar}/events?alt=json", state.base_url())
}

fn headers(state: &SimState, channel: &Channel, number: u64, resource_state: ResourceState) -> Vec<(String, String)> {
    let mut headers = vec![
        ("x-goog-channel-id".to_owned(), channel.id.clone()),
        // A human-readable date, as Google sends it.
        ("x-goog-channel-expiration".to_owned(), channel.expiration.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
        ("x-goog-resource-id".to_owned(), channel.resource_id.clone()),
        ("x-goog-resource-uri".to_owned(), resource_uri(state, &channel.calendar)),
        ("x-goog-resource-state".to_owned(), resource_state.as_str().to_owned()),
        ("x-goog-message-number".to_owned(), number.to_string()),
        (
            "user-agent".to_owned(),
            "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)".to_owned(),
        ),
    ];
    if let Some(token) = &channel.token {
        headers.push(("x-goog-channel-token".to_owned(), token.clone()));
    }
    headers
}

fn send(state: &Arc<SimState>, channel: Channel, number: u64, resource_state: ResourceState) {
    let outgoing = Outgoing {
        method: reqwest::Method::POST,
        url: channel.address.clone(),
        headers: headers(state, &channel, number, resource_state),
        body: Vec::new(),
        policy: Policy::Once("google"),
    };
    let state = Arc::clone(state);
    tokio::spawn(async move {
        if let Err(error) = deliver(&state, outgoing).await {
            tracing::info!(%error, channel = channel.id, "google push notification not delivered");
        }
    });
}

/// The `sync` message that opens a new channel.
pub(crate) fn send_sync(state: &Arc<SimState>, channel_id: &str) {
    let taken = state.google().take_message_number(channel_id);
    if let Some((channel, number)) = taken {
        send(state, channel, number, ResourceState::Sync);
    }
}

/// An `exists` message to every live channel on the calendar.
pub(crate) fn notify_change(state: &Arc<SimState>, calendar: &str) {
    let notifications = state.google().take_notifications(calendar);
    for (channel, number) in notifications {
        send(state, channel, number, ResourceState::Exists);
    }
}

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/sim/google/events", post(add_event_handler))
        .route("/sim/google/calendars/{calendar_id}", axum::routing::delete(delete_calendar))
        .route("/sim/google/calendars/{calendar_id}/events", get(list_events))
        .route(
            "/sim/google/calendars/{calendar_id}/events/{event_id}",
            axum::routing::patch(edit_event).delete(delete_event),
        )
        .route("/sim/google/calendars/{calendar_id}/expire-sync-tokens", post(expire_sync_tokens))
        .route("/sim/google/channels", get(list_channels))
}

#[derive(Debug, Deserialize)]
struct NewEvent {
    calendar_id: String,
    /// A Google event resource (`summary`, `start`, `end`, `transparency`, …); `id` optional.
    event: Value,
}

/// The user adds an event to their calendar (through Google's UI, not our app).
pub(crate) fn add_event(state: &Arc<SimState>, calendar: &str, event: Value) -> Result<Value, GoogleError> {
    let created = state.google().insert(calendar, event)?;
    notify_change(state, calendar);
    Ok(created)
}

async fn add_event_handler(State(state): State<Arc<SimState>>, Json(request): Json<NewEvent>) -> Response {
    match add_event(&state, &request.calendar_id, request.event) {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(error) => error_response(&error),
    }
}

async fn list_events(State(state): State<Arc<SimState>>, Path(calendar): Path<String>) -> Response {
    Json(state.google().events(&calendar)).into_response()
}

pub(crate) fn edit_event_as_user(
    state: &Arc<SimState>,
    calendar: &str,
    id: &str,
    patch: &Value,
) -> Result<Value, GoogleError> {
    let edited = state.google().patch(calendar, id, patch)?;
    notify_change(state, calendar);
    Ok(edited)
}

async fn edit_event(
    State(state): State<Arc<SimState>>,
    Path((calendar, id)): Path<(String, String)>,
    Json(patch): Json<Value>,
) -> Response {
    match edit_event_as_user(&state, &calendar, &id, &patch) {
        Ok(edited) => Json(edited).into_response(),
        Err(error) => error_response(&error),
    }
}

pub(crate) fn delete_event_as_user(state: &Arc<SimState>, calendar: &str, id: &str) -> Result<(), GoogleError> {
    state.google().delete(calendar, id)?;
    notify_change(state, calendar);
    Ok(())
}

async fn delete_event(State(state): State<Arc<SimState>>, Path((calendar, id)): Path<(String, String)>) -> Response {
    match delete_event_as_user(&state, &calendar, &id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error_response(&error),
    }
}

/// The calendar is deleted: its channels hear `not_exists` and end.
async fn delete_calendar(State(state): State<Arc<SimState>>, Path(calendar): Path<String>) -> StatusCode {
    let channels = state.google().remove_calendar(&calendar);
    for (channel, number) in channels {
        send(&state, channel, number, ResourceState::NotExists);
    }
    StatusCode::NO_CONTENT
}

async fn expire_sync_tokens(State(state): State<Arc<SimState>>, Path(calendar): Path<String>) -> StatusCode {
    state.google().expire_sync_tokens(&calendar);
    StatusCode::NO_CONTENT
}

async fn list_channels(State(state): State<Arc<SimState>>) -> Response {
    let channels: Vec<Value> = state
        .google()
        .channels()
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id, "resourceId": c.resource_id, "calendar_id": c.calendar, "address": c.address,
                "expiration": c.expiration, "next_message_number": c.next_message,
            })
        })
        .collect();
    Json(channels).into_response()
}
