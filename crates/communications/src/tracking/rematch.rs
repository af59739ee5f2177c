//! Trying unmatched callbacks again. A status callback can overtake the recording of the send
//! it is about (the provider answers, posts its callback at once, and our worker has not written
//! the provider's id yet), or come for a message whose send answer was lost. Such an envelope was
//! acknowledged and kept with its events; this task applies it again — after 1 s, then twice as
//! long each time up to a minute — until it matches or `window` has passed since it arrived,
//! when it is marked `expired`.
//!
//! Every serve and worker process runs the loop; `FOR UPDATE SKIP LOCKED` gives each envelope
//! to one of them. A database error ends the round, not the loop.

use std::time::Duration;

use chrono::Utc;
use cpaas::ProviderEvent;
use kernel::error::ApiError;

use super::apply::{EnvelopeOutcome, FIRST_REMATCH_DELAY, apply_events};
use super::repository::{self as tracking, DueEnvelope};
use crate::Communications;

/// Envelopes tried in one transaction.
const BATCH: i64 = 100;
/// The longest wait between two tries.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// How many envelopes of one round ended which way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RematchRound {
    pub matched: usize,
    pub still_unmatched: usize,
    pub expired: usize,
}

/// One round: every due envelope (up to a batch) is applied again.
pub async fn rematch_once(module: &Communications, window: Duration) -> Result<RematchRound, ApiError> {
    let mut tx = module.pool.begin().await?;
    let due = tracking::lock_due_envelopes(&mut tx, BATCH).await?;
    let mut round = RematchRound::default();
    for envelope in &due {
        let expired = Utc::now() - envelope.received_at > chrono::Duration::from_std(window).unwrap_or_default();
        let applied = match events_of(envelope) {
            Some(events) => Some(
                apply_events(
                    &mut tx,
                    &module.retry,
                    &envelope.tenant_scope,
                    envelope.correlation_id,
                    &events,
                    &envelope.body,
                )
                .await?,
            ),
            None => None,
        };
        // An envelope can mix statuses with inbound messages (Meta batches them): out of time,
        // it still waits for the inbox.
        let given_up = match &applied {
            Some(applied) if applied.inbound => EnvelopeOutcome::Stored,
            _ => EnvelopeOutcome::Expired,
        };
        match applied {
            Some(applied) if applied.outcome != EnvelopeOutcome::Unmatched => {
                tracking::settle_envelope(&mut *tx, envelope.id, applied.outcome.as_str(), applied.tenant, None)
                    .await?;
                count(envelope, "matched");
                round.matched += 1;
            }
            Some(_) if !expired => {
                let delay = chrono::Duration::from_std(delay_after(envelope.attempts)).unwrap_or_default();
                tracking::retry_envelope_at(&mut *tx, envelope.id, Utc::now() + delay).await?;
                round.still_unmatched += 1;
            }
            // Out of time, or kept in a form this version cannot read.
            _ => {
                tracking::settle_envelope(&mut *tx, envelope.id, given_up.as_str(), None, None).await?;
                count(envelope, "expired");
                round.expired += 1;
            }
        }
    }
    tx.commit().await?;
    if round.expired > 0 {
        tracing::warn!(expired = round.expired, window_secs = window.as_secs(), "callbacks matched no message in time");
    }
    Ok(round)
}

fn count(envelope: &DueEnvelope, outcome: &'static str) {
    metrics::counter!("webhook_envelopes_rematched_total", "provider" => envelope.provider.clone(), "outcome" => outcome)
        .increment(1);
}

/// The events kept with an envelope; `None` when they cannot be read (kept by another version).
fn events_of(envelope: &DueEnvelope) -> Option<Vec<ProviderEvent>> {
    serde_json::from_value(envelope.events.clone()?).ok()
}

/// The wait after the `attempts`-th try (0 = the first delivery): doubling from the first delay.
fn delay_after(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_add(1)).unwrap_or(0).min(16);
    FIRST_REMATCH_DELAY.saturating_mul(1u32 << doublings).min(MAX_DELAY)
}

/// Runs rounds every `interval` until the task is dropped; a full batch goes again at once.
pub async fn run(module: Communications, interval: Duration, window: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        loop {
            match rematch_once(&module, window).await {
                Ok(round) if round.matched + round.still_unmatched + round.expired >= BATCH as usize => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "trying unmatched callbacks again failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_come_sooner_first_and_never_more_than_a_minute_apart() {
        let delays: Vec<u64> = (0..10).map(|attempts| delay_after(attempts).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
    }
}
