//! Group commit for provider webhooks (`kernel::batch`): the envelopes that arrive together are
//! stored and applied in one transaction — plain status reports set-wise, a handful of
//! statements for the batch (`super::bulk`) — and each provider gets its 200 when it commits.
//!
//! A live account posts two or three status callbacks for every message it sends (Twilio `sent`
//! and `delivered`, Meta's `read` too), so delivery tracking writes more often than sending does.
//! One transaction each cost a commit and its WAL flush per callback, and the callbacks' own
//! connections crowded the dispatcher's; at 800 messages/s with callbacks the service fell
//! behind its sends ("Dispatcher efficiency" in docs/architecture.md).
//!
//! Nobody waits on a callback's answer but the provider, which allows seconds, so a batch
//! lingers for company while traffic is steady. Within a batch envelopes go in the order of the
//! message they are about, and the bulk path locks messages in id order, so two batches lock the
//! same messages in the same order. If anything in a shared transaction fails (a deadlock with a
//! writer that locks in another order, one bad envelope), it rolls back whole and each envelope
//! is recorded alone, the careful way, as before batching: one envelope's trouble is never
//! another's. An unreachable database fails them all at once.

use cpaas::ProviderEvent;
use kernel::error::{ApiError, SharedError};
use uuid::Uuid;

use super::apply::{EnvelopeOutcome, TrackedEvent, record_in};
use crate::dispatch::RetryPolicy;

/// What the webhook routes hand over and wait on.
pub(crate) type Recorder = kernel::batch::Batcher<Envelope, Result<EnvelopeOutcome, SharedError>>;

/// Most envelopes in one transaction: each is a handful of statements, so a full batch still
/// commits within tens of milliseconds.
const MAX_BATCH: usize = 64;
/// Two transactions at once: one builds while the other waits for its commit.
const IN_FLIGHT: usize = 2;
/// While callbacks come steadily, a batch waits up to 25 ms for more. Nobody waits on a status
/// callback but its provider, whose timeout is seconds; an inbound text reaches the inbox that
/// much later at most. At 400 messages a second (800 callbacks) a batch held 12 envelopes with
/// 10 ms and 19 with 25, and a message with its two callbacks cost the service and PostgreSQL
/// 15 % less (2.21 against 2.66 ms); 50 ms saved no more (docs/architecture.md).
const LINGER: kernel::batch::Linger = kernel::batch::Linger {
    wait: std::time::Duration::from_millis(25),
    steady_within: std::time::Duration::from_millis(50),
};

/// A verified envelope, owned, on its way to the recorder.
#[derive(Debug)]
pub(crate) struct Envelope {
    provider: String,
    kind: String,
    tenants: Vec<Uuid>,
    envelope_id: Option<String>,
    body: String,
    events: Vec<ProviderEvent>,
    correlation: Option<Uuid>,
}

impl Envelope {
    pub(crate) fn of(envelope: &TrackedEvent<'_>) -> Self {
        Self {
            provider: envelope.provider.to_owned(),
            kind: envelope.kind.to_owned(),
            tenants: envelope.tenants.to_vec(),
            envelope_id: envelope.envelope_id.map(str::to_owned),
            body: envelope.body.to_owned(),
            events: envelope.events.to_vec(),
            correlation: envelope.correlation,
        }
    }

    fn tracked(&self) -> TrackedEvent<'_> {
        TrackedEvent {
            provider: &self.provider,
            kind: &self.kind,
            tenants: &self.tenants,
            envelope_id: self.envelope_id.as_deref(),
            body: &self.body,
            events: &self.events,
            correlation: self.correlation,
        }
    }

    /// Which message it is about, as far as the envelope tells: the order of locks in a batch.
    fn lock_key(&self) -> (Option<Uuid>, &str) {
        let provider_id = self.events.iter().find_map(|event| match event {
            ProviderEvent::StatusUpdate { provider_message_id, .. } => Some(provider_message_id.as_str()),
            _ => None,
        });
        (self.correlation, provider_id.or(self.envelope_id.as_deref()).unwrap_or_default())
    }
}

pub(crate) fn spawn(pool: sqlx::PgPool, retry: RetryPolicy) -> Recorder {
    kernel::batch::Batcher::spawn_lingering(MAX_BATCH, IN_FLIGHT, Some(LINGER), move |envelopes| {
        let pool = pool.clone();
        async move { record_batch(&pool, &retry, envelopes).await }
    })
}

async fn record_batch(
    pool: &sqlx::PgPool,
    retry: &RetryPolicy,
    envelopes: Vec<Envelope>,
) -> Vec<Result<EnvelopeOutcome, SharedError>> {
    match together(pool, retry, &envelopes).await {
        Ok(outcomes) => return outcomes.into_iter().map(Ok).collect(),
        Err(error) if error.is_unavailable() => return vec![Err(SharedError::from(error)); envelopes.len()],
        Err(error) => {
            metrics::counter!("webhook_batches_split_total").increment(1);
            tracing::info!(%error, envelopes = envelopes.len(), "webhook envelopes failed together: each goes alone");
        }
    }
    let mut results = Vec::with_capacity(envelopes.len());
    for envelope in &envelopes {
        results.push(alone(pool, retry, envelope).await.map_err(SharedError::from));
    }
    results
}

/// The batch in one transaction, set-wise where it can be (`super::bulk`).
async fn together(
    pool: &sqlx::PgPool,
    retry: &RetryPolicy,
    envelopes: &[Envelope],
) -> Result<Vec<EnvelopeOutcome>, ApiError> {
    let mut order: Vec<usize> = (0..envelopes.len()).collect();
    order.sort_by(|&a, &b| envelopes[a].lock_key().cmp(&envelopes[b].lock_key()));
    let tracked: Vec<TrackedEvent<'_>> = order.iter().map(|&at| envelopes[at].tracked()).collect();
    let mut tx = pool.begin().await?;
    let sorted = super::bulk::record_all(&mut tx, retry, &tracked).await?;
    tx.commit().await?;
    let mut outcomes = vec![EnvelopeOutcome::Ignored; envelopes.len()];
    for (at, outcome) in order.into_iter().zip(sorted) {
        outcomes[at] = outcome;
    }
    Ok(outcomes)
}

/// One envelope the careful way, in a transaction of its own: what a batch falls back to.
async fn alone(pool: &sqlx::PgPool, retry: &RetryPolicy, envelope: &Envelope) -> Result<EnvelopeOutcome, ApiError> {
    let mut tx = pool.begin().await?;
    let outcome = record_in(&mut tx, retry, &envelope.tracked()).await?;
    tx.commit().await?;
    Ok(outcome)
}
