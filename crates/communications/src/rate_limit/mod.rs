//! Send-rate limits per tenant and channel account that hold across every worker process.
//!
//! # Algorithm: GCRA
//!
//! The generic cell rate algorithm (a leaky bucket written as one timestamp) keeps, per key, the
//! *theoretical arrival time* `tat`: the moment by which everything granted so far will have been
//! paid off at the limit's rate. With
//!
//! - `T = 1 / per_second` (the emission interval: what one token costs),
//! - `τ = burst × T` (the tolerance: how far ahead of the clock `tat` may run),
//! - `now` = the database's `clock_timestamp()`,
//!
//! a request for `n` tokens computes `new_tat = max(tat, now) + n × T` and is **granted** when
//! `new_tat − τ ≤ now`, which (for `n ≤ burst`) is the same as `tat ≤ now + (burst − n) × T`. A
//! grant stores `new_tat`. A **refusal** stores nothing new (the row keeps its `tat`), so it
//! consumes no capacity, and answers how long until the same request would pass:
//! `wait = tat − (now + (burst − n) × T)`. An idle key (`tat ≤ now`, or no row at all) has the
//! full burst available; a saturated key is granted exactly `per_second` tokens per second. Over
//! any interval of length `t` at most `per_second × t + burst` tokens are granted.
//!
//! # One statement, in the database
//!
//! [`acquire`] is one `INSERT … ON CONFLICT (key) DO UPDATE … RETURNING` against
//! `communications.rate_limits`: the upsert locks the key's row, decides, writes, and reports in a
//! single round trip, so concurrent workers in any number of processes serialise on the row and
//! never both take the last token. The decision is computed *in SQL* against the database's clock
//! (`clock_timestamp()`, read once per statement; not `now()`, which is the start of the caller's
//! transaction): the workers' own clocks never enter the computation, so processes whose clocks
//! are skewed still agree, and the caller's time zone does not matter either (`timestamptz`). The
//! statement also writes on a refusal (the same `tat`, `granted = false`) because PostgreSQL 15
//! cannot return the pre-update row, and the decision has to come back with the row; on
//! PostgreSQL 18 `RETURNING old.tat` would allow skipping that write.
//!
//! Several tokens can be taken at once (`tokens > 1`), e.g. for a batch of jobs for the same
//! account: one statement then covers the whole batch. More tokens than the burst can never be
//! granted and are an error.
//!
//! The burst should be at least 2. With a burst of 1 the tolerance is zero: a token not taken
//! the very moment it falls due is lost, so workers that sleep for the answered wait (timer
//! granularity, a round trip) reach only about three quarters of the rate (measured at 200/s:
//! −24 %; with a burst of 2 or more: within 1 %). The limit is never exceeded either way.
//!
//! # Unlogged state
//!
//! The table is `UNLOGGED`: no WAL is written for it, and a transaction that only touched it does
//! not wait for a WAL flush at commit. That is what makes an acquisition cheap. Measured on the
//! 2-core development machine (PostgreSQL 15 on the same host): the statement alone (pgbench,
//! prepared) runs about 25,000 grants/s on one connection and 34,000/s from four connections on
//! one key; from Rust through sqlx in a debug build (`rate_limits_measure_acquisitions_per_second`
//! in `tests/api/rate_limits.rs`) about 3,500 grants/s and 4,800 refusals/s on one connection and
//! 5,400/s from four connections on one key — there the client is the bottleneck.
//!
//! The price of `UNLOGGED`: after a crash of PostgreSQL (or on a promoted replica) the table is
//! empty, which is indistinguishable from every key being idle — each key may send one burst
//! early, once. Rows are tiny and one per (tenant, channel account);
//! [`purge_idle`] removes those of keys idle for long (removing an idle key's row changes nothing).
//!
//! # Keys and fairness
//!
//! Keys are per tenant *and* channel account ([`channel_account_key`]): a WhatsApp number's 80
//! messages/s belong to that number. One tenant at its limit only ever locks and refuses on its
//! own row; another tenant's acquisitions touch another row and are neither slowed nor refused.
//! Use the pool (autocommit) as the executor: inside a longer transaction the row lock would be
//! held until that transaction ends, serialising every worker of that key behind it.
//!
//! # How the dispatcher uses it
//!
//! [`acquire`] refuses when the tokens are not there; the dispatcher instead *reserves*
//! ([`reserve_many`], `dispatch/prepare.rs`): after claiming a batch of messages and looking up
//! their channel accounts, and **before calling the provider**, it takes one slot per message
//! on each account's key in one statement and learns how long until each slot. A message whose
//! slot is now is sent; one whose slot is later goes back to `queued` with a job due at the slot,
//! holding it (a deferred job does not reserve again), so it costs no retry budget, holds no
//! worker slot while it waits, and a backlog costs one statement per batch instead of one per
//! message per retry. apalis schedules in whole seconds, so a deferred job returns after at
//! least its wait rounded up to the next second; with a backlog, other queued jobs of the same
//! account fill the rate meanwhile. A provider that still answers "rate limited" (Meta 130429,
//! Twilio 20429, SES throttling) is handled by the retry path.

