//! Contacts' SQL for the inbox: search, one contact with its identifiers and conversations, and
//! edits. Merging is in `contacts_merge.rs`.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::pagination::PageRequest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::messages::model::Channel;

/// One way to reach the contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Identifier {
    /// phone, email or whatsapp.
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct ContactRow {
    pub id: Uuid,
    pub display_name: Option<String>,
    pub external_id: Option<String>,
    pub time_zone: Option<String>,
    pub identifiers: Vec<Identifier>,
    pub merged_into: Option<Uuid>,
    pub merged_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a search matches, already normalised by the handler.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// `%…%` over the lower-cased query, LIKE metacharacters escaped: names and emails.
    pub text_pattern: Option<String>,
    /// `%…%` over the query's digits, when the query looks like a phone number.
    pub digits_pattern: Option<String>,
}

impl Search {
    pub fn parse(q: Option<&str>) -> Self {
        let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) else {
            return Self::default();
        };
        let escaped: String = q
            .to_lowercase()
            .chars()
            .flat_map(|c| if matches!(c, '%' | '_' | '\\') { vec!['\\', c] } else { vec![c] })
            .collect();
        // Only a query made of phone characters searches numbers: "Anna 2" must not match every
        // number with a 2 in it.
        let phone_like = q.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
        let digits: String = q.chars().filter(char::is_ascii_digit).collect();
        Self {
            text_pattern: Some(format!("%{escaped}%")),
            digits_pattern: (phone_like && !digits.is_empty()).then(|| format!("%{digits}%")),
        }
    }
}

fn identifiers(value: Value) -> Result<Vec<Identifier>, ApiError> {
    serde_json::from_value(value).map_err(ApiError::internal)
}

/// The tenant's contacts that were not merged away, newest first; the cursor is the last
/// contact of the previous page (ids are time-ordered).
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    search: &Search,
    page: PageRequest,
) -> Result<Vec<ContactRow>, ApiError> {
    // Identifiers are stored normalised (E.164 phones, lower-cased emails), so plain LIKE works.
    let rows = sqlx::query!(
        r#"SELECT c.id, c.display_name, c.external_id, c.time_zone, c.merged_into, c.merged_at, c.created_at, c.updated_at,
                  COALESCE((SELECT jsonb_agg(jsonb_build_object('kind', i.kind, 'value', i.value)
                                             ORDER BY i.kind, i.value)
                            FROM communications.contact_identifiers i WHERE i.contact_id = c.id),
                           '[]') AS "identifiers!"
           FROM communications.contacts c
           WHERE c.tenant_id = $1 AND c.merged_into IS NULL
             AND ($2::text IS NULL
                  OR c.display_name ILIKE $2
                  OR EXISTS (SELECT 1 FROM communications.contact_identifiers i
                             WHERE i.contact_id = c.id
                               AND ((i.kind = 'email' AND i.value LIKE $2)
                                    OR (i.kind IN ('phone', 'whatsapp') AND i.value LIKE $3))))
             AND ($4::uuid IS NULL OR c.id < $4)
           ORDER BY c.id DESC
           LIMIT $5"#,
        tenant.0,
        search.text_pattern,
        search.digits_pattern,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(ContactRow {
                id: row.id,
                display_name: row.display_name,
                external_id: row.external_id,
                time_zone: row.time_zone,
                identifiers: identifiers(row.identifiers)?,
                merged_into: row.merged_into,
                merged_at: row.merged_at,
                created_at: row.created_at,
                updated_at: row.updated_at,
            })
        })
        .collect()
}

/// One contact of the tenant, merged or not.
pub async fn find(db: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<ContactRow, ApiError> {
    let row = sqlx::query!(
        r#"SELECT c.id, c.display_name, c.external_id, c.time_zone, c.merged_into, c.merged_at, c.created_at, c.updated_at,
                  COALESCE((SELECT jsonb_agg(jsonb_build_object('kind', i.kind, 'value', i.value)
                                             ORDER BY i.kind, i.value)
                            FROM communications.contact_identifiers i WHERE i.contact_id = c.id),
                           '[]') AS "identifiers!"
           FROM communications.contacts c
           WHERE c.tenant_id = $1 AND c.id = $2"#,
        tenant.0,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("contact"))?;
    Ok(ContactRow {
        id: row.id,
        display_name: row.display_name,
        external_id: row.external_id,
        time_zone: row.time_zone,
        identifiers: identifiers(row.identifiers)?,
        merged_into: row.merged_into,
        merged_at: row.merged_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A conversation as a contact's page lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContactConversation {
    pub id: Uuid,
    pub channel: Channel,
    pub channel_account_id: Option<Uuid>,
    /// open, snoozed or resolved.
    pub status: String,
    pub last_message_at: Option<DateTime<Utc>>,
}

/// How many conversations a contact's page shows; the rest are at
/// `/api/v1/conversations?contact_id=`.
pub const CONVERSATIONS_SHOWN: i64 = 100;

/// The contact's most recent conversations on every channel.
pub async fn conversations_of(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    contact: Uuid,
) -> Result<Vec<ContactConversation>, ApiError> {
    Ok(sqlx::query_as!(
        ContactConversation,
        r#"SELECT id, channel AS "channel: Channel", channel_account_id, status, last_message_at
           FROM communications.conversations
           WHERE tenant_id = $1 AND contact_id = $2
           ORDER BY last_message_at DESC NULLS LAST, id DESC
           LIMIT $3"#,
        tenant.0,
        contact,
        CONVERSATIONS_SHOWN,
    )
    .fetch_all(db)
    .await?)
}

/// Sets what the edit names (`None`: unchanged; `Some(None)`: cleared); false if the tenant has
/// no such contact.
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
    display_name: Option<Option<&str>>,
    external_id: Option<Option<&str>>,
    time_zone: Option<Option<&str>>,
) -> Result<bool, ApiError> {
    let updated = sqlx::query!(
        r#"UPDATE communications.contacts SET
               display_name = CASE WHEN $3 THEN $4 ELSE display_name END,
               external_id = CASE WHEN $5 THEN $6 ELSE external_id END,
               time_zone = CASE WHEN $7 THEN $8 ELSE time_zone END,
               updated_at = now()
           WHERE tenant_id = $1 AND id = $2"#,
        tenant.0,
        id,
        display_name.is_some(),
        display_name.flatten(),
        external_id.is_some(),
        external_id.flatten(),
        time_zone.is_some(),
        time_zone.flatten(),
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}
