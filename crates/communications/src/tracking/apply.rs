//! Storing a verified webhook envelope and applying its events, in one transaction: the
//! provider gets its 200 only once both are durable.

use chrono::{DateTime, Utc};
use cpaas::{DeliveryStatus, ProviderError, ProviderEvent};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde_json::json;
use uuid::Uuid;

use super::merge;
use crate::Communications;
use crate::dispatch::outcome;
use crate::messages::model::{EventSource, MessageStatus};
use crate::messages::repository::{self as messages, MessageRow, NewEvent};

/// One verified envelope, as received.
#[derive(Debug)]
pub struct TrackedEvent<'a> {
    /// `meta`, `ses`, `sns` or `twilio`: the provider that posted it.
    pub provider: &'a str,
    /// `status`, `inbound`, `voice`, `notification`, …
    pub kind: &'a str,
    /// The tenant named by the webhook URL (Meta, Twilio); events for other tenants' messages
    /// are not applied. `None` for account-level webhooks (SES via SNS).
    pub tenant: Option<Uuid>,
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
    /// No message has that provider id (yet): kept for reprocessing.
    Unmatched,
    /// Inbound traffic, kept for the inbox.
    Stored,
    Duplicate,
    Ignored,
}

impl EnvelopeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unmatched => "unmatched",
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

impl Communications {
    pub async fn record_webhook(&self, envelope: TrackedEvent<'_>) -> Result<EnvelopeOutcome, ApiError> {
        let mut tx = self.pool.begin().await?;
        let id = Uuid::now_v7();
        let inserted = sqlx::query!(
            r#"INSERT INTO communications.webhook_envelopes (id, tenant_id, provider, kind, provider_id, body, outcome)
               VALUES ($1, $2, $3, $4, $5, $6, 'received') ON CONFLICT DO NOTHING"#,
            id,
            envelope.tenant,
            envelope.provider,
            envelope.kind,
            envelope.envelope_id,
            envelope.body,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(EnvelopeOutcome::Duplicate);
        }
        let payload: serde_json::Value =
            serde_json::from_str(envelope.body).unwrap_or_else(|_| json!({ "raw": envelope.body }));
        let mut outcomes = Vec::new();
        let mut tenant = envelope.tenant;
        for event in envelope.events {
            let outcome = match event {
                ProviderEvent::StatusUpdate {
                    provider,
                    provider_message_id,
                    status,
                    timestamp,
                    recipient,
                    error,
                    correlation_id,
                } => {
                    let update = StatusUpdate {
                        provider: provider.as_str(),
                        provider_message_id,
                        status: *status,
                        timestamp: *timestamp,
                        recipient: recipient.as_deref(),
                        error: error.as_ref(),
                    };
                    // The event's own echo first; Twilio's comes with the envelope (its URL).
                    let correlation = correlation_id.as_deref().and_then(|id| id.parse().ok()).or(envelope.correlation);
                    let (outcome, message_tenant) =
                        apply_status(&mut tx, envelope.tenant, correlation, update, &payload).await?;
                    tenant = tenant.or(message_tenant);
                    outcome
                }
                ProviderEvent::InboundMessage { provider: cpaas::Provider::Meta, to, .. } if tenant.is_none() => {
                    tenant = tenant_of_meta_number(&mut tx, to).await?;
                    EnvelopeOutcome::Stored
                }
                ProviderEvent::InboundMessage { .. } | ProviderEvent::MissedCall { .. } => EnvelopeOutcome::Stored,
                ProviderEvent::Unknown { .. } => EnvelopeOutcome::Ignored,
            };
            outcomes.push(outcome);
        }
        let overall =
            [EnvelopeOutcome::Unmatched, EnvelopeOutcome::Stored, EnvelopeOutcome::Applied, EnvelopeOutcome::Duplicate]
                .into_iter()
                .find(|candidate| outcomes.contains(candidate))
                .unwrap_or(EnvelopeOutcome::Ignored);
        sqlx::query!(
            "UPDATE communications.webhook_envelopes SET outcome = $2, tenant_id = $3 WHERE id = $1",
            id,
            overall.as_str(),
            tenant,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("webhook_envelopes_total", "provider" => envelope.provider.to_owned(), "outcome" => overall.as_str()).increment(1);
        Ok(overall)
    }
}

struct StatusUpdate<'a> {
    provider: &'a str,
    provider_message_id: &'a str,
    status: DeliveryStatus,
    timestamp: DateTime<Utc>,
    recipient: Option<&'a str>,
    error: Option<&'a ProviderError>,
}

