//! One inbound message, processed inside the transaction that stores its webhook envelope.

use cpaas::{InboundContent, ProviderEvent};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::contacts::{self, ContactRequest};
use crate::messages::model::Channel;

/// What became of an inbound event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Stored in this conversation (new, or reopened from snoozed).
    Stored { conversation_id: Uuid, message_id: Uuid, new_conversation: bool },
    /// The provider's id was seen before: nothing changed.
    Duplicate,
    /// Not an inbound message.
    NotInbound,
}

/// Stores `event` for `tenant`: contact, conversation, message and change, in `tx`.
pub async fn receive(tx: &mut PgConnection, tenant: Uuid, event: &ProviderEvent) -> Result<Received, ApiError> {
    let ProviderEvent::InboundMessage {
        provider,
        channel,
        provider_message_id,
        from,
        to,
        from_name,
        timestamp,
        content,
        in_reply_to,
    } = event
    else {
        return Ok(Received::NotInbound);
    };
    let channel = our_channel(*channel);
    let message_id = Uuid::now_v7();
    // The message row first: its unique provider id makes a redelivery a no-op before anything
    // else is written.
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO communications.messages (id, tenant_id, direction, channel, recipient, content, status,
                                                provider, provider_message_id, provider_timestamp, metadata)
           VALUES ($1, $2, 'inbound', $3, $4, $5, 'received', $6, $7, $8, $9)
           ON CONFLICT (provider, provider_message_id) WHERE provider_message_id IS NOT NULL DO NOTHING
           RETURNING id"#,
        message_id,
        tenant,
        channel.as_str(),
        to,
        serde_json::to_value(content).map_err(ApiError::internal)?,
        provider.as_str(),
        provider_message_id,
        timestamp,
        json!({ "from": from, "in_reply_to": in_reply_to }),
    )
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        return Ok(Received::Duplicate);
    }
    let contact = resolve_contact(tx, tenant, channel, from, from_name.as_deref()).await?;
    let account = account_of(tx, tenant, channel).await?;
    let threaded = match content {
        InboundContent::Email { in_reply_to, references, .. } => {
            thread_of(tx, tenant, in_reply_to.as_deref(), references).await?
        }
        _ => None,
    };
    let resolved = match threaded {
        Some(resolved) => resolved,
        None => resolve_conversation(tx, tenant, contact, channel, account).await?,
    };
    let (conversation_id, new_conversation) = match resolved {
        Resolved::Open(id) => (id, false),
        Resolved::Reopened(id) => {
            let payload = json!({ "status": "open", "reopened": true });
            record_change(tx, tenant, "conversation.status_changed", id, None, payload).await?;
            (id, false)
        }
        Resolved::Created(id) => {
            super::context::inherit_link(tx, tenant, id, contact).await?;
            (id, true)
        }
    };
    super::participants::join(tx, tenant, conversation_id, contact).await?;
    // Joining the conversation moves its activity (a trigger: `last_message_at` never goes back);
    // its words are written here, which spares the words trigger a second row version.
    sqlx::query!(
        "UPDATE communications.messages SET contact_id = $2, conversation_id = $3,
                search = communications.message_words(content)
         WHERE id = $1",
        message_id,
        contact,
        conversation_id,
    )
    .execute(&mut *tx)
    .await?;
    let kind = if new_conversation { "conversation.created" } else { "message.created" };
    record_change(tx, tenant, kind, conversation_id, Some(message_id), preview(content)).await?;
    Ok(Received::Stored { conversation_id, message_id, new_conversation })
}

fn our_channel(channel: cpaas::Channel) -> Channel {
    match channel {
        cpaas::Channel::Whatsapp => Channel::Whatsapp,
        cpaas::Channel::Email => Channel::Email,
        cpaas::Channel::Sms => Channel::Sms,
    }
}

