//! A batch of webhook envelopes in a handful of statements (`super::batch`'s shared transaction).
//!
//! Almost every callback at volume is a plain status report — Twilio's `sent` and `delivered`,
//! Meta's `sent`, `delivered` and `read` — about a message whose provider id is on record. Those
//! are applied set-wise: the batch's envelopes claimed in one insert, their messages locked in
//! one select (in id order), their trail events in one insert, the forward moves in one update
//! and the envelopes' outcomes in another: five statements for the batch instead of five for
//! each callback. The rules are the one-by-one path's (`super::apply`): an event on record
//! already changes nothing, statuses only move forward on the lattice, in arrival order within
//! the batch. Everything else — failures (which hand over), bounces and complaints (which
//! suppress), a named recipient on email, inbound traffic, a message not found by its provider
//! id (adopted by correlation id, or kept to match later), an envelope several tenants may
//! concern — takes the one-by-one path, in the same transaction, after the plain ones.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use cpaas::{DeliveryStatus, ProviderEvent};
use kernel::error::ApiError;
use uuid::Uuid;

use super::apply::{
    EnvelopeOutcome, StatusUpdate, TrackedEvent, apply_and_settle, dedupe_key, named_tenant, payload_of,
};
use super::merge;
use super::repository::{self as tracking, Advance, KeyedEvent, NewEnvelope};
use crate::dispatch::RetryPolicy;
use crate::messages::model::{Channel, MessageStatus};
use crate::messages::repository::MessageRow;

