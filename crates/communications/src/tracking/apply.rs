//! Storing a verified webhook envelope and applying its events, in one transaction (shared with
//! the envelopes that arrived with it, `super::batch`): the provider gets its 200 only once both
//! are durable.

use chrono::{DateTime, Utc};
use cpaas::{DeliveryStatus, FailureClass, ProviderError, ProviderEvent};
use kernel::error::ApiError;
use serde_json::json;
use uuid::Uuid;

use super::merge;
use super::repository::{self as tracking, Pending};
use crate::Communications;
use crate::dispatch::{RetryPolicy, outcome};
use crate::messages::model::{Channel, EventSource, MessageStatus};
use crate::messages::repository::{self as messages, MessageRow, NewEvent};

/// One verified envelope, as received.
#[derive(Debug)]
pub struct TrackedEvent<'a> {
    /// `meta`, `ses`, `sns` or `twilio`: the provider that posted it.
    pub provider: &'a str,
    /// `status`, `inbound`, `voice`, `notification`, …
    pub kind: &'a str,
    /// The tenants it may concern: the one the webhook URL names (Meta, Twilio), or those whose
    /// SNS topic it came on. Empty: any tenant (the platform's own Meta app and SNS topics), the
    /// message tells. Events about other tenants' messages are not applied.
    pub tenants: &'a [Uuid],
    /// The provider's id for the envelope, where it has one: a redelivery is a no-op.
    pub envelope_id: Option<&'a str>,
    pub body: &'a str,
    pub events: &'a [ProviderEvent],
    /// Our message id when the provider echoes it (Twilio's per-message status callback URL):
    /// finds the message even if its provider id was never recorded.
    pub correlation: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeOutcome {
    Applied,
    /// No message has that provider id (yet): tried again for a while (`tracking::rematch`).
    Unmatched,
    /// Inbound traffic, kept for the inbox.
    Stored,
    Duplicate,
    Ignored,
    /// Signed, but from a source we do not expect (an SNS topic nobody configured): kept, no effect.
    Refused,
    /// Unmatched until its time was up.
    Expired,
}

impl EnvelopeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unmatched => "unmatched",
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Refused => "refused",
            Self::Expired => "expired",
        }
    }

    /// What an envelope with these per-event outcomes amounts to: anything left to match first.
    fn overall(outcomes: &[EnvelopeOutcome]) -> EnvelopeOutcome {
        [EnvelopeOutcome::Unmatched, EnvelopeOutcome::Stored, EnvelopeOutcome::Applied, EnvelopeOutcome::Duplicate]
            .into_iter()
            .find(|candidate| outcomes.contains(candidate))
            .unwrap_or(EnvelopeOutcome::Ignored)
    }
}

/// The first retry of an unmatched envelope; each later one waits twice as long, up to a minute.
pub(crate) const FIRST_REMATCH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

