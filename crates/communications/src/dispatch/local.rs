//! Messages dispatched by the process that accepted them, without a job.
//!
//! A message due now, accepted by a process that runs dispatch lanes, is stored already claimed
//! (`sending`, this process's lease and a claim token) and handed to the local dispatcher after
//! the commit: no job row to insert, fetch and acknowledge, no claim statement, no wake-up. The
//! provider request follows the acceptance's commit by one in-flight mark, or at once when the
//! statement that stored the message also reserved its slot and marked it
//! ([`LocalDispatch::slots_to_reserve`]). Crash safety is the claim's: if the process dies before
//! the request, recovery finds the message claimed by a lapsed lease and queues it again with a
//! job if it was never marked, or makes it `unknown` for settlement with its provider if it was
//! (see `lease.rs`, `settle.rs`).
//!
//! At most `capacity` messages are handed over at once; beyond that acceptance pushes jobs as
//! before, so a burst far larger than the process can send at once goes through the queue that
//! every process shares instead of piling up here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kernel::error::ApiError;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use uuid::Uuid;

use super::configs::SendingConfigs;
use super::slots::{Premark, Reservation, Wanted};
use super::{Dispatcher, channel_type};
use crate::channels::{ChannelStatus, ProviderKind};
use crate::messages::repository::{MessageRow, NewMessage};
use crate::rate_limit::RateDefaults;

/// A message stored claimed, on its way to this process's dispatcher.
#[derive(Debug)]
pub struct Handoff {
    pub message: MessageRow,
    pub claim: Uuid,
    /// Its slot's wait and mark, when the statement that stored it reserved them.
    pub slot: Option<(Duration, Premark)>,
    /// Held until its dispatch is over.
    pub permit: OwnedSemaphorePermit,
}

/// The accepting side: registered in the module while the process's lanes run.
#[derive(Debug, Clone)]
pub struct LocalDispatch {
    /// The lease the claims carry.
    pub owner: Uuid,
    permits: Arc<Semaphore>,
    /// Messages stored together go over together, so that their dispatch shares statements.
    sender: mpsc::UnboundedSender<Vec<Handoff>>,
    /// What the dispatcher reserves slots with, for [`LocalDispatch::slots_to_reserve`].
    rates: RateDefaults,
    configs: Arc<SendingConfigs>,
    pool: PgPool,
}

/// Where the module finds the local dispatcher, if this process runs one.
pub type LocalSlot = Arc<RwLock<Option<LocalDispatch>>>;

impl LocalDispatch {
    /// A permit to store one more message claimed, if the dispatcher has room.
    pub(crate) fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        if self.sender.is_closed() {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    /// The slots to reserve, and the in-flight marks to set, in the statement that stores `rows`
    /// claimed under `claim` (`messages/single_write.rs`): the dispatcher's slot-and-mark statement
    /// (`slots.rs`), folded into the acceptance's, so that a message due now reaches its provider
    /// one statement and one commit sooner. Only for a message whose account is active and whose
    /// first enabled provider can be asked, after a crash, whether it has the message: one marked
    /// in flight is `unknown` after a crash, and settled with its provider (`settle.rs`); SNS SMS
    /// cannot be, so its messages are marked just before their requests, as jobs' are.
    ///
    /// What fails here (the accounts unreadable, a rate unusable) leaves every slot to the
    /// dispatcher, which meets the same failure where it is the message's to record: acceptance
    /// does not depend on it.
    pub(crate) async fn slots_to_reserve(&self, rows: &[NewMessage<'_>], claim: Uuid) -> Reservation {
        self.try_slots_to_reserve(rows, claim).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "no slots reserved at acceptance; the dispatcher reserves them");
            Reservation::default()
        })
    }

    async fn try_slots_to_reserve(&self, rows: &[NewMessage<'_>], claim: Uuid) -> Result<Reservation, ApiError> {
        let mut keys: Vec<_> = rows.iter().map(|row| (row.tenant_id.0, channel_type(row.channel))).collect();
        keys.sort_by_key(|(tenant, channel)| (*tenant, channel.as_str()));
        keys.dedup();
        let configs = self.configs.get(&self.pool, &keys).await?;
        let mut wanted = Vec::with_capacity(rows.len());
        for row in rows {
            let key = (row.tenant_id.0, channel_type(row.channel));
            let Some(Some((account, providers))) = keys.iter().position(|k| *k == key).map(|i| &configs[i]) else {
                continue;
            };
            let first = providers.iter().find(|provider| provider.enabled);
            let Some(first) = first.filter(|p| p.provider != ProviderKind::Sns) else { continue };
            if account.status != ChannelStatus::Active {
                continue;
            }
            wanted.push(Wanted {
                tenant_id: account.tenant_id,
                account_id: account.id,
                verification: &account.verification,
                channel: row.channel,
                lane: row.lane,
                message_id: row.id,
                claim,
                provider: Some(first.provider.as_str()),
            });
        }
        Reservation::of(&self.rates, &wanted)
    }

    /// Hands committed, claimed messages (stored together) to the dispatcher, which prepares
    /// them together. If it has stopped in the meantime, the messages stay claimed by a lease
    /// that will lapse, and recovery queues them again (or settles those marked in flight).
    pub(crate) fn hand_off(&self, handoffs: Vec<Handoff>) {
        if handoffs.is_empty() {
            return;
        }
        if let Err(error) = self.sender.send(handoffs) {
            let ids: Vec<Uuid> = error.0.iter().map(|handoff| handoff.message.id).collect();
            tracing::warn!(message_ids = ?ids, "the local dispatcher stopped; recovery will queue the messages");
        }
    }
}

