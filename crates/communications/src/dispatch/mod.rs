//! The dispatch worker: takes a message's job, sends it through the channel's providers, and
//! records what happened.
//!
//! - Jobs running at once share statements (`kernel::batch`): their claims, lookups and
//!   rate-limit reservations are prepared together (`prepare.rs`), and provider acceptances are
//!   recorded together. Only the send itself, and failures, are per message.
//! - Idempotent per job: only a `queued` message is sent. A claim names this process's lease
//!   (`lease.rs`); just before each provider request the message is marked in flight
//!   (`requested_at`, batched, committed). A job that finds its message `sending` leaves it to
//!   recovery, which knows whether the claiming process is alive and whether its request
//!   started; `unknown` sends are resolved with the provider by `settle.rs` — never a blind
//!   resend.
//! - Recording an outcome waits for the database when it is away (bounded): the answer of a
//!   request that left is only known here.
//! - Providers are tried by priority: a retryable failure or throttling of one moves to the next.
//! - `Retryable`/`RateLimited` everywhere: a new delayed job (exponential backoff with jitter,
//!   honouring Retry-After) within the retry budget. `Permanent`: the message fails and the next
//!   channel of its chain gets a new message (this one `superseded`). `TenantBlocked`: the
//!   channel account is suspended with the reason. `Unknown`: the message is `unknown`.

mod adapters;
pub(crate) mod configs;
pub mod lease;
pub mod local;
pub(crate) mod outcome;
mod prepare;
pub mod settle;
pub mod slots;
pub mod sweeper;
pub mod worker;

use std::time::Duration;

use cpaas::{SendError, SendMessageCommand, SendReceipt};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::kept::KeptConnections;
use serde::Deserialize;

use crate::Communications;
use crate::messages::content::MessageContent;
use crate::messages::model::{Channel, MessageStatus};
use crate::messages::queue::DispatchJob;
use crate::messages::repository::{self as messages, SentRow};

pub use adapters::AdapterCache;
use kernel::batch::Batcher;
use prepare::Prepared;

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

impl RetryPolicy {
    /// The wait before attempt number `attempt`: exponential with full jitter, at least the
    /// provider's Retry-After.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self.base_delay.saturating_mul(1u32 << attempt.min(16)).min(self.max_delay);
        let unit = f64::from(uuid::Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX);
        exponential.mul_f64(0.5 + unit * 0.5).max(retry_after.unwrap_or_default())
    }
}

/// Most jobs in one batched statement.
const MAX_BATCH: usize = 256;
/// Batches of one kind running at once: enough to keep the database busy while the next batch
/// gathers, few enough that batches stay large under load.
const BATCHES_IN_FLIGHT: usize = 2;
/// Group commit for the sent-records (`kernel::batch`): a provider's acceptance is recorded after
/// its request, so waiting for the acceptances of the requests around it costs no message
/// latency — only the `sent` status shows a few milliseconds later — and at everyday rates saves
/// a statement and a commit for most messages. 10 ms rather than 5: at 800/s a sent-record
/// held 12.6 messages instead of 8.0, and the whole machine used 4 % less per message (two
/// rounds, alternating, acceptance's wait unchanged).
const RECORD_LINGER: kernel::batch::Linger =
    kernel::batch::Linger { wait: Duration::from_millis(10), steady_within: Duration::from_millis(20) };

/// Everything a worker needs, cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub module: Communications,
    pub adapters: AdapterCache,
    pub rates: crate::rate_limit::RateDefaults,
    /// Claims jobs' messages and looks up what their sends need, many jobs per statement.
    preparer: Batcher<DispatchJob, Result<Option<Prepared>, BatchError>>,
    /// Records provider acceptances, many per statement.
    recorder: Batcher<SentRow, Result<(), BatchError>>,
    /// Gathers what messages claimed at acceptance need for their sends, many per statement.
    claimed_preparer: Batcher<prepare::Claimed, Prepared>,
    /// Marks messages in flight just before their requests, many per statement.
    marker: Batcher<(uuid::Uuid, uuid::Uuid, &'static str), Result<bool, BatchError>>,
    /// The lease this process's claims carry.
    pub lease: lease::Lease,
}

/// How long recording an outcome waits for an unavailable database before giving up (the
/// message is then given back, or settled by recovery).
const OUTCOME_PATIENCE: Duration = Duration::from_secs(600);

/// Runs `op` again while it fails only because the database is unreachable or PostgreSQL chose
/// it as a deadlock's victim (`ApiError::is_transient`), for up to `patience`, backing off from
/// 100 ms to 1 s.
pub(crate) async fn retry_transient<T, F, Fut>(patience: Duration, mut op: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Err(error) if error.is_transient() && started.elapsed() < patience => {
                tracing::debug!(%error, "database unavailable or a deadlock's victim; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            result => return result,
        }
    }
}