impl Communications {
    /// Stores a verified envelope and applies its events; durable when this returns. Envelopes
    /// arriving together share a transaction (`tracking::batch`).
    pub async fn record_webhook(&self, envelope: TrackedEvent<'_>) -> Result<EnvelopeOutcome, ApiError> {
        let started = std::time::Instant::now();
        let recorder = self.recorder.get_or_init(|| super::batch::spawn(self.pool.clone(), self.retry));
        let outcome = recorder
            .call(super::batch::Envelope::of(&envelope))
            .await
            .ok_or_else(|| ApiError::internal("the webhook recorder stopped"))??;
        if outcome == EnvelopeOutcome::Applied {
            // New conversations and messages, statuses of replies: the streams read them now.
            self.feed.signal();
            // A text may have queued a dialogue turn.
            self.dialogue_wake.notify_one();
        }
        metrics::counter!("webhook_envelopes_total", "provider" => envelope.provider.to_owned(), "outcome" => outcome.as_str()).increment(1);
        metrics::histogram!("webhook_processing_seconds", "provider" => envelope.provider.to_owned())
            .record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// Keeps a signed envelope we refuse (an SNS topic nobody configured, a record from another
    /// AWS account) for audit, without applying anything. A redelivery is kept once.
    pub async fn record_refused(
        &self,
        provider: &str,
        kind: &str,
        envelope_id: &str,
        body: &[u8],
    ) -> Result<(), ApiError> {
        let body = String::from_utf8_lossy(body);
        let refused_id = format!("refused:{envelope_id}");
        let outcome = EnvelopeOutcome::Refused.as_str();
        tracking::insert_envelope(&self.pool, Uuid::now_v7(), None, provider, kind, Some(&refused_id), &body, outcome)
            .await?;
        metrics::counter!("webhook_envelopes_total", "provider" => provider.to_owned(), "outcome" => outcome)
            .increment(1);
        Ok(())
    }
}

/// Stores one envelope and applies its events inside `tx`, which the caller commits. A
/// redelivery (the provider's id for the envelope on record already) writes nothing.
pub(crate) async fn record_in(
    tx: &mut sqlx::PgConnection,
    retry: &RetryPolicy,
    envelope: &TrackedEvent<'_>,
) -> Result<EnvelopeOutcome, ApiError> {
    let id = Uuid::now_v7();
    let inserted = tracking::insert_envelope(
        &mut *tx,
        id,
        named_tenant(envelope),
        envelope.provider,
        envelope.kind,
        envelope.envelope_id,
        envelope.body,
        "received",
    )
    .await?;
    if !inserted {
        return Ok(EnvelopeOutcome::Duplicate);
    }
    apply_and_settle(tx, retry, id, envelope).await
}

/// The tenant an envelope's URL names, if it names exactly one.
pub(crate) fn named_tenant(envelope: &TrackedEvent<'_>) -> Option<Uuid> {
    match envelope.tenants {
        [only] => Some(*only),
        _ => None,
    }
}

/// Applies the events of an envelope stored as received (`id`) and records their outcome.
pub(crate) async fn apply_and_settle(
    tx: &mut sqlx::PgConnection,
    retry: &RetryPolicy,
    id: Uuid,
    envelope: &TrackedEvent<'_>,
) -> Result<EnvelopeOutcome, ApiError> {
    let applied =
        apply_events(tx, retry, envelope.tenants, envelope.correlation, envelope.events, envelope.body).await?;
    let pending = match applied.outcome {
        EnvelopeOutcome::Unmatched => Some(Pending {
            events: serde_json::to_value(envelope.events).map_err(ApiError::internal)?,
            scope: envelope.tenants,
            correlation: envelope.correlation,
            retry_at: Utc::now() + chrono::Duration::from_std(FIRST_REMATCH_DELAY).unwrap_or_default(),
        }),
        _ => None,
    };
    tracking::settle_envelope(&mut *tx, id, applied.outcome.as_str(), applied.tenant, pending).await?;
    Ok(applied.outcome)
}

/// The raw payload the trail keeps with a provider event: the body, parsed when it is JSON.
pub(crate) fn payload_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|_| json!({ "raw": body }))
}

/// What makes a provider event the same one again: a redelivery is recorded once.
pub(crate) fn dedupe_key(
    provider: &str,
    status: DeliveryStatus,
    timestamp: DateTime<Utc>,
    error: Option<&ProviderError>,
    recipient: Option<&str>,
) -> String {
    format!(
        "{}:{:?}:{}:{}:{}",
        provider,
        status,
        timestamp.timestamp_millis(),
        error.map(|e| e.code.as_str()).unwrap_or_default(),
        recipient.unwrap_or_default(),
    )
}

/// What applying an envelope's events came to.
pub(crate) struct Applied {
    pub outcome: EnvelopeOutcome,
    /// The tenant it turned out to concern, when it tells.
    pub tenant: Option<Uuid>,
    /// Whether it carries inbound traffic (kept for the inbox whatever became of its statuses).
    pub inbound: bool,
}

