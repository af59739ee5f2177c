//! Webchat's SQL: the channel, the visitor's contact, their messages in and out, and the
//! visitor's receipts.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::inbox::inbound::{Resolved, record_change, resolve_conversation};
use crate::messages::model::Channel;

/// A tenant's active webchat channel account, as the widget needs it.
#[derive(Debug, Clone)]
pub struct WebchatChannel {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// Origins (`scheme://host[:port]`) whose pages may embed the widget.
    pub allowed_origins: Vec<String>,
    /// Shown to a visitor before anyone has written.
    pub greeting: Option<String>,
}

/// The active webchat channel with this id; anything else (unknown, suspended, another channel
/// type) is "not found": the widget then shows nothing.
pub async fn channel(db: impl PgExecutor<'_>, id: Uuid) -> Result<WebchatChannel, ApiError> {
    let row = sqlx::query!(
        r#"SELECT id, tenant_id, display_name, verification FROM communications.channel_accounts
           WHERE id = $1 AND channel_type = 'webchat' AND status = 'active'"#,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("webchat channel"))?;
    let settings = row.verification.get("webchat").cloned().unwrap_or(Value::Null);
    let allowed_origins = settings
        .get("allowed_origins")
        .and_then(Value::as_array)
        .map(|origins| origins.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let greeting = settings.get("greeting").and_then(Value::as_str).map(str::to_owned);
    Ok(WebchatChannel { id: row.id, tenant_id: row.tenant_id, name: row.display_name, allowed_origins, greeting })
}

/// A message as the visitor sees it: theirs or the business's, never notes or other channels.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VisitorMessage {
    pub id: Uuid,
    /// `visitor` or `agent`.
    pub from: &'static str,
    pub text: String,
    pub at: DateTime<Utc>,
    /// The widget's own id for a visitor message: a resent message is recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

struct Row {
    id: Uuid,
    direction: String,
    content: Value,
    at: DateTime<Utc>,
    client_id: Option<String>,
}

impl From<Row> for VisitorMessage {
    fn from(row: Row) -> Self {
        let text = row.content.get("body").or_else(|| row.content.get("text")).and_then(Value::as_str);
        Self {
            id: row.id,
            from: if row.direction == "inbound" { "visitor" } else { "agent" },
            text: text.unwrap_or_default().to_owned(),
            at: row.at,
            client_id: row.client_id,
        }
    }
}

/// The visitor's contact in the tenant (a merged contact's survivor), if they ever wrote.
pub async fn visitor_contact(db: impl PgExecutor<'_>, tenant: Uuid, visitor: Uuid) -> Result<Option<Uuid>, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT COALESCE(c.merged_into, c.id) AS "id!" FROM communications.contact_identifiers i
           JOIN communications.contacts c ON c.id = i.contact_id
           WHERE i.tenant_id = $1 AND i.kind = 'webchat' AND i.value = $2"#,
        tenant,
        visitor.to_string(),
    )
    .fetch_optional(db)
    .await?)
}

/// The newest messages of the visitor's conversations on this channel, oldest first.
pub async fn history(
    db: impl PgExecutor<'_>,
    channel: &WebchatChannel,
    contact: Uuid,
    limit: i64,
) -> Result<Vec<VisitorMessage>, ApiError> {
    let mut rows = sqlx::query_as!(
        Row,
        r#"SELECT m.id, m.direction, m.content, COALESCE(m.provider_timestamp, m.created_at) AS "at!",
                  m.metadata->>'client_id' AS client_id
           FROM communications.conversations c
           JOIN communications.messages m ON m.conversation_id = c.id
           WHERE c.tenant_id = $1 AND c.contact_id = $2 AND c.channel = 'webchat' AND c.channel_account_id = $3
             AND m.channel = 'webchat' AND m.status NOT IN ('failed', 'canceled', 'superseded')
           ORDER BY m.id DESC LIMIT $4"#,
        channel.tenant_id,
        contact,
        channel.id,
        limit,
    )
    .fetch_all(db)
    .await?;
    rows.reverse();
    Ok(rows.into_iter().map(VisitorMessage::from).collect())
}

