//! Settling sends whose outcome is `unknown` — their request left, but the answer never came
//! back (a timeout, or the process died mid-request) — without guessing, each the way its
//! provider allows (`cpaas::send::Settlement`):
//!
//! - **Lookup** (Twilio): once the request can no longer be in transit, the provider's Messages
//!   list is asked for a message to that recipient with that body since the request. Found: the
//!   message is `sent` with the provider's id (and its current status applied). Not found: the
//!   provider never created it, so it is sent again.
//! - **Await callbacks** (Meta, SES): both report every accepted message (Meta a `sent` status,
//!   SES a `Send` event) with our correlation id, and retry their webhooks when we are down (Meta
//!   for days, SNS by its delivery policy), so a callback settles the message as soon as it
//!   arrives. None within `callback_wait` of the message becoming unknown (which happens after
//!   the restart, when webhooks can reach us again): the provider never accepted it; sent again.
//! - **Unknowable** (SNS SMS: delivery status only goes to CloudWatch): the message stays
//!   `unknown`, says so in its reason, and counts in the `messages_unknowable` gauge.
//!
//! Twilio also retries a status callback only when asked to (connection overrides on the
//! callback URL), a few times within seconds; after a longer outage, `sent` Twilio messages whose
//! callbacks never came are asked about once (`confirm_once`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use cpaas::send::{Adapter, FoundMessage, SentProbe, Settlement};
use cpaas::{DeliveryStatus, ProviderEvent};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde::Deserialize;
use uuid::Uuid;

use super::{Dispatcher, channel_type};
use crate::channels::repository as channels;
use crate::messages::content::MessageContent;
use crate::messages::model::{Channel, EventSource, Lane, MessageStatus};
use crate::messages::queue::{self, DispatchJob};
use crate::messages::repository::{self as messages, NewEvent};
use crate::tracking::TrackedEvent;

/// The reason an unsettleable message keeps.
pub const UNKNOWABLE: &str =
    "unknowable: the provider (SNS SMS) reports no delivery status we can receive; it may or may not have been sent";

#[derive(Debug, Clone, Copy)]
pub struct SettleSettings {
    /// How long a message whose provider calls back waits for the callback before it is sent again.
    pub callback_wait: Duration,
    /// How long after its request a lookup is authoritative (the request timeout, and a margin).
    pub lookup_after: Duration,
    /// A `sent` Twilio message with no callback this long after sending is asked about once.
    pub confirm_after: Duration,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Found at the provider (or settled by a callback meanwhile).
    pub found: usize,
    /// The provider never had them: queued again.
    pub resent: usize,
    /// Marked unknowable.
    pub unknowable: usize,
}

struct Open {
    id: Uuid,
    tenant_id: Uuid,
    channel: Channel,
    recipient: String,
    content: serde_json::Value,
    provider: Option<String>,
    lane: Lane,
    attempts: i32,
    requested_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

/// One round over `unknown` messages that are due to be looked at.
pub async fn settle_once(dispatcher: &Dispatcher, settings: SettleSettings) -> Result<Settled, ApiError> {
    let pool = &dispatcher.module.pool;
    let due = settings.lookup_after.min(settings.callback_wait);
    let open = sqlx::query_as!(
        Open,
        r#"SELECT id, tenant_id, channel AS "channel: Channel", recipient, content, provider, lane AS "lane: Lane",
                  attempts, requested_at, updated_at
           FROM communications.messages
           WHERE status = 'unknown' AND checked_at IS NULL AND updated_at < now() - make_interval(secs => $1)
           ORDER BY updated_at LIMIT 200"#,
        due.as_secs_f64(),
    )
    .fetch_all(pool)
    .await?;
    let mut settled = Settled::default();
    for message in open {
        match settle_one(dispatcher, settings, &message).await {
            Ok(Some(Outcome::Found)) => settled.found += 1,
            Ok(Some(Outcome::Resent)) => settled.resent += 1,
            Ok(Some(Outcome::Unknowable)) => settled.unknowable += 1,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(message_id = %message.id, %error, "settling an unknown send failed; trying again later")
            }
        }
    }
    if settled != Settled::default() {
        tracing::info!(
            found = settled.found,
            resent = settled.resent,
            unknowable = settled.unknowable,
            "settled unknown sends"
        );
    }
    Ok(settled)
}

enum Outcome {
    Found,
    Resent,
    Unknowable,
}