/// Applies an envelope's events inside `tx` (first delivery, or another try of an unmatched one).
pub(crate) async fn apply_events(
    tx: &mut sqlx::PgConnection,
    retry: &RetryPolicy,
    scope: &[Uuid],
    envelope_correlation: Option<Uuid>,
    events: &[ProviderEvent],
    body: &str,
) -> Result<Applied, ApiError> {
    let payload = payload_of(body);
    let mut outcomes = Vec::with_capacity(events.len());
    let mut tenant = match scope {
        [only] => Some(*only),
        _ => None,
    };
    for event in events {
        let outcome = match event {
            ProviderEvent::StatusUpdate { correlation_id, .. } => match StatusUpdate::of(event) {
                Some(update) => {
                    // The event's own echo first; Twilio's comes with the envelope (its URL).
                    let correlation = correlation_id.as_deref().and_then(|id| id.parse().ok()).or(envelope_correlation);
                    let (outcome, message_tenant) =
                        apply_status(tx, retry, scope, correlation, update, &payload).await?;
                    tenant = tenant.or(message_tenant);
                    outcome
                }
                None => EnvelopeOutcome::Ignored,
            },
            ProviderEvent::InboundMessage { provider, to, .. } => {
                if tenant.is_none() {
                    tenant = match provider {
                        cpaas::Provider::Meta => tracking::tenant_of_meta_number(&mut *tx, to).await?,
                        // Mail to a domain a tenant sends from, among the topic's tenants.
                        cpaas::Provider::Ses => tracking::tenant_of_mail_domain(&mut *tx, to, scope).await?,
                        _ => None,
                    };
                }
                // Without a tenant it is kept for later; with one it becomes a conversation now.
                match tenant {
                    None => EnvelopeOutcome::Stored,
                    Some(tenant) => match crate::inbox::inbound::receive(tx, tenant, event).await? {
                        crate::inbox::inbound::Received::Duplicate => EnvelopeOutcome::Duplicate,
                        crate::inbox::inbound::Received::Stored { conversation_id, message_id, .. } => {
                            after_inbound(tx, tenant, event, conversation_id, message_id).await?;
                            EnvelopeOutcome::Applied
                        }
                        crate::inbox::inbound::Received::NotInbound => EnvelopeOutcome::Applied,
                    },
                }
            }
            // Calls are answered by the voice webhooks (`crate::voice`), never through here.
            ProviderEvent::IncomingCall { .. }
            | ProviderEvent::MissedCall { .. }
            | ProviderEvent::CallCompleted { .. } => EnvelopeOutcome::Ignored,
            ProviderEvent::Unknown { .. } => EnvelopeOutcome::Ignored,
        };
        outcomes.push(outcome);
    }
    let inbound = outcomes.contains(&EnvelopeOutcome::Stored);
    Ok(Applied { outcome: EnvelopeOutcome::overall(&outcomes), tenant, inbound })
}

/// What a stored inbound SMS means beyond the inbox: consent keywords take effect now, and a
/// text for the booking dialogue (or HELP) becomes a turn for its worker.
async fn after_inbound(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    event: &ProviderEvent,
    conversation: Uuid,
    message: Uuid,
) -> Result<(), ApiError> {
    let ProviderEvent::InboundMessage {
        channel: cpaas::Channel::Sms,
        from,
        content: cpaas::InboundContent::Text { body },
        ..
    } = event
    else {
        return Ok(());
    };
    let keyword = crate::compliance::on_inbound_text(tx, tenant, conversation, message, from, body).await?;
    let help = keyword == Some(crate::compliance::Keyword::Help);
    crate::dialogue::queue_turn(tx, tenant, conversation, message, body, help).await?;
    Ok(())
}

/// One status report of an envelope, as both paths read it.
pub(crate) struct StatusUpdate<'a> {
    pub provider: &'a str,
    pub provider_message_id: &'a str,
    pub status: DeliveryStatus,
    pub timestamp: DateTime<Utc>,
    pub recipient: Option<&'a str>,
    pub error: Option<&'a ProviderError>,
}

impl<'a> StatusUpdate<'a> {
    /// The status report `event` is, if it is one.
    pub(crate) fn of(event: &'a ProviderEvent) -> Option<Self> {
        match event {
            ProviderEvent::StatusUpdate {
                provider, provider_message_id, status, timestamp, recipient, error, ..
            } => Some(StatusUpdate {
                provider: provider.as_str(),
                provider_message_id,
                status: *status,
                timestamp: *timestamp,
                recipient: recipient.as_deref(),
                error: error.as_ref(),
            }),
            _ => None,
        }
    }
}