use std::time::Duration;

use kernel::error::ApiError;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::messages::model::Channel;

/// A rate: `per_second` tokens per second on average, at most `burst` at once after idling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// The answer to an acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The tokens are taken: send now.
    Granted,
    /// Nothing was taken; the same request would be granted after this long (if nobody else takes
    /// the capacity first).
    Wait(Duration),
}

/// Takes `tokens` from `key`'s budget under `limit`, or says how long until they would be there.
/// One statement; decided against the database's clock. `tokens == 0` is always granted.
pub async fn acquire(db: impl PgExecutor<'_>, key: &str, limit: RateLimit, tokens: u32) -> Result<Acquired, ApiError> {
    if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst == 0 {
        return Err(ApiError::internal(format!("rate limit for {key:?} is not usable: {limit:?}")));
    }
    if tokens > limit.burst {
        return Err(ApiError::internal(format!(
            "{tokens} tokens can never be granted under a burst of {} (key {key:?})",
            limit.burst
        )));
    }
    if tokens == 0 {
        return Ok(Acquired::Granted);
    }
    // In microseconds (the resolution of timestamptz): T × n, and the headroom (burst − n) × T.
    let interval_us = 1_000_000.0 / limit.per_second;
    let cost_us = interval_us * f64::from(tokens);
    let headroom_us = interval_us * f64::from(limit.burst - tokens);
    let row = sqlx::query!(
        r#"WITH c AS (SELECT clock_timestamp() AS now)
           INSERT INTO communications.rate_limits AS r (key, tat, granted)
           SELECT $1, c.now + $2::float8 * interval '1 microsecond', true FROM c
           ON CONFLICT (key) DO UPDATE SET
               granted = r.tat <= (SELECT now FROM c) + $3::float8 * interval '1 microsecond',
               tat = CASE WHEN r.tat <= (SELECT now FROM c) + $3::float8 * interval '1 microsecond'
                          THEN greatest(r.tat, (SELECT now FROM c)) + $2::float8 * interval '1 microsecond'
                          ELSE r.tat END
           RETURNING r.granted AS "granted!",
               CASE WHEN r.granted THEN 0
                    ELSE (extract(epoch FROM r.tat - (SELECT now FROM c) - $3::float8 * interval '1 microsecond')
                          * 1000000)::bigint
               END AS "wait_us!""#,
        key,
        cost_us,
        headroom_us,
    )
    .fetch_one(db)
    .await?;
    Ok(if row.granted {
        Acquired::Granted
    } else {
        Acquired::Wait(Duration::from_micros(u64::try_from(row.wait_us).unwrap_or(0).max(1)))
    })
}

/// Reserves the next token of `key` and says how long until it may be used (zero: now). Unlike
/// [`acquire`] it never refuses: the caller waits its turn, so a backlog costs one statement per
/// message instead of one per message per retry. `tat` advances by `T` from
/// `max(tat, now)`; the token is usable once `tat_before ≤ now + (burst − 1)·T`.
pub async fn reserve(db: impl PgExecutor<'_>, key: &str, limit: RateLimit) -> Result<Duration, ApiError> {
    Ok(reserve_many(db, key, limit, 1).await?.pop().unwrap_or_default())
}

