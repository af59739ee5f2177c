//! Google Calendar API v3 over HTTP: events insert/get/patch/delete/list, events.watch and
//! channels.stop, at the paths of `https://www.googleapis.com/calendar/v3/…`, Bearer access
//! tokens from `oauth.rs`, errors in Google's envelope. The rules live in `google_store.rs`;
//! push notifications go out through `google_push.rs` after every change.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::failures::{FailureKind, pick_failure};
use crate::google_store::{GoogleError, ListQuery};
use crate::ledger::NewEntry;
use crate::oauth::Vendor;
use crate::{SimState, TIMEOUT_HOLD, google_push};

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/calendar/v3/calendars/{calendar_id}/events", post(insert).get(list))
        .route("/calendar/v3/calendars/{calendar_id}/events/watch", post(watch))
        .route("/calendar/v3/calendars/{calendar_id}/events/{event_id}", get(fetch).patch(patch).delete(delete))
        .route("/calendar/v3/channels/stop", post(stop))
}

/// `{"error": {"errors": [{domain, reason, message[, locationType, location]}], code, message}}`.
pub(crate) fn error_response(error: &GoogleError) -> Response {
    let mut entry = json!({"domain": error.domain, "reason": error.reason, "message": error.message});
    if let Some((location_type, location)) = error.location {
        entry["locationType"] = json!(location_type);
        entry["location"] = json!(location);
    }
    let body = json!({"error": {"errors": [entry], "code": error.status, "message": error.message}});
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

fn failure_error(kind: FailureKind) -> GoogleError {
    match kind {
        FailureKind::RateLimited => GoogleError::new(429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
        FailureKind::AuthFailed => auth_error(),
        // ServerError and Timeout (answered after the hold), and anything else that slipped through.
        _ => GoogleError::new(500, "global", "backendError", "Backend Error"),
    }
}

fn auth_error() -> GoogleError {
    let mut error = GoogleError::new(401, "global", "authError", "Invalid Credentials");
    error.location = Some(("header", "Authorization"));
    error
}

/// One request's bookkeeping: the ledger entry and the failure rule that decides its fate.
struct Call<'a> {
    state: &'a SimState,
    operation: &'static str,
    method: &'static str,
    path: String,
    calendar: Option<String>,
    event_id: Option<String>,
    body: Value,
}

/// What to do after the gate: refuse at once, or go ahead (and maybe lose the answer).
enum Gate {
    Refuse(Response),
    Proceed { lose_answer: bool },
}

impl Call<'_> {
    fn record(&self, outcome: &str, event_id: Option<String>) {
        self.state.ledger().record(NewEntry {
            provider: "google",
            operation: self.operation,
            method: self.method,
            path: self.path.clone(),
            recipient: self.calendar.clone(),
            provider_message_id: event_id.or_else(|| self.event_id.clone()),
            body: self.body.clone(),
            outcome: outcome.to_owned(),
        });
    }

    /// Injected failures first (by calendar id), then the access token.
    async fn gate(&self, headers: &HeaderMap) -> Gate {
        let applies = |kind| {
            matches!(
                kind,
                FailureKind::RateLimited
                    | FailureKind::ServerError
                    | FailureKind::Timeout
                    | FailureKind::AuthFailed
                    | FailureKind::LostAnswer
            )
        };
        let mut lose_answer = false;
        match pick_failure(self.state, "google", self.calendar.as_deref(), applies) {
            Some(FailureKind::LostAnswer) => lose_answer = true,
            Some(FailureKind::Timeout) => {
                self.record("timeout", None);
                tokio::time::sleep(TIMEOUT_HOLD).await;
                return Gate::Refuse(error_response(&failure_error(FailureKind::Timeout)));
            }
            Some(kind) => {
                let error = failure_error(kind);
                self.record(&format!("error:{}", error.reason), None);
                return Gate::Refuse(error_response(&error));
            }
            None => {}
        }
        if self.state.tokens().check(Vendor::Google, headers).is_err() {
            self.record("error:authError", None);
            return Gate::Refuse(error_response(&auth_error()));
        }
        Gate::Proceed { lose_answer }
    }

    /// Records the outcome and answers; a lost answer is held until the client gave up.
    async fn finish(
        &self,
        result: Result<Response, GoogleError>,
        event_id: Option<String>,
        lose_answer: bool,
    ) -> Response {
        let response = match result {
            Ok(response) => {
                self.record(if lose_answer { "accepted:answer_lost" } else { "accepted" }, event_id);
                response
            }
            Err(error) => {
                self.record(&format!("error:{}", error.reason), event_id);
                error_response(&error)
            }
        };
        if lose_answer {
            tokio::time::sleep(TIMEOUT_HOLD).await;
        }
        response
    }
}

fn parse_json(raw: &[u8]) -> Result<Value, GoogleError> {
    serde_json::from_slice(raw).map_err(|_| GoogleError::new(400, "global", "parseError", "Parse Error"))
}