/// Messages a caller's transaction stored claimed, to hand over once it has committed (the
/// missed call's answer, an agent's reply). Dropped without [`Pending::hand_over`] — the
/// transaction rolled back — it releases their room; if the transaction did commit, recovery
/// queues them when the claim's lease lapses, as after a crash.
#[derive(Debug, Default)]
#[must_use = "hand the messages over after the commit"]
pub(crate) struct Pending {
    local: Option<LocalDispatch>,
    handoffs: Vec<Handoff>,
}

impl Pending {
    /// For `slot`'s dispatcher; with none registered, messages are stored with jobs.
    pub fn new(slot: &LocalSlot) -> Self {
        Self { local: current(slot), handoffs: Vec::new() }
    }

    pub fn local(&self) -> Option<&LocalDispatch> {
        self.local.as_ref()
    }

    pub fn add(&mut self, handoffs: Vec<Handoff>) {
        self.handoffs.extend(handoffs);
    }

    /// Call once the transaction that stored them has committed.
    pub fn hand_over(self) {
        if let Some(local) = &self.local {
            local.hand_off(self.handoffs);
        }
    }
}

/// The registered local dispatcher of `slot`, if any.
pub(crate) fn current(slot: &LocalSlot) -> Option<LocalDispatch> {
    slot.read().ok().and_then(|local| local.clone())
}

/// Registers `dispatcher` as this process's local dispatcher (up to `capacity` messages at once)
/// and runs it until the returned guard is dropped: from then on acceptance pushes jobs again,
/// and handed-over messages already received are still sent.
pub fn serve(dispatcher: &Dispatcher, capacity: usize) -> LocalGuard {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Vec<Handoff>>();
    let permits = Arc::new(Semaphore::new(capacity));
    let local = LocalDispatch {
        owner: dispatcher.lease.owner,
        permits: permits.clone(),
        sender,
        rates: dispatcher.rates.clone(),
        configs: dispatcher.module.sending_configs.clone(),
        pool: dispatcher.module.pool.clone(),
    };
    let slot = dispatcher.module.local.clone();
    if let Ok(mut registered) = slot.write() {
        *registered = Some(local);
    }
    let dispatcher = dispatcher.clone();
    let task = tokio::spawn(async move {
        while let Some(handoffs) = receiver.recv().await {
            let dispatcher = dispatcher.clone();
            tokio::spawn(async move {
                let (claimed, permits): (Vec<_>, Vec<_>) =
                    handoffs.into_iter().map(|h| ((h.message, h.claim, h.slot), h.permit)).unzip();
                let ids: Vec<(Uuid, Uuid)> = claimed.iter().map(|(message, claim, _)| (message.id, *claim)).collect();
                let results = dispatcher.dispatch_claimed(claimed).await;
                for ((id, claim), result) in ids.into_iter().zip(results) {
                    if let Err(error) = result {
                        tracing::warn!(message_id = %id, %error, "dispatching a message claimed at acceptance failed");
                        let _ = super::lease::give_back_patiently(&dispatcher.module.pool, id, claim).await;
                    }
                }
                drop(permits);
            });
        }
    });
    LocalGuard { slot, permits, capacity, _task: task }
}

/// Unregisters the local dispatcher when dropped (or finished).
#[derive(Debug)]
pub struct LocalGuard {
    slot: LocalSlot,
    permits: Arc<Semaphore>,
    capacity: usize,
    /// Ends once the last sender (held by acceptances in flight) is gone and the messages
    /// already handed over are spawned.
    _task: tokio::task::JoinHandle<()>,
}

impl LocalGuard {
    /// Takes no more messages, and waits up to `grace` for those handed over to be sent.
    pub async fn finish(self, grace: std::time::Duration) {
        self.unregister();
        let all = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.permits.acquire_many(all)).await.is_err() {
            tracing::warn!("messages claimed at acceptance still sending after the grace period");
        }
    }

    fn unregister(&self) {
        if let Ok(mut registered) = self.slot.write() {
            *registered = None;
        }
    }
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        self.unregister();
    }
}