impl Dispatcher {
    /// Must be called on a Tokio runtime: it starts the batching tasks. Retries follow the
    /// module's [`RetryPolicy`].
    pub fn new(module: Communications, rates: crate::rate_limit::RateDefaults) -> Self {
        let lease = lease::Lease::default();
        let preparer = {
            let (module, rates) = (module.clone(), rates.clone());
            Batcher::spawn(MAX_BATCH, BATCHES_IN_FLIGHT, move |jobs| {
                let (module, rates) = (module.clone(), rates.clone());
                async move { prepare::prepare_batch(&module, &rates, lease.owner, jobs).await }
            })
        };
        let claimed_preparer = {
            let (module, rates) = (module.clone(), rates.clone());
            Batcher::spawn(MAX_BATCH, BATCHES_IN_FLIGHT, move |claimed| {
                let (module, rates) = (module.clone(), rates.clone());
                async move { prepare::prepare_claimed(&module, &rates, claimed).await }
            })
        };
        let marker = {
            let pool = module.batch_pool().clone();
            Batcher::spawn(
                MAX_BATCH,
                BATCHES_IN_FLIGHT,
                move |requests: Vec<(uuid::Uuid, uuid::Uuid, &'static str)>| {
                    let pool = pool.clone();
                    async move {
                        match messages::mark_requested(&pool, &requests).await {
                            Ok(marked) => requests.iter().map(|(id, _, _)| Ok(marked.contains(id))).collect(),
                            Err(error) => vec![Err(BatchError::from(error)); requests.len()],
                        }
                    }
                },
            )
        };
        let recorder = {
            let kept = module.kept.clone();
            Batcher::spawn_lingering(
                MAX_BATCH,
                BATCHES_IN_FLIGHT,
                Some(RECORD_LINGER),
                move |mut sent: Vec<SentRow>| {
                    let kept = kept.clone();
                    async move {
                        // Rows locked in id order, as a webhook batch locks them, which makes
                        // deadlocks with one rarer (each side retries when it loses one). Every
                        // caller gets the same result, so the order of the answers does not matter.
                        sent.sort_by_key(|row| row.message_id);
                        let result = record_sent_on(&kept, &sent).await.map_err(BatchError::from);
                        vec![result; sent.len()]
                    }
                },
            )
        };
        Self { module, adapters: AdapterCache::default(), rates, preparer, claimed_preparer, recorder, marker, lease }
    }

    /// Handles one job to the end. Errors are infrastructure failures (the database) that
    /// outlasted our patience, which apalis retries; provider failures are outcomes, recorded on
    /// the message. While the database is away the job waits for it rather than fail: apalis's
    /// few attempts would run out in an outage and leave the message without a job. A claimed
    /// message whose outcome could not be recorded is given back (`lease::give_back`) rather than
    /// left `sending` under this live process's lease, where only the stuck rule would find it.
    pub async fn dispatch(&self, job: DispatchJob) -> Result<(), ApiError> {
        let tenant = TenantId(job.tenant_id);
        let claimed = retry_transient(OUTCOME_PATIENCE, || async {
            let batched =
                self.preparer.call(job).await.ok_or_else(|| ApiError::internal("the dispatch batcher stopped"))?;
            batched.map_err(ApiError::from)
        })
        .await?;
        let prepared = match claimed {
            Some(prepared) => prepared,
            // Not `queued`: the careful path looks at it alone, or there is nothing to do.
            None => match retry_transient(OUTCOME_PATIENCE, || self.claim(tenant, job)).await? {
                Some((message, claim)) => prepare::prepare_one(self, tenant, job, message, claim).await,
                None => return Ok(()),
            },
        };
        let (id, claim) = (prepared.message.id, prepared.claim);
        match self.send_and_record(tenant, job, prepared).await {
            Err(error) => {
                tracing::warn!(message_id = %id, %error, "dispatching a message failed");
                lease::give_back_patiently(&self.module.pool, id, claim).await.map_err(|_| error)
            }
            done => done,
        }
    }

