//! The dispatch worker: takes a message's job, sends it through the channel's providers, and
//! records what happened.
//!
//! - Idempotent per job: only a `queued` message is sent. A job that finds the message `sending`
//!   was interrupted mid-send (a crashed worker): the provider may have it, so the message
//!   becomes `unknown` for callbacks to settle — never a blind resend.
//! - Providers are tried by priority: a retryable failure or throttling of one moves to the next.
//! - `Retryable`/`RateLimited` everywhere: a new delayed job (exponential backoff with jitter,
//!   honouring Retry-After) within the retry budget. `Permanent`: the message fails and the next
//!   channel of its chain gets a new message (this one `superseded`). `TenantBlocked`: the
//!   channel account is suspended with the reason. `Unknown`: the message is `unknown`.

mod adapters;
pub(crate) mod outcome;
pub mod sweeper;
pub mod worker;

use std::time::Duration;

use cpaas::{SendError, SendMessageCommand, SendReceipt};
use kernel::error::ApiError;
use kernel::ids::TenantId;

use crate::Communications;
use crate::channels::{ChannelStatus, repository as channels};
use crate::messages::content::MessageContent;
use crate::messages::model::{Channel, EventSource, MessageStatus};
use crate::messages::queue::DispatchJob;
use crate::messages::repository::{self as messages, NewEvent};

pub use adapters::AdapterCache;

/// Retry policy of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before a retryable failure becomes final.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 8, base_delay: Duration::from_secs(2), max_delay: Duration::from_secs(600) }
    }
}

/// Everything a worker needs, cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub module: Communications,
    pub adapters: AdapterCache,
    pub retry: RetryPolicy,
    pub rates: crate::rate_limit::RateDefaults,
}

impl Dispatcher {
    pub fn new(module: Communications, retry: RetryPolicy, rates: crate::rate_limit::RateDefaults) -> Self {
        Self { module, adapters: AdapterCache::default(), retry, rates }
    }

    /// Handles one job to the end. Errors are infrastructure failures (the database), which
    /// apalis retries; provider failures are outcomes, recorded on the message.
    pub async fn dispatch(&self, job: DispatchJob) -> Result<(), ApiError> {
        let tenant = TenantId(job.tenant_id);
        let Some(claimed) = self.claim(tenant, job).await? else { return Ok(()) };
        let result = self.send_through_providers(tenant, job, &claimed).await;
        outcome::record(self, tenant, job, &claimed, result).await
    }

