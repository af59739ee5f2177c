//! Before a send: claim the message (`queued` → `sending`, committed before any provider call)
//! and gather what the send needs — the address's suppression, the channel account, its
//! providers, and the message's slot under the account's rate limit.
//!
//! [`prepare_batch`] does it for a batch of jobs in two statements whatever the batch's size:
//! one claim (with the suppressions), and one that reserves the rate-limit slots of every account
//! in the batch and marks the messages whose slot is now in flight (`slots.rs`); the accounts and
//! their providers are kept between batches (`configs.rs`). [`prepare_one`] is a batch of one, for
//! the careful path (a message the batched claim did not take); [`prepare_claimed`] the same
//! without the claim, for messages claimed when they were accepted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cpaas::SendError;
use kernel::ids::TenantId;
use uuid::Uuid;

use super::slots::{self, Premark, Wanted};
use super::{Dispatcher, channel_type};
use crate::Communications;
use crate::channels::ChannelStatus;
use crate::channels::repository::{AccountRow, ProviderRow};
use crate::messages::queue::DispatchJob;
use crate::messages::repository::{self as messages, MessageRow};
use crate::rate_limit::RateDefaults;

/// A message stored claimed (its claim's token) and its slot if acceptance reserved it.
pub(crate) type Claimed = (MessageRow, Uuid, Option<(Duration, Premark)>);

/// A claimed message and what its send needs.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// As it was before the claim.
    pub message: MessageRow,
    /// The claim's token: only it can mark the message in flight.
    pub claim: Uuid,
    /// Or the database failure that kept us from finding out: the message goes back to the queue.
    pub context: Result<SendContext, String>,
}

#[derive(Debug, Default)]
pub(crate) struct SendContext {
    /// Why the address is suppressed, if it is.
    pub suppressed: Option<String>,
    /// Shared by the batch's messages on that account, as are its providers.
    pub account: Option<Arc<AccountRow>>,
    /// The account's providers by priority.
    pub providers: Arc<[ProviderRow]>,
    /// How long until the message's rate-limit slot (zero: now, or already waited for).
    pub delay: Duration,
    /// Whether the slot's statement also marked it in flight to its first provider.
    pub premark: Premark,
}

impl SendContext {
    /// The account to send through, or why the message cannot go out at all.
    pub fn account_for(&self, message: &MessageRow) -> Result<&AccountRow, SendError> {
        if let Some(why) = &self.suppressed {
            return Err(SendError::Permanent {
                code: "suppressed".into(),
                reason: format!("the address is suppressed ({why})"),
            });
        }
        let account = self.account.as_ref().ok_or_else(|| SendError::Permanent {
            code: "no_active_channel".into(),
            reason: format!("the workspace has no active {} channel account", message.channel.as_str()),
        })?;
        if account.status != ChannelStatus::Active {
            return Err(SendError::Permanent {
                code: "channel_inactive".into(),
                reason: "the channel account is not active".into(),
            });
        }
        Ok(account)
    }
}

/// Prepares a batch of jobs: one answer per job, in order. `Ok(None)`: the job's message was not
/// `queued` (already handled, interrupted, canceled …), for the careful path to look at. `Err`:
/// the claim itself failed, and nothing changed.
pub(crate) async fn prepare_batch(
    module: &Communications,
    rates: &RateDefaults,
    owner: Uuid,
    jobs: Vec<DispatchJob>,
) -> Vec<Result<Option<Prepared>, super::BatchError>> {
    // Sorted: batches that overlap (a job apalis re-ran) lock rows in the same order.
    let mut ids: Vec<(Uuid, Uuid)> = jobs.iter().map(|job| (job.tenant_id, job.message_id)).collect();
    ids.sort();
    let claim = Uuid::now_v7();
    let claimed = match messages::claim_queued(module.batch_pool(), &ids, owner, claim).await {
        Ok(claimed) => claimed,
        Err(error) => {
            let error = super::BatchError::from(error);
            return jobs.iter().map(|_| Err(error.clone())).collect();
        }
    };
    let mut claimed: HashMap<Uuid, messages::ClaimedRow> = claimed.into_iter().map(|c| (c.message.id, c)).collect();
    // In job order (the queue's order), so rate-limit slots follow it too.
    let batch: Vec<(DispatchJob, Option<messages::ClaimedRow>)> =
        jobs.into_iter().map(|job| (job, claimed.remove(&job.message_id))).collect();
    let claims: Vec<Entry<'_>> = batch.iter().map(|(j, c)| (*j, c.as_ref(), claim, None)).collect();
    let contexts = match contexts_for(module, rates, &claims).await {
        Ok(contexts) => contexts.into_iter().map(Ok).collect(),
        Err(error) => batch.iter().map(|_| Err(error.clone())).collect::<Vec<_>>(),
    };
    batch
        .into_iter()
        .zip(contexts)
        .map(|((_, claimed), context)| Ok(claimed.map(|c| Prepared { message: c.message, claim, context })))
        .collect()
}

/// A job, its claimed message if any, the claim's token, and the message's slot if it was
/// reserved when the message was stored (`local.rs`).
type Entry<'a> = (DispatchJob, Option<&'a messages::ClaimedRow>, Uuid, Option<(Duration, Premark)>);

