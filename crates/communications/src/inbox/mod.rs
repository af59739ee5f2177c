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

//! - `unread.rs`: per-agent read cursors, unread counts and the inbox badge.
//! - `reply.rs`: agents answer through the outbound pipeline (WhatsApp's 24-hour window,
//!   email threading).
//! - `changes.rs` and `stream.rs`: the durable change log and the live stream over it
//!   (`GET /api/v1/stream`, Server-Sent Events with replay from `Last-Event-ID`).
//! - `thread.rs`: a conversation's messages in the order written.
//! - `search.rs`: full-text search over conversation messages (German and English).
//! - `participants.rs`: who takes part in a conversation, with roles and attributes.
//! - `context.rs`: the booking, service leg, invoice or appointment a conversation is about, and
//!   that entity's newest row from the Hasura events we receive.
//! - `http.rs` and `repository.rs`: the conversations API — list by activity, one conversation,
//!   claim (one winner), release, snooze, resolve, reopen — each change with its change row.
//! - [`wake_snoozed`]: snoozed conversations open again when their time comes, once, whichever
//!   process gets there first.
//! - [`process_stored`]: inbound envelopes kept before the inbox existed, or before their tenant
//!   was known (outcome `stored`), are processed once their tenant is known, from their bodies.

pub mod canned;
pub mod changes;
pub mod contacts_http;
pub mod contacts_merge;
pub mod contacts_repository;
pub mod context;
pub mod http;
pub mod inbound;
pub mod labels;
pub mod media;
pub mod notes;
pub mod participants;
pub mod reply;
pub mod repository;
pub mod search;
pub mod stream;
pub mod thread;
pub mod unread;

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
    if !woken.is_empty() {
        module.feed.signal();
    }
    Ok(woken.len())
}

/// Where [`process_stored`] has got to in this process: each stored envelope is looked at once
/// per process (one whose tenant is still unknown stays `stored` and is passed over).
pub type StoredCursor = Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>;

/// Processes up to 100 stored inbound envelopes after `cursor`, oldest first (Meta notifications,
/// Twilio inbound SMS, SES inbound mail through SNS), each event for its tenant: the envelope's,
/// else the one the Meta number or the mail's domain names now. An envelope whose every inbound
/// event found its tenant becomes `applied` (row-locked, so once across processes); returns how
/// many were applied, and the new cursor.
pub async fn process_stored(module: &Communications, cursor: StoredCursor) -> Result<(usize, StoredCursor), ApiError> {
    let mut tx = module.pool.begin().await?;
    let (after_at, after_id) = cursor.unzip();
    let envelopes = sqlx::query!(
        r#"SELECT id, tenant_id, provider, kind, body, received_at
           FROM communications.webhook_envelopes
           WHERE outcome = 'stored'
             AND ((provider = 'meta' AND kind = 'notification') OR (provider = 'twilio' AND kind = 'inbound')
                  OR (provider = 'sns' AND kind = 'notification'))
             AND ($1::timestamptz IS NULL OR (received_at, id) > ($1, $2))
           ORDER BY received_at, id LIMIT 100 FOR UPDATE SKIP LOCKED"#,
        after_at,
        after_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut applied = 0;
    for envelope in &envelopes {
        let events = match envelope.provider.as_str() {
            "meta" => cpaas::webhooks::meta::parse(envelope.body.as_bytes()).unwrap_or_default(),
            "twilio" => {
                let form = cpaas::webhooks::twilio::parse_form(envelope.body.as_bytes());
                cpaas::webhooks::twilio::parse_inbound_message(&form, envelope.received_at)
            }
            _ => cpaas::webhooks::sns::SnsMessage::from_json(envelope.body.as_bytes())
                .ok()
                .and_then(|message| cpaas::webhooks::ses::parse(&message.message).ok())
                .unwrap_or_default(),
        };
        let mut complete = true;
        for event in &events {
            let cpaas::ProviderEvent::InboundMessage { provider, to, .. } = event else { continue };
            let tenant = match (envelope.tenant_id, provider) {
                (Some(tenant), _) => Some(tenant),
                (None, cpaas::Provider::Meta) => {
                    crate::tracking::repository::tenant_of_meta_number(&mut *tx, to).await?
                }
                (None, cpaas::Provider::Ses) => {
                    crate::tracking::repository::tenant_of_mail_domain(&mut *tx, to, &[]).await?
                }
                (None, _) => None,
            };
            match tenant {
                Some(tenant) => {
                    inbound::receive(&mut tx, tenant, event).await?;
                }
                None => complete = false,
            }
        }
        if complete {
            sqlx::query!("UPDATE communications.webhook_envelopes SET outcome = 'applied' WHERE id = $1", envelope.id)
                .execute(&mut *tx)
                .await?;
            applied += 1;
        }
    }
    tx.commit().await?;
    if applied > 0 {
        module.feed.signal();
        tracing::info!(count = applied, "processed stored inbound envelopes");
    }
    let cursor = envelopes.last().map(|last| (last.received_at, last.id)).or(cursor);
    Ok((applied, cursor))
}

/// How long the change log keeps changes for streams resuming with `Last-Event-ID`.
pub const CHANGE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the change log is trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Wakes snoozed conversations and processes stored inbound envelopes every `interval`, and
/// trims the change log every minute, until the task is dropped.
pub async fn run_upkeep(module: Communications, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trimmed_at = tokio::time::Instant::now();
    let mut stored: StoredCursor = None;
    // Envelopes whose tenant was unknown are looked at again after a while (their Meta number
    // or mail domain may have been configured since): a new pass from the oldest.
    let mut pass_started = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        if trimmed_at.elapsed() >= TRIM_EVERY {
            trimmed_at = tokio::time::Instant::now();
            let before = chrono::Utc::now() - chrono::Duration::from_std(CHANGE_RETENTION).unwrap_or_default();
            if let Err(error) = changes::trim(&module.pool, before).await {
                tracing::warn!(%error, "trimming the change log failed");
            }
        }
        if let Err(error) = wake_snoozed(&module).await {
            tracing::warn!(%error, "waking snoozed conversations failed");
        }
        match process_stored(&module, stored).await {
            Ok((_, cursor)) => stored = cursor,
            Err(error) => tracing::warn!(%error, "processing stored inbound envelopes failed"),
        }
        if pass_started.elapsed() >= interval * 60 {
            pass_started = tokio::time::Instant::now();
            stored = None;
        }
    }
}