/// Reserves the next `count` tokens of `key` in one statement and says, for each in turn, how
/// long until it may be used — as `count` calls of [`reserve`] would, without the round trips.
/// `tat` advances by `count × T`; token `i` (from 0) is usable once
/// `max(tat_before, now) + i·T ≤ now + (burst − 1)·T`.
pub async fn reserve_many(
    db: impl PgExecutor<'_>,
    key: &str,
    limit: RateLimit,
    count: u32,
) -> Result<Vec<Duration>, ApiError> {
    Ok(reserve_on_keys(db, &[(key, limit, count)]).await?.pop().unwrap_or_default())
}

/// [`reserve_many`] on several keys in one statement (a lane's key and the account's, say):
/// `(key, limit, count)` each, answered in order. Keys are locked in sorted order, so two
/// callers with overlapping keys queue rather than deadlock. `dispatch/slots.rs` repeats this
/// statement and its arithmetic, joined with the in-flight mark: a change to one is a change to
/// both.
pub async fn reserve_on_keys(
    db: impl PgExecutor<'_>,
    reservations: &[(&str, RateLimit, u32)],
) -> Result<Vec<Vec<Duration>>, ApiError> {
    for (key, limit, _) in reservations {
        if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst == 0 {
            return Err(ApiError::internal(format!("rate limit for {key:?} is not usable: {limit:?}")));
        }
    }
    let mut wanted: Vec<(&str, f64)> = reservations
        .iter()
        .filter(|(_, _, count)| *count > 0)
        .map(|(key, limit, count)| (*key, 1_000_000.0 / limit.per_second * f64::from(*count)))
        .collect();
    wanted.sort_by(|a, b| a.0.cmp(b.0));
    if wanted.is_empty() {
        return Ok(reservations.iter().map(|_| Vec::new()).collect());
    }
    let keys: Vec<&str> = wanted.iter().map(|(key, _)| *key).collect();
    let advances: Vec<f64> = wanted.iter().map(|(_, advance)| *advance).collect();
    // `EXCLUDED.tat` is the clock plus the key's advance; on conflict the advance is added to
    // the later of the key's `tat` and the clock.
    let ahead: std::collections::HashMap<String, f64> = sqlx::query!(
        r#"WITH c AS (SELECT clock_timestamp() AS now)
           INSERT INTO communications.rate_limits AS r (key, tat, granted)
           SELECT k.key, c.now + k.advance * interval '1 microsecond', true
           FROM c, unnest($1::text[], $2::float8[]) WITH ORDINALITY AS k(key, advance, n)
           ORDER BY k.n
           ON CONFLICT (key) DO UPDATE SET
               granted = true,
               tat = greatest(r.tat, (SELECT now FROM c)) + (EXCLUDED.tat - (SELECT now FROM c))
           RETURNING r.key, (extract(epoch FROM r.tat - (SELECT now FROM c)) * 1000000)::float8 AS "ahead_us!""#,
        &keys as &[&str],
        &advances,
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|row| (row.key, row.ahead_us))
    .collect();
    reservations
        .iter()
        .map(|(key, limit, count)| {
            if *count == 0 {
                return Ok(Vec::new());
            }
            let ahead_us = *ahead.get(*key).ok_or_else(|| ApiError::internal("a rate-limit key without its answer"))?;
            let interval_us = 1_000_000.0 / limit.per_second;
            let headroom_us = interval_us * f64::from(limit.burst - 1);
            Ok((0..*count)
                .map(|i| {
                    let wait_us = ahead_us - f64::from(count - i) * interval_us - headroom_us;
                    Duration::from_micros(wait_us.max(0.0).round() as u64)
                })
                .collect())
        })
        .collect()
}