async fn apply_status(
    tx: &mut sqlx::PgConnection,
    retry: &RetryPolicy,
    scope: &[Uuid],
    correlation: Option<Uuid>,
    update: StatusUpdate<'_>,
    payload: &serde_json::Value,
) -> Result<(EnvelopeOutcome, Option<Uuid>), ApiError> {
    let found = tracking::lock_by_provider_id(&mut *tx, update.provider, update.provider_message_id, scope).await?;
    let found = match (found, correlation) {
        (Some(message), _) => Some(message),
        // The send's outcome was never recorded (or not yet): the callback tells us its provider id.
        (None, Some(id)) => {
            tracking::adopt_provider_id(&mut *tx, id, scope, update.provider, update.provider_message_id).await?
        }
        (None, None) => None,
    };
    let Some(message) = found else {
        return Ok((EnvelopeOutcome::Unmatched, None));
    };
    let tenant = message.tenant_id;
    let reason = update.error.map(|e| format!("{}: {}", e.code, e.reason));
    let dedupe_key = dedupe_key(update.provider, update.status, update.timestamp, update.error, update.recipient);
    // A report about an address this message was not sent to (a bounce listing a stranger) is
    // kept on the record and changes nothing: we only ever act on our own recipient.
    if let Some(stranger) = update.recipient.filter(|named| names_another_recipient(&message, update.status, named)) {
        let note =
            format!("{:?} reported for {stranger}, who is not a recipient of this message: ignored", update.status)
                .to_lowercase();
        let event = provider_event(&message, message.status, &note, payload, update.timestamp);
        let recorded = tracking::record_provider_event(&mut *tx, event, &dedupe_key).await?;
        let outcome = if recorded { EnvelopeOutcome::Ignored } else { EnvelopeOutcome::Duplicate };
        return Ok((outcome, Some(tenant)));
    }
    let mapped = merge::status_of(update.status).unwrap_or(message.status);
    let trail_reason = reason.clone().unwrap_or_else(|| format!("{:?}", update.status).to_lowercase());
    let event = provider_event(&message, mapped, &trail_reason, payload, update.timestamp);
    if !tracking::record_provider_event(&mut *tx, event, &dedupe_key).await? {
        return Ok((EnvelopeOutcome::Duplicate, Some(tenant)));
    }
    if let Some(next) = merge::next(message.status, update.status) {
        tracking::advance(&mut *tx, message.id, next, reason.as_deref(), update.timestamp).await?;
        if next == MessageStatus::Failed {
            // Without a class the provider told us nothing more: this message is lost, move on.
            let class = update.error.map_or(FailureClass::Transient, |e| e.class);
            let failed = MessageRow { status: MessageStatus::Failed, ..message.clone() };
            outcome::after_reported_failure(tx, retry, &failed, class, &trail_reason).await?;
        }
    }
    let suppress = matches!(update.status, DeliveryStatus::Bounced | DeliveryStatus::Complained)
        && update.error.is_some_and(ProviderError::is_permanent);
    if suppress {
        let why = format!("{:?}: {trail_reason}", update.status).to_lowercase();
        messages::suppress(&mut *tx, tenant, message.channel, &message.recipient, &why).await?;
    }
    if message.channel == Channel::Sms && update.error.is_some_and(|e| e.code == outcome::UNSUBSCRIBED) {
        let source = crate::compliance::Source::Provider("twilio 21610");
        crate::compliance::opt_out(tx, tenant, message.channel, &message.recipient, source, Some(message.id)).await?;
    }
    Ok((EnvelopeOutcome::Applied, Some(tenant)))
}

/// Whether an event naming `named` is about someone other than the message's recipient. Every
/// message has one recipient, so on email any per-recipient event naming another address is not
/// about it; on other channels providers name recipients in their own formats (Meta's WhatsApp
/// id, not the number we sent to), so only the reports that suppress an address are checked.
fn names_another_recipient(message: &MessageRow, status: DeliveryStatus, named: &str) -> bool {
    let suppressing = matches!(status, DeliveryStatus::Bounced | DeliveryStatus::Complained);
    if message.channel != Channel::Email && !suppressing {
        return false;
    }
    !named.trim().eq_ignore_ascii_case(message.recipient.trim())
}

fn provider_event<'a>(
    message: &MessageRow,
    status: MessageStatus,
    reason: &'a str,
    payload: &serde_json::Value,
    at: DateTime<Utc>,
) -> NewEvent<'a> {
    NewEvent {
        tenant_id: message.tenant_id,
        message_id: message.id,
        status,
        reason: Some(reason),
        source: EventSource::Provider,
        payload: Some(payload.clone()),
        occurred_at: Some(at),
    }
}