/// One message, if it belongs to the visitor's webchat conversations on this channel.
pub async fn visitor_message(
    db: impl PgExecutor<'_>,
    channel: &WebchatChannel,
    visitor: Uuid,
    message: Uuid,
) -> Result<Option<VisitorMessage>, ApiError> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT m.id, m.direction, m.content, COALESCE(m.provider_timestamp, m.created_at) AS "at!",
                  m.metadata->>'client_id' AS client_id
           FROM communications.messages m
           JOIN communications.conversations c ON c.id = m.conversation_id
           JOIN communications.contacts k ON k.id = c.contact_id
           WHERE m.id = $1 AND m.tenant_id = $2 AND m.channel = 'webchat' AND c.channel_account_id = $3
             AND m.status NOT IN ('failed', 'canceled', 'superseded')
             AND EXISTS (SELECT 1 FROM communications.contact_identifiers i
                         JOIN communications.contacts v ON v.id = i.contact_id
                         WHERE i.tenant_id = $2 AND i.kind = 'webchat' AND i.value = $4
                           AND COALESCE(v.merged_into, v.id) = k.id)"#,
        message,
        channel.tenant_id,
        channel.id,
        visitor.to_string(),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(VisitorMessage::from))
}

/// What a visitor sends.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    pub text: &'a str,
    /// The widget's id for this message: a retry of the same message is stored once.
    pub client_id: &'a str,
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    /// The page the visitor wrote from.
    pub page: Option<&'a str>,
}

/// Stores a visitor's message like any inbound message (contact, conversation, change), in
/// `tx`. A repeat of the same `client_id` returns the stored message and changes nothing.
pub async fn receive(
    tx: &mut PgConnection,
    channel: &WebchatChannel,
    visitor: Uuid,
    incoming: &Incoming<'_>,
) -> Result<VisitorMessage, ApiError> {
    let tenant = channel.tenant_id;
    let message_id = Uuid::now_v7();
    let content = json!({ "type": "text", "body": incoming.text });
    let metadata = json!({ "from": visitor, "client_id": incoming.client_id, "page": incoming.page });
    // The provider id is the visitor's and the widget's: another visitor cannot collide with it.
    let provider_id = format!("{visitor}:{}", incoming.client_id);
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO communications.messages (id, tenant_id, direction, channel, recipient, content, status,
                                                channel_account_id, provider, provider_message_id, provider_timestamp,
                                                metadata)
           VALUES ($1, $2, 'inbound', 'webchat', $3, $4, 'received', $5, 'webchat', $6, now(), $7)
           ON CONFLICT (provider, provider_message_id) WHERE provider_message_id IS NOT NULL DO NOTHING
           RETURNING id"#,
        message_id,
        tenant,
        channel.id.to_string(),
        content,
        channel.id,
        provider_id,
        metadata,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        let stored = sqlx::query_as!(
            Row,
            r#"SELECT id, direction, content, COALESCE(provider_timestamp, created_at) AS "at!",
                      metadata->>'client_id' AS client_id
               FROM communications.messages
               WHERE provider = 'webchat' AND provider_message_id = $1 AND tenant_id = $2"#,
            provider_id,
            tenant,
        )
        .fetch_one(&mut *tx)
        .await?;
        return Ok(stored.into());
    }
    let contact = contact_for(tx, tenant, visitor, incoming.name).await?;
    let (conversation, new) =
        match resolve_conversation(tx, tenant, contact, Channel::Webchat, Some(channel.id)).await? {
            Resolved::Open(id) => (id, false),
            Resolved::Reopened(id) => {
                record_change(
                    tx,
                    tenant,
                    "conversation.status_changed",
                    id,
                    None,
                    json!({ "status": "open", "reopened": true }),
                )
                .await?;
                (id, false)
            }
            Resolved::Created(id) => (id, true),
        };
    crate::inbox::participants::join(tx, tenant, conversation, contact).await?;
    if let Some(email) = incoming.email {
        // What the visitor typed is not proof of owning the address: kept on the conversation
        // for agents to read, never an identifier that would join them to that email's contact.
        sqlx::query!(
            r#"UPDATE communications.conversation_participants
               SET attributes = attributes || jsonb_build_object('email_given', $3::text)
               WHERE conversation_id = $1 AND contact_id = $2"#,
            conversation,
            contact,
            email,
        )
        .execute(&mut *tx)
        .await?;
    }
    let at = sqlx::query_scalar!(
        r#"UPDATE communications.messages SET contact_id = $2, conversation_id = $3,
                  search = communications.message_words(content)
           WHERE id = $1
           RETURNING provider_timestamp AS "at!""#,
        message_id,
        contact,
        conversation,
    )
    .fetch_one(&mut *tx)
    .await?;
    let kind = if new { "conversation.created" } else { "message.created" };
    let preview: String = incoming.text.chars().take(140).collect();
    record_change(tx, tenant, kind, conversation, Some(message_id), json!({ "preview": preview })).await?;
    Ok(VisitorMessage {
        id: message_id,
        from: "visitor",
        text: incoming.text.to_owned(),
        at,
        client_id: Some(incoming.client_id.to_owned()),
    })
}

