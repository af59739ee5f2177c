//! Acceptance in two round trips, for the batches the send API sees every day.
//!
//! The transaction of `accept::store_in_transaction` costs five round trips or more per batch —
//! BEGIN, the keys, the contact lookup, the contacts, the messages, COMMIT — and at everyday
//! rates a batch holds one or two requests, so each message pays for all of them (and the
//! service as much again: every round trip wakes both sides). A batch whose drafts all go out
//! now through this process's dispatcher (queued, not scheduled, not deferred by quiet hours,
//! not a paced bulk message) is stored here instead:
//!
//! 1. the reads of acceptance (`accept::plan`: contacts with the suppressions of the addresses
//!    the requests name; quiet hours), outside any transaction — under READ COMMITTED each
//!    statement of the transaction read afresh anyway;
//! 2. one autocommit statement whose data-modifying CTEs insert the keys, create and complete
//!    the contacts, reserve the messages' rate-limit slots, and insert the messages, stored
//!    claimed — and marked in flight when their slot is now, so that the dispatcher's own
//!    slot-and-mark statement is not needed (`dispatch::local::LocalDispatch::slots_to_reserve`)
//!    — with their first events.
//!
//! The statement takes nothing for granted that the reads saw: a key, or a new contact's
//! identifier, that exists by then (a retried request, a concurrent one for the same new
//! recipient) is a unique violation — after waiting for the transaction that holds it, as the
//! careful path's claim does — and the statement stores nothing. The batch then goes the careful
//! way, which answers those requests as before. A refused keyed request goes that way too: its
//! key may hold an earlier answer.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::kept::KeptConnections;
use serde_json::Value;
use uuid::Uuid;

use super::accept::{self, ACCEPTED, Answer, Draft, Submission};
use super::model::{EventSource, Lane, MessageStatus};
use super::repository::NewMessage;
use super::service::{Accepted, FallbackStep};
use crate::contacts::{self, ResolvedContact};
use crate::dispatch::local::{Handoff, LocalDispatch};
use crate::dispatch::slots::{self, Reservation};

/// Stores `submissions` in two round trips and hands their messages to `local`; `None` when
/// the batch is not one this path takes, or when the statement found a key or an identifier
/// taken: the caller stores it the careful way.
pub(super) async fn store(
    kept: &KeptConnections,
    local: Option<&LocalDispatch>,
    submissions: &[Submission],
) -> Result<Option<Vec<Result<Answer, ApiError>>>, ApiError> {
    let Some(local) = local else { return Ok(None) };
    let drafts: Vec<&Draft> = submissions.iter().map(|s| &s.draft).collect();
    // A refused keyed request goes the careful way: its key may hold an earlier answer. So
    // every key claimed here is a stored request's.
    let refusable: Vec<bool> = submissions.iter().map(|s| s.key.is_none()).collect();
    let mut keys: Vec<(Uuid, &str, &[u8], Value)> = Vec::new();
    for s in submissions {
        if let Some(key) = &s.key {
            let answer = Accepted { id: s.draft.id, status: s.draft.status, wake: None };
            let answer = serde_json::to_value(answer).map_err(ApiError::internal)?;
            keys.push((s.draft.tenant.0, key.key.as_str(), key.hash.as_slice(), answer));
        }
    }
    // In one order, so that batches sharing keys queue instead of deadlocking.
    keys.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let Some(planned) = store_drafts(kept, local, &drafts, &refusable, Claims::Keys(&keys)).await? else {
        return Ok(None);
    };
    Ok(Some(
        drafts
            .iter()
            .zip(planned)
            .map(|(draft, plan)| {
                plan.map(|_| Answer::Accepted(Accepted { id: draft.id, status: draft.status, wake: None }))
            })
            .collect(),
    ))
}

