//! `GET /api/v1/me`: who the caller is.

use axum::Extension;
use axum::extract::State;
use kernel::auth::{Actor, Caller};
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::Json;
use serde::Serialize;

use crate::Identity;
use crate::agents::{self, Agent};
use crate::api_keys::{self, ApiKey};
use crate::sessions::ActiveSession;
use crate::tenants::{self, Tenant};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MeActor {
    ApiKey { api_key: ApiKey },
    Agent { agent: Agent, csrf_token: String },
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeResponse {
    pub tenant: Tenant,
    pub actor: MeActor,
}

#[utoipa::path(
    get, path = "/api/v1/me", tag = "auth",
    responses(
        (status = 200, body = MeResponse, description = "The caller's tenant and identity"),
        (status = 401, body = ErrorBody, description = "Not authenticated"),
    )
)]
pub async fn me(
    State(identity): State<Identity>,
    caller: Caller,
    session: Option<Extension<ActiveSession>>,
) -> Result<Json<MeResponse>, ApiError> {
    let pool = &identity.pool;
    let tenant = tenants::find(pool, caller.tenant_id).await?.ok_or(ApiError::NotFound("tenant"))?;
    let actor = match caller.actor {
        Actor::ApiKey(id) => MeActor::ApiKey { api_key: api_keys::get(pool, caller.tenant_id, id).await? },
        Actor::Agent { id, .. } => MeActor::Agent {
            agent: agents::get(pool, caller.tenant_id, id).await?,
            csrf_token: session.map(|Extension(s)| s.csrf_token).unwrap_or_default(),
        },
    };
    Ok(Json(MeResponse { tenant, actor }))
}