/// The sender as a contact of `tenant`, found by identifier or created, named by the provider's
/// profile name if it has no name yet.
async fn resolve_contact(
    tx: &mut PgConnection,
    tenant: Uuid,
    channel: Channel,
    from: &str,
    from_name: Option<&str>,
) -> Result<Uuid, ApiError> {
    let request = match channel {
        Channel::Email => ContactRequest::Identifiers { phone: None, email: Some(from.trim().to_lowercase()) },
        // WhatsApp ids are the number's digits; Twilio sends E.164.
        Channel::Webchat => return Err(ApiError::internal("webchat visitors are not provider senders")),
        Channel::Whatsapp | Channel::Sms => {
            let digits: String = from.chars().filter(char::is_ascii_digit).collect();
            ContactRequest::Identifiers { phone: Some(format!("+{digits}")), email: None }
        }
    };
    let found = contacts::lookup(tx, &[(TenantId(tenant), &request)]).await?;
    let resolved = found.into_iter().next().ok_or_else(|| ApiError::internal("no contact answer"))??;
    let ids = contacts::persist(tx, &[(TenantId(tenant), &request, &resolved)]).await?;
    let found = ids.into_iter().next().ok_or_else(|| ApiError::internal("no contact id"))?;
    // A merge that committed after the lookup leaves a pointer: follow it to the survivor.
    let contact = sqlx::query_scalar!(
        r#"SELECT COALESCE(merged_into, id) AS "id!" FROM communications.contacts WHERE id = $1"#,
        found,
    )
    .fetch_one(&mut *tx)
    .await?;
    if let Some(name) = from_name.map(str::trim).filter(|name| !name.is_empty()) {
        sqlx::query!(
            "UPDATE communications.contacts SET display_name = $2, updated_at = now() WHERE id = $1 AND display_name IS NULL",
            contact,
            name,
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(contact)
}

/// The tenant's channel account for `channel`, if it has one that is not revoked.
async fn account_of(tx: &mut PgConnection, tenant: Uuid, channel: Channel) -> Result<Option<Uuid>, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id FROM communications.channel_accounts
           WHERE tenant_id = $1 AND channel_type = $2 AND status <> 'revoked'"#,
        tenant,
        channel.as_str(),
    )
    .fetch_optional(&mut *tx)
    .await?)
}

/// The conversation of the mail an email answers (its In-Reply-To or References name a mail we
/// sent: SES's Message-ID is `<provider message id@…amazonses.com>`), opened again if it was
/// resolved or snoozed — unless its contact has another unresolved conversation on the account,
/// which then takes the mail as usual.
async fn thread_of(
    tx: &mut PgConnection,
    tenant: Uuid,
    in_reply_to: Option<&str>,
    references: &[String],
) -> Result<Option<Resolved>, ApiError> {
    let ids: Vec<String> = in_reply_to
        .into_iter()
        .chain(references.iter().map(String::as_str))
        .filter_map(|id| id.trim().trim_start_matches('<').split('@').next())
        .filter(|local| !local.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Ok(None);
    }
    let found = sqlx::query!(
        r#"SELECT c.id, c.status FROM communications.messages m
           JOIN communications.conversations c ON c.id = m.conversation_id
           WHERE m.tenant_id = $1 AND m.provider = 'ses' AND m.provider_message_id = ANY($2)
           ORDER BY m.id DESC LIMIT 1"#,
        tenant,
        &ids,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(found) = found else { return Ok(None) };
    if found.status == "open" {
        return Ok(Some(Resolved::Open(found.id)));
    }
    let reopened = sqlx::query!(
        r#"UPDATE communications.conversations c SET status = 'open', snoozed_until = NULL, updated_at = now()
           WHERE c.id = $1 AND NOT EXISTS (
               SELECT 1 FROM communications.conversations o
               WHERE o.tenant_id = c.tenant_id AND o.contact_id = c.contact_id AND o.channel = c.channel
                 AND o.channel_account_id IS NOT DISTINCT FROM c.channel_account_id
                 AND o.status <> 'resolved' AND o.id <> c.id)"#,
        found.id,
    )
    .execute(&mut *tx)
    .await?;
    Ok((reopened.rows_affected() == 1).then_some(Resolved::Reopened(found.id)))
}

/// Where a new message of the contact goes: its unresolved conversation on the account (a
/// snoozed one wakes up), else its latest resolved one, opened again, else a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved {
    Open(Uuid),
    Reopened(Uuid),
    Created(Uuid),
}

