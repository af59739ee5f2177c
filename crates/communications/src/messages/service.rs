//! Accepting, reading and canceling messages.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::content::{self, ContentInput, MessageContent};
use super::model::{Channel, EventSource, Lane, MessageStatus};
use super::queue::{self, DispatchJob};
use super::repository::{self, KeyClaim, MessageRow, NewEvent, NewMessage};
use crate::Communications;
use crate::contacts::{self, RecipientInput};

/// One channel, or an ordered fallback chain such as `["whatsapp", "sms", "email"]`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ChannelsInput {
    One(Channel),
    Chain(Vec<Channel>),
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub to: RecipientInput,
    pub channels: ChannelsInput,
    pub content: ContentInput,
    /// Send later (UTC); cancel until then.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Free-form tags kept with the message (campaign id, booking id…).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub conversation_id: Option<Uuid>,
    /// `urgent` (transactional, the default) or `bulk` (campaigns): separate queues.
    pub lane: Option<Lane>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    pub status: MessageStatus,
}

/// A step of the fallback chain, validated at accept time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FallbackStep {
    channel: Channel,
    recipient: String,
    content: MessageContent,
}

const MAX_METADATA_BYTES: usize = 16 * 1024;

impl Communications {
    /// Accepts a message: validates it for every channel of its chain, stores it `queued` with
    /// its first event, and pushes its dispatch job — all in one transaction. With an
    /// idempotency key, a repeat of the same request returns the first response.
    pub async fn accept_message(
        &self,
        tenant: TenantId,
        request: SendRequest,
        idempotency_key: Option<&str>,
        raw_body: &[u8],
    ) -> Result<(u16, Value), ApiError> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = idempotency_key {
            let hash = Sha256::digest(raw_body).to_vec();
            match repository::claim_key(&mut tx, tenant, key, &hash).await? {
                KeyClaim::New => {}
                KeyClaim::Replay { status, body } => return Ok((status, body)),
                KeyClaim::Mismatch => {
                    return Err(ApiError::validation(
                        "Idempotency-Key",
                        "this key was used with a different request body",
                    ));
                }
            }
        }
        let accepted = self.insert_message(&mut tx, tenant, request).await?;
        let body = serde_json::to_value(&accepted).map_err(ApiError::internal)?;
        if let Some(key) = idempotency_key {
            repository::complete_key(&mut tx, tenant, key, 202, &body).await?;
        }
        tx.commit().await?;
        Ok((202, body))
    }

    async fn insert_message(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant: TenantId,
        request: SendRequest,
    ) -> Result<Accepted, ApiError> {
        let chain = match request.channels {
            ChannelsInput::One(channel) => vec![channel],
            ChannelsInput::Chain(chain) => chain,
        };
        if chain.is_empty() {
            return Err(ApiError::validation("channels", "name at least one channel"));
        }
        if chain.iter().enumerate().any(|(i, c)| chain[..i].contains(c)) {
            return Err(ApiError::validation("channels", "a channel appears twice in the chain"));
        }
        let metadata = request.metadata.unwrap_or_else(|| json!({}));
        if !metadata.is_object() || metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(ApiError::validation("metadata", "must be an object of at most 16 KiB"));
        }
        // Content first: a bad request should not create a contact as a side effect.
        let contents = chain
            .iter()
            .map(|channel| content::for_channel(&request.content, *channel))
            .collect::<Result<Vec<_>, _>>()?;
        let contact = contacts::resolve(tx, tenant, &request.to).await?;
        let mut steps = Vec::with_capacity(chain.len());
        for (channel, content) in chain.iter().zip(contents) {
            steps.push(FallbackStep { channel: *channel, recipient: contact.address(*channel)?, content });
        }
        let first = steps.remove(0);
        let lane = request.lane.unwrap_or_default();
        let id = Uuid::now_v7();
        let message = NewMessage {
            id,
            tenant_id: tenant,
            contact_id: Some(contact.id),
            conversation_id: request.conversation_id,
            channel: first.channel,
            fallback: serde_json::to_value(&steps).map_err(ApiError::internal)?,
            recipient: &first.recipient,
            content: serde_json::to_value(&first.content).map_err(ApiError::internal)?,
            status: MessageStatus::Queued,
            lane,
            scheduled_at: request.scheduled_at,
            metadata,
            supersedes: None,
        };
        repository::insert(&mut *tx, message).await?;
        let reason = request.scheduled_at.map(|at| format!("scheduled for {}", at.to_rfc3339()));
        repository::record_event(
            &mut *tx,
            NewEvent {
                tenant_id: tenant.0,
                message_id: id,
                status: MessageStatus::Queued,
                reason: reason.as_deref(),
                source: EventSource::Api,
                payload: None,
                occurred_at: None,
            },
        )
        .await?;
        let run_at = request.scheduled_at.filter(|at| *at > Utc::now());
        queue::enqueue(tx, lane, DispatchJob { message_id: id, tenant_id: tenant.0, attempt: 0 }, run_at).await?;
        Ok(Accepted { id, status: MessageStatus::Queued })
    }

    pub async fn message(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<(MessageRow, Vec<repository::EventRow>), ApiError> {
        let message = repository::find(&self.pool, tenant, id).await?;
        let events = repository::events(&self.pool, tenant, id).await?;
        Ok((message, events))
    }

    /// Cancels a message that has not left us yet (queued, scheduled or pending review).
    pub async fn cancel_message(&self, tenant: TenantId, id: Uuid) -> Result<MessageRow, ApiError> {
        let mut tx = self.pool.begin().await?;
        let message = repository::lock(&mut tx, tenant, id).await?;
        if !message.status.is_cancelable() {
            return Err(ApiError::conflict(
                Some("status"),
                format!("a message that is {} can no longer be canceled", message.status.as_str()),
            ));
        }
        repository::set_status(&mut *tx, tenant.0, id, MessageStatus::Canceled, Some("canceled through the API"))
            .await?;
        repository::record_event(
            &mut *tx,
            NewEvent {
                tenant_id: tenant.0,
                message_id: id,
                status: MessageStatus::Canceled,
                reason: None,
                source: EventSource::Api,
                payload: None,
                occurred_at: None,
            },
        )
        .await?;
        tx.commit().await?;
        repository::find(&self.pool, tenant, id).await
    }
}