    /// Sends messages stored claimed at acceptance, together (see `local.rs`): as jobs would,
    /// without the claim, prepared in one batch (the slots and in-flight marks acceptance did not
    /// take care of in one statement), their requests concurrent. Answers each message's result,
    /// in order.
    pub(crate) async fn dispatch_claimed(&self, claimed: Vec<prepare::Claimed>) -> Vec<Result<(), ApiError>> {
        let jobs: Vec<(TenantId, DispatchJob)> = claimed
            .iter()
            .map(|(message, ..)| (TenantId(message.tenant_id), DispatchJob::new(message.id, message.tenant_id, 0)))
            .collect();
        // With every slot reserved when the messages were stored there is no statement to share:
        // what is left is read from memory, here, without the batcher's hop to its task and back.
        let prepared: Vec<Option<Prepared>> = if claimed.iter().all(|(.., slot)| slot.is_some()) {
            prepare::prepare_claimed(&self.module, &self.rates, claimed).await.into_iter().map(Some).collect()
        } else {
            self.claimed_preparer.call_many(claimed).await
        };
        futures_util::future::join_all(jobs.into_iter().zip(prepared).map(|((tenant, job), prepared)| async move {
            let prepared = prepared.ok_or_else(|| ApiError::internal("the dispatch batcher stopped"))?;
            self.send_and_record(tenant, job, prepared).await
        }))
        .await
    }

    async fn send_and_record(&self, tenant: TenantId, job: DispatchJob, prepared: Prepared) -> Result<(), ApiError> {
        match self.send_through_providers(tenant, &prepared).await {
            Ok(sent) => self.record_sent(tenant, &prepared, sent).await,
            // Recovery took the message back before its request started: someone else sends it.
            Err(Failure::TakenBack) => Ok(()),
            Err(failure) => {
                retry_transient(OUTCOME_PATIENCE, || {
                    outcome::record(self, tenant, job, &prepared.message, prepared.claim, &failure)
                })
                .await
            }
        }
    }

