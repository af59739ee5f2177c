//! What a dispatch attempt leaves behind: the message's new state, its event, and any follow-up
//! (a retry job, the fallback message, a suspended channel account) — in one transaction.

use chrono::{DateTime, Utc};
use cpaas::{FailureClass, SendError};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde_json::Value;
use uuid::Uuid;

use super::{Dispatcher, Failure, RetryPolicy};
use crate::channels::{LifecycleAction, repository as channels};
use crate::messages::model::{Channel, EventSource, MessageStatus};
use crate::messages::queue::{self, DispatchJob};
use crate::messages::repository::{self as messages, MessageRow, NewEvent, NewMessage};

/// Records a dispatch attempt that did not end with the provider accepting the message (those
/// are recorded in batches, see [`messages::record_sent`]).
pub(crate) async fn record(
    dispatcher: &Dispatcher,
    tenant: TenantId,
    job: DispatchJob,
    message: &MessageRow,
    claim: Uuid,
    failure: &Failure,
) -> Result<(), ApiError> {
    let pool = &dispatcher.module.pool;
    // A permanent failure may hand the next channel of the chain a message due now.
    let may_fall_back = matches!(failure, Failure::Send(_) | Failure::SendVia { .. });
    let mut tx = pool.begin().await?;
    // Recorded already (this is a retry after the database came back and the first commit did
    // land), or no longer ours: nothing to do. Ours means our claim, not merely `sending`: a
    // dispatch that waited out a database outage finds its message taken back by recovery and
    // perhaps claimed again by another dispatch in mid-request; putting that one back in the
    // queue sent it twice (the chaos suite's pg-restart-30s-workers caught it).
    if !super::lease::lock_if_held(&mut tx, message.id, claim).await? {
        return Ok(());
    }
    match failure {
        Failure::TakenBack => return Ok(()),
        Failure::Infrastructure(error) => {
            // Nothing reached a provider: the message goes back to the queue with a new job a
            // moment later (not a job retry: apalis's attempts would run out in an outage).
            tracing::warn!(message_id = %message.id, %error, "dispatch failed before the provider request; queued again");
            requeue_later(
                &mut tx,
                message,
                job,
                INFRASTRUCTURE_DELAY,
                "the dispatch failed before sending: queued again",
            )
            .await?;
        }
        Failure::Throttled(wait) => {
            metrics::histogram!("rate_limit_wait_seconds", "lane" => message.lane.as_str()).record(wait.as_secs_f64());
            // Not an attempt: the message goes back to the queue for when its token is due. The
            // job leaves the worker at once, so a tenant at its limit holds no worker slot.
            requeue_later(
                &mut tx,
                message,
                DispatchJob { deferrals: job.deferrals + 1, ..job },
                *wait,
                "waiting for the channel rate limit",
            )
            .await?;
        }
        Failure::Send(error) => apply_failure(dispatcher, &mut tx, tenant, job, message, error.clone(), None).await?,
        Failure::SendVia { error, channel_account_id } => {
            apply_failure(dispatcher, &mut tx, tenant, job, message, error.clone(), Some(*channel_account_id)).await?
        }
    }
    tx.commit().await?;
    if may_fall_back {
        dispatcher.module.queue_waker.wake(message.lane);
    }
    Ok(())
}

/// How long a message waits after a dispatch that failed for want of the database.
const INFRASTRUCTURE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Puts a claimed message back in the queue (not counting the claim as an attempt) with `job`
/// due after `wait`.
async fn requeue_later(
    tx: &mut sqlx::PgConnection,
    message: &MessageRow,
    job: DispatchJob,
    wait: std::time::Duration,
    reason: &str,
) -> Result<(), ApiError> {
    let updated = sqlx::query!(
        r#"UPDATE communications.messages SET status = 'queued', attempts = attempts - 1, status_reason = $2,
               claimed_by = NULL, claim = NULL, requested_at = NULL, updated_at = now()
           WHERE id = $1 AND status = 'sending'"#,
        message.id,
        reason,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        let run_at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        // A fresh job key: an earlier push of this attempt may still be in the queue's table.
        let again = DispatchJob { nonce: Some(Uuid::now_v7()), ..job };
        queue::enqueue(tx, message.lane, again, Some(run_at)).await?;
    }
    Ok(())
}

