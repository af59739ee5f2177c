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
//!    the contacts, and insert the messages, stored claimed, with their first events.
//!
//! The statement takes nothing for granted that the reads saw: a key, or a new contact's
//! identifier, that exists by then (a retried request, a concurrent one for the same new
//! recipient) is a unique violation — after waiting for the transaction that holds it, as the
//! careful path's claim does — and the statement stores nothing. The batch then goes the careful
//! way, which answers those requests as before. A refused keyed request goes that way too: its
//! key may hold an earlier answer.

use chrono::Utc;
use kernel::error::ApiError;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::accept::{self, ACCEPTED, Answer, Draft, Submission};
use super::model::{EventSource, Lane, MessageStatus};
use super::repository::NewMessage;
use super::service::{Accepted, FallbackStep};
use crate::contacts::{self, ResolvedContact};
use crate::dispatch::local::{Handoff, LocalDispatch};

/// Stores `submissions` in two round trips and hands their messages to `local`; `None` when
/// the batch is not one this path takes, or when the statement found a key or an identifier
/// taken: the caller stores it the careful way.
pub(super) async fn store(
    pool: &PgPool,
    local: Option<&LocalDispatch>,
    submissions: &[Submission],
) -> Result<Option<Vec<Result<Answer, ApiError>>>, ApiError> {
    let Some(local) = local else { return Ok(None) };
    let now = Utc::now();
    let goes_now = |draft: &Draft| {
        draft.status == MessageStatus::Queued && draft.lane != Lane::Bulk && draft.later_than(now).is_none()
    };
    if !submissions.iter().all(|s| goes_now(&s.draft)) {
        return Ok(None);
    }
    let drafts: Vec<Draft> = submissions.iter().map(|s| s.draft.clone()).collect();
    let mut db = pool.acquire().await?;
    let planned = accept::plan(&mut db, &drafts).await?;
    if planned.iter().zip(submissions).any(|(plan, s)| plan.is_err() && s.key.is_some()) {
        return Ok(None);
    }
    let ready: Vec<(&Draft, &ResolvedContact, &[FallbackStep])> = drafts
        .iter()
        .zip(&planned)
        .filter_map(|(draft, plan)| plan.as_ref().ok().map(|(contact, steps)| (draft, contact, steps.as_slice())))
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
    let mut keys: Vec<(Uuid, &str, &[u8], Value)> = Vec::new();
    for s in submissions.iter().filter(|s| ready.iter().any(|(draft, ..)| draft.id == s.draft.id)) {
        if let Some(key) = &s.key {
            let answer = Accepted { id: s.draft.id, status: s.draft.status, wake: None };
            keys.push((
                s.draft.tenant.0,
                key.key.as_str(),
                key.hash.as_slice(),
                serde_json::to_value(answer).map_err(ApiError::internal)?,
            ));
        }
    }
    // In one order, so that batches sharing keys queue instead of deadlocking.
    keys.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    if !rows.is_empty() {
        match insert(&mut db, &rows, &reasons, &people, &keys).await {
            Ok(()) => {}
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Ok(None),
            Err(error) => return Err(error.into()),
        }
    }
    for row in &rows {
        metrics::counter!("messages_accepted_total", "channel" => row.channel.as_str(), "lane" => row.lane.as_str())
            .increment(1);
    }
    local.hand_off(
        rows.iter()
            .zip(permits)
            .map(|(row, permit)| Handoff { message: accept::claimed_row(row, now), claim, permit })
            .collect(),
    );
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

/// The one statement: keys, new contacts with their first identifier, the other identifiers,
/// the messages (claimed) with their `queued` events.
async fn insert(
    db: &mut sqlx::PgConnection,
    messages: &[NewMessage<'_>],
    reasons: &[Option<String>],
    people: &contacts::PersistPlan<'_>,
    keys: &[(Uuid, &str, &[u8], Value)],
) -> Result<(), sqlx::Error> {
    let column = |f: fn(&NewMessage<'_>) -> Value| messages.iter().map(f).collect::<Vec<Value>>();
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let event_ids: Vec<Uuid> = messages.iter().map(|_| Uuid::now_v7()).collect();
    let tenants: Vec<Uuid> = messages.iter().map(|m| m.tenant_id.0).collect();
    let contacts: Vec<Option<Uuid>> = messages.iter().map(|m| m.contact_id).collect();
    let conversations: Vec<Option<Uuid>> = messages.iter().map(|m| m.conversation_id).collect();
    let channels: Vec<&str> = messages.iter().map(|m| m.channel.as_str()).collect();
    let recipients: Vec<&str> = messages.iter().map(|m| m.recipient).collect();
    let lanes: Vec<&str> = messages.iter().map(|m| m.lane.as_str()).collect();
    let scheduled: Vec<Option<chrono::DateTime<Utc>>> = messages.iter().map(|m| m.scheduled_at).collect();
    let owners: Vec<Option<Uuid>> = messages.iter().map(|m| m.claim.map(|(owner, _)| owner)).collect();
    let claims: Vec<Option<Uuid>> = messages.iter().map(|m| m.claim.map(|(_, claim)| claim)).collect();
    let split = |rows: &[(Uuid, &str, &str, Uuid)]| {
        let tenants: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
        let kinds: Vec<String> = rows.iter().map(|r| r.1.to_owned()).collect();
        let values: Vec<String> = rows.iter().map(|r| r.2.to_owned()).collect();
        let contacts: Vec<Uuid> = rows.iter().map(|r| r.3).collect();
        (tenants, kinds, values, contacts)
    };
    let (new_tenants, new_kinds, new_values, new_contacts) = split(&people.new);
    let (more_tenants, more_kinds, more_values, more_contacts) = split(&people.attach);
    let key_tenants: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let key_names: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let key_hashes: Vec<&[u8]> = keys.iter().map(|k| k.2).collect();
    let key_bodies: Vec<Value> = keys.iter().map(|k| k.3.clone()).collect();
    // The claimed message was queued first, as far as its trail goes. Every CTE runs to its
    // end whether or not the final statement reads it; a unique violation in any undoes all.
    sqlx::query!(
        r#"WITH key AS (
               INSERT INTO communications.idempotency_keys (tenant_id, key, request_hash, response_status, response_body)
               SELECT tenant_id, key, hash, $26, body
               FROM unnest($22::uuid[], $23::text[], $24::bytea[], $25::jsonb[]) WITH ORDINALITY
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
                    scheduled_at, metadata, attempts, claimed_by, claim)
               SELECT id, tenant_id, contact_id, conversation_id, channel, fallback, recipient, content, 'sending',
                      lane, scheduled_at, metadata, 1, claimed_by, claim
               FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::jsonb[], $7::text[],
                           $8::jsonb[], $9::text[], $10::timestamptz[], $11::jsonb[], $12::uuid[], $13::uuid[])
                    AS m(id, tenant_id, contact_id, conversation_id, channel, fallback, recipient, content, lane,
                         scheduled_at, metadata, claimed_by, claim)
               RETURNING id, tenant_id)
           INSERT INTO communications.message_events (id, tenant_id, message_id, status, reason, source, occurred_at)
           SELECT event.id, message.tenant_id, message.id, 'queued', event.reason, $29, now()
           FROM message JOIN unnest($1::uuid[], $27::uuid[], $28::text[]) AS event(message_id, id, reason)
                ON event.message_id = message.id"#,
        &ids,
        &tenants,
        &contacts as &[Option<Uuid>],
        &conversations as &[Option<Uuid>],
        &channels as &[&str],
        &column(|m| m.fallback.clone()),
        &recipients as &[&str],
        &column(|m| m.content.clone()),
        &lanes as &[&str],
        &scheduled as &[Option<chrono::DateTime<Utc>>],
        &column(|m| m.metadata.clone()),
        &owners as &[Option<Uuid>],
        &claims as &[Option<Uuid>],
        &new_tenants,
        &new_kinds,
        &new_values,
        &new_contacts,
        &more_tenants,
        &more_kinds,
        &more_values,
        &more_contacts,
        &key_tenants,
        &key_names as &[&str],
        &key_hashes as &[&[u8]],
        &key_bodies,
        ACCEPTED as i16,
        &event_ids,
        reasons as &[Option<String>],
        EventSource::Api.as_str(),
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}
