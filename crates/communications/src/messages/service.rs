//! Accepting, reading and canceling messages.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::accept::{self, Answer, Draft, Submission};
use super::content::{self, ContentInput, MessageContent};
use super::idempotency::{self, RequestKey};
use super::model::{Channel, EventSource, Lane, MessageStatus};
use super::queue::{self, DispatchJob};
use super::repository::{self, MessageRow, NewEvent};
use crate::Communications;
use crate::contacts::{ContactRequest, RecipientInput};

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
    /// Hold the message in `pending_review` until it is approved (or rejected) through the API.
    #[serde(default)]
    pub require_review: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    pub status: MessageStatus,
    /// The lane whose workers to wake once this is committed: set when a job due now was pushed.
    #[serde(skip)]
    pub(crate) wake: Option<Lane>,
}

/// A step of the fallback chain, validated at accept time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FallbackStep {
    pub channel: Channel,
    pub recipient: String,
    pub content: MessageContent,
}

const MAX_METADATA_BYTES: usize = 16 * 1024;

impl Communications {
    /// Accepts a message: validates it for every channel of its chain, stores it `queued` with
    /// its first event, and pushes its dispatch job — all in one transaction (shared with the
    /// requests accepted alongside it, see `accept.rs`). With an idempotency key, a repeat of the
    /// same request returns the first response.
    pub async fn accept_message(
        &self,
        tenant: TenantId,
        request: SendRequest,
        idempotency_key: Option<&str>,
        raw_body: &[u8],
    ) -> Result<(u16, Value), ApiError> {
        let key =
            idempotency_key.map(|key| RequestKey { key: key.to_owned(), hash: Sha256::digest(raw_body).to_vec() });
        let draft = match self.draft(tenant, request).await {
            Ok(draft) => draft,
            // A key used before answers with its first response even if the request would no
            // longer pass (its template was deleted since, say).
            Err(error) => return self.replay_or(tenant, key, error).await,
        };
        // Requests arriving together, with keys or without, share a batch: one transaction
        // (claiming their keys in it) and one commit.
        let answer = self
            .acceptor()
            .call(Submission { draft, key })
            .await
            .ok_or_else(|| ApiError::internal("the acceptor stopped"))??;
        match answer {
            Answer::Accepted(accepted) => {
                if let Some(lane) = accepted.wake {
                    self.queue_waker.wake(lane);
                }
                Ok((202, serde_json::to_value(&accepted).map_err(ApiError::internal)?))
            }
            Answer::Replay { status, body } => Ok((status, body)),
        }
    }

    /// The first response under `key`, or else `error`.
    async fn replay_or(
        &self,
        tenant: TenantId,
        key: Option<RequestKey>,
        error: ApiError,
    ) -> Result<(u16, Value), ApiError> {
        let Some(key) = key else { return Err(error) };
        let stored = idempotency::stored(&self.pool, &[tenant.0], std::slice::from_ref(&key.key)).await?;
        match stored.get(&(tenant.0, key.key.clone())) {
            Some(earlier) => earlier.replay(&key.hash),
            None => Err(error),
        }
    }

    /// Accepts a message inside the caller's transaction (a batch of one), due now stored claimed
    /// for `pending` to hand over once the caller has committed.
    pub(crate) async fn insert_message(
        &self,
        tx: &mut sqlx::PgConnection,
        pending: &mut crate::dispatch::local::Pending,
        tenant: TenantId,
        request: SendRequest,
    ) -> Result<Accepted, ApiError> {
        let draft = self.draft(tenant, request).await?;
        accept::store_pending(tx, std::slice::from_ref(&draft), &self.rates, pending)
            .await?
            .pop()
            .unwrap_or_else(|| Err(ApiError::internal("no answer")))
    }

    /// Validates `request` and renders its content for every channel of its chain, without
    /// writing anything: a bad request is a 422 that leaves nothing behind (not even a contact).
    pub(crate) async fn draft(&self, tenant: TenantId, request: SendRequest) -> Result<Draft, ApiError> {
        self.draft_with(tenant, request, None).await
    }

    /// As [`Self::draft`], with the template's variables given apart from the request (a trigger
    /// rule's are its event's document, which is lent rather than copied for each message).
    pub(crate) async fn draft_with(
        &self,
        tenant: TenantId,
        request: SendRequest,
        variables: Option<&Value>,
    ) -> Result<Draft, ApiError> {
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
        if let Some(conversation) = request.conversation_id
            && !repository::conversation_exists(&self.pool, tenant, conversation).await?
        {
            return Err(ApiError::validation("conversation_id", "is not a conversation of this workspace"));
        }
        let mut contents = Vec::with_capacity(chain.len());
        for channel in chain {
            contents.push((channel, self.content_for(tenant, &request.content, variables, channel).await?));
        }
        Ok(Draft {
            id: Uuid::now_v7(),
            tenant,
            recipient: ContactRequest::parse(&request.to)?,
            chain: contents,
            lane: request.lane.unwrap_or_default(),
            status: if request.require_review { MessageStatus::PendingReview } else { MessageStatus::Queued },
            scheduled_at: request.scheduled_at,
            metadata,
            conversation_id: request.conversation_id,
        })
    }