/// An event batch's ids (with the messages each makes, and the entity snapshots they carry),
/// claimed in the statement that stores their messages (`triggers/ingest.rs`).
#[derive(Debug)]
pub(crate) struct EventClaims<'a> {
    pub tenants: Vec<Uuid>,
    pub ids: Vec<&'a str>,
    pub names: Vec<&'a str>,
    /// Where each event's run of `message_ids` ends (see `triggers::ingest::message_runs`).
    pub ends: Vec<i32>,
    pub message_ids: Vec<Uuid>,
    pub snapshots: crate::inbox::context::SnapshotColumns<'a>,
}

/// The events' messages, `drafts` (every one of which must be stored: a refused one goes the
/// careful way, which records it as skipped), in two round trips; `false` when the batch is not
/// one this path takes, or an event id was processed meanwhile.
pub(crate) async fn store_events(
    kept: &KeptConnections,
    local: Option<&LocalDispatch>,
    drafts: &[&Draft],
    events: &EventClaims<'_>,
) -> Result<bool, ApiError> {
    let Some(local) = local else { return Ok(false) };
    let refusable = vec![false; drafts.len()];
    Ok(store_drafts(kept, local, drafts, &refusable, Claims::Events(events)).await?.is_some())
}

/// What the statement claims besides the messages.
enum Claims<'a> {
    /// The send API's keys: (tenant, key, body hash, answer), in key order.
    Keys(&'a [(Uuid, &'a str, &'a [u8], Value)]),
    Events(&'a EventClaims<'a>),
}

/// The reads, then the statement; each draft's plan if stored. `refusable` says which drafts
/// may be refused (answered with their 422) without sending the batch the careful way.
async fn store_drafts(
    kept: &KeptConnections,
    local: &LocalDispatch,
    drafts: &[&Draft],
    refusable: &[bool],
    claims: Claims<'_>,
) -> Result<Option<Vec<accept::Planned>>, ApiError> {
    let now = Utc::now();
    let goes_now = |draft: &&Draft| {
        draft.status == MessageStatus::Queued && draft.lane != Lane::Bulk && draft.later_than(now).is_none()
    };
    if !drafts.iter().all(goes_now) {
        return Ok(None);
    }
    let mut db = kept.acquire().await?;
    let planned = accept::plan(&mut db, drafts).await?;
    if planned.iter().zip(refusable).any(|(plan, refusable)| plan.is_err() && !refusable) {
        return Ok(None);
    }
    let ready: Vec<(&Draft, &ResolvedContact, &[FallbackStep])> = drafts
        .iter()
        .zip(&planned)
        .filter_map(|(draft, plan)| plan.as_ref().ok().map(|(contact, steps)| (*draft, contact, steps.as_slice())))
        .collect();
    let items: Vec<_> = ready.iter().map(|(draft, contact, _)| (draft.tenant, &draft.recipient, *contact)).collect();
    let people = contacts::plan_persist(&items)?;
    if !super::quiet_hours::deferrals(&mut db, &ready, &people.ids, now).await?.is_empty() {
        return Ok(None);
    }
    let permits = ready.iter().map(|_| local.try_reserve()).collect::<Option<Vec<_>>>();
    let Some(permits) = permits else { return Ok(None) };
    let claim = Uuid::now_v7();
    let mut rows = Vec::with_capacity(ready.len());
    let mut reasons = Vec::with_capacity(ready.len());
    for ((draft, _, steps), contact) in ready.iter().zip(&people.ids) {
        rows.push(accept::message_row(draft, *contact, steps, draft.scheduled_at, Some((local.owner, claim)))?);
        reasons.push(draft.scheduled_at.map(|at| format!("scheduled for {}", at.to_rfc3339())));
    }
    let mut slots = HashMap::new();
    // An event batch's ids are claimed even when its rules made no message.
    if !rows.is_empty() || matches!(claims, Claims::Events(_)) {
        let reservation = local.slots_to_reserve(&rows, claim).await;
        let columns = Columns::of(&rows, &reasons, &people);
        let inserted = match claims {
            Claims::Keys(keys) => insert(&mut db, &columns, &reservation, keys).await,
            Claims::Events(events) => insert_events(&mut db, &columns, &reservation, events).await,
        };
        match inserted {
            Ok(reserved) => {
                let answers = reserved.into_iter().map(|(id, wait, marked)| (id, slots::answer(true, wait, marked)));
                slots.extend(answers);
            }
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Ok(None),
            Err(error) => return Err(error.into()),
        }
    }
    db.reusable();
    for row in &rows {
        metrics::counter!("messages_accepted_total", "channel" => row.channel.as_str(), "lane" => row.lane.as_str())
            .increment(1);
    }
    local.hand_off(
        rows.into_iter()
            .zip(permits)
            .map(|(row, permit)| Handoff {
                slot: slots.remove(&row.id),
                message: accept::claimed_row(row, now),
                claim,
                permit,
            })
            .collect(),
    );
    Ok(Some(planned))
}