    async fn record_sent(&self, tenant: TenantId, prepared: &Prepared, sent: Sent) -> Result<(), ApiError> {
        let row = SentRow {
            tenant_id: tenant.0,
            message_id: prepared.message.id,
            provider: sent.receipt.provider.as_str(),
            provider_message_id: sent.receipt.provider_message_id,
            channel_account_id: sent.channel_account_id,
        };
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let recorded = self
                .recorder
                .call(row.clone())
                .await
                .ok_or_else(|| ApiError::internal("the outcome batcher stopped"))?;
            match recorded {
                Ok(()) => return Ok(()),
                // Only this process knows the provider's answer: wait for the database rather
                // than leave the message to settlement, and run again after losing a deadlock
                // (a webhook's transaction adopting the same messages by correlation id).
                Err(error) if error.transient() && started.elapsed() < OUTCOME_PATIENCE => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                // Given back by the caller: `unknown`, and settlement finds it at the provider.
                Err(error) => return Err(ApiError::from(error)),
            }
        }
    }

    /// Moves a queued message to `sending` (committed before any provider call, so a crash
    /// leaves a trace), or settles a job that has nothing to send. The careful, one-message path
    /// for jobs the batched claim did not take.
    async fn claim(
        &self,
        tenant: TenantId,
        job: DispatchJob,
    ) -> Result<Option<(messages::MessageRow, uuid::Uuid)>, ApiError> {
        let mut tx = self.module.pool.begin().await?;
        let message = match messages::lock(&mut tx, tenant, job.message_id).await {
            Ok(message) => message,
            Err(ApiError::NotFound(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        let claim = uuid::Uuid::now_v7();
        if message.status != MessageStatus::Queued {
            // `sending` belongs to whoever claimed it (recovery takes it back if that process
            // died); anything else is already settled.
            return Ok(None);
        }
        sqlx::query!(
            "UPDATE communications.messages SET status = 'sending', attempts = attempts + 1, updated_at = now(),
                 claimed_by = $2, claim = $3, requested_at = NULL WHERE id = $1",
            message.id,
            self.lease.owner,
            claim,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((message, claim)))
    }

    /// Marks the message in flight to `provider`; false when it is no longer ours to send.
    async fn mark_requested(
        &self,
        message_id: uuid::Uuid,
        claim: uuid::Uuid,
        provider: &'static str,
    ) -> Result<bool, Failure> {
        let marked = self
            .marker
            .call((message_id, claim, provider))
            .await
            .ok_or_else(|| Failure::Infrastructure(ApiError::internal("the in-flight batcher stopped")))?;
        marked.map_err(|e| Failure::Infrastructure(ApiError::from(e)))
    }

    /// Tries the channel account's enabled providers by priority.
    async fn send_through_providers(&self, tenant: TenantId, prepared: &Prepared) -> Result<Sent, Failure> {
        let message = &prepared.message;
        let context = prepared.context.as_ref().map_err(|e| Failure::Infrastructure(ApiError::internal(e.clone())))?;
        let account = context.account_for(message).map_err(Failure::Send)?;
        if !context.delay.is_zero() {
            return Err(Failure::Throttled(context.delay));
        }
        if context.premark == slots::Premark::TakenBack {
            return Err(Failure::TakenBack);
        }
        // Marked with its slot, for the first provider tried (see `slots.rs`).
        let mut premarked = context.premark == slots::Premark::Marked;
        let content = MessageContent::deserialize(&message.content)
            .map_err(|e| Failure::Infrastructure(ApiError::internal(e)))?;
        let command = SendMessageCommand {
            correlation_id: message.id.to_string(),
            tenant_id: tenant.0,
            recipient: recipient(message).map_err(Failure::Send)?,
            content: content
                .to_cpaas()
                .map_err(|e| Failure::Send(SendError::Permanent { code: "content".into(), reason: e }))?,
        };
        let mut last = None;
        for provider in context.providers.iter().filter(|p| p.enabled) {
            // The first provider's only: a later one is marked when its turn comes.
            let marked = std::mem::take(&mut premarked);
            let adapter = match self.adapters.get(&self.module, tenant, provider).await {
                Ok(adapter) => adapter,
                // Missing or unusable configuration: the message cannot go out this way.
                Err(ApiError::Validation { message: reason, .. }) => {
                    last = Some(SendError::Permanent { code: "configuration".into(), reason });
                    continue;
                }
                Err(error) => return Err(Failure::Infrastructure(error)),
            };
            if !marked && !self.mark_requested(message.id, prepared.claim, provider.provider.as_str()).await? {
                return Err(Failure::TakenBack);
            }
            observe_missed_call_latency(message);
            let started = std::time::Instant::now();
            let result = adapter.send(&command).await;
            observe_attempt(message, provider.provider.as_str(), &result, started.elapsed());
            match result {
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
    /// Recovery took the message back before its request started.
    TakenBack,
}

/// A batched statement's failure, as every caller in the batch sees it.
pub(crate) type BatchError = kernel::error::SharedError;

/// The sent-record, on a connection kept between batches (`kernel::kept`).
async fn record_sent_on(kept: &KeptConnections, sent: &[SentRow]) -> Result<(), ApiError> {
    let mut connection = kept.acquire().await?;
    messages::record_sent(&mut *connection, sent).await?;
    connection.reusable();
    Ok(())
}

pub(crate) fn channel_type(channel: Channel) -> crate::channels::ChannelType {
    match channel {
        Channel::Whatsapp => crate::channels::ChannelType::Whatsapp,
        Channel::Email => crate::channels::ChannelType::Email,
        Channel::Sms => crate::channels::ChannelType::Sms,
        Channel::Webchat => crate::channels::ChannelType::Webchat,
    }
}

fn recipient(message: &messages::MessageRow) -> Result<cpaas::Recipient, SendError> {
    match message.channel {
        Channel::Email => Ok(cpaas::Recipient::Email(message.recipient.clone())),
        Channel::Sms | Channel::Whatsapp => Ok(cpaas::Recipient::Phone(message.recipient.clone())),
        // Never queued (webchat replies are delivered to the visitor's browser by us); a row
        // that got here anyway fails rather than going to some provider.
        Channel::Webchat => Err(SendError::Permanent {
            code: "channel".into(),
            reason: "webchat messages are delivered to the visitor's browser, not through a provider".into(),
        }),
    }
}

/// The missed-call SLI: from the voice webhook's arrival to this provider request (the first
/// attempt only; a retry's wait is the provider's doing, and counted once is enough).
fn observe_missed_call_latency(message: &messages::MessageRow) {
    if message.attempts > 1 {
        return;
    }
    let Some(received) = message
        .metadata
        .get("missed_call")
        .and_then(|call| call.get("received_at"))
        .and_then(serde_json::Value::as_str)
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
    else {
        return;
    };
    let elapsed = chrono::Utc::now().signed_duration_since(received).num_microseconds().unwrap_or(0).max(0);
    metrics::histogram!("missed_call_sms_seconds").record(elapsed as f64 / 1e6);
}

/// One provider request: its latency by outcome, and the attempt's outcome by channel.
fn observe_attempt(
    message: &messages::MessageRow,
    provider: &'static str,
    result: &Result<SendReceipt, SendError>,
    took: Duration,
) {
    let (request, attempt) = match result {
        Ok(_) => ("ok", "sent"),
        Err(SendError::Retryable { .. }) => ("retryable", "retry"),
        Err(SendError::RateLimited { .. }) => ("rate_limited", "retry"),
        Err(SendError::Permanent { .. }) => ("permanent", "failed"),
        Err(SendError::TenantBlocked { .. }) => ("tenant_blocked", "failed"),
        Err(SendError::Unknown { .. }) => ("unknown", "unknown"),
    };
    metrics::histogram!("provider_request_duration_seconds", "provider" => provider, "outcome" => request)
        .record(took.as_secs_f64());
    metrics::counter!("messages_dispatched_total", "channel" => message.channel.as_str(), "provider" => provider, "outcome" => attempt)
        .increment(1);
}
