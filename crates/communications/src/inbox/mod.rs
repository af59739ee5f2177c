//! The inbox: inbound messages become conversations that agents work.
//!
//! - `inbound.rs`: an inbound provider event, inside the transaction that stores its webhook
//!   envelope, becomes a contact (found or created by identifier), a conversation (the contact's
//!   unresolved one on that channel account, else a new one) and an inbound message row, with a
//!   change appended to `communications.changes` — or nothing, when the provider's id was seen
//!   before.
//!
//! Conversations keep `last_message_at` through a database trigger on messages, so no writer can
//! forget it and concurrent inserts cannot move it backwards.

//! - `http.rs` and `repository.rs`: the conversations API — list by activity, one conversation,
//!   claim (one winner), release, snooze, resolve, reopen — each change with its change row.
//! - [`wake_snoozed`]: snoozed conversations open again when their time comes, once, whichever
//!   process gets there first.

pub mod http;
pub mod inbound;
pub mod repository;

use std::time::Duration;

use kernel::error::ApiError;
use serde_json::json;

use crate::Communications;

/// Opens the snoozed conversations whose time has come; returns how many.
pub async fn wake_snoozed(module: &Communications) -> Result<usize, ApiError> {
    let mut tx = module.pool.begin().await?;
    let woken = repository::wake_due(&mut tx).await?;
    for (tenant, conversation) in &woken {
        let payload = json!({ "status": "open", "woke": true });
        inbound::record_change(&mut tx, *tenant, "conversation.status_changed", *conversation, None, payload).await?;
    }
    tx.commit().await?;
    Ok(woken.len())
}

/// Wakes snoozed conversations every `interval` until the task is dropped.
pub async fn run_snooze_wakeups(module: Communications, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = wake_snoozed(&module).await {
            tracing::warn!(%error, "waking snoozed conversations failed");
        }
    }
}
