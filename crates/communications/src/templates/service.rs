//! Template operations: what the handlers, the send path and (later) trigger rules call.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::pagination::PageRequest;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::locale;
use super::render::{self, Fields};
use super::repository::{self, NewTemplate, NewVariant, TemplateChanges, TemplateRow, VariantRow};
use crate::Communications;
use crate::messages::content::MessageContent;
use crate::messages::model::Channel;

const MAX_VARIANTS: usize = 60;
const MAX_DESCRIPTION: usize = 1000;

/// A template with its variants, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateRecord {
    pub id: Uuid,
    /// What the send API names in `content.template.name`.
    pub name: String,
    pub description: Option<String>,
    /// The domain event that triggers it, e.g. `booking.confirmed`.
    pub trigger_event: Option<String>,
    /// Used when neither the requested locale nor its language has a variant.
    pub default_locale: String,
    /// In the order they were written.
    pub variants: Vec<VariantRecord>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VariantRecord {
    pub channel: Channel,
    pub locale: String,
    /// sms `{"text"}`; email `{"subject","html"?,"text"?}`; whatsapp `{"text"}` or
    /// `{"meta_template":{"name","language","body_parameters","components"}}`.
    #[schema(value_type = Object)]
    pub body: Value,
    /// The body parsed and compiled on its first render: the record lives in the cache.
    #[serde(skip)]
    compiled: OnceLock<Result<render::Compiled, String>>,
}

impl VariantRecord {
    fn compiled(&self) -> Result<&render::Compiled, String> {
        self.compiled
            .get_or_init(|| {
                let body =
                    render::parse_body(self.channel, &self.locale, &self.body, "body").map_err(|e| e.to_string())?;
                render::Compiled::new(body).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// A lowercase slug: `[a-z0-9][a-z0-9_.-]{0,99}`, unique in the workspace.
    pub name: String,
    pub description: Option<String>,
    /// e.g. `booking.confirmed`.
    pub trigger_event: Option<String>,
    /// A locale such as `en` or `de-AT`.
    pub default_locale: String,
    pub variants: Vec<VariantInput>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantInput {
    pub channel: Channel,
    /// `de`, `de-AT`, `en`…
    pub locale: String,
    /// Typed per channel; every string is a minijinja template over the send's `variables`.
    #[schema(value_type = Object)]
    pub body: Value,
}

/// Only what is sent changes; `null` clears `description` and `trigger_event`. `variants`
/// replaces every variant.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub trigger_event: Option<Option<String>>,
    pub default_locale: Option<String>,
    pub variants: Option<Vec<VariantInput>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A rendered preview: which variant was used and what would be sent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rendered {
    pub channel: Channel,
    /// The locale of the variant that was used (after fallback).
    pub locale: String,
    /// The message content as the send API would store it (`type`: text, email or
    /// whatsapp_template).
    #[schema(value_type = Object)]
    pub content: MessageContent,
}

fn is_slug(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 100
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

pub fn parse_name(raw: &str) -> Result<String, ApiError> {
    if is_slug(raw) {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::validation(
            "name",
            "must be 1-100 characters of lowercase letters, digits, `_`, `.` and `-`, starting with a letter or digit",
        ))
    }
}

fn parse_trigger_event(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(event) if is_slug(event) => Ok(Some(event.to_owned())),
        Some(_) => Err(ApiError::validation(
            "trigger_event",
            "must be an event name such as `booking.confirmed` (lowercase letters, digits, `_`, `.`, `-`)",
        )),
    }
}

fn parse_description(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw.map(str::trim).filter(|d| !d.is_empty()) {
        None => Ok(None),
        Some(d) if d.chars().count() <= MAX_DESCRIPTION => Ok(Some(d.to_owned())),
        Some(_) => Err(ApiError::validation("description", format!("must be at most {MAX_DESCRIPTION} characters"))),
    }
}

fn parse_default_locale(raw: &str) -> Result<String, ApiError> {
    locale::parse_locale(raw)
        .ok_or_else(|| ApiError::validation("default_locale", "must be a locale such as `en` or `de-AT`"))
}

/// Checks every variant (locale, body shape, template syntax) and refuses duplicates.
fn parse_variants(inputs: &[VariantInput]) -> Result<Vec<NewVariant>, ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::validation("variants", "at least one variant is required"));
    }
    if inputs.len() > MAX_VARIANTS {
        return Err(ApiError::validation("variants", format!("at most {MAX_VARIANTS} variants")));
    }
    let mut parsed: Vec<NewVariant> = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        let locale = locale::parse_locale(&input.locale).ok_or_else(|| {
            ApiError::validation(format!("variants[{index}].locale"), "must be a locale such as `en` or `de-AT`")
        })?;
        if parsed.iter().any(|v| v.channel == input.channel && v.locale == locale) {
            return Err(ApiError::validation(
                format!("variants[{index}].locale"),
                format!("there is already a {} variant for `{locale}`", input.channel.as_str()),
            ));
        }
        let body = render::parse_body(input.channel, &locale, &input.body, &format!("variants[{index}].body"))?;
        parsed.push(NewVariant { channel: input.channel, locale, body: body.to_json() });
    }
    Ok(parsed)
}

