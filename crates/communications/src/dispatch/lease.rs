//! Who is sending what: every process that dispatches holds a lease (a row it keeps fresh), and
//! every message it claims names that lease. When a process dies, [`recover_once`] finds its
//! messages: one whose provider request never started goes back to the queue at once, one whose
//! request had started becomes `unknown` for `settle` to resolve with the provider.
//!
//! A message claimed but never requested for 30 s is taken back whoever holds it: its dispatch
//! lost track of it (the answer to the claim's commit was lost).
//!
//! "Dead" is judged by the database's clock and only while the database has been up for a whole
//! lease period, so a database restart (which stops every heartbeat) does not make live processes
//! look dead. Even so, a process wrongly judged dead cannot send twice: its in-flight mark
//! (`requested_at`) only lands on a message still claimed by it, and recovery takes the claim
//! away first, and each claim has its own token.

use std::time::Duration;

use kernel::error::ApiError;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::messages::model::{EventSource, Lane, MessageStatus};
use crate::messages::queue::{self, DispatchJob};
use crate::messages::repository::{self as messages, NewEvent};

/// This process's lease: the id its claims carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub owner: Uuid,
}

impl Default for Lease {
    fn default() -> Self {
        Self { owner: Uuid::now_v7() }
    }
}

impl Lease {
    /// Writes (or refreshes) the lease row.
    pub async fn renew(&self, pool: &PgPool) -> Result<(), ApiError> {
        let host = hostname();
        sqlx::query!(
            r#"INSERT INTO communications.dispatch_leases (owner, host, pid) VALUES ($1, $2, $3)
               ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()"#,
            self.owner,
            host,
            i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Gives the lease up on a clean shutdown, so recovery need not wait for it to expire.
    pub async fn release(&self, pool: &PgPool) -> Result<(), ApiError> {
        sqlx::query!("DELETE FROM communications.dispatch_leases WHERE owner = $1", self.owner).execute(pool).await?;
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Keeps the lease fresh every `interval` until the task is dropped; a failed renewal (the
/// database is away) is tried again at the next tick.
pub async fn heartbeat(pool: PgPool, lease: Lease, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        match lease.renew(&pool).await {
            Ok(()) if failing => {
                tracing::info!(owner = %lease.owner, "dispatch lease renewed again");
                failing = false;
            }
            Ok(()) => {}
            Err(error) if !failing => {
                tracing::warn!(%error, owner = %lease.owner, "renewing the dispatch lease failed");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// What one recovery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Claimed but never requested: queued again.
    pub requeued: usize,
    /// Requested when their process died: now `unknown`, to be settled.
    pub interrupted: usize,
}

/// A claim not followed by its provider request within this long is abandoned, whoever holds it:
/// between the two there are only a few statements, each of which puts the message back itself
/// when it fails.
const UNREQUESTED_CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

/// Arbitrary constant naming recovery's advisory lock: one process recovers per round.
const RECOVERY_LOCK: i64 = 0x0052_4543_4f56_4552;

/// One round: messages `sending` whose process's lease lapsed more than `ttl` ago (or that have
/// been `sending` for `stale_after`, whoever holds them: a send never takes that long) are taken
/// back. Returns `None` when another process holds this round.
pub async fn recover_once(pool: &PgPool, ttl: Duration, stale_after: Duration) -> Result<Option<Recovered>, ApiError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#, RECOVERY_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let rows = sqlx::query!(
        r#"WITH lost AS (
               SELECT m.id FROM communications.messages m
               WHERE m.status = 'sending'
                 AND (m.updated_at < now() - make_interval(secs => $2)
                      -- Claimed and never requested for this long: its dispatch lost track of it
                      -- (the claim's commit answer was lost); a new claim supersedes it.
                      OR (m.requested_at IS NULL AND m.updated_at < now() - make_interval(secs => $3))
                      OR (m.updated_at < now() - make_interval(secs => $1)
                          AND pg_postmaster_start_time() < now() - make_interval(secs => $1)
                          AND NOT EXISTS (SELECT 1 FROM communications.dispatch_leases l
                                          WHERE l.owner = m.claimed_by
                                            AND l.heartbeat_at > now() - make_interval(secs => $1))))
               FOR UPDATE OF m SKIP LOCKED)
           UPDATE communications.messages m SET
               status = CASE WHEN m.requested_at IS NULL THEN 'queued' ELSE 'unknown' END,
               attempts = CASE WHEN m.requested_at IS NULL THEN m.attempts - 1 ELSE m.attempts END,
               status_reason = CASE WHEN m.requested_at IS NULL
                   THEN 'its worker stopped before the provider request: queued again'
                   ELSE 'its worker stopped during the provider request: settling with the provider' END,
               claimed_by = NULL, claim = NULL, updated_at = now(), provider = coalesce(m.provider, m.requested_via)
           FROM lost WHERE m.id = lost.id
           RETURNING m.id, m.tenant_id, m.lane AS "lane: Lane", m.attempts, m.requested_at IS NULL AS "requeued!""#,
        ttl.as_secs_f64(),
        stale_after.as_secs_f64(),
        UNREQUESTED_CLAIM_TIMEOUT.as_secs_f64(),
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut recovered = Recovered::default();
    let mut jobs = Vec::new();
    for row in &rows {
        let (status, reason) = if row.requeued {
            recovered.requeued += 1;
            let job = DispatchJob::again(row.id, row.tenant_id, row.attempts);
            jobs.push((row.lane, job, None));
            (MessageStatus::Queued, "the worker that claimed it stopped before sending: queued again")
        } else {
            recovered.interrupted += 1;
            (MessageStatus::Unknown, "the worker sending it stopped mid-request; the provider may have the message")
        };
        let event = NewEvent {
            tenant_id: row.tenant_id,
            message_id: row.id,
            status,
            reason: Some(reason),
            source: EventSource::System,
            payload: None,
            occurred_at: None,
        };
        messages::record_event(&mut *tx, event).await?;
    }
    queue::enqueue_many(&mut tx, &jobs).await?;
    // Leases of processes gone for a day: nothing refers to them any more that recovery has not
    // already taken back.
    sqlx::query!("DELETE FROM communications.dispatch_leases WHERE heartbeat_at < now() - interval '1 day'")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if !rows.is_empty() {
        tracing::warn!(
            requeued = recovered.requeued,
            interrupted = recovered.interrupted,
            "took back messages of a stopped dispatch worker"
        );
    }
    Ok(Some(recovered))
}

/// Locks the message for recording its dispatch's outcome if `claim` still holds it (`sending`
/// under that claim); false if not — recovery took it back meanwhile, and it may be queued,
/// claimed again and on its way through another dispatch, whose outcome is not ours to touch.
pub async fn lock_if_held(tx: &mut PgConnection, id: Uuid, claim: Uuid) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT status = 'sending' AND claim IS NOT DISTINCT FROM $2 AS "held!"
           FROM communications.messages WHERE id = $1 FOR UPDATE"#,
        id,
        claim,
    )
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or(false))
}

/// Gives back a claim whose dispatch ended in an error it could not record (the database answered
/// strangely on its return, say): what recovery would do once the claim is stale, at once —
/// queued again with a job if its request never started, `unknown` for settlement if it did.
/// Nothing happens if the claim no longer holds the message.
pub async fn give_back(pool: &PgPool, id: Uuid, claim: Uuid) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    let Some(row) = sqlx::query!(
        r#"UPDATE communications.messages m SET
               status = CASE WHEN m.requested_at IS NULL THEN 'queued' ELSE 'unknown' END,
               attempts = CASE WHEN m.requested_at IS NULL THEN m.attempts - 1 ELSE m.attempts END,
               status_reason = CASE WHEN m.requested_at IS NULL
                   THEN 'its dispatch failed before the provider request: queued again'
                   ELSE 'its dispatch failed during or after the provider request: settling with the provider' END,
               claimed_by = NULL, claim = NULL, updated_at = now(), provider = coalesce(m.provider, m.requested_via)
           WHERE m.id = $1 AND m.claim = $2 AND m.status = 'sending'
           RETURNING m.tenant_id, m.lane AS "lane: Lane", m.attempts, m.requested_at IS NULL AS "requeued!""#,
        id,
        claim,
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(());
    };
    let (status, reason) = if row.requeued {
        let job = DispatchJob::again(id, row.tenant_id, row.attempts);
        queue::enqueue_many(&mut tx, &[(row.lane, job, None)]).await?;
        (MessageStatus::Queued, "its dispatch failed before the provider request: queued again")
    } else {
        (MessageStatus::Unknown, "its dispatch failed during or after the provider request; the provider may have it")
    };
    let event = NewEvent {
        tenant_id: row.tenant_id,
        message_id: id,
        status,
        reason: Some(reason),
        source: EventSource::System,
        payload: None,
        occurred_at: None,
    };
    messages::record_event(&mut *tx, event).await?;
    tx.commit().await?;
    tracing::warn!(message_id = %id, requeued = row.requeued, "gave back a message whose dispatch failed");
    Ok(())
}

/// [`give_back`], tried for a minute whatever the error, so a message whose dispatch failed goes
/// to the queue or to settlement now. If that fails too, recovery takes it back once the claim is
/// stale (`stuck_after_secs`), and the error says so.
pub async fn give_back_patiently(pool: &PgPool, id: Uuid, claim: Uuid) -> Result<(), ApiError> {
    let mut delay = Duration::from_millis(100);
    let mut last = None;
    for _ in 0..60 {
        match give_back(pool, id, claim).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                tracing::debug!(message_id = %id, %error, "giving the message back failed; trying again");
                last = Some(error);
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
    tracing::error!(message_id = %id, "could not give back a message whose dispatch failed; recovery will");
    Err(last.unwrap_or_else(|| ApiError::internal("giving the message back failed")))
}