pub(crate) async fn resolve_conversation(
    tx: &mut PgConnection,
    tenant: Uuid,
    contact: Uuid,
    channel: Channel,
    account: Option<Uuid>,
) -> Result<Resolved, ApiError> {
    // Locked: concurrent messages of the contact wait here and then see the reopened row.
    let latest = sqlx::query!(
        r#"SELECT id, status FROM communications.conversations
           WHERE tenant_id = $1 AND contact_id = $2 AND channel = $3 AND channel_account_id IS NOT DISTINCT FROM $4
             AND merged_into_conversation IS NULL
           ORDER BY (status <> 'resolved') DESC, last_message_at DESC NULLS LAST, id DESC
           LIMIT 1 FOR UPDATE"#,
        tenant,
        contact,
        channel.as_str(),
        account,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(latest) = latest {
        if latest.status == "open" {
            return Ok(Resolved::Open(latest.id));
        }
        sqlx::query!(
            r#"UPDATE communications.conversations SET status = 'open', snoozed_until = NULL, updated_at = now()
               WHERE id = $1"#,
            latest.id,
        )
        .execute(&mut *tx)
        .await?;
        return Ok(Resolved::Reopened(latest.id));
    }
    // The partial unique index makes concurrent first messages agree on one conversation.
    let row = sqlx::query!(
        r#"INSERT INTO communications.conversations (id, tenant_id, contact_id, channel, channel_account_id)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (tenant_id, contact_id, channel, channel_account_id) WHERE status <> 'resolved'
           DO UPDATE SET status = 'open', snoozed_until = NULL, updated_at = now()
           RETURNING id, (xmax = 0) AS "created!""#,
        Uuid::now_v7(),
        tenant,
        contact,
        channel.as_str(),
        account,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(if row.created { Resolved::Created(row.id) } else { Resolved::Open(row.id) })
}

/// Appends a change for the whole tenant's streams.
pub(crate) async fn record_change(
    tx: &mut PgConnection,
    tenant: Uuid,
    kind: &str,
    conversation: Uuid,
    message: Option<Uuid>,
    payload: serde_json::Value,
) -> Result<(), ApiError> {
    super::changes::append(tx, tenant, kind, Some(conversation), message, None, payload).await
}

/// A short, plain-text preview of the content for lists and notifications.
fn preview(content: &InboundContent) -> serde_json::Value {
    let text = match content {
        InboundContent::Text { body } => body.clone(),
        InboundContent::Media { kind, caption, .. } => caption.clone().unwrap_or_else(|| {
            format!(
                "[{}]",
                serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            )
        }),
        InboundContent::Location { name, .. } => name.clone().unwrap_or_else(|| "[location]".into()),
        InboundContent::ButtonReply { title, .. } | InboundContent::ListReply { title, .. } => title.clone(),
        InboundContent::Email { subject, text, .. } => subject.clone().or_else(|| text.clone()).unwrap_or_default(),
        InboundContent::Reaction { emoji: Some(emoji), .. } => format!("reacted {emoji}"),
        InboundContent::Reaction { emoji: None, .. } => "removed a reaction".into(),
        InboundContent::Call { outcome, .. } => format!("[missed call: {outcome}]"),
        InboundContent::Contacts { contacts } => {
            let names: Vec<&str> = contacts.iter().map(|c| c.name.as_deref().unwrap_or("contact")).collect();
            format!("[contact] {}", names.join(", "))
        }
    };
    json!({ "preview": text.chars().take(140).collect::<String>() })
}
