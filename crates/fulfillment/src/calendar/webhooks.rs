//! What the calendar vendors push to us, verified before anything is read or done: Google's
//! channel notifications (the token we set, compared in constant time) ask for a busy-time
//! import; Jobber's webhooks (HMAC-SHA256 of the raw body with the app's secret) note that a
//! visit of ours was changed on Jobber's side.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use calendars::google::{PushError, ResourceState, UnverifiedPush};
use calendars::jobber::WebhookError;
use kernel::error::{ApiError, ErrorBody};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Fulfillment;

/// Public routes (the vendors authenticate with their signatures and tokens).
pub fn router() -> OpenApiRouter<Fulfillment> {
    OpenApiRouter::new().routes(routes!(google_push)).routes(routes!(jobber_webhook))
}

/// A Google Calendar push notification: the calendar changed, import its busy times.
#[utoipa::path(
    post, path = "/api/webhooks/google-calendar", tag = "webhooks",
    responses((status = 200, description = "Taken"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub async fn google_push(State(module): State<Fulfillment>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let push = UnverifiedPush::from_headers(&headers)
        .map_err(|e| ApiError::BadRequest { message: e.to_string(), field: None })?;
    let connection = sqlx::query!(
        "SELECT id, channel_token FROM fulfillment.calendar_connections WHERE channel_id = $1",
        push.channel_id(),
    )
    .fetch_optional(&module.pool)
    .await?;
    let Some(connection) = connection else {
        // A channel we replaced or disconnected: Google keeps it until it expires.
        tracing::info!(channel = push.channel_id(), "a push notification for a channel we no longer have");
        return Ok(StatusCode::OK);
    };
    let notification =
        push.verify(connection.channel_token.as_deref().unwrap_or_default()).map_err(|error| match error {
            PushError::BadToken => ApiError::InvalidCredentials("the channel token does not match".into()),
            other => ApiError::BadRequest { message: other.to_string(), field: None },
        })?;
    if notification.state != ResourceState::Sync {
        sqlx::query!(
            "UPDATE fulfillment.calendar_connections SET sync_requested_at = now() WHERE id = $1",
            connection.id,
        )
        .execute(&module.pool)
        .await?;
        module.busy_wake.notify_one();
    }
    Ok(StatusCode::OK)
}

/// A Jobber webhook: a visit we made was changed or deleted in Jobber; the appointment's sync
/// state says so.
#[utoipa::path(
    post, path = "/api/webhooks/jobber", tag = "webhooks",
    responses((status = 200, description = "Taken"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub async fn jobber_webhook(
    State(module): State<Fulfillment>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let secret = module.calendars.jobber.as_ref().map(|j| j.client_secret.clone()).unwrap_or_default();
    if secret.is_empty() {
        return Err(ApiError::InvalidCredentials("no Jobber app is configured here".into()));
    }
    let signature = headers.get("x-jobber-hmac-sha256").and_then(|v| v.to_str().ok());
    let event = calendars::jobber::verify_webhook(&body, signature, &secret).map_err(|error| match error {
        WebhookError::MissingSignature | WebhookError::BadSignature => ApiError::InvalidCredentials(error.to_string()),
        WebhookError::Malformed(message) => ApiError::BadRequest { message, field: None },
    })?;
    // Jobber tells us about the visits we create too; only a change or deletion can be someone
    // else's doing.
    if !(event.topic.contains("UPDATE") || event.topic.contains("DESTROY") || event.topic.contains("DELETE")) {
        return Ok(StatusCode::OK);
    }
    let note = format!("{} at {}", event.topic, event.occurred_at.to_rfc3339());
    let marked = sqlx::query!(
        r#"UPDATE fulfillment.appointment_sync SET remote_change = $2, updated_at = now()
           WHERE external->>'visit' = $1"#,
        event.item_id.as_str(),
        note,
    )
    .execute(&module.pool)
    .await?;
    tracing::info!(topic = %event.topic, visits = marked.rows_affected(), "Jobber webhook taken");
    Ok(StatusCode::OK)
}
