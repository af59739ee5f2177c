//! SQL for templates and their variants. Every query filters by tenant.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::pagination::PageRequest;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::messages::model::Channel;

#[derive(Debug, Clone)]
pub struct TemplateRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub trigger_event: Option<String>,
    pub default_locale: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct VariantRow {
    pub id: Uuid,
    pub template_id: Uuid,
    pub channel: Channel,
    pub locale: String,
    pub body: Value,
}

#[derive(Debug)]
pub struct NewTemplate<'a> {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub trigger_event: Option<&'a str>,
    pub default_locale: &'a str,
}

#[derive(Debug)]
pub struct NewVariant {
    pub channel: Channel,
    pub locale: String,
    pub body: Value,
}

pub async fn insert(db: impl PgExecutor<'_>, template: NewTemplate<'_>) -> Result<TemplateRow, ApiError> {
    sqlx::query_as!(
        TemplateRow,
        r#"INSERT INTO communications.templates (id, tenant_id, name, description, trigger_event, default_locale)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id, tenant_id, name, description, trigger_event, default_locale, created_at, updated_at"#,
        template.id,
        template.tenant_id.0,
        template.name,
        template.description,
        template.trigger_event,
        template.default_locale,
    )
    .fetch_one(db)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::conflict(Some("name"), format!("a template named `{}` already exists", template.name))
        }
        _ => ApiError::from(error),
    })
}

/// Replaces every variant of a template (in the caller's transaction).
pub async fn replace_variants(
    db: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    template_id: Uuid,
    variants: &[NewVariant],
) -> Result<(), ApiError> {
    sqlx::query!(
        "DELETE FROM communications.template_variants WHERE tenant_id = $1 AND template_id = $2",
        tenant_id.0,
        template_id,
    )
    .execute(&mut *db)
    .await?;
    for variant in variants {
        sqlx::query!(
            r#"INSERT INTO communications.template_variants (id, tenant_id, template_id, channel, locale, body)
               VALUES ($1, $2, $3, $4, $5, $6)"#,
            Uuid::now_v7(),
            tenant_id.0,
            template_id,
            variant.channel.as_str(),
            variant.locale,
            variant.body,
        )
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

pub async fn find(db: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<TemplateRow, ApiError> {
    sqlx::query_as!(
        TemplateRow,
        r#"SELECT id, tenant_id, name, description, trigger_event, default_locale, created_at, updated_at
           FROM communications.templates WHERE tenant_id = $1 AND id = $2"#,
        tenant_id.0,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("template"))
}

/// The template, locked until the transaction ends: updates are serialised per template.
pub async fn lock(db: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<TemplateRow, ApiError> {
    sqlx::query_as!(
        TemplateRow,
        r#"SELECT id, tenant_id, name, description, trigger_event, default_locale, created_at, updated_at
           FROM communications.templates WHERE tenant_id = $1 AND id = $2 FOR UPDATE"#,
        tenant_id.0,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("template"))
}

pub async fn find_by_name(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    name: &str,
) -> Result<Option<TemplateRow>, ApiError> {
    Ok(sqlx::query_as!(
        TemplateRow,
        r#"SELECT id, tenant_id, name, description, trigger_event, default_locale, created_at, updated_at
           FROM communications.templates WHERE tenant_id = $1 AND name = $2"#,
        tenant_id.0,
        name,
    )
    .fetch_optional(db)
    .await?)
}

pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    trigger_event: Option<&str>,
    page: PageRequest,
) -> Result<Vec<TemplateRow>, ApiError> {
    Ok(sqlx::query_as!(
        TemplateRow,
        r#"SELECT id, tenant_id, name, description, trigger_event, default_locale, created_at, updated_at
           FROM communications.templates
           WHERE tenant_id = $1 AND ($2::text IS NULL OR trigger_event = $2) AND ($3::uuid IS NULL OR id > $3)
           ORDER BY id LIMIT $4"#,
        tenant_id.0,
        trigger_event,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(db)
    .await?)
}

pub async fn for_event(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    trigger_event: &str,
) -> Result<Vec<TemplateRow>, ApiError> {
    Ok(sqlx::query_as!(
        TemplateRow,
        r#"SELECT id, tenant_id, name, description, trigger_event, default_locale, created_at, updated_at
           FROM communications.templates WHERE tenant_id = $1 AND trigger_event = $2 ORDER BY id"#,
        tenant_id.0,
        trigger_event,
    )
    .fetch_all(db)
    .await?)
}

/// The variants of `template_ids`, in the order they were written.
pub async fn variants_of(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    template_ids: &[Uuid],
) -> Result<Vec<VariantRow>, ApiError> {
    Ok(sqlx::query_as!(
        VariantRow,
        r#"SELECT id, template_id, channel AS "channel: Channel", locale, body
           FROM communications.template_variants
           WHERE tenant_id = $1 AND template_id = ANY($2)
           ORDER BY template_id, id"#,
        tenant_id.0,
        template_ids,
    )
    .fetch_all(db)
    .await?)
}

#[derive(Debug, Default)]
pub struct TemplateChanges<'a> {
    /// `Some(None)` clears it.
    pub description: Option<Option<&'a str>>,
    /// `Some(None)` clears it.
    pub trigger_event: Option<Option<&'a str>>,
    pub default_locale: Option<&'a str>,
}

pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: Uuid,
    changes: TemplateChanges<'_>,
) -> Result<TemplateRow, ApiError> {
    sqlx::query_as!(
        TemplateRow,
        r#"UPDATE communications.templates SET
               description = CASE WHEN $3 THEN $4 ELSE description END,
               trigger_event = CASE WHEN $5 THEN $6 ELSE trigger_event END,
               default_locale = COALESCE($7, default_locale),
               updated_at = now()
           WHERE tenant_id = $1 AND id = $2
           RETURNING id, tenant_id, name, description, trigger_event, default_locale, created_at, updated_at"#,
        tenant_id.0,
        id,
        changes.description.is_some(),
        changes.description.flatten(),
        changes.trigger_event.is_some(),
        changes.trigger_event.flatten(),
        changes.default_locale,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("template"))
}

pub async fn delete(db: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<(), ApiError> {
    let deleted =
        sqlx::query!("DELETE FROM communications.templates WHERE tenant_id = $1 AND id = $2", tenant_id.0, id)
            .execute(db)
            .await?
            .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound("template"));
    }
    Ok(())
}
