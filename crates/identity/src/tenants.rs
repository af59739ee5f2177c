//! Tenants: an operator's workspace, named by a unique slug used at login.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde::Serialize;
use sqlx::PgExecutor;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
}

/// A slug: 1–63 characters of `a-z`, `0-9` and inner `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let valid_chars = raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let valid_edges = !raw.starts_with('-') && !raw.ends_with('-');
        if raw.is_empty() || raw.len() > 63 || !valid_chars || !valid_edges {
            return Err(ApiError::validation(
                "slug",
                "must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn parse_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("name", "must be 1-200 characters"));
    }
    Ok(name.to_owned())
}

pub async fn create(db: impl PgExecutor<'_>, name: &str, slug: &Slug) -> Result<Tenant, ApiError> {
    let id = TenantId::new();
    sqlx::query_as!(
        Tenant,
        r#"INSERT INTO identity.tenants (id, name, slug) VALUES ($1, $2, $3)
           RETURNING id AS "id: TenantId", name, slug, created_at"#,
        id.0,
        name,
        slug.as_str(),
    )
    .fetch_one(db)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::conflict(Some("slug"), format!("a tenant with slug `{}` already exists", slug.as_str()))
        }
        _ => ApiError::from(error),
    })
}

pub async fn find(db: impl PgExecutor<'_>, id: TenantId) -> Result<Option<Tenant>, ApiError> {
    Ok(sqlx::query_as!(
        Tenant,
        r#"SELECT id AS "id: TenantId", name, slug, created_at FROM identity.tenants WHERE id = $1"#,
        id.0
    )
    .fetch_optional(db)
    .await?)
}

pub async fn find_by_slug(db: impl PgExecutor<'_>, slug: &str) -> Result<Option<Tenant>, ApiError> {
    Ok(sqlx::query_as!(
        Tenant,
        r#"SELECT id AS "id: TenantId", name, slug, created_at FROM identity.tenants WHERE slug = $1"#,
        slug
    )
    .fetch_optional(db)
    .await?)
}
