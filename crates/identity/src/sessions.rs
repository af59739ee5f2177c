//! Server-side agent sessions. The cookie holds a random token; the row holds its digest, the
//! CSRF token for cookie-authenticated writes, and a hard expiry.

use chrono::{DateTime, Utc};
use kernel::auth::Role;
use kernel::error::ApiError;
use kernel::ids::{AgentId, TenantId};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::secrets::{digest, random_token};

/// A session just opened: the token goes into the cookie and is never stored.
#[derive(Debug)]
pub struct OpenedSession {
    pub token: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// What a valid session cookie resolves to.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub role: Role,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn open(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    agent_id: AgentId,
    ttl_secs: u64,
) -> Result<OpenedSession, ApiError> {
    let token = random_token();
    let csrf_token = random_token();
    let expires_at = sqlx::query_scalar!(
        r#"INSERT INTO identity.sessions (id, tenant_id, agent_id, token_hash, csrf_token, expires_at)
           VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
           RETURNING expires_at"#,
        Uuid::now_v7(),
        tenant_id.0,
        agent_id.0,
        digest(&token),
        csrf_token,
        ttl_secs as f64,
    )
    .fetch_one(db)
    .await?;
    Ok(OpenedSession { token, csrf_token, expires_at })
}

/// The live session for a cookie token, with the agent's current role.
pub async fn find_active(db: impl PgExecutor<'_>, token: &str) -> Result<Option<ActiveSession>, ApiError> {
    Ok(sqlx::query_as!(
        ActiveSession,
        r#"SELECT s.id, s.tenant_id AS "tenant_id: TenantId", s.agent_id AS "agent_id: AgentId",
                  a.role AS "role: Role", s.csrf_token, s.expires_at
           FROM identity.sessions s
           JOIN identity.agents a ON a.id = s.agent_id AND a.tenant_id = s.tenant_id
           WHERE s.token_hash = $1 AND s.expires_at > now()"#,
        digest(token),
    )
    .fetch_optional(db)
    .await?)
}

pub async fn close(db: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<(), ApiError> {
    sqlx::query!("DELETE FROM identity.sessions WHERE tenant_id = $1 AND id = $2", tenant_id.0, id).execute(db).await?;
    Ok(())
}

/// Expired sessions are useless; they are swept whenever someone logs in.
pub async fn delete_expired(db: impl PgExecutor<'_>) -> Result<u64, ApiError> {
    Ok(sqlx::query!("DELETE FROM identity.sessions WHERE expires_at <= now()").execute(db).await?.rows_affected())
}