/// Deletes the state of keys idle for at least `idle_for` (their row says nothing a missing row
/// would not), e.g. of revoked channel accounts. Returns how many were removed.
pub async fn purge_idle(db: impl PgExecutor<'_>, idle_for: Duration) -> Result<u64, ApiError> {
    let done = sqlx::query!(
        "DELETE FROM communications.rate_limits WHERE tat < clock_timestamp() - $1::float8 * interval '1 second'",
        idle_for.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// The key of a channel account's send rate: per tenant and account, so one tenant's traffic
/// never spends another's budget.
pub fn channel_account_key(tenant_id: Uuid, channel_account_id: Uuid) -> String {
    format!("channel_account:{tenant_id}:{channel_account_id}")
}

/// A channel account's bulk key and its limit: 80 % of the account's rate, so urgent messages
/// (which use the account's own key and also count here) always find room.
pub fn bulk_key(
    tenant_id: Uuid,
    channel_account_id: Uuid,
    channel: Channel,
    verification: &Value,
    defaults: &RateDefaults,
) -> (String, RateLimit) {
    let limit = limit_for(channel, verification, defaults);
    let key = format!("{}:bulk", channel_account_key(tenant_id, channel_account_id));
    (key, RateLimit { per_second: limit.per_second * 0.8, burst: (limit.burst * 4 / 5).max(1) })
}

/// The platform's default send rates (configuration), overridden per account by what providers
/// told us at verification (see [`limit_for`]).
#[derive(Debug, Clone)]
pub struct RateDefaults {
    /// Per WhatsApp number at Meta's standard throughput.
    pub whatsapp_per_second: f64,
    /// Per email channel account (an SES identity in the tenant's or the platform's account).
    pub email_per_second: f64,
    /// Per SMS channel account (SNS or Twilio sender).
    pub sms_per_second: f64,
    /// Tokens available at once after idling; capped at one second's worth of the rate.
    pub burst: u32,
}

impl Default for RateDefaults {
    fn default() -> Self {
        Self {
            // Meta: 80 messages/s per registered number by default.
            whatsapp_per_second: 80.0,
            // SES: the starting maximum send rate of an account out of the sandbox.
            email_per_second: 14.0,
            // SNS's default SMS rate is 20/s per account; Twilio's depends on the number type.
            sms_per_second: 20.0,
            // Small enough that a burst never doubles a provider's per-second budget, large
            // enough to absorb the scheduling jitter of many workers.
            burst: 10,
        }
    }
}

/// Meta's upgraded ("higher") throughput per number.
pub const WHATSAPP_HIGH_THROUGHPUT: f64 = 1000.0;
/// Meta's fixed throughput for coexistence numbers (also used in the WhatsApp Business app).
pub const WHATSAPP_COEXISTENCE_THROUGHPUT: f64 = 20.0;

/// The send rate of a channel account, from the channel, the facts its verification recorded
/// (`channel_accounts.verification`) and the platform defaults.
///
/// WhatsApp (Meta, per number; see `docs/providers/meta-whatsapp.md` and Meta's throughput page):
/// - Throughput is per registered business number: 80 messages/s by default, counting inbound and
///   outbound messages of every type. A number that meets Meta's eligibility (business portfolio
///   at the unlimited messaging limit, and enough volume) is upgraded automatically to 1,000/s;
///   Meta reports the upgrade with a `phone_number_quality_update` webhook (event
///   `THROUGHPUT_UPGRADE`) and as `throughput.level = "HIGH"` on the phone number. Numbers in
///   coexistence with the WhatsApp Business app are fixed at 20/s.
/// - The messaging limit tier (`TIER_250` … `TIER_UNLIMITED`) is **not** a rate: it caps how many
///   distinct users business-initiated conversations may reach in a rolling 24 hours, and Meta
///   enforces it with its own errors. It does not change messages per second, so it does not
///   change the limit here (the unlimited tier is only a precondition of the upgrade, not proof
///   of it). The quality rating (`GREEN`/`YELLOW`/`RED`) moves the tier, not the throughput.
/// - So: `throughput.level` `HIGH` (or a recorded `throughput_upgrade`) → 1,000/s;
///   `is_on_biz_app: true` (coexistence) → at most 20/s; otherwise the configured default.
///
/// Email: SES's `SendQuota.MaxSendRate` when verification recorded it as `max_send_rate`,
/// otherwise the configured default. SMS (SNS, Twilio): the configured default.
///
/// The burst is the configured one, capped at one second's worth of the rate (at least 1).
pub fn limit_for(channel: Channel, verification: &Value, defaults: &RateDefaults) -> RateLimit {
    let per_second = match channel {
        Channel::Whatsapp => whatsapp_rate(verification, defaults.whatsapp_per_second),
        Channel::Email => positive(verification.get("max_send_rate")).unwrap_or(defaults.email_per_second),
        Channel::Sms => defaults.sms_per_second,
        // Not dispatched: the visitor's browser is the only receiver.
        Channel::Webchat => f64::from(defaults.burst.max(1)),
    };
    // A misconfigured default must not stop sending altogether.
    let per_second = if per_second.is_finite() && per_second > 0.0 { per_second } else { 1.0 };
    let one_second = per_second.floor().clamp(1.0, f64::from(u32::MAX)) as u32;
    RateLimit { per_second, burst: defaults.burst.clamp(1, one_second) }
}

fn whatsapp_rate(verification: &Value, default: f64) -> f64 {
    let level = verification
        .pointer("/throughput/level")
        .or_else(|| verification.get("throughput_level"))
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase);
    let upgraded = verification.get("throughput_upgrade").and_then(Value::as_bool).unwrap_or(false);
    let coexistence = verification.get("is_on_biz_app").and_then(Value::as_bool).unwrap_or(false);
    let rate = if level.as_deref() == Some("HIGH") || upgraded { WHATSAPP_HIGH_THROUGHPUT } else { default };
    if coexistence { rate.min(WHATSAPP_COEXISTENCE_THROUGHPUT) } else { rate }
}

fn positive(value: Option<&Value>) -> Option<f64> {
    value.and_then(Value::as_f64).filter(|rate| rate.is_finite() && *rate > 0.0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn whatsapp_defaults_to_80_per_number() {
        let limit = limit_for(Channel::Whatsapp, &json!({}), &RateDefaults::default());
        assert_eq!(limit, RateLimit { per_second: 80.0, burst: 10 });
        // The messaging tier caps unique users per day, not messages per second.
        let tiered = json!({"messaging_limit_tier": "TIER_UNLIMITED", "quality_rating": "GREEN"});
        assert_eq!(limit_for(Channel::Whatsapp, &tiered, &RateDefaults::default()).per_second, 80.0);
    }

    #[test]
    fn whatsapp_high_throughput_and_coexistence() {
        let defaults = RateDefaults::default();
        let high = json!({"throughput": {"level": "HIGH"}});
        assert_eq!(limit_for(Channel::Whatsapp, &high, &defaults).per_second, 1000.0);
        assert_eq!(limit_for(Channel::Whatsapp, &json!({"throughput_upgrade": true}), &defaults).per_second, 1000.0);
        let standard = json!({"throughput": {"level": "STANDARD"}});
        assert_eq!(limit_for(Channel::Whatsapp, &standard, &defaults).per_second, 80.0);
        let coexistence = json!({"is_on_biz_app": true, "throughput": {"level": "HIGH"}});
        assert_eq!(limit_for(Channel::Whatsapp, &coexistence, &defaults).per_second, 20.0);
    }

    #[test]
    fn email_and_sms_come_from_configuration() {
        let defaults = RateDefaults { email_per_second: 50.0, sms_per_second: 5.0, ..RateDefaults::default() };
        assert_eq!(limit_for(Channel::Email, &json!({}), &defaults), RateLimit { per_second: 50.0, burst: 10 });
        assert_eq!(limit_for(Channel::Email, &json!({"max_send_rate": 200}), &defaults).per_second, 200.0);
        assert_eq!(limit_for(Channel::Email, &json!({"max_send_rate": -1}), &defaults).per_second, 50.0);
        // The burst never exceeds one second's worth of the rate.
        assert_eq!(limit_for(Channel::Sms, &json!({}), &defaults), RateLimit { per_second: 5.0, burst: 5 });
        let slow = RateDefaults { sms_per_second: 0.5, ..RateDefaults::default() };
        assert_eq!(limit_for(Channel::Sms, &json!({}), &slow), RateLimit { per_second: 0.5, burst: 1 });
        let broken = RateDefaults { sms_per_second: f64::NAN, ..RateDefaults::default() };
        assert_eq!(limit_for(Channel::Sms, &json!({}), &broken).per_second, 1.0);
    }

    #[test]
    fn keys_are_per_tenant_and_account() {
        let (tenant, other_tenant, account) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_ne!(channel_account_key(tenant, account), channel_account_key(other_tenant, account));
        assert!(channel_account_key(tenant, account).contains(&account.to_string()));
    }
}
