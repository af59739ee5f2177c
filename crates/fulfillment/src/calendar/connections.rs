//! `/api/v1/calendar-connections`: an admin connects a resource's Google calendar or the
//! tenant's Jobber account with the OAuth grant obtained from the vendor (the refresh token),
//! sees each connection's state, asks for a busy-time import now, and disconnects.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Fulfillment;

pub fn router() -> OpenApiRouter<Fulfillment> {
    OpenApiRouter::new()
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(delete_connection))
        .routes(routes!(sync_connection))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub id: Uuid,
    /// google or jobber.
    pub provider: String,
    /// Google: the resource whose calendar it is; Jobber: null (every resource).
    pub resource_id: Option<Uuid>,
    pub display_name: String,
    pub calendar_id: Option<String>,
    /// active, or unauthorized (connect again: `status_reason` says why).
    pub status: String,
    pub status_reason: Option<String>,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub last_sync_error: Option<String>,
    /// Whether Google pushes changes to us (else the schedule alone imports busy times).
    pub push_channel_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionList {
    pub items: Vec<ConnectionView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInput {
    /// google or jobber.
    pub provider: String,
    pub display_name: String,
    /// Google only: the resource whose calendar this is.
    pub resource_id: Option<Uuid>,
    /// Google only: default `primary`.
    pub calendar_id: Option<String>,
    /// The OAuth grant's refresh token (kept sealed; never shown again).
    pub refresh_token: String,
    /// Optional: a current access token and its expiry, saving the first refresh.
    pub access_token: Option<String>,
    pub access_expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/calendar-connections", tag = "fulfillment", responses((status = 200, body = ConnectionList)))]
pub async fn list_connections(
    State(module): State<Fulfillment>,
    caller: Caller,
) -> Result<Json<ConnectionList>, ApiError> {
    let items = sqlx::query_as!(
        ConnectionView,
        r#"SELECT id, provider, resource_id, display_name, calendar_id, status, status_reason, last_synced_at,
                  last_sync_error, channel_expires_at AS push_channel_expires_at, created_at
           FROM fulfillment.calendar_connections WHERE tenant_id = $1 ORDER BY created_at, id"#,
        caller.tenant_id.0,
    )
    .fetch_all(&module.pool)
    .await?;
    Ok(Json(ConnectionList { items }))
}

/// Connects an account; future booked appointments it should show are queued for it at once,
/// and a Google calendar's busy times are imported.
#[utoipa::path(
    post, path = "/api/v1/calendar-connections", tag = "fulfillment", request_body = ConnectionInput,
    responses((status = 201, body = ConnectionView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody))
)]
pub async fn create_connection(
    State(module): State<Fulfillment>,
    caller: Caller,
    Json(input): Json<ConnectionInput>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    caller.require_admin()?;
    let tenant = caller.tenant_id.0;
    let name = input.display_name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("display_name", "must be 1 to 200 characters"));
    }
    let refresh = input.refresh_token.trim();
    if refresh.is_empty() || refresh.len() > 4096 {
        return Err(ApiError::validation("refresh_token", "is required"));
    }
    let (resource, calendar) = match input.provider.as_str() {
        "google" => {
            if module.calendars.google.is_none() {
                return Err(ApiError::validation("provider", "this server has no Google app configured ([calendars])"));
            }
            let resource = input
                .resource_id
                .ok_or_else(|| ApiError::validation("resource_id", "a Google calendar belongs to a resource"))?;
            let calendar = input.calendar_id.as_deref().map(str::trim).filter(|c| !c.is_empty()).unwrap_or("primary");
            if calendar.len() > 255 || calendar.chars().any(char::is_control) {
                return Err(ApiError::validation("calendar_id", "is not a calendar id"));
            }
            (Some(resource), Some(calendar.to_owned()))
        }
        "jobber" => {
            if module.calendars.jobber.is_none() {
                return Err(ApiError::validation("provider", "this server has no Jobber app configured ([calendars])"));
            }
            if input.resource_id.is_some() || input.calendar_id.is_some() {
                return Err(ApiError::validation("resource_id", "a Jobber account shows every resource: leave it out"));
            }
            (None, None)
        }
        _ => return Err(ApiError::validation("provider", "must be google or jobber")),
    };
    if let Some(resource) = resource {
        sqlx::query_scalar!("SELECT id FROM fulfillment.resources WHERE tenant_id = $1 AND id = $2", tenant, resource)
            .fetch_optional(&module.pool)
            .await?
            .ok_or(ApiError::NotFound("resource"))?;
    }
    let id = Uuid::now_v7();
    let credentials = calendars::Credentials {
        access_token: input.access_token.clone().unwrap_or_default(),
        // Unknown: refreshed before the first call.
        access_expires_at: input
            .access_expires_at
            .filter(|_| input.access_token.is_some())
            .unwrap_or(DateTime::UNIX_EPOCH),
        refresh_token: refresh.to_owned(),
    };
    let sealed = super::seal(&module.keyring, tenant, id, &credentials)?;
    let mut tx = module.pool.begin().await?;
    sqlx::query!(
        r#"INSERT INTO fulfillment.calendar_connections (id, tenant_id, provider, resource_id, display_name, calendar_id,
                                                        credentials, sync_requested_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $3 = 'google' THEN now() END)"#,
        id,
        tenant,
        input.provider,
        resource,
        name,
        calendar,
        sealed,
    )
    .execute(&mut *tx)
    .await?;
    // What it should show already: the booked appointments still ahead.
    let ahead = sqlx::query_scalar!(
        r#"SELECT id FROM fulfillment.appointments
           WHERE tenant_id = $1 AND status = 'booked' AND ends_at > now() AND ($2::uuid IS NULL OR resource_id = $2)"#,
        tenant,
        resource,
    )
    .fetch_all(&mut *tx)
    .await?;
    for appointment in ahead {
        super::enqueue(&mut tx, tenant, appointment).await?;
    }
    tx.commit().await?;
    module.sync_wake.notify_waiters();
    module.sync_wake.notify_one();
    module.busy_wake.notify_one();
    let view = find(&module, tenant, id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn find(module: &Fulfillment, tenant: Uuid, id: Uuid) -> Result<ConnectionView, ApiError> {
    sqlx::query_as!(
        ConnectionView,
        r#"SELECT id, provider, resource_id, display_name, calendar_id, status, status_reason, last_synced_at,
                  last_sync_error, channel_expires_at AS push_channel_expires_at, created_at
           FROM fulfillment.calendar_connections WHERE tenant_id = $1 AND id = $2"#,
        tenant,
        id,
    )
    .fetch_optional(&module.pool)
    .await?
    .ok_or(ApiError::NotFound("calendar connection"))
}

/// Disconnects: its busy times stop counting and nothing more is sent to it (what it shows
/// stays there).
#[utoipa::path(
    delete, path = "/api/v1/calendar-connections/{id}", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn delete_connection(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let deleted = sqlx::query!(
        "DELETE FROM fulfillment.calendar_connections WHERE tenant_id = $1 AND id = $2",
        caller.tenant_id.0,
        id
    )
    .execute(&module.pool)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound("calendar connection"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Imports a Google calendar's busy times now (and brings an unauthorized connection back after
/// the operator fixed the grant on the vendor's side).
#[utoipa::path(
    post, path = "/api/v1/calendar-connections/{id}/sync", tag = "fulfillment", params(("id" = Uuid, Path)),
    responses((status = 202, body = ConnectionView), (status = 404, body = ErrorBody))
)]
pub async fn sync_connection(
    State(module): State<Fulfillment>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let updated = sqlx::query!(
        r#"UPDATE fulfillment.calendar_connections SET sync_requested_at = now(), updated_at = now()
           WHERE tenant_id = $1 AND id = $2"#,
        caller.tenant_id.0,
        id,
    )
    .execute(&module.pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::NotFound("calendar connection"));
    }
    module.busy_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(find(&module, caller.tenant_id.0, id).await?)))
}