/// One context per entry of `batch` (a default context for unclaimed entries).
async fn contexts_for(
    module: &Communications,
    rates: &RateDefaults,
    batch: &[Entry<'_>],
) -> Result<Vec<SendContext>, String> {
    let mut keys: Vec<(Uuid, crate::channels::ChannelType)> = batch
        .iter()
        .filter_map(|(_, claimed, ..)| *claimed)
        .map(|c| (c.message.tenant_id, channel_type(c.message.channel)))
        .collect();
    keys.sort_by_key(|(tenant, channel)| (*tenant, channel.as_str()));
    keys.dedup();
    if keys.is_empty() {
        return Ok(batch.iter().map(|_| SendContext::default()).collect());
    }
    // Each account with its providers, once for all of its messages; kept between batches.
    let accounts: Vec<(Arc<AccountRow>, Arc<[ProviderRow]>)> = module
        .sending_configs
        .get(&module.pool, &keys)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .flatten()
        .collect();
    let mut contexts: Vec<SendContext> = batch
        .iter()
        .map(|(_, claimed, ..)| {
            let Some(claimed) = claimed else { return SendContext::default() };
            let message = &claimed.message;
            let found = accounts
                .iter()
                .find(|(a, _)| a.tenant_id == message.tenant_id && a.channel_type == channel_type(message.channel));
            SendContext {
                suppressed: claimed.suppressed.clone(),
                account: found.map(|(account, _)| account.clone()),
                providers: found.map(|(_, providers)| providers.clone()).unwrap_or_else(|| Arc::new([])),
                delay: Duration::ZERO,
                premark: Premark::NotAsked,
            }
        })
        .collect();
    reserve_slots(module, rates, batch, &mut contexts).await?;
    Ok(contexts)
}

/// Reserves a slot for every message that will be sent now and has not waited for its slot
/// before, and marks in flight those whose slot is now: one statement for the whole batch. A
/// message whose slot was reserved when it was stored takes that.
async fn reserve_slots(
    module: &Communications,
    rates: &RateDefaults,
    batch: &[Entry<'_>],
    contexts: &mut [SendContext],
) -> Result<(), String> {
    let mut positions = Vec::new();
    let mut wanted = Vec::new();
    for (index, ((job, claimed, claim, early), context)) in batch.iter().zip(contexts.iter_mut()).enumerate() {
        let Some(claimed) = claimed else { continue };
        if let Some((delay, premark)) = early {
            (context.delay, context.premark) = (*delay, *premark);
            continue;
        }
        let sendable = context.account_for(&claimed.message).is_ok();
        if !sendable || job.deferrals > 0 {
            continue;
        }
        let Some(account) = &context.account else { continue };
        positions.push(index);
        wanted.push(Wanted {
            tenant_id: account.tenant_id,
            account_id: account.id,
            verification: &account.verification,
            channel: claimed.message.channel,
            lane: claimed.message.lane,
            message_id: claimed.message.id,
            claim: *claim,
            provider: context.providers.iter().find(|p| p.enabled).map(|p| p.provider.as_str()),
        });
    }
    let slots = slots::reserve_and_mark(&module.kept, rates, &wanted).await.map_err(|e| e.to_string())?;
    drop(wanted); // It borrows the contexts' accounts.
    for (index, (delay, premark)) in positions.into_iter().zip(slots) {
        contexts[index].delay = delay;
        contexts[index].premark = premark;
    }
    Ok(())
}

/// [`prepare_batch`] for one message already claimed by the careful path: the same lookups
/// and reservation, as a batch of one.
pub(crate) async fn prepare_one(
    dispatcher: &Dispatcher,
    tenant: TenantId,
    job: DispatchJob,
    message: MessageRow,
    claim: Uuid,
) -> Prepared {
    let pool = &dispatcher.module.pool;
    let suppressed = match messages::suppression(pool, tenant.0, message.channel, &message.recipient).await {
        Ok(suppressed) => suppressed,
        Err(error) => return Prepared { message, claim, context: Err(error.to_string()) },
    };
    let claimed = messages::ClaimedRow { message, suppressed };
    let context = contexts_for(&dispatcher.module, &dispatcher.rates, &[(job, Some(&claimed), claim, None)])
        .await
        .map(|mut contexts| contexts.pop().unwrap_or_default());
    Prepared { message: claimed.message, claim, context }
}

/// Prepares messages claimed at acceptance (their addresses were checked for suppression then):
/// the same lookups and reservations as [`prepare_batch`], without the claim, and without the
/// reservation for those whose slot acceptance reserved.
pub(crate) async fn prepare_claimed(
    module: &Communications,
    rates: &RateDefaults,
    claimed: Vec<Claimed>,
) -> Vec<Prepared> {
    let mut rows = Vec::with_capacity(claimed.len());
    let mut batch_of = Vec::with_capacity(claimed.len());
    for (message, claim, slot) in claimed {
        batch_of.push((DispatchJob::new(message.id, message.tenant_id, 0), claim, slot));
        rows.push(messages::ClaimedRow { message, suppressed: None });
    }
    let batch: Vec<Entry<'_>> =
        rows.iter().zip(&batch_of).map(|(row, (job, claim, slot))| (*job, Some(row), *claim, *slot)).collect();
    let contexts: Vec<Result<SendContext, String>> = match contexts_for(module, rates, &batch).await {
        Ok(contexts) => contexts.into_iter().map(Ok).collect(),
        Err(error) => batch.iter().map(|_| Err(error.clone())).collect(),
    };
    drop(batch);
    rows.into_iter()
        .zip(batch_of)
        .zip(contexts)
        .map(|((row, (_, claim, _)), context)| Prepared { message: row.message, claim, context })
        .collect()
}
