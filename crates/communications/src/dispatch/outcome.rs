//! What a dispatch attempt leaves behind: the message's new state, its event, and any follow-up
//! (a retry job, the fallback message, a suspended channel account) — in one transaction.

use std::time::Duration;

use chrono::Utc;
use cpaas::SendError;
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde_json::Value;
use uuid::Uuid;

use super::{Dispatcher, Failure};
use crate::channels::{LifecycleAction, repository as channels};
use crate::messages::model::{EventSource, MessageStatus};
use crate::messages::queue::{self, DispatchJob};
use crate::messages::repository::{self as messages, MessageRow, NewEvent, NewMessage};

/// Records a dispatch attempt that did not end with the provider accepting the message (those
/// are recorded in batches, see [`messages::record_sent`]).
pub(crate) async fn record(
    dispatcher: &Dispatcher,
    tenant: TenantId,
    job: DispatchJob,
    message: &MessageRow,
    failure: Failure,
) -> Result<(), ApiError> {
    let pool = &dispatcher.module.pool;
    // A permanent failure may hand the next channel of the chain a message due now.
    let may_fall_back = matches!(failure, Failure::Send(_) | Failure::SendVia { .. });
    let mut tx = pool.begin().await?;
    match failure {
        Failure::Infrastructure(error) => {
            // Nothing reached a provider: hand the message back for apalis to retry the job.
            messages::set_status(&mut *tx, tenant.0, message.id, MessageStatus::Queued, None).await?;
            tx.commit().await?;
            return Err(error);
        }
        Failure::Throttled(wait) => {
            // Not an attempt: the message goes back to the queue for when its token is due. The
            // job leaves the worker at once, so a tenant at its limit holds no worker slot.
            sqlx::query!(
                r#"UPDATE communications.messages SET status = 'queued', attempts = attempts - 1,
                       status_reason = 'waiting for the channel rate limit', updated_at = now()
                   WHERE id = $1 AND status = 'sending'"#,
                message.id
            )
            .execute(&mut *tx)
            .await?;
            let run_at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            let again = DispatchJob { deferrals: job.deferrals + 1, ..job };
            queue::enqueue(&mut tx, message.lane, again, Some(run_at)).await?;
        }
        Failure::Send(error) => apply_failure(dispatcher, &mut tx, tenant, job, message, error, None).await?,
        Failure::SendVia { error, channel_account_id } => {
            apply_failure(dispatcher, &mut tx, tenant, job, message, error, Some(channel_account_id)).await?
        }
    }
    tx.commit().await?;
    if may_fall_back {
        dispatcher.module.queue_waker.wake(message.lane);
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
            if next_attempt >= dispatcher.retry.max_attempts {
                let final_reason =
                    format!("retry budget of {} attempts spent; last: {reason}", dispatcher.retry.max_attempts);
                return fail_and_fall_back(tx, tenant, message, &final_reason).await;
            }
            let delay = backoff(dispatcher, next_attempt, retry_after);
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
        SendError::Permanent { .. } => fail_and_fall_back(tx, tenant, message, &reason).await,
        SendError::TenantBlocked { .. } => {
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

/// Exponential backoff with full jitter, at least the provider's Retry-After.
fn backoff(dispatcher: &Dispatcher, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let policy = dispatcher.retry;
    let exponential = policy.base_delay.saturating_mul(1u32 << attempt.min(16)).min(policy.max_delay);
    let jittered = exponential.mul_f64(0.5 + rand_unit() * 0.5);
    jittered.max(retry_after.unwrap_or_default())
}

fn rand_unit() -> f64 {
    f64::from(Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX)
}

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
    let successor = Uuid::now_v7();
    messages::insert(
        &mut *tx,
        NewMessage {
            id: successor,
            tenant_id: tenant,
            contact_id: message.contact_id,
            conversation_id: message.conversation_id,
            channel,
            fallback: Value::Array(steps),
            recipient,
            content: next["content"].clone(),
            status: MessageStatus::Queued,
            lane: message.lane,
            scheduled_at: None,
            metadata: message.metadata.clone(),
            supersedes: Some(message.id),
        },
        Some(&format!("fallback from {} after: {reason}", message.channel.as_str())),
        source,
    )
    .await?;
    sqlx::query!(
        "UPDATE communications.messages SET status = 'superseded', superseded_by = $2, updated_at = now() WHERE id = $1",
        message.id,
        successor
    )
    .execute(&mut *tx)
    .await?;
    let note = format!("superseded by {successor} on {}", channel.as_str());
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
    queue::enqueue(
        tx,
        message.lane,
        DispatchJob { message_id: successor, tenant_id: tenant.0, attempt: 0, deferrals: 0 },
        None,
    )
    .await
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
