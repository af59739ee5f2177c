//! Who is calling. The server's authentication middleware resolves credentials (an operator
//! API key or an agent session) into a [`Caller`] and puts it into the request extensions;
//! handlers take `Caller` as an extractor and so can never forget the tenant.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::ids::{AgentId, ApiKeyId, TenantId};

/// An agent's role within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    Admin,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
}

/// The authenticated principal behind a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An operator's system, authenticated with `Authorization: Bearer <api key>`.
    ApiKey(ApiKeyId),
    /// A person logged into the web UI with a session cookie.
    Agent { id: AgentId, role: Role },
}

/// The tenant and actor of an authenticated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub tenant_id: TenantId,
    pub actor: Actor,
}

impl Caller {
    /// Operators (API keys) and admin agents may manage the workspace: agents, keys, channels.
    pub fn is_admin(&self) -> bool {
        matches!(self.actor, Actor::ApiKey(_) | Actor::Agent { role: Role::Admin, .. })
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this action needs an operator API key or an admin agent".into()))
        }
    }

    pub fn agent_id(&self) -> Option<AgentId> {
        match self.actor {
            Actor::Agent { id, .. } => Some(id),
            Actor::ApiKey(_) => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().copied().ok_or(ApiError::Unauthenticated)
    }
}