    /// Moves a queued message to `sending` (committed before any provider call, so a crash
    /// leaves a trace), or settles a job that has nothing to send.
    async fn claim(&self, tenant: TenantId, job: DispatchJob) -> Result<Option<messages::MessageRow>, ApiError> {
        let mut tx = self.module.pool.begin().await?;
        let message = match messages::lock(&mut tx, tenant, job.message_id).await {
            Ok(message) => message,
            Err(ApiError::NotFound(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        match message.status {
            MessageStatus::Queued => {}
            MessageStatus::Sending => {
                // A worker died between claiming and recording the outcome.
                messages::set_status(
                    &mut *tx,
                    tenant.0,
                    message.id,
                    MessageStatus::Unknown,
                    Some("interrupted while sending"),
                )
                .await?;
                messages::record_event(
                    &mut *tx,
                    NewEvent {
                        tenant_id: tenant.0,
                        message_id: message.id,
                        status: MessageStatus::Unknown,
                        reason: Some("the dispatch was interrupted; the provider may have the message"),
                        source: EventSource::Worker,
                        payload: None,
                        occurred_at: None,
                    },
                )
                .await?;
                tx.commit().await?;
                return Ok(None);
            }
            _ => return Ok(None),
        }
        sqlx::query!(
            "UPDATE communications.messages SET status = 'sending', attempts = attempts + 1, updated_at = now() WHERE id = $1",
            message.id
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(message))
    }

    /// Tries the channel account's enabled providers by priority.
    async fn send_through_providers(
        &self,
        tenant: TenantId,
        job: DispatchJob,
        message: &messages::MessageRow,
    ) -> Result<Sent, Failure> {
        let suppressed = messages::suppression(&self.module.pool, tenant.0, message.channel, &message.recipient)
            .await
            .map_err(Failure::Infrastructure)?;
        if let Some(why) = suppressed {
            return Err(Failure::Send(SendError::Permanent {
                code: "suppressed".into(),
                reason: format!("the address is suppressed ({why})"),
            }));
        }
        let account = channels::active_account_for_channel(&self.module.pool, tenant, channel_type(message.channel))
            .await
            .map_err(Failure::Infrastructure)?
            .ok_or_else(|| {
                Failure::Send(SendError::Permanent {
                    code: "no_active_channel".into(),
                    reason: format!("the workspace has no active {} channel account", message.channel.as_str()),
                })
            })?;
        if account.status != ChannelStatus::Active {
            return Err(Failure::Send(SendError::Permanent {
                code: "channel_inactive".into(),
                reason: "the channel account is not active".into(),
            }));
        }
        if job.deferrals == 0 {
            let delay = self.reserve_send_slot(tenant, message, &account).await.map_err(Failure::Infrastructure)?;
            if !delay.is_zero() {
                return Err(Failure::Throttled(delay));
            }
        }
        let providers =
            channels::providers_of(&self.module.pool, tenant, &[account.id]).await.map_err(Failure::Infrastructure)?;
        let content: MessageContent = serde_json::from_value(message.content.clone())
            .map_err(|e| Failure::Infrastructure(ApiError::internal(e)))?;
        let command = SendMessageCommand {
            correlation_id: message.id.to_string(),
            tenant_id: tenant.0,
            recipient: recipient(message),
            content: content
                .to_cpaas()
                .map_err(|e| Failure::Send(SendError::Permanent { code: "content".into(), reason: e }))?,
        };
        let mut last = None;
        for provider in providers.iter().filter(|p| p.enabled) {
            let adapter = match self.adapters.get(&self.module, tenant, provider).await {
                Ok(adapter) => adapter,
                // Missing or unusable configuration: the message cannot go out this way.
                Err(ApiError::Validation { message: reason, .. }) => {
                    last = Some(SendError::Permanent { code: "configuration".into(), reason });
                    continue;
                }
                Err(error) => return Err(Failure::Infrastructure(error)),
            };
            match adapter.send(&command).await {
                Ok(receipt) => return Ok(Sent { receipt, channel_account_id: account.id }),
                Err(error @ (SendError::Retryable { .. } | SendError::RateLimited { .. })) => {
                    tracing::warn!(message_id = %message.id, provider = provider.provider.as_str(), %error, "provider failed; trying the next one");
                    last = Some(error);
                }
                Err(error) => return Err(Failure::SendVia { error, channel_account_id: account.id }),
            }
        }
        Err(Failure::Send(last.unwrap_or(SendError::Permanent {
            code: "no_provider".into(),
            reason: "the channel account has no enabled provider".into(),
        })))
    }
}

impl Dispatcher {
    /// Reserves this message's send slot under the channel account's rate limit, shared by every
    /// worker process; returns how long until the slot (zero: now). A job deferred to its slot
    /// comes back holding the reservation, so it is never counted twice.
    ///
    /// Urgent messages have the account's own key at the full rate and also use up the bulk key;
    /// bulk messages only reserve on the bulk key, at 80 % of the rate. So urgent messages never
    /// wait behind a bulk backlog, bulk gets what urgent leaves, and together they stay within
    /// the provider's rate.
    async fn reserve_send_slot(
        &self,
        tenant: TenantId,
        message: &messages::MessageRow,
        account: &channels::AccountRow,
    ) -> Result<Duration, ApiError> {
        use crate::rate_limit::{RateLimit, channel_account_key, limit_for, reserve};
        let limit = limit_for(message.channel, &account.verification, &self.rates);
        let urgent_key = channel_account_key(tenant.0, account.id);
        let bulk_key = format!("{urgent_key}:bulk");
        let bulk_limit = RateLimit { per_second: limit.per_second * 0.8, burst: (limit.burst * 4 / 5).max(1) };
        match message.lane {
            crate::messages::model::Lane::Urgent => {
                let delay = reserve(&self.module.pool, &urgent_key, limit).await?;
                reserve(&self.module.pool, &bulk_key, bulk_limit).await?;
                Ok(delay)
            }
            crate::messages::model::Lane::Bulk => reserve(&self.module.pool, &bulk_key, bulk_limit).await,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Sent {
    receipt: SendReceipt,
    channel_account_id: uuid::Uuid,
}

#[derive(Debug)]
pub(crate) enum Failure {
    Send(SendError),
    /// A failure attributable to one channel account (to suspend it when the tenant is blocked).
    SendVia {
        error: SendError,
        channel_account_id: uuid::Uuid,
    },
    Infrastructure(ApiError),
    /// The channel account is at its rate limit: try again after this long.
    Throttled(Duration),
}

fn channel_type(channel: Channel) -> crate::channels::ChannelType {
    match channel {
        Channel::Whatsapp => crate::channels::ChannelType::Whatsapp,
        Channel::Email => crate::channels::ChannelType::Email,
        Channel::Sms => crate::channels::ChannelType::Sms,
    }
}

fn recipient(message: &messages::MessageRow) -> cpaas::Recipient {
    match message.channel {
        Channel::Email => cpaas::Recipient::Email(message.recipient.clone()),
        Channel::Sms | Channel::Whatsapp => cpaas::Recipient::Phone(message.recipient.clone()),
    }
}