async fn settle_one(
    dispatcher: &Dispatcher,
    settings: SettleSettings,
    message: &Open,
) -> Result<Option<Outcome>, ApiError> {
    let tenant = TenantId(message.tenant_id);
    let adapter = adapter_for(dispatcher, tenant, message.channel, message.provider.as_deref()).await?;
    let settlement = adapter.as_ref().map_or(Settlement::AwaitCallbacks, Adapter::settlement);
    let waited = Utc::now() - message.updated_at;
    match settlement {
        Settlement::Unknowable => {
            mark_unknowable(dispatcher, message).await?;
            Ok(Some(Outcome::Unknowable))
        }
        Settlement::AwaitCallbacks => {
            if waited.to_std().unwrap_or_default() < settings.callback_wait {
                return Ok(None);
            }
            let reason = format!(
                "no callback from the provider within {}s: it never had the message; sending again",
                settings.callback_wait.as_secs()
            );
            Ok(resend(dispatcher, message, &reason).await?.then_some(Outcome::Resent))
        }
        Settlement::Lookup => {
            let Some(adapter) = adapter else { return Ok(None) };
            let requested = message.requested_at.unwrap_or(message.updated_at);
            if (Utc::now() - requested).to_std().unwrap_or_default() < settings.lookup_after {
                return Ok(None);
            }
            let content = MessageContent::deserialize(&message.content).map_err(ApiError::internal)?;
            let body = content.to_cpaas().ok().and_then(|content| text_of(&content));
            let probe = SentProbe {
                recipient: recipient_of(message)?,
                body,
                correlation_id: message.id.to_string(),
                since: requested,
            };
            let candidates = adapter.find_sent(&probe).await.map_err(|e| ApiError::BadGateway(e.to_string()))?;
            match unclaimed(dispatcher, adapter.provider().as_str(), candidates).await? {
                Some(found) => {
                    apply_found(dispatcher, tenant, message.id, adapter.provider(), &found).await?;
                    Ok(Some(Outcome::Found))
                }
                None => {
                    let reason = "the provider has no such message: it never had it; sending again";
                    Ok(resend(dispatcher, message, reason).await?.then_some(Outcome::Resent))
                }
            }
        }
    }
}

fn recipient_of(message: &Open) -> Result<cpaas::Recipient, ApiError> {
    match message.channel {
        Channel::Email => Ok(cpaas::Recipient::Email(message.recipient.clone())),
        Channel::Sms | Channel::Whatsapp => Ok(cpaas::Recipient::Phone(message.recipient.clone())),
        Channel::Webchat => Err(ApiError::internal("a webchat message has no provider to settle with")),
    }
}

/// The text a provider stores as the message body.
fn text_of(content: &cpaas::Content) -> Option<String> {
    match content {
        cpaas::Content::Text { body } => Some(body.clone()),
        cpaas::Content::Media { caption, .. } => caption.clone(),
        _ => None,
    }
}

