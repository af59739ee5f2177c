//! `POST /api/v1/auth/login` and `POST /api/v1/auth/logout`.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::Json;
use serde::{Deserialize, Serialize};

use super::cookies::{self, CSRF_COOKIE, SESSION_COOKIE};
use crate::Identity;
use crate::agents::{self, Agent};
use crate::sessions::{self, ActiveSession};
use crate::tenants::{self, Tenant};
use crate::throttle::{self, LoginKeys};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The tenant's slug.
    pub workspace: String,
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub tenant: Tenant,
    pub agent: Agent,
    /// Send as `X-CSRF-Token` on every cookie-authenticated write (also in the `sb_csrf` cookie).
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

const BAD_LOGIN: &str = "workspace, email or password is wrong";

/// Logs an agent in: sets an HttpOnly session cookie and returns the CSRF token.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse, description = "Logged in; the session cookie is set"),
        (status = 401, body = ErrorBody, description = "Wrong workspace, email or password"),
        (status = 429, body = ErrorBody, description = "Too many failed attempts; see Retry-After"),
    )
)]
pub async fn login(
    State(identity): State<Identity>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(body): Json<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let keys = LoginKeys::new(&body.workspace, &body.email, client.map(|Extension(ConnectInfo(addr))| addr.ip()));
    throttle::check(&identity.pool, &keys, &identity.settings).await?;

    let tenant = tenants::find_by_slug(&identity.pool, body.workspace.trim()).await?;
    let credentials = match &tenant {
        Some(tenant) => agents::find_credentials(&identity.pool, tenant.id, &body.email.trim().to_lowercase()).await?,
        None => None,
    };
    let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let verified = agents::verify_password(body.password, stored_hash).await?;
    let (Some(tenant), Some(credentials), true) = (tenant, credentials, verified) else {
        throttle::record_failure(&identity.pool, &keys, &identity.settings).await?;
        tracing::info!("login refused");
        return Err(ApiError::InvalidCredentials(BAD_LOGIN.into()));
    };

    throttle::clear_account(&identity.pool, &keys).await?;
    sessions::delete_expired(&identity.pool).await?;
    let ttl = identity.settings.session_ttl_secs;
    let session = sessions::open(&identity.pool, tenant.id, credentials.agent.id, ttl).await?;
    tracing::info!(tenant_id = %tenant.id, agent_id = %credentials.agent.id, "agent logged in");

    let secure = identity.settings.secure_cookies;
    let mut headers = HeaderMap::new();
    cookies::set(&mut headers, SESSION_COOKIE, &session.token, ttl, true, secure);
    cookies::set(&mut headers, CSRF_COOKIE, &session.csrf_token, ttl, false, secure);
    let body = LoginResponse {
        tenant,
        agent: credentials.agent,
        csrf_token: session.csrf_token,
        expires_at: session.expires_at,
    };
    Ok((headers, Json(body)))
}

/// Ends the caller's session and clears its cookies.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, body = ErrorBody, description = "No session"),
        (status = 403, body = ErrorBody, description = "Missing or wrong X-CSRF-Token"),
    )
)]
pub async fn logout(
    State(identity): State<Identity>,
    caller: Caller,
    session: Option<Extension<ActiveSession>>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(Extension(session)) = session else {
        return Err(ApiError::Forbidden("logout ends a login session; API keys are revoked instead".into()));
    };
    sessions::close(&identity.pool, caller.tenant_id, session.id).await?;
    let secure = identity.settings.secure_cookies;
    let mut headers = HeaderMap::new();
    cookies::clear(&mut headers, SESSION_COOKIE, true, secure);
    cookies::clear(&mut headers, CSRF_COOKIE, false, secure);
    Ok((StatusCode::NO_CONTENT, headers))
}