fn json_reply(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

async fn insert(
    State(state): State<Arc<SimState>>,
    Path(calendar): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let event_id = body.get("id").and_then(Value::as_str).map(str::to_owned);
    let call = Call {
        state: &state,
        operation: "events.insert",
        method: "POST",
        path: format!("/calendar/v3/calendars/{calendar}/events"),
        calendar: Some(calendar.clone()),
        event_id,
        body,
    };
    let lose_answer = match call.gate(&headers).await {
        Gate::Refuse(response) => return response,
        Gate::Proceed { lose_answer } => lose_answer,
    };
    let result = parse_json(&raw).and_then(|body| state.google().insert(&calendar, body));
    let id = result.as_ref().ok().and_then(|e| e.get("id")).and_then(Value::as_str).map(str::to_owned);
    if result.is_ok() {
        google_push::notify_change(&state, &calendar);
    }
    call.finish(result.map(json_reply), id, lose_answer).await
}

async fn fetch(
    State(state): State<Arc<SimState>>,
    Path((calendar, event_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let call = Call {
        state: &state,
        operation: "events.get",
        method: "GET",
        path: format!("/calendar/v3/calendars/{calendar}/events/{event_id}"),
        calendar: Some(calendar.clone()),
        event_id: Some(event_id.clone()),
        body: Value::Null,
    };
    let lose_answer = match call.gate(&headers).await {
        Gate::Refuse(response) => return response,
        Gate::Proceed { lose_answer } => lose_answer,
    };
    let result = state.google().get(&calendar, &event_id);
    call.finish(result.map(json_reply), None, lose_answer).await
}

async fn patch(
    State(state): State<Arc<SimState>>,
    Path((calendar, event_id)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let call = Call {
        state: &state,
        operation: "events.patch",
        method: "PATCH",
        path: format!("/calendar/v3/calendars/{calendar}/events/{event_id}"),
        calendar: Some(calendar.clone()),
        event_id: Some(event_id.clone()),
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
    };
    let lose_answer = match call.gate(&headers).await {
        Gate::Refuse(response) => return response,
        Gate::Proceed { lose_answer } => lose_answer,
    };
    let result = parse_json(&raw).and_then(|body| state.google().patch(&calendar, &event_id, &body));
    if result.is_ok() {
        google_push::notify_change(&state, &calendar);
    }
    call.finish(result.map(json_reply), None, lose_answer).await
}

async fn delete(
    State(state): State<Arc<SimState>>,
    Path((calendar, event_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let call = Call {
        state: &state,
        operation: "events.delete",
        method: "DELETE",
        path: format!("/calendar/v3/calendars/{calendar}/events/{event_id}"),
        calendar: Some(calendar.clone()),
        event_id: Some(event_id.clone()),
        body: Value::Null,
    };
    let lose_answer = match call.gate(&headers).await {
        Gate::Refuse(response) => return response,
        Gate::Proceed { lose_answer } => lose_answer,
    };
    let result = state.google().delete(&calendar, &event_id);
    if result.is_ok() {
        google_push::notify_change(&state, &calendar);
    }
    call.finish(result.map(|()| StatusCode::NO_CONTENT.into_response()), None, lose_answer).await
}

/// Parameters Google refuses next to `syncToken`.
const NOT_WITH_SYNC_TOKEN: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

fn list_query(raw_query: Option<&str>) -> (ListQuery, Value) {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw_query.unwrap_or_default()).unwrap_or_default();
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let query = ListQuery {
        sync_token: get("syncToken"),
        page_token: get("pageToken"),
        max_results: get("maxResults").and_then(|v| v.parse().ok()),
        show_deleted: get("showDeleted").as_deref() == Some("true"),
        conflicting: NOT_WITH_SYNC_TOKEN.iter().filter(|name| get(name).is_some()).map(|n| (*n).to_owned()).collect(),
    };
    (query, crate::ledger::form_to_json(&pairs))
}

async fn list(
    State(state): State<Arc<SimState>>,
    Path(calendar): Path<String>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (query, recorded) = list_query(raw_query.as_deref());
    let call = Call {
        state: &state,
        operation: "events.list",
        method: "GET",
        path: format!("/calendar/v3/calendars/{calendar}/events"),
        calendar: Some(calendar.clone()),
        event_id: None,
        body: recorded,
    };
    let lose_answer = match call.gate(&headers).await {
        Gate::Refuse(response) => return response,
        Gate::Proceed { lose_answer } => lose_answer,
    };
    let result = state.google().list(&calendar, &query, state.config.google_sync_token_ttl);
    call.finish(result.map(json_reply), None, lose_answer).await
}

async fn watch(
    State(state): State<Arc<SimState>>,
    Path(calendar): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let call = Call {
        state: &state,
        operation: "events.watch",
        method: "POST",
        path: format!("/calendar/v3/calendars/{calendar}/events/watch"),
        calendar: Some(calendar.clone()),
        event_id: None,
        body: body.clone(),
    };
    let lose_answer = match call.gate(&headers).await {
        Gate::Refuse(response) => return response,
        Gate::Proceed { lose_answer } => lose_answer,
    };
    let result = state.google().watch(&calendar, &body, state.config.google_channel_ttl);
    let result = result.map(|channel| {
        google_push::send_sync(&state, &channel.id);
        let mut reply = json!({
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": google_push::resource_uri(&state, &calendar),
            // An int64, which Google's JSON carries as a string.
            "expiration": channel.expiration.timestamp_millis().to_string(),
        });
        if let Some(token) = channel.token {
            reply["token"] = json!(token);
        }
        json_reply(reply)
    });
    call.finish(result, None, lose_answer).await
}

async fn stop(State(state): State<Arc<SimState>>, headers: HeaderMap, raw: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let call = Call {
        state: &state,
        operation: "channels.stop",
        method: "POST",
        path: "/calendar/v3/channels/stop".to_owned(),
        calendar: None,
        event_id: None,
        body: body.clone(),
    };
    let lose_answer = match call.gate(&headers).await {
        Gate::Refuse(response) => return response,
        Gate::Proceed { lose_answer } => lose_answer,
    };
    let id = body.get("id").and_then(Value::as_str).unwrap_or_default();
    let resource_id = body.get("resourceId").and_then(Value::as_str).unwrap_or_default();
    let result = state.google().stop(id, resource_id).map(|()| StatusCode::NO_CONTENT.into_response());
    call.finish(result, None, lose_answer).await
}