/// The messages' and contacts' columns, as both statements bind them.
struct Columns<'a> {
    ids: Vec<Uuid>,
    event_ids: Vec<Uuid>,
    tenants: Vec<Uuid>,
    contacts: Vec<Option<Uuid>>,
    conversations: Vec<Option<Uuid>>,
    channels: Vec<&'a str>,
    fallbacks: Vec<&'a Value>,
    recipients: Vec<&'a str>,
    contents: Vec<&'a Value>,
    lanes: Vec<&'a str>,
    scheduled: Vec<Option<DateTime<Utc>>>,
    metadata: Vec<&'a Value>,
    owners: Vec<Option<Uuid>>,
    claims: Vec<Option<Uuid>>,
    reasons: &'a [Option<String>],
    new: Identifiers,
    more: Identifiers,
}

/// (tenant, kind, value, contact) of contact identifiers, as columns.
struct Identifiers {
    tenants: Vec<Uuid>,
    kinds: Vec<String>,
    values: Vec<String>,
    contacts: Vec<Uuid>,
}

impl Identifiers {
    fn of(rows: &[(Uuid, &str, &str, Uuid)]) -> Self {
        Self {
            tenants: rows.iter().map(|r| r.0).collect(),
            kinds: rows.iter().map(|r| r.1.to_owned()).collect(),
            values: rows.iter().map(|r| r.2.to_owned()).collect(),
            contacts: rows.iter().map(|r| r.3).collect(),
        }
    }
}

impl<'a> Columns<'a> {
    fn of(messages: &'a [NewMessage<'a>], reasons: &'a [Option<String>], people: &contacts::PersistPlan<'_>) -> Self {
        Self {
            ids: messages.iter().map(|m| m.id).collect(),
            event_ids: messages.iter().map(|_| Uuid::now_v7()).collect(),
            tenants: messages.iter().map(|m| m.tenant_id.0).collect(),
            contacts: messages.iter().map(|m| m.contact_id).collect(),
            conversations: messages.iter().map(|m| m.conversation_id).collect(),
            channels: messages.iter().map(|m| m.channel.as_str()).collect(),
            fallbacks: messages.iter().map(|m| &m.fallback).collect(),
            recipients: messages.iter().map(|m| m.recipient).collect(),
            contents: messages.iter().map(|m| &m.content).collect(),
            lanes: messages.iter().map(|m| m.lane.as_str()).collect(),
            scheduled: messages.iter().map(|m| m.scheduled_at).collect(),
            metadata: messages.iter().map(|m| &m.metadata).collect(),
            owners: messages.iter().map(|m| m.claim.map(|(owner, _)| owner)).collect(),
            claims: messages.iter().map(|m| m.claim.map(|(_, claim)| claim)).collect(),
            reasons,
            new: Identifiers::of(&people.new),
            more: Identifiers::of(&people.attach),
        }
    }
}