async fn apply_status(
    tx: &mut sqlx::PgConnection,
    tenant_hint: Option<Uuid>,
    correlation: Option<Uuid>,
    update: StatusUpdate<'_>,
    payload: &serde_json::Value,
) -> Result<(EnvelopeOutcome, Option<Uuid>), ApiError> {
    let found =
        messages::lock_by_provider_id(&mut *tx, update.provider, update.provider_message_id, tenant_hint).await?;
    let found = match (found, correlation) {
        (Some(message), _) => Some(message),
        // The send's outcome was never recorded (or not yet): the callback tells us its provider id.
        (None, Some(id)) => {
            messages::adopt_provider_id(&mut *tx, id, tenant_hint, update.provider, update.provider_message_id).await?
        }
        (None, None) => None,
    };
    let Some(message) = found else {
        return Ok((EnvelopeOutcome::Unmatched, None));
    };
    let tenant = TenantId(message.tenant_id);
    let mapped = merge::status_of(update.status).unwrap_or(message.status);
    let reason = update.error.map(|e| format!("{}: {}", e.code, e.reason));
    let dedupe_key = format!(
        "{}:{:?}:{}:{}:{}",
        update.provider,
        update.status,
        update.timestamp.timestamp_millis(),
        update.error.map(|e| e.code.as_str()).unwrap_or_default(),
        update.recipient.unwrap_or_default(),
    );
    let recorded = messages::record_provider_event(
        &mut *tx,
        NewEvent {
            tenant_id: tenant.0,
            message_id: message.id,
            status: mapped,
            reason: Some(reason.as_deref().unwrap_or(&format!("{:?}", update.status).to_lowercase())),
            source: EventSource::Provider,
            payload: Some(payload.clone()),
            occurred_at: Some(update.timestamp),
        },
        &dedupe_key,
    )
    .await?;
    if !recorded {
        return Ok((EnvelopeOutcome::Duplicate, Some(tenant.0)));
    }
    if let Some(next) = merge::next(message.status, update.status) {
        messages::advance(&mut *tx, message.id, next, reason.as_deref(), update.timestamp).await?;
        if next == MessageStatus::Failed && update.error.is_some_and(|e| e.permanent) {
            let failed = MessageRow { status: MessageStatus::Failed, ..message.clone() };
            outcome::fall_back(tx, tenant, &failed, reason.as_deref().unwrap_or("failed"), EventSource::Provider)
                .await?;
        }
    }
    let suppress = match update.status {
        DeliveryStatus::Bounced => update.error.is_some_and(|e| e.permanent),
        DeliveryStatus::Complained => true,
        _ => false,
    };
    if suppress {
        let address = update.recipient.unwrap_or(&message.recipient);
        let why =
            format!("{:?}: {}", update.status, reason.as_deref().unwrap_or("reported by the provider")).to_lowercase();
        messages::suppress(&mut *tx, tenant.0, message.channel, address, &why).await?;
    }
    Ok((EnvelopeOutcome::Applied, Some(tenant.0)))
}

/// The tenant whose WhatsApp channel uses this Meta phone number id.
async fn tenant_of_meta_number(tx: &mut sqlx::PgConnection, phone_number_id: &str) -> Result<Option<Uuid>, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT tenant_id AS "tenant_id!" FROM communications.provider_configs
           WHERE provider = 'meta' AND tenant_id IS NOT NULL AND settings->>'phone_number_id' = $1
           ORDER BY created_at DESC LIMIT 1"#,
        phone_number_id,
    )
    .fetch_optional(&mut *tx)
    .await?)
}
