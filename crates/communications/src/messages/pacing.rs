//! Bulk messages take their provider slot when they are accepted.
//!
//! A campaign is accepted far faster than its provider takes it (100,000 messages in a minute,
//! drained at a few hundred a second). Were each message claimed as soon as its job is due, the
//! dispatcher would claim, reserve a slot minutes ahead and put back every one of them — a
//! transaction per message, tens of thousands, competing with the urgent lane for the database
//! while the campaign drains. Instead the accept batch reserves the bulk messages' slots on
//! their channel account's bulk key (one statement per account) and schedules each job for its
//! slot, marked as holding it, so the dispatcher sends it when it comes due and reserves nothing.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::accept::Draft;
use super::model::{Channel, Lane, MessageStatus};
use super::service::FallbackStep;
use crate::contacts::ResolvedContact;
use crate::rate_limit::{self, RateDefaults};

/// The wait of each bulk draft due now (by message id), its slot reserved.
pub(crate) async fn reserve(
    tx: &mut PgConnection,
    rates: &RateDefaults,
    ready: &[(&Draft, &ResolvedContact, &[FallbackStep])],
    deferred: &HashMap<Uuid, (DateTime<Utc>, String)>,
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, Duration>, ApiError> {
    // Per (tenant, channel): the bulk drafts due now, in order.
    let mut groups: HashMap<(Uuid, Channel), Vec<Uuid>> = HashMap::new();
    for (draft, _, steps) in ready {
        let due_now = draft.scheduled_at.is_none_or(|at| at <= now) && !deferred.contains_key(&draft.id);
        let Some(first) = steps.first() else { continue };
        if draft.lane == Lane::Bulk
            && draft.status == MessageStatus::Queued
            && due_now
            && first.channel != Channel::Webchat
        {
            groups.entry((draft.tenant.0, first.channel)).or_default().push(draft.id);
        }
    }
    if groups.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<(Uuid, crate::channels::ChannelType)> =
        groups.keys().map(|(tenant, channel)| (*tenant, crate::dispatch::channel_type(*channel))).collect();
    let accounts = crate::channels::repository::active_accounts_for_channels(&mut *tx, &keys).await?;
    let mut waits = HashMap::new();
    for ((tenant, channel), ids) in groups {
        let kind = crate::dispatch::channel_type(channel);
        // No active account: the dispatcher fails these; nothing to pace.
        let Some(account) = accounts.iter().find(|a| a.tenant_id == tenant && a.channel_type == kind) else { continue };
        let (key, limit) = rate_limit::bulk_key(account.tenant_id, account.id, channel, &account.verification, rates);
        let delays =
            rate_limit::reserve_many(&mut *tx, &key, limit, u32::try_from(ids.len()).unwrap_or(u32::MAX)).await?;
        for (id, delay) in ids.into_iter().zip(delays) {
            if !delay.is_zero() {
                metrics::histogram!("rate_limit_wait_seconds", "lane" => "bulk").record(delay.as_secs_f64());
            }
            waits.insert(id, delay);
        }
    }
    Ok(waits)
}