    /// The content on `channel`: rendered from the named template (strictly: a missing variable
    /// is a 422 now, never a failure at send time), or taken as given.
    async fn content_for(
        &self,
        tenant: TenantId,
        input: &ContentInput,
        variables: Option<&Value>,
        channel: Channel,
    ) -> Result<MessageContent, ApiError> {
        match &input.template {
            Some(template) => {
                // No variables render like an empty object.
                let variables = variables.or(template.variables.as_ref()).unwrap_or(&Value::Null);
                self.render_template(tenant, &template.name, template.locale.as_deref(), variables, channel).await
            }
            None => content::for_channel(input, channel),
        }
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

    /// Approves a message waiting for review: it is queued for dispatch (at its scheduled time).
    pub async fn approve_message(&self, tenant: TenantId, id: Uuid, reviewer: &str) -> Result<MessageRow, ApiError> {
        let mut tx = self.pool.begin().await?;
        let message = repository::lock(&mut tx, tenant, id).await?;
        if message.status != MessageStatus::PendingReview {
            return Err(ApiError::conflict(
                Some("status"),
                format!("only messages pending review can be approved; this one is {}", message.status.as_str()),
            ));
        }
        repository::set_status(&mut *tx, tenant.0, id, MessageStatus::Queued, None).await?;
        let reason = format!("approved by {reviewer}");
        let event = NewEvent {
            tenant_id: tenant.0,
            message_id: id,
            status: MessageStatus::Queued,
            reason: Some(&reason),
            source: EventSource::Api,
            payload: None,
            occurred_at: None,
        };
        repository::record_event(&mut *tx, event).await?;
        let run_at = message.scheduled_at.filter(|at| *at > Utc::now());
        queue::enqueue(&mut tx, message.lane, DispatchJob::new(id, tenant.0, 0), run_at).await?;
        tx.commit().await?;
        if run_at.is_none() {
            self.queue_waker.wake(message.lane);
        }
        repository::find(&self.pool, tenant, id).await
    }

    /// Rejects a message waiting for review: it is canceled with the reason.
    pub async fn reject_message(
        &self,
        tenant: TenantId,
        id: Uuid,
        reviewer: &str,
        reason: Option<&str>,
    ) -> Result<MessageRow, ApiError> {
        let mut tx = self.pool.begin().await?;
        let message = repository::lock(&mut tx, tenant, id).await?;
        if message.status != MessageStatus::PendingReview {
            return Err(ApiError::conflict(
                Some("status"),
                format!("only messages pending review can be rejected; this one is {}", message.status.as_str()),
            ));
        }
        let note = format!("rejected by {reviewer}{}", reason.map(|r| format!(": {r}")).unwrap_or_default());
        repository::set_status(&mut *tx, tenant.0, id, MessageStatus::Canceled, Some(&note)).await?;
        let event = NewEvent {
            tenant_id: tenant.0,
            message_id: id,
            status: MessageStatus::Canceled,
            reason: Some(&note),
            source: EventSource::Api,
            payload: None,
            occurred_at: None,
        };
        repository::record_event(&mut *tx, event).await?;
        tx.commit().await?;
        repository::find(&self.pool, tenant, id).await
    }

    /// Cancels the messages still waiting for their scheduled time that are about `link` (e.g.
    /// the reminders of an appointment that moved or was canceled), each with its event —
    /// except those made from the event `except_event` (the one causing this: redelivered, it
    /// must not cancel what it made itself). Answers how many.
    pub async fn cancel_scheduled_about(
        &self,
        tenant: TenantId,
        (kind, id): (&str, &str),
        except_event: &str,
        reason: &str,
    ) -> Result<usize, ApiError> {
        let mut tx = self.pool.begin().await?;
        let canceled = sqlx::query_scalar!(
            r#"UPDATE communications.messages SET status = 'canceled', status_reason = $4, updated_at = now()
               WHERE tenant_id = $1 AND status IN ('queued', 'pending_review') AND scheduled_at > now()
                 AND metadata->'link' = jsonb_build_object('kind', $2::text, 'id', $3::text)
                 AND metadata->>'event_id' IS DISTINCT FROM $5
               RETURNING id"#,
            tenant.0,
            kind,
            id,
            reason,
            except_event,
        )
        .fetch_all(&mut *tx)
        .await?;
        for message in &canceled {
            repository::record_event(
                &mut *tx,
                NewEvent {
                    tenant_id: tenant.0,
                    message_id: *message,
                    status: MessageStatus::Canceled,
                    reason: Some(reason),
                    source: EventSource::System,
                    payload: None,
                    occurred_at: None,
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(canceled.len())
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