async fn apply_failure(
    dispatcher: &Dispatcher,
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    job: DispatchJob,
    message: &MessageRow,
    error: SendError,
    channel_account_id: Option<Uuid>,
) -> Result<(), ApiError> {
    let reason = error.to_string();
    match error {
        SendError::Retryable { retry_after, .. } | SendError::RateLimited { retry_after, .. } => {
            let next_attempt = job.attempt + 1;
            let budget = dispatcher.module.retry.max_attempts;
            if next_attempt >= budget {
                let final_reason = format!("retry budget of {budget} attempts spent; last: {reason}");
                failed(message, "retry_budget");
                return fail_and_fall_back(tx, tenant, message, &final_reason).await;
            }
            let class = if matches!(error, SendError::RateLimited { .. }) { "rate_limited" } else { "retryable" };
            metrics::counter!("message_retries_total", "channel" => message.channel.as_str(), "reason_class" => class)
                .increment(1);
            let delay = dispatcher.module.retry.backoff(next_attempt, retry_after);
            messages::set_status(&mut *tx, tenant.0, message.id, MessageStatus::Queued, Some(&reason)).await?;
            let note = format!("retrying in {}s: {reason}", delay.as_secs());
            messages::record_event(
                &mut *tx,
                NewEvent {
                    tenant_id: tenant.0,
                    message_id: message.id,
                    status: MessageStatus::Queued,
                    reason: Some(&note),
                    source: EventSource::Worker,
                    payload: None,
                    occurred_at: None,
                },
            )
            .await?;
            let run_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            queue::enqueue(tx, message.lane, DispatchJob { attempt: next_attempt, deferrals: 0, ..job }, Some(run_at))
                .await
        }
        SendError::Permanent { code, .. } => {
            failed(message, if code == "suppressed" { "suppressed" } else { "permanent" });
            if message.channel == crate::messages::model::Channel::Sms && code == UNSUBSCRIBED {
                let source = crate::compliance::Source::Provider("twilio 21610");
                crate::compliance::opt_out(tx, tenant.0, message.channel, &message.recipient, source, Some(message.id))
                    .await?;
            }
            fail_and_fall_back(tx, tenant, message, &reason).await
        }
        SendError::TenantBlocked { .. } => {
            failed(message, "tenant_blocked");
            if let Some(account_id) = channel_account_id {
                suspend_account(tx, tenant, account_id, &reason).await?;
            }
            fail_and_fall_back(tx, tenant, message, &reason).await
        }
        SendError::Unknown { .. } => {
            messages::set_status(&mut *tx, tenant.0, message.id, MessageStatus::Unknown, Some(&reason)).await?;
            messages::record_event(
                &mut *tx,
                NewEvent {
                    tenant_id: tenant.0,
                    message_id: message.id,
                    status: MessageStatus::Unknown,
                    reason: Some(&reason),
                    source: EventSource::Worker,
                    payload: None,
                    occurred_at: None,
                },
            )
            .await
        }
    }
}

/// Counts a failure by its class (`docs/metrics.md`).
fn failed(message: &MessageRow, class: &'static str) {
    let provider = message.provider.clone().unwrap_or_else(|| "none".to_owned());
    metrics::counter!("messages_failed_total", "channel" => message.channel.as_str(), "provider" => provider, "reason_class" => class)
        .increment(1);
}

/// Twilio's "Attempt to send to unsubscribed recipient": the handset texted STOP to this sender.
pub(crate) const UNSUBSCRIBED: &str = "21610";

/// Fails the message; when its chain has another channel, a new message takes over there and
/// this one is superseded.
async fn fail_and_fall_back(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    message: &MessageRow,
    reason: &str,
) -> Result<(), ApiError> {
    messages::set_status(&mut *tx, tenant.0, message.id, MessageStatus::Failed, Some(reason)).await?;
    messages::record_event(
        &mut *tx,
        NewEvent {
            tenant_id: tenant.0,
            message_id: message.id,
            status: MessageStatus::Failed,
            reason: Some(reason),
            source: EventSource::Worker,
            payload: None,
            occurred_at: None,
        },
    )
    .await?;
    fall_back(tx, tenant, message, reason, EventSource::Worker).await
}

/// Hands a failed message's next fallback channel a new message and supersedes this one; does
/// nothing when the chain is exhausted.
pub(crate) async fn fall_back(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    message: &MessageRow,
    reason: &str,
    source: EventSource,
) -> Result<(), ApiError> {
    let mut steps = message.fallback.as_array().cloned().unwrap_or_default();
    if steps.is_empty() {
        return Ok(());
    }
    let next = steps.remove(0);
    let (Some(channel), Some(recipient)) =
        (next["channel"].as_str().and_then(crate::messages::model::Channel::parse), next["recipient"].as_str())
    else {
        return Err(ApiError::internal("a malformed fallback step"));
    };
    let successor = Successor {
        channel,
        recipient,
        content: next["content"].clone(),
        fallback: Value::Array(steps),
        attempts: 0,
        run_at: None,
        why: format!("fallback from {} after: {reason}", message.channel.as_str()),
    };
    supersede(tx, tenant, message, successor, source).await
}

