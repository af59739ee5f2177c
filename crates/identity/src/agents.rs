//! Agents: people who work the inbox. Email is unique per tenant; passwords are argon2id.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use chrono::{DateTime, Utc};
use kernel::auth::Role;
use kernel::error::ApiError;
use kernel::ids::{AgentId, TenantId};
use kernel::pagination::PageRequest;
use serde::Serialize;
use sqlx::PgExecutor;
use std::sync::OnceLock;

pub const MIN_PASSWORD_CHARS: usize = 12;
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// An email address, trimmed and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let email = raw.trim().to_lowercase();
        let well_formed = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            }
            None => false,
        };
        if !well_formed || email.len() > 254 || email.chars().any(char::is_whitespace) {
            return Err(ApiError::validation("email", "is not a valid email address"));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password good enough to store: at least [`MIN_PASSWORD_CHARS`] characters.
#[derive(Clone)]
pub struct NewPassword(String);

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

impl NewPassword {
    pub fn parse(raw: String) -> Result<Self, ApiError> {
        if raw.chars().count() < MIN_PASSWORD_CHARS {
            return Err(ApiError::validation("password", format!("must be at least {MIN_PASSWORD_CHARS} characters")));
        }
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::validation("password", "must be at most 1024 bytes"));
        }
        Ok(Self(raw))
    }
}

pub fn parse_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("name", "must be 1-200 characters"));
    }
    Ok(name.to_owned())
}

/// Hashes off the async runtime: argon2id is deliberately slow.
pub async fn hash_password(password: NewPassword) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.0.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| ApiError::internal(error.to_string()))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Verifies off the async runtime. With no stored hash (unknown email) it verifies against a
/// dummy hash anyway, so response time does not tell which emails exist.
pub async fn verify_password(candidate: String, stored_hash: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let known = stored_hash.is_some();
        let stored = stored_hash.unwrap_or_else(|| dummy_hash().to_owned());
        let parsed = PasswordHash::new(&stored).map_err(|error| ApiError::internal(error.to_string()))?;
        let matches = Argon2::default().verify_password(candidate.as_bytes(), &parsed).is_ok();
        Ok(known && matches)
    })
    .await
    .map_err(ApiError::internal)?
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"switchboard-dummy-password", &salt)
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

/// The password hash is left out of `Debug` output.
pub struct NewAgent<'a> {
    pub tenant_id: TenantId,
    pub email: &'a Email,
    pub name: &'a str,
    pub role: Role,
    pub password_hash: &'a str,
}

impl std::fmt::Debug for NewAgent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAgent")
            .field("tenant_id", &self.tenant_id)
            .field("email", self.email)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

pub async fn create(db: impl PgExecutor<'_>, agent: NewAgent<'_>) -> Result<Agent, ApiError> {
    sqlx::query_as!(
        Agent,
        r#"INSERT INTO identity.agents (id, tenant_id, email, name, role, password_hash)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id AS "id: AgentId", tenant_id AS "tenant_id: TenantId", email, name,
                     role AS "role: Role", created_at"#,
        AgentId::new().0,
        agent.tenant_id.0,
        agent.email.as_str(),
        agent.name,
        agent.role.as_str(),
        agent.password_hash,
    )
    .fetch_one(db)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => ApiError::conflict(
            Some("email"),
            format!("an agent with email `{}` already exists in this workspace", agent.email.as_str()),
        ),
        _ => ApiError::from(error),
    })
}

pub async fn get(db: impl PgExecutor<'_>, tenant_id: TenantId, id: AgentId) -> Result<Agent, ApiError> {
    sqlx::query_as!(
        Agent,
        r#"SELECT id AS "id: AgentId", tenant_id AS "tenant_id: TenantId", email, name,
                  role AS "role: Role", created_at
           FROM identity.agents WHERE tenant_id = $1 AND id = $2"#,
        tenant_id.0,
        id.0,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("agent"))
}

pub async fn list(db: impl PgExecutor<'_>, tenant_id: TenantId, page: PageRequest) -> Result<Vec<Agent>, ApiError> {
    Ok(sqlx::query_as!(
        Agent,
        r#"SELECT id AS "id: AgentId", tenant_id AS "tenant_id: TenantId", email, name,
                  role AS "role: Role", created_at
           FROM identity.agents
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           ORDER BY id LIMIT $3"#,
        tenant_id.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(db)
    .await?)
}

/// An agent with its password hash, for login only.
#[derive(Debug)]
pub struct Credentials {
    pub agent: Agent,
    pub password_hash: String,
}

pub async fn find_credentials(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    email: &str,
) -> Result<Option<Credentials>, ApiError> {
    let row = sqlx::query!(
        r#"SELECT id AS "id: AgentId", tenant_id AS "tenant_id: TenantId", email, name,
                  role AS "role: Role", created_at, password_hash
           FROM identity.agents WHERE tenant_id = $1 AND email = $2"#,
        tenant_id.0,
        email,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| Credentials {
        agent: Agent {
            id: row.id,
            tenant_id: row.tenant_id,
            email: row.email,
            name: row.name,
            role: row.role,
            created_at: row.created_at,
        },
        password_hash: row.password_hash,
    }))
}

pub async fn set_password_hash(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: AgentId,
    password_hash: &str,
) -> Result<(), ApiError> {
    sqlx::query!(
        "UPDATE identity.agents SET password_hash = $3 WHERE tenant_id = $1 AND id = $2",
        tenant_id.0,
        id.0,
        password_hash,
    )
    .execute(db)
    .await?;
    Ok(())
}
