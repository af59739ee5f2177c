//! A dispatch batch's rate-limit slots and the in-flight mark of the messages whose slot is now,
//! in one statement.
//!
//! Before its provider request a message needs its slot under the channel account's rate limit
//! (shared by every process: `rate_limit`), and then its in-flight mark (`requested_at`, committed
//! before the request: recovery reads it to tell "never asked" from "maybe sent"). One after the
//! other they were two round trips on every dispatch batch, and at everyday rates a batch holds
//! one or two messages. [`reserve_and_mark`] reserves the slots of every account in the batch and,
//! in the same statement, marks each message whose slot is now in flight to its first enabled
//! provider, under its own claim only. A message whose slot is later is not marked: it goes back
//! to wait for it. A message whose slot is now but that was not marked is no longer ours: recovery
//! took it back. Later providers of a message (after a retryable failure) are marked one by one,
//! as before.
//!
//! The slots follow `rate_limit::reserve_on_keys`: urgent messages take the account's own key at
//! the full rate and also count on its bulk key; bulk messages take the bulk key only, at 80 % of
//! the rate. So urgent messages never wait behind a bulk backlog, bulk gets what urgent leaves,
//! and together they stay within the provider's rate. The
//! reservation is that function's statement and arithmetic, repeated here because sqlx checks
//! static SQL only: a change to one is a change to both — and to the acceptance's one write
//! (`messages/single_write.rs`), which reserves the slots of the messages it stores with
//! [`Reservation`] and marks those whose slot is now, so that they skip this statement.

use std::collections::HashMap;
use std::time::Duration;

use kernel::error::ApiError;
use kernel::kept::KeptConnections;
use serde_json::Value;
use uuid::Uuid;

use crate::messages::model::{Channel, Lane};
use crate::rate_limit::{self, RateDefaults, RateLimit};

/// A message that wants its slot now.
#[derive(Debug)]
pub struct Wanted<'a> {
    pub tenant_id: Uuid,
    /// Its channel account, and what verification recorded of it (its rate may depend on it).
    pub account_id: Uuid,
    pub verification: &'a Value,
    pub channel: Channel,
    pub lane: Lane,
    pub message_id: Uuid,
    pub claim: Uuid,
    /// The provider its request goes to first; `None`: it has none, so nothing to mark.
    pub provider: Option<&'static str>,
}

/// What the statement found for a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Premark {
    /// Not asked (no slot reserved here, or no provider): the send marks it itself.
    #[default]
    NotAsked,
    /// Marked in flight to its first provider: send now.
    Marked,
    /// Its slot is now, but its claim no longer holds: recovery took it back.
    TakenBack,
}

/// A batch's reservation as the statements bind it: each key's advance, and for each wanted
/// message its key and how far before the key's new `tat` its token lies (as
/// `rate_limit::reserve_on_keys` computes a token's wait).
#[derive(Debug, Default)]
pub struct Reservation {
    /// Sorted: callers with overlapping keys lock them in the same order, and queue.
    pub keys: Vec<String>,
    pub advances: Vec<f64>,
    /// Per wanted message, in `wanted`'s order.
    pub ids: Vec<Uuid>,
    pub providers: Vec<Option<&'static str>>,
    pub message_keys: Vec<String>,
    pub before: Vec<f64>,
}

