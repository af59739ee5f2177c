//! Trigger rules: what they are, how they are checked, where they are stored.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::pagination::PageRequest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::event::{Condition, valid_path};
use crate::messages::model::{Channel, Lane};

/// Paths into the event for one recipient; at least one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AudiencePaths {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub contact_id: Option<String>,
}

/// Send relative to a time in the event instead of at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Path to an RFC 3339 time in the event, e.g. `data.new.departure_at`.
    pub relative_to: String,
    /// Seconds after that time (negative: before), e.g. -86400 for 24 h before.
    pub offset_secs: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TriggerRule {
    pub id: Uuid,
    pub name: String,
    pub event: String,
    pub conditions: Vec<Condition>,
    pub template_name: String,
    pub locale_path: Option<String>,
    pub audience: Vec<AudiencePaths>,
    pub channels: Vec<Channel>,
    pub lane: Lane,
    pub require_review: bool,
    pub schedule: Option<Schedule>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub name: String,
    /// The event name, or the Hasura trigger name.
    pub event: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub template_name: String,
    pub locale_path: Option<String>,
    pub audience: Vec<AudiencePaths>,
    /// One channel or a fallback chain.
    pub channels: Vec<Channel>,
    pub lane: Option<Lane>,
    #[serde(default)]
    pub require_review: bool,
    pub schedule: Option<Schedule>,
    pub enabled: Option<bool>,
}

impl RuleInput {
    pub fn validate(&self) -> Result<(), ApiError> {
        let text = |field: &str, value: &str| {
            if value.trim().is_empty() || value.len() > 200 {
                Err(ApiError::validation(field, "must be 1-200 characters"))
            } else {
                Ok(())
            }
        };
        text("name", &self.name)?;
        text("event", &self.event)?;
        text("template_name", &self.template_name)?;
        for (index, condition) in self.conditions.iter().enumerate() {
            condition.validate(&format!("conditions[{index}]"))?;
        }
        if self.audience.is_empty() {
            return Err(ApiError::validation("audience", "name at least one recipient"));
        }
        for (index, paths) in self.audience.iter().enumerate() {
            let given = [&paths.phone, &paths.email, &paths.contact_id];
            if given.iter().all(|p| p.is_none()) {
                return Err(ApiError::validation(
                    format!("audience[{index}]"),
                    "needs a phone, email or contact_id path",
                ));
            }
            for (name, path) in [("phone", &paths.phone), ("email", &paths.email), ("contact_id", &paths.contact_id)] {
                if path.as_deref().is_some_and(|p| !valid_path(p)) {
                    return Err(ApiError::validation(format!("audience[{index}].{name}"), "must be a dotted path"));
                }
            }
        }
        if self.channels.is_empty() {
            return Err(ApiError::validation("channels", "name at least one channel"));
        }
        if let Some(path) = &self.locale_path
            && !valid_path(path)
        {
            return Err(ApiError::validation("locale_path", "must be a dotted path"));
        }
        if let Some(schedule) = &self.schedule {
            if !valid_path(&schedule.relative_to) {
                return Err(ApiError::validation("schedule.relative_to", "must be a dotted path"));
            }
            if schedule.offset_secs.unsigned_abs() > 366 * 86_400 {
                return Err(ApiError::validation("schedule.offset_secs", "must be within a year"));
            }
        }
        Ok(())
    }
}