fn record(row: TemplateRow, variants: Vec<VariantRow>) -> TemplateRecord {
    TemplateRecord {
        id: row.id,
        name: row.name,
        description: row.description,
        trigger_event: row.trigger_event,
        default_locale: row.default_locale,
        variants: variants
            .into_iter()
            .map(|v| VariantRecord { channel: v.channel, locale: v.locale, body: v.body, compiled: OnceLock::new() })
            .collect(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// Resolves the variant (exact locale → language → default locale) and renders it.
fn render_record(
    template: &TemplateRecord,
    channel: Channel,
    locale: Option<&str>,
    locale_field: &str,
    variables: &Value,
    fields: Fields,
) -> Result<Rendered, ApiError> {
    let requested = match locale.map(str::trim).filter(|l| !l.is_empty()) {
        None => None,
        Some(raw) => Some(
            locale::parse_locale(raw)
                .ok_or_else(|| ApiError::validation(locale_field, "must be a locale such as `en` or `de-AT`"))?,
        ),
    };
    let empty = Value::Object(serde_json::Map::new());
    let variables = match variables {
        Value::Null => &empty,
        Value::Object(_) => variables,
        _ => return Err(ApiError::validation(fields.variables, "must be an object")),
    };
    let chain = locale::fallback_chain(requested.as_deref(), &template.default_locale);
    let variant = chain
        .iter()
        .find_map(|locale| {
            template.variants.iter().find(|v| v.channel == channel && v.locale.eq_ignore_ascii_case(locale))
        })
        .ok_or_else(|| {
            ApiError::validation(
                fields.template,
                format!(
                    "template `{}` has no {} variant for {}",
                    template.name,
                    channel.as_str(),
                    chain.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
    let compiled = variant.compiled().map_err(|error| {
        ApiError::internal(format!("stored variant of template `{}` is invalid: {error}", template.name))
    })?;
    let content = render::render(&template.name, compiled, variables, fields)?;
    Ok(Rendered { channel, locale: variant.locale.clone(), content })
}

impl Communications {
    pub async fn create_template(&self, tenant: TenantId, input: CreateTemplate) -> Result<TemplateRecord, ApiError> {
        let name = parse_name(&input.name)?;
        let description = parse_description(input.description.as_deref())?;
        let trigger_event = parse_trigger_event(input.trigger_event.as_deref())?;
        let default_locale = parse_default_locale(&input.default_locale)?;
        let variants = parse_variants(&input.variants)?;
        let mut tx = self.pool.begin().await?;
        let new = NewTemplate {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            name: &name,
            description: description.as_deref(),
            trigger_event: trigger_event.as_deref(),
            default_locale: &default_locale,
        };
        let row = repository::insert(&mut *tx, new).await?;
        repository::replace_variants(&mut tx, tenant, row.id, &variants).await?;
        tx.commit().await?;
        self.template_cache.invalidate();
        tracing::info!(tenant_id = %tenant, template_id = %row.id, template = %row.name, "template created");
        self.template(tenant, row.id).await
    }

    pub async fn template(&self, tenant: TenantId, id: Uuid) -> Result<TemplateRecord, ApiError> {
        let row = repository::find(&self.pool, tenant, id).await?;
        let variants = repository::variants_of(&self.pool, tenant, &[id]).await?;
        Ok(record(row, variants))
    }

    /// A page of templates (ordered by id), optionally only those of one trigger event.
    pub async fn templates(
        &self,
        tenant: TenantId,
        trigger_event: Option<&str>,
        page: PageRequest,
    ) -> Result<Vec<TemplateRecord>, ApiError> {
        let rows = repository::list(&self.pool, tenant, trigger_event, page).await?;
        self.with_variants(tenant, rows).await
    }

    /// Every template whose `trigger_event` is `event` (for trigger rules).
    pub async fn templates_for_event(&self, tenant: TenantId, event: &str) -> Result<Vec<TemplateRecord>, ApiError> {
        let rows = repository::for_event(&self.pool, tenant, event).await?;
        self.with_variants(tenant, rows).await
    }

    async fn with_variants(&self, tenant: TenantId, rows: Vec<TemplateRow>) -> Result<Vec<TemplateRecord>, ApiError> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut by_template: BTreeMap<Uuid, Vec<VariantRow>> = BTreeMap::new();
        for variant in repository::variants_of(&self.pool, tenant, &ids).await? {
            by_template.entry(variant.template_id).or_default().push(variant);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let variants = by_template.remove(&row.id).unwrap_or_default();
                record(row, variants)
            })
            .collect())
    }

    pub async fn update_template(
        &self,
        tenant: TenantId,
        id: Uuid,
        input: UpdateTemplate,
    ) -> Result<TemplateRecord, ApiError> {
        let description = match &input.description {
            Some(d) => Some(parse_description(d.as_deref())?),
            None => None,
        };
        let trigger_event = match &input.trigger_event {
            Some(t) => Some(parse_trigger_event(t.as_deref())?),
            None => None,
        };
        let default_locale = input.default_locale.as_deref().map(parse_default_locale).transpose()?;
        let variants = input.variants.as_deref().map(parse_variants).transpose()?;
        let mut tx = self.pool.begin().await?;
        repository::lock(&mut *tx, tenant, id).await?;
        let changes = TemplateChanges {
            description: description.as_ref().map(Option::as_deref),
            trigger_event: trigger_event.as_ref().map(Option::as_deref),
            default_locale: default_locale.as_deref(),
        };
        repository::update(&mut *tx, tenant, id, changes).await?;
        if let Some(variants) = &variants {
            repository::replace_variants(&mut tx, tenant, id, variants).await?;
        }
        tx.commit().await?;
        self.template_cache.invalidate();
        tracing::info!(tenant_id = %tenant, template_id = %id, "template updated");
        self.template(tenant, id).await
    }

    pub async fn delete_template(&self, tenant: TenantId, id: Uuid) -> Result<(), ApiError> {
        repository::delete(&self.pool, tenant, id).await?;
        self.template_cache.invalidate();
        tracing::info!(tenant_id = %tenant, template_id = %id, "template deleted");
        Ok(())
    }

    /// Renders a template for the send path. Errors name the send request's fields:
    /// `content.template.name` (unknown template), `content.template.locale`,
    /// `content.template` (no variant for the channel), `content.template.variables.<path>`
    /// (a variable the template needs is missing) and `content.template.variables` (the
    /// rendered content is not sendable, e.g. an SMS longer than 1600 characters).
    pub async fn render_template(
        &self,
        tenant: TenantId,
        name: &str,
        locale: Option<&str>,
        variables: &Value,
        channel: Channel,
    ) -> Result<MessageContent, ApiError> {
        let Some(template) = self.template_named(tenant, name).await? else {
            return Err(ApiError::validation("content.template.name", format!("no template named `{name}`")));
        };
        render_record(&template, channel, locale, "content.template.locale", variables, Fields::SEND)
            .map(|rendered| rendered.content)
    }

    /// The template named `name` with its variants, from the cache when it is fresh.
    async fn template_named(&self, tenant: TenantId, name: &str) -> Result<Option<Arc<TemplateRecord>>, ApiError> {
        let key = (tenant.0, name.to_owned());
        if let Some(found) = self.template_cache.get(&key) {
            return Ok(found);
        }
        let generation = self.template_cache.generation();
        let found = match repository::find_by_name(&self.pool, tenant, name).await? {
            Some(row) => {
                let variants = repository::variants_of(&self.pool, tenant, &[row.id]).await?;
                Some(Arc::new(record(row, variants)))
            }
            None => None,
        };
        self.template_cache.put(key, generation, found.clone());
        Ok(found)
    }

    /// Renders a template as `render_template` would, naming the preview request's fields
    /// (`locale`, `channel`, `variables.<path>`).
    pub async fn preview_template(
        &self,
        tenant: TenantId,
        id: Uuid,
        channel: Channel,
        locale: Option<&str>,
        variables: &Value,
    ) -> Result<Rendered, ApiError> {
        let template = self.template(tenant, id).await?;
        render_record(&template, channel, locale, "locale", variables, Fields::PREVIEW)
    }
}
