//! Contacts: one external person across channels, de-duplicated per tenant by identifiers
//! (E.164 phones, lower-cased emails). The send API finds or creates them.

use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::channels::validate;
use crate::messages::model::Channel;

/// Whom a message is for, as the API takes it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientInput {
    pub contact_id: Option<Uuid>,
    /// E.164.
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// A contact with the identifiers the pipeline can address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedContact {
    pub id: Uuid,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub whatsapp: Option<String>,
}

impl ResolvedContact {
    /// The address on `channel`, or a 422 on `to` saying what is missing.
    pub fn address(&self, channel: Channel) -> Result<String, ApiError> {
        let address = match channel {
            Channel::Sms => self.phone.clone(),
            Channel::Whatsapp => self.whatsapp.clone().or_else(|| self.phone.clone()),
            Channel::Email => self.email.clone(),
        };
        address.ok_or_else(|| {
            let what = if channel == Channel::Email { "an email address" } else { "a phone number" };
            ApiError::validation("to", format!("the recipient has no {what} for the {} channel", channel.as_str()))
        })
    }
}

fn normalized_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !domain.contains('@') && !email.contains(char::is_whitespace)
    });
    if valid { Ok(email) } else { Err(ApiError::validation("to.email", "is not a valid email address")) }
}

/// Finds the contact `input` names, or creates it from its phone and/or email.
pub async fn resolve(
    db: &mut PgConnection,
    tenant: TenantId,
    input: &RecipientInput,
) -> Result<ResolvedContact, ApiError> {
    if let Some(id) = input.contact_id {
        if input.phone.is_some() || input.email.is_some() {
            return Err(ApiError::validation("to", "give either contact_id or phone/email, not both"));
        }
        return load(db, tenant, id).await?.ok_or_else(|| ApiError::validation("to.contact_id", "no such contact"));
    }
    let phone = input.phone.as_deref().map(|p| validate::e164("to.phone", p.trim())).transpose()?;
    let email = input.email.as_deref().map(normalized_email).transpose()?;
    if phone.is_none() && email.is_none() {
        return Err(ApiError::validation("to", "needs contact_id, phone or email"));
    }
    let identifiers: Vec<(&str, String)> =
        [("phone", phone), ("email", email)].into_iter().filter_map(|(kind, value)| value.map(|v| (kind, v))).collect();
    let id = match find_by_identifiers(db, tenant, &identifiers).await? {
        Some(id) => id,
        None => create(db, tenant, &identifiers).await?,
    };
    attach_identifiers(db, tenant, id, &identifiers).await?;
    load(db, tenant, id).await?.ok_or_else(|| ApiError::internal("a resolved contact vanished"))
}

async fn find_by_identifiers(
    db: &mut PgConnection,
    tenant: TenantId,
    identifiers: &[(&str, String)],
) -> Result<Option<Uuid>, ApiError> {
    let kinds: Vec<&str> = identifiers.iter().map(|(kind, _)| *kind).collect();
    let values: Vec<String> = identifiers.iter().map(|(_, value)| value.clone()).collect();
    Ok(sqlx::query_scalar!(
        r#"SELECT contact_id FROM communications.contact_identifiers
           WHERE tenant_id = $1 AND (kind, value) IN (SELECT * FROM unnest($2::text[], $3::text[]))
           ORDER BY kind DESC LIMIT 1"#,
        tenant.0,
        &kinds as &[&str],
        &values,
    )
    .fetch_optional(&mut *db)
    .await?)
}

/// Creates a contact, unless a concurrent request claimed its first identifier first: then that
/// contact is the one (the identifier's primary key decides, and our row is dropped).
async fn create(db: &mut PgConnection, tenant: TenantId, identifiers: &[(&str, String)]) -> Result<Uuid, ApiError> {
    let id = Uuid::now_v7();
    sqlx::query!("INSERT INTO communications.contacts (id, tenant_id) VALUES ($1, $2)", id, tenant.0)
        .execute(&mut *db)
        .await?;
    let (kind, value) = &identifiers[0];
    let claimed = sqlx::query!(
        r#"INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"#,
        tenant.0,
        kind,
        value,
        id,
    )
    .execute(&mut *db)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(id);
    }
    sqlx::query!("DELETE FROM communications.contacts WHERE id = $1", id).execute(&mut *db).await?;
    find_by_identifiers(db, tenant, identifiers).await?.ok_or_else(|| ApiError::internal("contact identifier race"))
}

/// Adds identifiers the contact does not have yet (ones owned by another contact stay there).
async fn attach_identifiers(
    db: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    identifiers: &[(&str, String)],
) -> Result<(), ApiError> {
    for (kind, value) in identifiers {
        sqlx::query!(
            r#"INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"#,
            tenant.0,
            kind,
            value,
            id,
        )
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

pub async fn load(db: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<Option<ResolvedContact>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT c.id, i.kind AS "kind?", i.value AS "value?"
           FROM communications.contacts c
           LEFT JOIN communications.contact_identifiers i ON i.contact_id = c.id AND i.tenant_id = c.tenant_id
           WHERE c.tenant_id = $1 AND c.id = $2
           ORDER BY i.kind, i.value"#,
        tenant.0,
        id,
    )
    .fetch_all(&mut *db)
    .await?;
    let Some(first) = rows.first() else { return Ok(None) };
    let mut contact = ResolvedContact { id: first.id, phone: None, email: None, whatsapp: None };
    for row in &rows {
        let slot = match row.kind.as_deref() {
            Some("phone") => &mut contact.phone,
            Some("email") => &mut contact.email,
            Some("whatsapp") => &mut contact.whatsapp,
            _ => continue,
        };
        if slot.is_none() {
            *slot = row.value.clone();
        }
    }
    Ok(Some(contact))
}