/// What a failure the provider reported after accepting a message (a callback) leads to: a
/// `Retry` class sends the same message on the same channel again after a backoff, within the
/// retry budget the send-time retries share; anything else, or a spent budget, hands over to the
/// next channel of the chain, as a failure at send time does. The message is `failed` already.
pub(crate) async fn after_reported_failure(
    tx: &mut sqlx::PgConnection,
    retry: &RetryPolicy,
    message: &MessageRow,
    class: FailureClass,
    reason: &str,
) -> Result<(), ApiError> {
    let tenant = TenantId(message.tenant_id);
    let attempts = u32::try_from(message.attempts).unwrap_or(u32::MAX);
    failed(message, "reported");
    if class != FailureClass::Retry {
        return fall_back(tx, tenant, message, reason, EventSource::Provider).await;
    }
    if attempts >= retry.max_attempts {
        let spent = format!("retry budget of {} attempts spent; last: {reason}", retry.max_attempts);
        return fall_back(tx, tenant, message, &spent, EventSource::Provider).await;
    }
    let delay = retry.backoff(attempts, None);
    let successor = Successor {
        channel: message.channel,
        recipient: &message.recipient,
        content: message.content.clone(),
        fallback: message.fallback.clone(),
        attempts: message.attempts,
        run_at: Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()),
        why: format!("sending again in {}s after: {reason}", delay.as_secs()),
    };
    supersede(tx, tenant, message, successor, EventSource::Provider).await
}

/// The message that takes over from a superseded one.
struct Successor<'a> {
    channel: Channel,
    recipient: &'a str,
    content: Value,
    fallback: Value,
    /// Attempts already spent on this message (a retry continues its predecessor's budget).
    attempts: i32,
    /// Not before this time; at once when `None`.
    run_at: Option<DateTime<Utc>>,
    /// The first entry of its trail.
    why: String,
}

/// Stores `successor` queued with its job, and marks `message` superseded by it.
async fn supersede(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    message: &MessageRow,
    successor: Successor<'_>,
    source: EventSource,
) -> Result<(), ApiError> {
    let id = Uuid::now_v7();
    messages::insert(
        &mut *tx,
        NewMessage {
            id,
            tenant_id: tenant,
            contact_id: message.contact_id,
            conversation_id: message.conversation_id,
            channel: successor.channel,
            fallback: successor.fallback,
            recipient: successor.recipient,
            content: successor.content,
            status: MessageStatus::Queued,
            lane: message.lane,
            // A delayed retry is scheduled: the stuck sweep does not count it before its time.
            scheduled_at: successor.run_at,
            metadata: message.metadata.clone(),
            supersedes: Some(message.id),
            attempts: successor.attempts,
            claim: None,
        },
        Some(&successor.why),
        source,
    )
    .await?;
    sqlx::query!(
        "UPDATE communications.messages SET status = 'superseded', superseded_by = $2, updated_at = now() WHERE id = $1",
        message.id,
        id
    )
    .execute(&mut *tx)
    .await?;
    let note = format!("superseded by {id} on {}", successor.channel.as_str());
    messages::record_event(
        &mut *tx,
        NewEvent {
            tenant_id: tenant.0,
            message_id: message.id,
            status: MessageStatus::Superseded,
            reason: Some(&note),
            source,
            payload: None,
            occurred_at: None,
        },
    )
    .await?;
    let attempt = u32::try_from(successor.attempts).unwrap_or(0);
    let job = DispatchJob::new(id, tenant.0, attempt);
    queue::enqueue(tx, message.lane, job, successor.run_at).await
}

/// A tenant-wide refusal (bad credentials, suspended provider account): stop using the channel
/// instead of burning retries on every message.
async fn suspend_account(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    account_id: Uuid,
    reason: &str,
) -> Result<(), ApiError> {
    let account = channels::lock_account(&mut *tx, tenant, account_id).await?;
    if let Ok(status) = LifecycleAction::Suspend.apply(account.status) {
        let reason = format!("suspended by the dispatcher: {reason}");
        let changes =
            channels::AccountChanges { status: Some(status), status_reason: Some(Some(&reason)), ..Default::default() };
        channels::update_account(&mut *tx, tenant, account_id, changes).await?;
        tracing::warn!(tenant_id = %tenant, channel_account_id = %account_id, %reason, "channel account suspended");
    }
    Ok(())
}
