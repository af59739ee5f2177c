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
    let identifiers: Vec<Identifier> =
        [("phone", phone), ("email", email)].into_iter().filter_map(|(kind, value)| value.map(|v| (kind, v))).collect();
    // Two attempts: a concurrent request may create the same contact between our find and create.
    for _ in 0..2 {
        let mut contact = match find_by_identifiers(db, tenant, &identifiers).await? {
            Some(found) => found,
            None => match create(db, tenant, &identifiers[0]).await? {
                Some(created) => created,
                None => continue,
            },
        };
        let missing: Vec<&Identifier> = identifiers.iter().filter(|i| !contact.has(i)).collect();
        if !missing.is_empty() {
            for (kind, value) in attach_identifiers(db, tenant, contact.id, &missing).await? {
                contact.set(&kind, value);
            }
        }
        return Ok(contact);
    }
    Err(ApiError::internal("contact identifier race"))
}

/// An identifier as stored: its kind (`phone`, `email`, `whatsapp`) and normalised value.
type Identifier = (&'static str, String);

/// The contact owning the phone or the email of `identifiers` (the phone wins), with all of its
/// identifiers: one statement. Each identifier is looked up by its whole key; a query over a list
/// of them let the planner, with statistics that did not know a new tenant yet, walk the tenant's
/// whole identifier index instead (3 ms per message after a few thousand contacts).
async fn find_by_identifiers(
    db: &mut PgConnection,
    tenant: TenantId,
    identifiers: &[Identifier],
) -> Result<Option<ResolvedContact>, ApiError> {
    let value_of = |kind: &str| identifiers.iter().find(|(k, _)| *k == kind).map(|(_, value)| value.as_str());
    let rows = sqlx::query!(
        r#"WITH found AS (
               SELECT contact_id, 1 AS rank FROM communications.contact_identifiers
               WHERE tenant_id = $1 AND kind = 'phone' AND value = $2
               UNION ALL
               SELECT contact_id, 2 AS rank FROM communications.contact_identifiers
               WHERE tenant_id = $1 AND kind = 'email' AND value = $3
               ORDER BY rank LIMIT 1)
           SELECT i.contact_id, i.kind, i.value
           FROM found JOIN communications.contact_identifiers i ON i.contact_id = found.contact_id
           ORDER BY i.kind, i.value"#,
        tenant.0,
        value_of("phone"),
        value_of("email"),
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(ResolvedContact::from_rows(rows.into_iter().map(|r| (r.contact_id, Some(r.kind), Some(r.value)))))
}

/// Creates a contact owning `first` in one statement, unless a concurrent request claimed that
/// identifier first (its primary key decides): then nothing is kept and `None` says to look again.
async fn create(
    db: &mut PgConnection,
    tenant: TenantId,
    first: &Identifier,
) -> Result<Option<ResolvedContact>, ApiError> {
    let id = Uuid::now_v7();
    let (kind, value) = first;
    let claimed = sqlx::query_scalar!(
        r#"WITH identifier AS (
               INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING contact_id)
           INSERT INTO communications.contacts (id, tenant_id) SELECT contact_id, $1 FROM identifier
           RETURNING id"#,
        tenant.0,
        kind,
        value,
        id,
    )
    .fetch_optional(&mut *db)
    .await?;
    Ok(claimed.map(|id| {
        let mut contact = ResolvedContact { id, phone: None, email: None, whatsapp: None };
        contact.set(kind, value.clone());
        contact
    }))
}

/// Adds identifiers the contact does not have yet, in one statement; returns the ones it now
/// owns (ones owned by another contact stay there).
async fn attach_identifiers(
    db: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    identifiers: &[&Identifier],
) -> Result<Vec<(String, String)>, ApiError> {
    let kinds: Vec<&str> = identifiers.iter().map(|(kind, _)| *kind).collect();
    let values: Vec<&str> = identifiers.iter().map(|(_, value)| value.as_str()).collect();
    let attached = sqlx::query!(
        r#"INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
           SELECT $1, kind, value, $4 FROM unnest($2::text[], $3::text[]) AS i(kind, value)
           ON CONFLICT DO NOTHING
           RETURNING kind, value"#,
        tenant.0,
        &kinds as &[&str],
        &values as &[&str],
        id,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(attached.into_iter().map(|row| (row.kind, row.value)).collect())
}

pub async fn load(db: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<Option<ResolvedContact>, ApiError> {
    // Joined on the contact alone: its identifiers are its tenant's, and a join on the tenant too
    // leads the planner to scan every identifier of the tenant.
    let rows = sqlx::query!(
        r#"SELECT c.id, i.kind AS "kind?", i.value AS "value?"
           FROM communications.contacts c
           LEFT JOIN communications.contact_identifiers i ON i.contact_id = c.id
           WHERE c.tenant_id = $1 AND c.id = $2
           ORDER BY i.kind, i.value"#,
        tenant.0,
        id,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(ResolvedContact::from_rows(rows.into_iter().map(|r| (r.id, r.kind, r.value))))
}

impl ResolvedContact {
    /// From `(contact id, kind, value)` rows ordered by kind and value: the first value of each
    /// kind is the contact's address of that kind.
    fn from_rows(rows: impl IntoIterator<Item = (Uuid, Option<String>, Option<String>)>) -> Option<Self> {
        let mut contact: Option<Self> = None;
        for (id, kind, value) in rows {
            let contact = contact.get_or_insert(Self { id, phone: None, email: None, whatsapp: None });
            if let (Some(kind), Some(value)) = (kind, value) {
                contact.set(&kind, value);
            }
        }
        contact
    }

    fn slot(&mut self, kind: &str) -> Option<&mut Option<String>> {
        match kind {
            "phone" => Some(&mut self.phone),
            "email" => Some(&mut self.email),
            "whatsapp" => Some(&mut self.whatsapp),
            _ => None,
        }
    }

    /// Records `value` as the address of `kind` unless it has one already.
    fn set(&mut self, kind: &str, value: String) {
        if let Some(slot @ None) = self.slot(kind) {
            *slot = Some(value);
        }
    }

    fn has(&self, (kind, value): &Identifier) -> bool {
        let address = match *kind {
            "phone" => &self.phone,
            "email" => &self.email,
            _ => &self.whatsapp,
        };
        address.as_deref() == Some(value.as_str())
    }
}
