//! `/api/v1/agents`.

use axum::extract::State;
use axum::http::StatusCode;
use kernel::auth::{Caller, Role};
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use kernel::ids::AgentId;
use kernel::pagination::{Page, PageParams};
use serde::Deserialize;

use crate::Identity;
use crate::agents::{self, Agent, Email, NewAgent, NewPassword};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    pub email: String,
    pub name: String,
    pub role: Role,
    /// At least 12 characters.
    pub password: String,
}

/// Lists the workspace's agents, oldest first.
#[utoipa::path(
    get, path = "/api/v1/agents", tag = "agents",
    params(PageParams),
    responses(
        (status = 200, body = Page<Agent>, description = "A page of agents"),
        (status = 401, body = ErrorBody),
    )
)]
pub async fn list_agents(
    State(identity): State<Identity>,
    caller: Caller,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<Agent>>, ApiError> {
    let page = params.parse()?;
    let rows = agents::list(&identity.pool, caller.tenant_id, page).await?;
    Ok(Json(Page::from_rows(rows, page, |agent| agent.id.0)))
}

#[utoipa::path(
    get, path = "/api/v1/agents/{id}", tag = "agents",
    params(("id" = AgentId, Path, description = "The agent's id")),
    responses(
        (status = 200, body = Agent),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such agent in this workspace"),
    )
)]
pub async fn get_agent(
    State(identity): State<Identity>,
    caller: Caller,
    Path(id): Path<AgentId>,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(agents::get(&identity.pool, caller.tenant_id, id).await?))
}

/// Creates an agent (operator API key or admin agent).
#[utoipa::path(
    post, path = "/api/v1/agents", tag = "agents",
    request_body = CreateAgentRequest,
    responses(
        (status = 201, body = Agent),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "Only operators and admins create agents"),
        (status = 409, body = ErrorBody, description = "The email is taken in this workspace"),
        (status = 422, body = ErrorBody, description = "A field is invalid"),
    )
)]
pub async fn create_agent(
    State(identity): State<Identity>,
    caller: Caller,
    Json(body): Json<CreateAgentRequest>,
) -> Result<(StatusCode, Json<Agent>), ApiError> {
    caller.require_admin()?;
    let email = Email::parse(&body.email)?;
    let name = agents::parse_name(&body.name)?;
    let password_hash = agents::hash_password(NewPassword::parse(body.password)?).await?;
    let agent = agents::create(
        &identity.pool,
        NewAgent {
            tenant_id: caller.tenant_id,
            email: &email,
            name: &name,
            role: body.role,
            password_hash: &password_hash,
        },
    )
    .await?;
    tracing::info!(tenant_id = %caller.tenant_id, agent_id = %agent.id, "agent created");
    Ok((StatusCode::CREATED, Json(agent)))
}