struct Row {
    id: Uuid,
    name: String,
    event: String,
    conditions: Value,
    template_name: String,
    locale_path: Option<String>,
    audience: Value,
    channels: Vec<String>,
    lane: Lane,
    require_review: bool,
    schedule: Option<Value>,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_rule(self) -> Result<TriggerRule, ApiError> {
        Ok(TriggerRule {
            id: self.id,
            name: self.name,
            event: self.event,
            conditions: serde_json::from_value(self.conditions).map_err(ApiError::internal)?,
            template_name: self.template_name,
            locale_path: self.locale_path,
            audience: serde_json::from_value(self.audience).map_err(ApiError::internal)?,
            channels: self.channels.iter().filter_map(|c| Channel::parse(c)).collect(),
            lane: self.lane,
            require_review: self.require_review,
            schedule: self.schedule.map(serde_json::from_value).transpose().map_err(ApiError::internal)?,
            enabled: self.enabled,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn json(value: &impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(ApiError::internal)
}

pub async fn insert(db: impl PgExecutor<'_>, tenant: TenantId, input: &RuleInput) -> Result<TriggerRule, ApiError> {
    let channels: Vec<&str> = input.channels.iter().map(|c| c.as_str()).collect();
    sqlx::query_as!(
        Row,
        r#"INSERT INTO communications.trigger_rules
               (id, tenant_id, name, event, conditions, template_name, locale_path, audience, channels, lane,
                require_review, schedule, enabled)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           RETURNING id, name, event, conditions, template_name, locale_path, audience, channels, lane AS "lane: Lane",
                     require_review, schedule, enabled, created_at, updated_at"#,
        Uuid::now_v7(),
        tenant.0,
        input.name.trim(),
        input.event.trim(),
        json(&input.conditions)?,
        input.template_name.trim(),
        input.locale_path,
        json(&input.audience)?,
        &channels as &[&str],
        input.lane.unwrap_or_default().as_str(),
        input.require_review,
        input.schedule.as_ref().map(json).transpose()?,
        input.enabled.unwrap_or(true),
    )
    .fetch_one(db)
    .await?
    .into_rule()
}

pub async fn replace(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
    input: &RuleInput,
) -> Result<TriggerRule, ApiError> {
    let channels: Vec<&str> = input.channels.iter().map(|c| c.as_str()).collect();
    sqlx::query_as!(
        Row,
        r#"UPDATE communications.trigger_rules SET
               name = $3, event = $4, conditions = $5, template_name = $6, locale_path = $7, audience = $8,
               channels = $9, lane = $10, require_review = $11, schedule = $12, enabled = $13, updated_at = now()
           WHERE tenant_id = $1 AND id = $2
           RETURNING id, name, event, conditions, template_name, locale_path, audience, channels, lane AS "lane: Lane",
                     require_review, schedule, enabled, created_at, updated_at"#,
        tenant.0,
        id,
        input.name.trim(),
        input.event.trim(),
        json(&input.conditions)?,
        input.template_name.trim(),
        input.locale_path,
        json(&input.audience)?,
        &channels as &[&str],
        input.lane.unwrap_or_default().as_str(),
        input.require_review,
        input.schedule.as_ref().map(json).transpose()?,
        input.enabled.unwrap_or(true),
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("trigger rule"))?
    .into_rule()
}

pub async fn find(db: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<TriggerRule, ApiError> {
    sqlx::query_as!(
        Row,
        r#"SELECT id, name, event, conditions, template_name, locale_path, audience, channels, lane AS "lane: Lane",
                  require_review, schedule, enabled, created_at, updated_at
           FROM communications.trigger_rules WHERE tenant_id = $1 AND id = $2"#,
        tenant.0,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("trigger rule"))?
    .into_rule()
}

pub async fn list(db: impl PgExecutor<'_>, tenant: TenantId, page: PageRequest) -> Result<Vec<TriggerRule>, ApiError> {
    sqlx::query_as!(
        Row,
        r#"SELECT id, name, event, conditions, template_name, locale_path, audience, channels, lane AS "lane: Lane",
                  require_review, schedule, enabled, created_at, updated_at
           FROM communications.trigger_rules
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"#,
        tenant.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(Row::into_rule)
    .collect()
}

/// The enabled rules for an event.
pub async fn for_event(db: impl PgExecutor<'_>, tenant: TenantId, event: &str) -> Result<Vec<TriggerRule>, ApiError> {
    sqlx::query_as!(
        Row,
        r#"SELECT id, name, event, conditions, template_name, locale_path, audience, channels, lane AS "lane: Lane",
                  require_review, schedule, enabled, created_at, updated_at
           FROM communications.trigger_rules WHERE tenant_id = $1 AND event = $2 AND enabled ORDER BY id"#,
        tenant.0,
        event,
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(Row::into_rule)
    .collect()
}

pub async fn delete(db: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<(), ApiError> {
    let deleted =
        sqlx::query!("DELETE FROM communications.trigger_rules WHERE tenant_id = $1 AND id = $2", tenant.0, id)
            .execute(db)
            .await?
            .rows_affected();
    if deleted == 0 { Err(ApiError::NotFound("trigger rule")) } else { Ok(()) }
}

impl crate::Communications {
    /// A 422 on `template_name` unless the tenant has a template of that name.
    pub async fn template_exists(&self, tenant: TenantId, name: &str) -> Result<(), ApiError> {
        match crate::templates::repository::find_by_name(&self.pool, tenant, name.trim()).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::validation("template_name", format!("no template named `{}`", name.trim()))),
        }
    }
}