/// The visitor's contact, created with its `webchat` identifier on their first message.
async fn contact_for(tx: &mut PgConnection, tenant: Uuid, visitor: Uuid, name: Option<&str>) -> Result<Uuid, ApiError> {
    let contact = match visitor_contact(&mut *tx, tenant, visitor).await? {
        Some(contact) => contact,
        None => {
            let created = Uuid::now_v7();
            sqlx::query!("INSERT INTO communications.contacts (id, tenant_id) VALUES ($1, $2)", created, tenant,)
                .execute(&mut *tx)
                .await?;
            // A concurrent first message of the same visitor waits on the identifier's key and
            // then finds it taken: that message's contact is the one.
            let claimed = sqlx::query_scalar!(
                r#"INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
                   VALUES ($1, 'webchat', $2, $3) ON CONFLICT DO NOTHING RETURNING contact_id"#,
                tenant,
                visitor.to_string(),
                created,
            )
            .fetch_optional(&mut *tx)
            .await?;
            match claimed {
                Some(contact) => contact,
                None => {
                    sqlx::query!("DELETE FROM communications.contacts WHERE id = $1", created)
                        .execute(&mut *tx)
                        .await?;
                    visitor_contact(&mut *tx, tenant, visitor)
                        .await?
                        .ok_or_else(|| ApiError::internal("the visitor's identifier vanished"))?
                }
            }
        }
    };
    if let Some(name) = name {
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

/// Stores an agent's webchat answer as sent: Switchboard is the provider, and the visitor's open
/// widget receives it from the live stream. Returns the message id.
pub async fn store_reply(
    tx: &mut PgConnection,
    tenant: Uuid,
    conversation: Uuid,
    text: &str,
    metadata: Value,
) -> Result<Uuid, ApiError> {
    let id = Uuid::now_v7();
    let inserted = sqlx::query!(
        r#"INSERT INTO communications.messages (id, tenant_id, contact_id, conversation_id, direction, channel, recipient,
                                                content, status, channel_account_id, provider, metadata, sent_at)
           SELECT $1, c.tenant_id, c.contact_id, c.id, 'outbound', 'webchat', COALESCE(i.value, c.contact_id::text),
                  $3, 'sent', c.channel_account_id, 'webchat', $4, now()
           FROM communications.conversations c
           LEFT JOIN LATERAL (SELECT value FROM communications.contact_identifiers
                              WHERE contact_id = c.contact_id AND kind = 'webchat' LIMIT 1) i ON true
           WHERE c.tenant_id = $2 AND c.id = $5 AND c.channel = 'webchat'"#,
        id,
        tenant,
        json!({ "type": "text", "text": text }),
        metadata,
        conversation,
    )
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::NotFound("conversation"));
    }
    crate::messages::repository::record_event(
        &mut *tx,
        crate::messages::repository::NewEvent {
            tenant_id: tenant,
            message_id: id,
            status: crate::messages::model::MessageStatus::Sent,
            reason: None,
            source: crate::messages::model::EventSource::Api,
            payload: None,
            occurred_at: None,
        },
    )
    .await?;
    Ok(id)
}

/// The visitor's widget received (`delivered`) or showed (`read`) the business's messages up to
/// `up_to`: their ticks move, each with its event. Statuses never move back.
pub async fn seen(
    tx: &mut PgConnection,
    channel: &WebchatChannel,
    contact: Uuid,
    up_to: Uuid,
    read: bool,
) -> Result<usize, ApiError> {
    let status = if read { "read" } else { "delivered" };
    let moved = sqlx::query_scalar!(
        r#"UPDATE communications.messages m SET
               status = $5, updated_at = now(),
               delivered_at = COALESCE(m.delivered_at, now()),
               read_at = CASE WHEN $5 = 'read' THEN COALESCE(m.read_at, now()) ELSE m.read_at END
           FROM communications.conversations c
           WHERE c.id = m.conversation_id AND c.tenant_id = $1 AND c.contact_id = $2 AND c.channel_account_id = $3
             AND m.tenant_id = $1 AND m.direction = 'outbound' AND m.channel = 'webchat' AND m.id <= $4
             AND (m.status = 'sent' OR (m.status = 'delivered' AND $5 = 'read'))
           RETURNING m.id"#,
        channel.tenant_id,
        contact,
        channel.id,
        up_to,
        status,
    )
    .fetch_all(&mut *tx)
    .await?;
    if !moved.is_empty() {
        sqlx::query!(
            r#"INSERT INTO communications.message_events (id, tenant_id, message_id, status, source, payload)
               SELECT t.id, $1, t.message_id, $3, 'provider', '{"webchat": "visitor widget"}'
               FROM unnest($2::uuid[], $4::uuid[]) AS t(message_id, id)"#,
            channel.tenant_id,
            &moved,
            status,
            &moved.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(moved.len())
}