/// Runs `$sql` (a literal, as sqlx needs it) with the messages' and contacts' columns of `$c`
/// bound as $1-$21, the slots' reservation `$r` as $22-$27 and `$more` after them: the two
/// statements differ only in what they claim. Answers (message, wait in µs, marked) for each
/// message whose slot it reserved.
macro_rules! fetch_with_columns {
    ($db:expr, $c:expr, $r:expr, $sql:tt, $($more:expr),+ $(,)?) => {
        sqlx::query!(
            $sql,
            &$c.ids,
            &$c.tenants,
            &$c.contacts as &[Option<Uuid>],
            &$c.conversations as &[Option<Uuid>],
            &$c.channels as &[&str],
            &$c.fallbacks as &[&Value],
            &$c.recipients as &[&str],
            &$c.contents as &[&Value],
            &$c.lanes as &[&str],
            &$c.scheduled as &[Option<DateTime<Utc>>],
            &$c.metadata as &[&Value],
            &$c.owners as &[Option<Uuid>],
            &$c.claims as &[Option<Uuid>],
            &$c.new.tenants,
            &$c.new.kinds,
            &$c.new.values,
            &$c.new.contacts,
            &$c.more.tenants,
            &$c.more.kinds,
            &$c.more.values,
            &$c.more.contacts,
            &$r.keys,
            &$r.advances,
            &$r.ids,
            &$r.providers as &[Option<&str>],
            &$r.message_keys,
            &$r.before,
            $($more),+
        )
        .fetch_all(&mut *$db)
        .await
        .map(|rows| rows.into_iter().map(|row| (row.id, row.wait_us, row.marked)).collect::<Vec<_>>())
    };
}

// Both statements: the claimed message was queued first, as far as its trail goes. Every CTE runs
// to its end whether or not the final statement reads it; a unique violation in any undoes all, the
// slots' reservation with the rest. A message whose slot is now is stored in flight to its first
// provider, as the dispatcher's slot-and-mark would mark it (`dispatch/slots.rs`, whose reservation
// this repeats: a change to one is a change to both). The new contacts' identifiers are inserted
// without ON CONFLICT: one taken since the lookup must fail the statement.

/// What the statements answer per reserved slot: (message, wait in µs, marked in flight).
type Slots = Vec<(Uuid, f64, bool)>;

