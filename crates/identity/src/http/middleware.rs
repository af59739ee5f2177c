//! Turns credentials into a [`Caller`] in the request extensions.
//!
//! - `Authorization: Bearer <api key>`: an operator. A wrong or revoked key is 401 at once.
//! - The session cookie: an agent. An unknown or expired session is treated as no credentials,
//!   so public routes (login) still work and protected ones answer 401.
//! - Cookie-authenticated writes must echo the session's CSRF token in `X-CSRF-Token`.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kernel::auth::{Actor, Caller};
use kernel::error::ApiError;

use super::cookies::{self, CSRF_HEADER, SESSION_COOKIE};
use crate::Identity;
use crate::secrets::constant_time_eq;
use crate::sessions::{self, ActiveSession};

pub async fn authenticate(State(identity): State<Identity>, mut request: Request, next: Next) -> Response {
    match resolve(&identity, &mut request).await {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

async fn resolve(identity: &Identity, request: &mut Request) -> Result<(), ApiError> {
    if let Some(authorization) = request.headers().get(axum::http::header::AUTHORIZATION) {
        let presented =
            authorization.to_str().ok().and_then(|value| value.strip_prefix("Bearer ")).map(str::trim).ok_or_else(
                || ApiError::InvalidCredentials("the Authorization header must be `Bearer <api key>`".into()),
            )?;
        let (key_id, tenant_id) = identity
            .authenticate_key(presented)
            .await?
            .ok_or_else(|| ApiError::InvalidCredentials("the API key is not valid or has been revoked".into()))?;
        request.extensions_mut().insert(Caller { tenant_id, actor: Actor::ApiKey(key_id) });
        return Ok(());
    }

    let Some(token) = cookies::read(request.headers(), SESSION_COOKIE) else { return Ok(()) };
    let Some(session) = sessions::find_active(&identity.pool, &token).await? else { return Ok(()) };
    if is_write(request.method()) && !csrf_matches(request, &session) {
        return Err(ApiError::Forbidden(
            "cookie-authenticated writes must send the session's CSRF token in the X-CSRF-Token header".into(),
        ));
    }
    request.extensions_mut().insert(Caller {
        tenant_id: session.tenant_id,
        actor: Actor::Agent { id: session.agent_id, role: session.role },
    });
    request.extensions_mut().insert(session);
    Ok(())
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn csrf_matches(request: &Request, session: &ActiveSession) -> bool {
    request
        .headers()
        .get(CSRF_HEADER)
        .map(|presented| constant_time_eq(presented.as_bytes(), session.csrf_token.as_bytes()))
        .unwrap_or(false)
}