impl Reservation {
    /// The reservation of `wanted`'s slots.
    pub fn of(rates: &RateDefaults, wanted: &[Wanted<'_>]) -> Result<Self, ApiError> {
        // Per account, in the batch's order: the positions of its urgent and of its bulk messages.
        let mut accounts: Vec<(Uuid, Vec<usize>, Vec<usize>)> = Vec::new();
        for (index, message) in wanted.iter().enumerate() {
            let position = match accounts.iter().position(|(id, ..)| *id == message.account_id) {
                Some(position) => position,
                None => {
                    accounts.push((message.account_id, Vec::new(), Vec::new()));
                    accounts.len() - 1
                }
            };
            match message.lane {
                Lane::Urgent => accounts[position].1.push(index),
                Lane::Bulk => accounts[position].2.push(index),
            }
        }
        let mut advances: HashMap<String, f64> = HashMap::new();
        let mut keyed: Vec<(String, f64)> = vec![(String::new(), 0.0); wanted.len()];
        for (_, urgent, bulk) in &accounts {
            let first = &wanted[urgent.first().or(bulk.first()).copied().unwrap_or_default()];
            let (tenant, account, channel) = (first.tenant_id, first.account_id, first.channel);
            let limit = rate_limit::limit_for(channel, first.verification, rates);
            let urgent_key = rate_limit::channel_account_key(tenant, account);
            let (bulk_key, bulk_limit) = rate_limit::bulk_key(tenant, account, channel, first.verification, rates);
            let (urgent_count, all) = (urgent.len(), urgent.len() + bulk.len());
            if urgent_count > 0 {
                advances.insert(urgent_key.clone(), advance(&urgent_key, limit, urgent_count)?);
            }
            advances.insert(bulk_key.clone(), advance(&bulk_key, bulk_limit, all)?);
            for (i, index) in urgent.iter().enumerate() {
                keyed[*index] = (urgent_key.clone(), before_tat(limit, urgent_count - i));
            }
            // The bulk key counts the urgent messages first; their own slots are the urgent key's.
            for (i, index) in bulk.iter().enumerate() {
                keyed[*index] = (bulk_key.clone(), before_tat(bulk_limit, all - (urgent_count + i)));
            }
        }
        let mut reservations: Vec<(String, f64)> = advances.into_iter().collect();
        reservations.sort_by(|a, b| a.0.cmp(&b.0));
        let (keys, advances) = reservations.into_iter().unzip();
        let (message_keys, before) = keyed.into_iter().unzip();
        Ok(Self {
            keys,
            advances,
            ids: wanted.iter().map(|w| w.message_id).collect(),
            providers: wanted.iter().map(|w| w.provider).collect(),
            message_keys,
            before,
        })
    }
}

/// A message's delay before its request and its mark, from its wait for its slot in
/// microseconds and whether the statement marked it; `asked`: it named a provider to mark.
pub fn answer(asked: bool, wait_us: f64, marked: bool) -> (Duration, Premark) {
    // Zero for a marked message: it was marked because its wait rounds to nothing.
    let delay = Duration::from_micros(wait_us.max(0.0).round() as u64);
    let premark = match (asked, marked) {
        (false, _) => Premark::NotAsked,
        (true, true) => Premark::Marked,
        (true, false) if delay.is_zero() => Premark::TakenBack,
        (true, false) => Premark::NotAsked,
    };
    (delay, premark)
}

/// Each wanted message's wait for its slot (zero: now) and its mark, in `wanted`'s order.
pub async fn reserve_and_mark(
    db: &KeptConnections,
    rates: &RateDefaults,
    wanted: &[Wanted<'_>],
) -> Result<Vec<(Duration, Premark)>, ApiError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let r = Reservation::of(rates, wanted)?;
    let claims: Vec<Uuid> = wanted.iter().map(|w| w.claim).collect();
    let mut connection = db.acquire().await?;
    // A token's wait rounds to whole microseconds, as `reserve_on_keys` reports it: under half a
    // microsecond is now. The mark joins the arrays themselves, not a CTE of them, so its plan is
    // the in-flight mark's own (by primary key).
    let rows = sqlx::query!(
        r#"WITH c AS (SELECT clock_timestamp() AS now),
           reserved AS (
               INSERT INTO communications.rate_limits AS r (key, tat, granted)
               SELECT k.key, c.now + k.advance * interval '1 microsecond', true
               FROM c, unnest($1::text[], $2::float8[]) WITH ORDINALITY AS k(key, advance, n)
               ORDER BY k.n
               ON CONFLICT (key) DO UPDATE SET
                   granted = true,
                   tat = greatest(r.tat, (SELECT now FROM c)) + (EXCLUDED.tat - (SELECT now FROM c))
               RETURNING r.key, (extract(epoch FROM r.tat - (SELECT now FROM c)) * 1000000)::float8 AS ahead_us
           ),
           marked AS (
               UPDATE communications.messages m SET requested_at = now(), requested_via = w.provider
               FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::float8[])
                    AS w(id, claim, provider, key, before_us)
               WHERE m.id = w.id AND m.status = (SELECT 'sending') AND m.claim = w.claim
                 AND w.provider IS NOT NULL
                 AND (SELECT r.ahead_us - w.before_us FROM reserved r WHERE r.key = w.key) < 0.5
               RETURNING m.id
           )
           SELECT w.n AS "n!", greatest(r.ahead_us - w.before_us, 0) AS "wait_us!",
                  EXISTS (SELECT 1 FROM marked WHERE marked.id = w.id) AS "marked!"
           FROM unnest($3::uuid[], $6::text[], $7::float8[]) WITH ORDINALITY AS w(id, key, before_us, n)
           JOIN reserved r ON r.key = w.key"#,
        &r.keys,
        &r.advances,
        &r.ids,
        &claims,
        &r.providers as &[Option<&str>],
        &r.message_keys,
        &r.before,
    )
    .fetch_all(&mut *connection)
    .await?;
    connection.reusable();
    let mut answers = vec![None; wanted.len()];
    for row in rows {
        let index = usize::try_from(row.n - 1).ok().filter(|i| *i < wanted.len());
        let index = index.ok_or_else(|| ApiError::internal("a slot for a message not asked for"))?;
        answers[index] = Some(answer(wanted[index].provider.is_some(), row.wait_us, row.marked));
    }
    answers.into_iter().map(|answer| answer.ok_or_else(|| ApiError::internal("a message without its slot"))).collect()
}

/// How far `key`'s `tat` moves for `count` tokens, in microseconds.
fn advance(key: &str, limit: RateLimit, count: usize) -> Result<f64, ApiError> {
    if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst == 0 {
        return Err(ApiError::internal(format!("rate limit for {key:?} is not usable: {limit:?}")));
    }
    Ok(1_000_000.0 / limit.per_second * count as f64)
}

/// How far before the key's new `tat` a token lies that is `from_end` tokens from the end of its
/// reservation, less the burst's headroom: its wait is the key's `tat` ahead of now minus this.
fn before_tat(limit: RateLimit, from_end: usize) -> f64 {
    let interval_us = 1_000_000.0 / limit.per_second;
    from_end as f64 * interval_us + interval_us * f64::from(limit.burst.saturating_sub(1))
}
