//! The channel accounts and providers the dispatcher sends through, kept between batches.
//!
//! Every dispatch batch needs each message's channel account and that account's providers:
//! two reads per batch, whose answer changes a few times a day. They are kept here per
//! (tenant, channel). A change to either table — through any process, the API, the dispatcher's
//! own suspension of an account, or by hand in SQL — fires a statement trigger that notifies
//! `switchboard_channel_config` (migration `…20261201000100`); PostgreSQL delivers it when the
//! change commits, and every process's listener voids what it kept. So a rotated secret or a
//! suspended account is seen by the next batch, not a TTL later: a send through stale
//! credentials would fail and suspend the channel the operator just repaired. A value read
//! while the change was being committed is voided by the notification that follows it. While
//! the listener is not connected (the database restarting) nothing kept is used, and on
//! reconnecting it voids everything, as it may have missed a notification (`kernel::cache`).

use std::sync::Arc;
use std::time::Duration;

use kernel::cache::Notified;
use kernel::error::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::channels::ChannelType;
use crate::channels::repository::{self as channels, AccountRow, ProviderRow};

/// The statement triggers' channel.
const CHANNEL: &str = "switchboard_channel_config";
/// A bound for a notification that never arrived; not how changes are normally seen.
const TTL: Duration = Duration::from_secs(10);

/// An account and its providers by priority.
pub(crate) type SendingConfig = (Arc<AccountRow>, Arc<[ProviderRow]>);

#[derive(Debug)]
pub(crate) struct SendingConfigs {
    /// `None`: the tenant has no account on that channel.
    cache: Notified<(Uuid, ChannelType), Option<SendingConfig>>,
}

impl Default for SendingConfigs {
    fn default() -> Self {
        Self { cache: notified() }
    }
}

/// A cache of anything read from the channel configuration, voided as [`SendingConfigs`] is.
pub(crate) fn notified<K, V>() -> Notified<K, V> {
    Notified::new(CHANNEL, TTL)
}

impl SendingConfigs {
    /// The account (not revoked) and providers of each (tenant, channel), in `keys`' order; reads
    /// only those not kept, in two statements. Must run on a Tokio runtime.
    pub async fn get(
        &self,
        pool: &PgPool,
        keys: &[(Uuid, ChannelType)],
    ) -> Result<Vec<Option<SendingConfig>>, ApiError> {
        let mut found: Vec<Option<Option<SendingConfig>>> = keys.iter().map(|key| self.cache.get(pool, key)).collect();
        let missing: Vec<(Uuid, ChannelType)> =
            keys.iter().zip(&found).filter(|(_, kept)| kept.is_none()).map(|(key, _)| *key).collect();
        if !missing.is_empty() {
            // Taken before the reads: a change committed meanwhile voids what they return.
            let generation = self.cache.generation();
            let read = read(pool, &missing).await?;
            for (key, config) in missing.into_iter().zip(read) {
                self.cache.put(key, generation, config.clone());
                for (wanted, slot) in keys.iter().zip(found.iter_mut()) {
                    if *wanted == key && slot.is_none() {
                        *slot = Some(config.clone());
                    }
                }
            }
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }
}

/// Reads each key's account and providers from the database.
async fn read(pool: &PgPool, keys: &[(Uuid, ChannelType)]) -> Result<Vec<Option<SendingConfig>>, ApiError> {
    let accounts = channels::active_accounts_for_channels(pool, keys).await?;
    let account_ids: Vec<(Uuid, Uuid)> = accounts.iter().map(|a| (a.tenant_id, a.id)).collect();
    let providers =
        if account_ids.is_empty() { Vec::new() } else { channels::providers_of_accounts(pool, &account_ids).await? };
    let configs: Vec<SendingConfig> = accounts
        .into_iter()
        .map(|account| {
            let own: Vec<ProviderRow> =
                providers.iter().filter(|p| p.channel_account_id == Some(account.id)).cloned().collect();
            (Arc::new(account), own.into())
        })
        .collect();
    Ok(keys
        .iter()
        .map(|(tenant, channel)| {
            configs.iter().find(|(a, _)| a.tenant_id == *tenant && a.channel_type == *channel).cloned()
        })
        .collect())
}