/// Stores and applies `envelopes` inside `tx` (in their order, which the caller chose), and
/// says what became of each.
pub(crate) async fn record_all(
    tx: &mut sqlx::PgConnection,
    retry: &RetryPolicy,
    envelopes: &[TrackedEvent<'_>],
) -> Result<Vec<EnvelopeOutcome>, ApiError> {
    let ids: Vec<Uuid> = envelopes.iter().map(|_| Uuid::now_v7()).collect();
    let rows: Vec<NewEnvelope<'_>> = envelopes
        .iter()
        .zip(&ids)
        .map(|(envelope, id)| NewEnvelope {
            id: *id,
            tenant: named_tenant(envelope),
            provider: envelope.provider,
            kind: envelope.kind,
            provider_id: envelope.envelope_id,
            body: envelope.body,
        })
        .collect();
    let claimed: HashSet<Uuid> = tracking::insert_envelopes(&mut *tx, &rows).await?.into_iter().collect();
    // Not claimed: a redelivery, or a copy of an envelope earlier in this batch.
    let mut outcomes = vec![EnvelopeOutcome::Duplicate; envelopes.len()];
    let claimed_at: Vec<usize> = (0..envelopes.len()).filter(|&at| claimed.contains(&ids[at])).collect();

    let candidates: Vec<usize> = claimed_at.iter().copied().filter(|&at| plain(&envelopes[at])).collect();
    let mut messages = lock_messages(tx, envelopes, &candidates).await?;
    let mut careful: Vec<usize> = claimed_at.iter().copied().filter(|at| !candidates.contains(at)).collect();

    let mut events: Vec<KeyedEvent> = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    let mut moved: HashMap<Uuid, Moves> = HashMap::new();
    for at in candidates {
        let envelope = &envelopes[at];
        let Some(found) = messages_of(envelope, &messages) else {
            careful.push(at);
            continue;
        };
        let payload = payload_of(envelope.body);
        let mut keys = Vec::with_capacity(found.len());
        for (update, message_id) in status_updates(envelope).zip(found) {
            let Some(message) = messages.get_mut(&message_id) else { continue };
            let key = dedupe_key(update.provider, update.status, update.timestamp, update.error, update.recipient);
            let mapped = merge::status_of(update.status).unwrap_or(message.status);
            events.push(KeyedEvent {
                tenant_id: message.tenant_id,
                message_id,
                status: mapped,
                reason: format!("{:?}", update.status).to_lowercase(),
                payload: payload.clone(),
                occurred_at: update.timestamp,
                dedupe_key: key.clone(),
            });
            // An event on record already moved the message when it was new: `next` is `None`
            // for it now, so the moves need not wait for the insert's answer.
            if let Some(next) = merge::next(message.status, update.status) {
                message.status = next;
                moved.entry(message_id).or_default().reach(next, update.timestamp);
            }
            keys.push((message_id, key));
        }
        let tenant = keys.first().and_then(|(id, _)| messages.get(id)).map(|m| m.tenant_id);
        planned.push(Planned { at, tenant, keys });
    }

    let recorded: HashSet<(Uuid, String)> = match events.is_empty() {
        true => HashSet::new(),
        false => tracking::record_provider_events(&mut *tx, &events).await?.into_iter().collect(),
    };
    let advances: Vec<Advance> = moved.into_iter().filter_map(|(id, moves)| moves.advance(id)).collect();
    if !advances.is_empty() {
        tracking::advance_many(&mut *tx, &advances).await?;
    }
    let mut settled: Vec<(Uuid, &str, Option<Uuid>)> = Vec::with_capacity(planned.len());
    for Planned { at, tenant, keys } in &planned {
        let applied = keys.iter().any(|key| recorded.contains(key));
        outcomes[*at] = if applied { EnvelopeOutcome::Applied } else { EnvelopeOutcome::Duplicate };
        settled.push((ids[*at], outcomes[*at].as_str(), *tenant));
    }
    if !settled.is_empty() {
        tracking::settle_envelopes(&mut *tx, &settled).await?;
    }

    careful.sort_unstable();
    for at in careful {
        outcomes[at] = apply_and_settle(tx, retry, ids[at], &envelopes[at]).await?;
    }
    Ok(outcomes)
}

/// A plain envelope on its way: its position, the tenant it concerns, and its events' (message,
/// dedupe key), by which the trail's insert says whether any was new.
struct Planned {
    at: usize,
    tenant: Option<Uuid>,
    keys: Vec<(Uuid, String)>,
}

/// Status reports only, each moving a message forward or changing nothing, about tenants the
/// envelope names at most one of: no failure, bounce or complaint (those hand over or suppress).
fn plain(envelope: &TrackedEvent<'_>) -> bool {
    envelope.tenants.len() <= 1
        && !envelope.events.is_empty()
        && envelope.events.iter().all(|event| {
            matches!(
                event,
                ProviderEvent::StatusUpdate {
                    status: DeliveryStatus::Sent
                        | DeliveryStatus::Delivered
                        | DeliveryStatus::Read
                        | DeliveryStatus::Opened,
                    error: None,
                    ..
                }
            )
        })
}

fn status_updates<'a>(envelope: &'a TrackedEvent<'_>) -> impl Iterator<Item = StatusUpdate<'a>> {
    envelope.events.iter().filter_map(StatusUpdate::of)
}

/// Locks the messages the candidates' events name, by provider id, keyed by message id.
async fn lock_messages(
    tx: &mut sqlx::PgConnection,
    envelopes: &[TrackedEvent<'_>],
    candidates: &[usize],
) -> Result<HashMap<Uuid, MessageRow>, ApiError> {
    let (providers, provider_ids): (Vec<&str>, Vec<&str>) = candidates
        .iter()
        .flat_map(|&at| status_updates(&envelopes[at]))
        .map(|update| (update.provider, update.provider_message_id))
        .unzip();
    if providers.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = tracking::lock_by_provider_ids(tx, &providers, &provider_ids).await?;
    Ok(rows.into_iter().map(|row| (row.id, row)).collect())
}

/// The message each of the envelope's events is about, if every one is found in its scope and
/// none needs the careful path's recipient check (email names its recipient per event).
fn messages_of(envelope: &TrackedEvent<'_>, messages: &HashMap<Uuid, MessageRow>) -> Option<Vec<Uuid>> {
    status_updates(envelope)
        .map(|update| {
            let message = messages.values().find(|m| {
                m.provider.as_deref() == Some(update.provider)
                    && m.provider_message_id.as_deref() == Some(update.provider_message_id)
                    && (envelope.tenants.is_empty() || envelope.tenants.contains(&m.tenant_id))
            })?;
            let checked = message.channel == Channel::Email && update.recipient.is_some();
            (!checked).then_some(message.id)
        })
        .collect()
}

/// A message's forward moves in this batch: where it ended and when it first reached each stage.
#[derive(Debug, Default)]
struct Moves {
    last: Option<MessageStatus>,
    sent_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    read_at: Option<DateTime<Utc>>,
}

impl Moves {
    /// As `tracking::advance` stamps one move: every stage up to the new status, if unstamped.
    fn reach(&mut self, status: MessageStatus, at: DateTime<Utc>) {
        self.last = Some(status);
        let stages = match status {
            MessageStatus::Sent => [true, false, false],
            MessageStatus::Delivered => [true, true, false],
            MessageStatus::Read => [true, true, true],
            _ => [false; 3],
        };
        for (reached, stamp) in stages.into_iter().zip([&mut self.sent_at, &mut self.delivered_at, &mut self.read_at]) {
            if reached && stamp.is_none() {
                *stamp = Some(at);
            }
        }
    }

    fn advance(self, id: Uuid) -> Option<Advance> {
        let status = self.last?;
        Some(Advance { id, status, sent_at: self.sent_at, delivered_at: self.delivered_at, read_at: self.read_at })
    }
}