/// The adapter of the provider the message was requested from (the account's provider of that
/// kind), if the account and provider still exist.
async fn adapter_for(
    dispatcher: &Dispatcher,
    tenant: TenantId,
    channel: Channel,
    provider: Option<&str>,
) -> Result<Option<Adapter>, ApiError> {
    let Some(provider) = provider else { return Ok(None) };
    let pool = &dispatcher.module.pool;
    let accounts = channels::active_accounts_for_channels(pool, &[(tenant.0, channel_type(channel))]).await?;
    let keys: Vec<(Uuid, Uuid)> = accounts.iter().map(|a| (a.tenant_id, a.id)).collect();
    let providers = channels::providers_of_accounts(pool, &keys).await?;
    let Some(row) = providers.iter().find(|p| p.provider.as_str() == provider) else { return Ok(None) };
    match dispatcher.adapters.get(&dispatcher.module, tenant, row).await {
        Ok(adapter) => Ok(Some(adapter)),
        Err(ApiError::Validation { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The first candidate no other message of ours has claimed.
async fn unclaimed(
    dispatcher: &Dispatcher,
    provider: &str,
    candidates: Vec<FoundMessage>,
) -> Result<Option<FoundMessage>, ApiError> {
    if candidates.is_empty() {
        return Ok(None);
    }
    let ids: Vec<String> = candidates.iter().map(|c| c.provider_message_id.clone()).collect();
    let known: Vec<String> = sqlx::query_scalar!(
        r#"SELECT provider_message_id AS "id!" FROM communications.messages
           WHERE provider = $1 AND provider_message_id = ANY($2)"#,
        provider,
        &ids,
    )
    .fetch_all(&dispatcher.module.pool)
    .await?;
    Ok(candidates.into_iter().find(|c| !known.contains(&c.provider_message_id)))
}

/// Applies what the provider said as a status report would: the message adopts the provider's id
/// and moves to its status (through the same monotonic rules as webhooks).
async fn apply_found(
    dispatcher: &Dispatcher,
    tenant: TenantId,
    message_id: Uuid,
    provider: cpaas::Provider,
    found: &FoundMessage,
) -> Result<(), ApiError> {
    let events = status_events(provider, found, message_id);
    let body = serde_json::json!({
        "settled_by": "lookup",
        "provider_message_id": found.provider_message_id,
        "status": format!("{:?}", found.status).to_lowercase(),
        "error_code": found.error_code,
    })
    .to_string();
    let envelope_id = format!("lookup:{}:{:?}", found.provider_message_id, found.status);
    dispatcher
        .module
        .record_webhook(TrackedEvent {
            provider: provider.as_str(),
            kind: "lookup",
            tenants: &[tenant.0],
            envelope_id: Some(&envelope_id),
            body: &body,
            events: &events,
            correlation: Some(message_id),
        })
        .await?;
    Ok(())
}

/// A found message as status events: `sent` first (so the id is adopted even when the current
/// status is a failure), then its current status.
fn status_events(provider: cpaas::Provider, found: &FoundMessage, message_id: Uuid) -> Vec<ProviderEvent> {
    let event = |status: DeliveryStatus, error: Option<cpaas::ProviderError>| ProviderEvent::StatusUpdate {
        provider,
        provider_message_id: found.provider_message_id.clone(),
        status,
        timestamp: found.created_at,
        recipient: None,
        error,
        correlation_id: Some(message_id.to_string()),
    };
    let mut events = vec![event(DeliveryStatus::Sent, None)];
    if found.status != DeliveryStatus::Sent {
        // Read as Twilio's own status callback would be, so its error codes are classed the same.
        let status = match found.status {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            _ => "undelivered",
        };
        let mut params = vec![
            ("MessageSid".to_owned(), found.provider_message_id.clone()),
            ("MessageStatus".to_owned(), status.to_owned()),
        ];
        if let Some(code) = &found.error_code {
            params.push(("ErrorCode".to_owned(), code.clone()));
        }
        match cpaas::webhooks::twilio::parse_message_status(&params, found.created_at) {
            ProviderEvent::StatusUpdate { status, error, .. } => events.push(event(status, error)),
            _ => events.push(event(found.status, None)),
        }
    }
    events
}

/// Puts an `unknown` message back in the queue with a new job; false if it was settled meanwhile.
async fn resend(dispatcher: &Dispatcher, message: &Open, reason: &str) -> Result<bool, ApiError> {
    let mut tx = dispatcher.module.pool.begin().await?;
    let updated = sqlx::query!(
        r#"UPDATE communications.messages SET status = 'queued', status_reason = $2, claimed_by = NULL, claim = NULL,
               requested_at = NULL, updated_at = now()
           WHERE id = $1 AND status = 'unknown'"#,
        message.id,
        reason,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    let event = NewEvent {
        tenant_id: message.tenant_id,
        message_id: message.id,
        status: MessageStatus::Queued,
        reason: Some(reason),
        source: EventSource::System,
        payload: None,
        occurred_at: None,
    };
    messages::record_event(&mut *tx, event).await?;
    let job = DispatchJob::again(message.id, message.tenant_id, message.attempts);
    queue::enqueue(&mut tx, message.lane, job, None).await?;
    tx.commit().await?;
    dispatcher.module.queue_waker.wake(message.lane);
    Ok(true)
}

async fn mark_unknowable(dispatcher: &Dispatcher, message: &Open) -> Result<(), ApiError> {
    let mut tx = dispatcher.module.pool.begin().await?;
    let updated = sqlx::query!(
        r#"UPDATE communications.messages SET status_reason = $2, checked_at = now()
           WHERE id = $1 AND status = 'unknown'"#,
        message.id,
        UNKNOWABLE,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        let event = NewEvent {
            tenant_id: message.tenant_id,
            message_id: message.id,
            status: MessageStatus::Unknown,
            reason: Some(UNKNOWABLE),
            source: EventSource::System,
            payload: None,
            occurred_at: None,
        };
        messages::record_event(&mut *tx, event).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Asks Twilio about `sent` messages whose callbacks never came (each once); returns how many
/// were asked.
pub async fn confirm_once(dispatcher: &Dispatcher, settings: SettleSettings) -> Result<usize, ApiError> {
    let pool = &dispatcher.module.pool;
    let rows = sqlx::query!(
        r#"SELECT id, tenant_id, channel AS "channel: Channel", provider_message_id AS "provider_message_id!"
           FROM communications.messages
           WHERE status = 'sent' AND provider = 'twilio' AND checked_at IS NULL
             AND sent_at < now() - make_interval(secs => $1)
           ORDER BY sent_at LIMIT 200"#,
        settings.confirm_after.as_secs_f64(),
    )
    .fetch_all(pool)
    .await?;
    let mut asked = 0;
    for row in rows {
        let tenant = TenantId(row.tenant_id);
        let outcome = async {
            let Some(adapter) = adapter_for(dispatcher, tenant, row.channel, Some("twilio")).await? else {
                return Ok::<_, ApiError>(());
            };
            let found = adapter
                .fetch_status(&row.provider_message_id)
                .await
                .map_err(|e| ApiError::BadGateway(e.to_string()))?;
            if let Some(found) = found.filter(|f| f.status != DeliveryStatus::Sent) {
                apply_found(dispatcher, tenant, row.id, adapter.provider(), &found).await?;
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                asked += 1;
                sqlx::query!("UPDATE communications.messages SET checked_at = now() WHERE id = $1", row.id)
                    .execute(pool)
                    .await?;
            }
            Err(error) => tracing::warn!(message_id = %row.id, %error, "asking Twilio for a message's status failed"),
        }
    }
    Ok(asked)
}

/// Settles and confirms every `interval` until the task is dropped.
pub async fn run(dispatcher: Dispatcher, settings: SettleSettings, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = settle_once(&dispatcher, settings).await {
            tracing::warn!(%error, "settling unknown sends failed");
        }
        if let Err(error) = confirm_once(&dispatcher, settings).await {
            tracing::warn!(%error, "confirming Twilio statuses failed");
        }
    }
}