/// The send API's statement: the slots, keys, new contacts with their first identifier, the
/// other identifiers, the messages (claimed) with their `queued` events.
async fn insert(
    db: &mut sqlx::PgConnection,
    c: &Columns<'_>,
    r: &Reservation,
    keys: &[(Uuid, &str, &[u8], Value)],
) -> Result<Slots, sqlx::Error> {
    let key_tenants: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let key_names: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let key_hashes: Vec<&[u8]> = keys.iter().map(|k| k.2).collect();
    let key_bodies: Vec<Value> = keys.iter().map(|k| k.3.clone()).collect();
    fetch_with_columns!(
        db,
        c,
        r,
        r#"WITH c AS (SELECT clock_timestamp() AS now),
           reserved AS (
               INSERT INTO communications.rate_limits AS r (key, tat, granted)
               SELECT k.key, c.now + k.advance * interval '1 microsecond', true
               FROM c, unnest($22::text[], $23::float8[]) WITH ORDINALITY AS k(key, advance, n)
               ORDER BY k.n
               ON CONFLICT (key) DO UPDATE SET
                   granted = true,
                   tat = greatest(r.tat, (SELECT now FROM c)) + (EXCLUDED.tat - (SELECT now FROM c))
               RETURNING r.key, (extract(epoch FROM r.tat - (SELECT now FROM c)) * 1000000)::float8 AS ahead_us),
           slot AS (
               SELECT w.id, w.provider, greatest(r.ahead_us - w.before_us, 0) AS wait_us
               FROM unnest($24::uuid[], $25::text[], $26::text[], $27::float8[]) AS w(id, provider, key, before_us)
               JOIN reserved r ON r.key = w.key),
           key AS (
               INSERT INTO communications.idempotency_keys (tenant_id, key, request_hash, response_status, response_body)
               SELECT tenant_id, key, hash, $32, body
               FROM unnest($28::uuid[], $29::text[], $30::bytea[], $31::jsonb[]) WITH ORDINALITY
                    AS k(tenant_id, key, hash, body, n)
               ORDER BY n),
           identifier AS (
               INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
               SELECT * FROM unnest($14::uuid[], $15::text[], $16::text[], $17::uuid[])
               RETURNING contact_id, tenant_id),
           contact AS (
               INSERT INTO communications.contacts (id, tenant_id) SELECT contact_id, tenant_id FROM identifier),
           more AS (
               INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
               SELECT * FROM unnest($18::uuid[], $19::text[], $20::text[], $21::uuid[])
               ON CONFLICT DO NOTHING),
           message AS (
               INSERT INTO communications.messages
                   (id, tenant_id, contact_id, conversation_id, channel, fallback, recipient, content, status, lane,
                    scheduled_at, metadata, attempts, claimed_by, claim, requested_at, requested_via)
               SELECT m.id, tenant_id, contact_id, conversation_id, channel, fallback, recipient, content, 'sending',
                      lane, scheduled_at, metadata, 1, claimed_by, claim,
                      CASE WHEN s.wait_us < 0.5 THEN now() END, CASE WHEN s.wait_us < 0.5 THEN s.provider END
               FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::jsonb[], $7::text[],
                           $8::jsonb[], $9::text[], $10::timestamptz[], $11::jsonb[], $12::uuid[], $13::uuid[])
                    AS m(id, tenant_id, contact_id, conversation_id, channel, fallback, recipient, content, lane,
                         scheduled_at, metadata, claimed_by, claim)
                    LEFT JOIN slot s ON s.id = m.id
               RETURNING id, tenant_id, requested_at IS NOT NULL AS marked),
           trail AS (
               INSERT INTO communications.message_events (id, tenant_id, message_id, status, reason, source, occurred_at)
               SELECT event.id, message.tenant_id, message.id, 'queued', event.reason, $35, now()
               FROM message JOIN unnest($1::uuid[], $33::uuid[], $34::text[]) AS event(message_id, id, reason)
                    ON event.message_id = message.id)
           SELECT m.id AS "id!", s.wait_us AS "wait_us!", m.marked AS "marked!" FROM message m JOIN slot s ON s.id = m.id"#,
        &key_tenants,
        &key_names as &[&str],
        &key_hashes as &[&[u8]],
        &key_bodies,
        ACCEPTED as i16,
        &c.event_ids,
        c.reasons as &[Option<String>],
        EventSource::Api.as_str(),
    )
}

/// The events' statement: their ids (a processed one fails it) with the messages each makes,
/// their entity snapshots (the newest kept, as `triggers/ingest.rs` does), then as [`insert`].
async fn insert_events(
    db: &mut sqlx::PgConnection,
    c: &Columns<'_>,
    r: &Reservation,
    e: &EventClaims<'_>,
) -> Result<Slots, sqlx::Error> {
    let s = &e.snapshots;
    fetch_with_columns!(
        db,
        c,
        r,
        r#"WITH c AS (SELECT clock_timestamp() AS now),
           reserved AS (
               INSERT INTO communications.rate_limits AS r (key, tat, granted)
               SELECT k.key, c.now + k.advance * interval '1 microsecond', true
               FROM c, unnest($22::text[], $23::float8[]) WITH ORDINALITY AS k(key, advance, n)
               ORDER BY k.n
               ON CONFLICT (key) DO UPDATE SET
                   granted = true,
                   tat = greatest(r.tat, (SELECT now FROM c)) + (EXCLUDED.tat - (SELECT now FROM c))
               RETURNING r.key, (extract(epoch FROM r.tat - (SELECT now FROM c)) * 1000000)::float8 AS ahead_us),
           slot AS (
               SELECT w.id, w.provider, greatest(r.ahead_us - w.before_us, 0) AS wait_us
               FROM unnest($24::uuid[], $25::text[], $26::text[], $27::float8[]) AS w(id, provider, key, before_us)
               JOIN reserved r ON r.key = w.key),
           processed AS (
               INSERT INTO communications.processed_events (tenant_id, event_id, event, message_ids)
               SELECT e.tenant_id, e.event_id, e.event,
                      ($32::uuid[])[lag(e.last, 1, 0) OVER (ORDER BY e.n) + 1 : e.last]
               FROM unnest($28::uuid[], $29::text[], $30::text[], $31::int4[])
                    WITH ORDINALITY AS e(tenant_id, event_id, event, last, n)
               ORDER BY e.n),
           snapshot AS (
               INSERT INTO communications.entity_snapshots
                   (tenant_id, kind, entity_id, source, op, row, event_id, occurred_at)
               SELECT * FROM unnest($35::uuid[], $36::text[], $37::text[], $38::text[], $39::text[], $40::jsonb[],
                                    $41::text[], $42::timestamptz[])
               ON CONFLICT (tenant_id, kind, entity_id) DO UPDATE
                   SET source = EXCLUDED.source, op = EXCLUDED.op, row = EXCLUDED.row, event_id = EXCLUDED.event_id,
                       occurred_at = EXCLUDED.occurred_at
                   WHERE entity_snapshots.occurred_at <= EXCLUDED.occurred_at),
           identifier AS (
               INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
               SELECT * FROM unnest($14::uuid[], $15::text[], $16::text[], $17::uuid[])
               RETURNING contact_id, tenant_id),
           contact AS (
               INSERT INTO communications.contacts (id, tenant_id) SELECT contact_id, tenant_id FROM identifier),
           more AS (
               INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
               SELECT * FROM unnest($18::uuid[], $19::text[], $20::text[], $21::uuid[])
               ON CONFLICT DO NOTHING),
           message AS (
               INSERT INTO communications.messages
                   (id, tenant_id, contact_id, conversation_id, channel, fallback, recipient, content, status, lane,
                    scheduled_at, metadata, attempts, claimed_by, claim, requested_at, requested_via)
               SELECT m.id, tenant_id, contact_id, conversation_id, channel, fallback, recipient, content, 'sending',
                      lane, scheduled_at, metadata, 1, claimed_by, claim,
                      CASE WHEN s.wait_us < 0.5 THEN now() END, CASE WHEN s.wait_us < 0.5 THEN s.provider END
               FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::jsonb[], $7::text[],
                           $8::jsonb[], $9::text[], $10::timestamptz[], $11::jsonb[], $12::uuid[], $13::uuid[])
                    AS m(id, tenant_id, contact_id, conversation_id, channel, fallback, recipient, content, lane,
                         scheduled_at, metadata, claimed_by, claim)
                    LEFT JOIN slot s ON s.id = m.id
               RETURNING id, tenant_id, requested_at IS NOT NULL AS marked),
           trail AS (
               INSERT INTO communications.message_events (id, tenant_id, message_id, status, reason, source, occurred_at)
               SELECT event.id, message.tenant_id, message.id, 'queued', event.reason, $43, now()
               FROM message JOIN unnest($1::uuid[], $33::uuid[], $34::text[]) AS event(message_id, id, reason)
                    ON event.message_id = message.id)
           SELECT m.id AS "id!", s.wait_us AS "wait_us!", m.marked AS "marked!" FROM message m JOIN slot s ON s.id = m.id"#,
        &e.tenants,
        &e.ids as &[&str],
        &e.names as &[&str],
        &e.ends,
        &e.message_ids,
        &c.event_ids,
        c.reasons as &[Option<String>],
        &s.tenants,
        &s.kinds as &[&str],
        &s.ids as &[&str],
        &s.sources as &[&str],
        &s.ops as &[&str],
        &s.rows as &[sqlx::types::Json<&serde_json::value::RawValue>],
        &s.event_ids as &[&str],
        &s.times,
        EventSource::Api.as_str(),
    )
}
