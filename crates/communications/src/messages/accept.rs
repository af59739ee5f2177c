//! Storing accepted messages, many per transaction.
//!
//! A request is first made a [`Draft`]: validated and rendered, without touching the database's
//! writes, so a bad request leaves nothing behind. [`store`] then writes a batch of drafts in a
//! few statements whatever its size: the contacts (looked up, then created or completed), the
//! messages with their first events, and their dispatch jobs. The send API hands its drafts to
//! a batcher ([`accept_batch`]), so concurrent requests share one transaction and one commit;
//! events have a batcher of their own (`triggers/ingest.rs`), and the paths that already hold a
//! transaction (an agent's reply, a missed call's answer, the dialogue's) store a batch of one
//! in it ([`store_pending`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::kept::KeptConnections;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::content::MessageContent;
use super::idempotency::{self, RequestKey};
use super::model::{Channel, EventSource, Lane, MessageStatus};
use super::queue::{self, DispatchJob};
use super::repository::{self, MessageRow, NewMessage};
use super::service::{Accepted, FallbackStep};
use super::{pacing, quiet_hours};
use crate::contacts::{self, ContactRequest, ResolvedContact};
use crate::dispatch::local::{Handoff, LocalDispatch, LocalSlot, Pending};
use crate::rate_limit::RateDefaults;

/// A validated, rendered message that is not stored yet.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub id: Uuid,
    pub tenant: TenantId,
    pub recipient: ContactRequest,
    /// The channel chain with each channel's content, first channel first.
    pub chain: Vec<(Channel, MessageContent)>,
    pub lane: Lane,
    pub status: MessageStatus,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub metadata: Value,
    pub conversation_id: Option<Uuid>,
}

impl Draft {
    /// When its job runs, if not at once: a scheduled time still ahead of `now`.
    pub(super) fn later_than(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.scheduled_at.filter(|at| *at > now)
    }
}

/// [`store_with`] in a caller's transaction, storing the messages due now claimed for this
/// process's dispatcher as the send API does: `pending` hands them over once the caller has
/// committed. For the urgent paths that write in their own transaction (an agent's reply, a
/// missed call's answer, the SMS dialogue's), so that they skip the job, its wake-up and the
/// claim as a sent message does.
pub(crate) async fn store_pending(
    tx: &mut PgConnection,
    drafts: &[Draft],
    rates: &RateDefaults,
    pending: &mut Pending,
) -> Result<Vec<Result<Accepted, ApiError>>, ApiError> {
    let (answers, handoffs) = store_with(tx, drafts, rates, pending.local()).await?;
    pending.add(handoffs);
    Ok(answers)
}

/// Stores `drafts` in the caller's transaction. The outer error is the database's (nothing of
/// the batch may be kept); an inner one is that draft's own (its recipient cannot be served on
/// its channels, or its contact does not exist), and stores nothing for it. Messages due now
/// are stored claimed for `local` (as far as it has room) instead of getting jobs: the caller
/// hands them over once the transaction has committed.
pub(crate) async fn store_with(
    tx: &mut PgConnection,
    drafts: &[Draft],
    rates: &RateDefaults,
    local: Option<&LocalDispatch>,
) -> Result<(Vec<Result<Accepted, ApiError>>, Vec<Handoff>), ApiError> {
    let planned = plan(tx, &drafts.iter().collect::<Vec<_>>()).await?;
    let ready: Vec<(&Draft, &ResolvedContact, &[FallbackStep])> = drafts
        .iter()
        .zip(&planned)
        .filter_map(|(draft, plan)| plan.as_ref().ok().map(|(contact, steps)| (draft, contact, steps.as_slice())))
        .collect();
    let now = Utc::now();
    if ready.is_empty() {
        return Ok((answers(drafts, planned, now, &HashMap::new(), &HashMap::new(), &[]), Vec::new()));
    }
    let items: Vec<_> = ready.iter().map(|(draft, contact, _)| (draft.tenant, &draft.recipient, *contact)).collect();
    let contact_ids = contacts::persist(tx, &items).await?;
    let deferred = quiet_hours::deferrals(tx, &ready, &contact_ids, now).await?;
    let paced = pacing::reserve(tx, rates, &ready, &deferred, now).await?;
    let mut rows = Vec::with_capacity(ready.len());
    let mut reasons = Vec::with_capacity(ready.len());
    let mut jobs = Vec::new();
    let mut claims = Vec::new();
    let claim = Uuid::now_v7();
    for ((draft, _, steps), contact_id) in ready.iter().zip(&contact_ids) {
        let (scheduled_at, reason) = match deferred.get(&draft.id) {
            Some((until, why)) => (Some(*until), Some(why.clone())),
            None => (draft.scheduled_at, draft.scheduled_at.map(|at| format!("scheduled for {}", at.to_rfc3339()))),
        };
        // Due now and not holding a paced slot: this process may send it itself.
        let due_now = draft.status == MessageStatus::Queued
            && scheduled_at.is_none_or(|at| at <= now)
            && !paced.contains_key(&draft.id);
        let permit = if due_now { local.and_then(LocalDispatch::try_reserve) } else { None };
        let claimed = permit.is_some();
        if let (Some(local), Some(permit)) = (local, permit) {
            claims.push((draft.id, local.owner, permit));
        }
        let owner = local.filter(|_| claimed).map(|local| (local.owner, claim));
        rows.push(message_row(draft, *contact_id, steps, scheduled_at, owner)?);
        reasons.push(reason);
        if draft.status == MessageStatus::Queued && !claimed {
            let job = DispatchJob::new(draft.id, draft.tenant.0, 0);
            match paced.get(&draft.id) {
                // It holds its slot: the job runs then, and the dispatcher reserves nothing.
                Some(wait) => {
                    let run_at = (!wait.is_zero()).then(|| now + chrono::Duration::from_std(*wait).unwrap_or_default());
                    jobs.push((draft.lane, DispatchJob { deferrals: 1, ..job }, run_at));
                }
                None => jobs.push((draft.lane, job, scheduled_at.filter(|at| *at > now))),
            }
        }
    }
    repository::insert_many(&mut *tx, &rows, &reasons, EventSource::Api).await?;
    for row in &rows {
        metrics::counter!("messages_accepted_total", "channel" => row.channel.as_str(), "lane" => row.lane.as_str())
            .increment(1);
    }
    queue::enqueue_many(tx, &jobs).await?;
    let claimed_ids: Vec<Uuid> = claims.iter().map(|(id, ..)| *id).collect();
    let handoffs = claims
        .into_iter()
        .filter_map(|(id, _, permit)| {
            let row = rows.iter().find(|row| row.id == id)?;
            Some(Handoff { message: claimed_row(row.clone(), now), claim, slot: None, permit })
        })
        .collect();
    Ok((answers(drafts, planned, now, &deferred, &paced, &claimed_ids), handoffs))
}

/// A draft's contact and the steps of its chain (each channel with its address), or its own 422.
pub(super) type Planned = Result<(ResolvedContact, Vec<FallbackStep>), ApiError>;

/// What acceptance reads before it writes: each draft's contact, and its steps without those
/// whose address is suppressed on their channel (a draft with none left is a 422 on `to`).
pub(super) async fn plan(db: &mut PgConnection, drafts: &[&Draft]) -> Result<Vec<Planned>, ApiError> {
    let requests: Vec<(TenantId, &ContactRequest)> = drafts.iter().map(|d| (d.tenant, &d.recipient)).collect();
    // The addresses the requests name are asked about with the contacts, in one statement.
    let named = named_endpoints(drafts);
    let (found, suppressed) = contacts::lookup_with_suppressions(db, &requests, &named).await?;
    // Addresses decide which drafts go ahead, before any contact is created for them.
    let planned: Vec<Planned> = drafts
        .iter()
        .zip(found)
        .map(|(draft, contact)| {
            let contact = contact?;
            let steps = draft
                .chain
                .iter()
                .map(|(channel, content)| {
                    Ok(FallbackStep {
                        channel: *channel,
                        recipient: contact.address(*channel)?,
                        content: content.clone(),
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            Ok((contact, steps))
        })
        .collect();
    without_suppressed(db, drafts, planned, &named, suppressed).await
}

/// The row of a draft going out on its first step; `claim` (owner, token) stores it claimed
/// for this process's dispatcher.
pub(super) fn message_row<'a>(
    draft: &Draft,
    contact_id: Uuid,
    steps: &'a [FallbackStep],
    scheduled_at: Option<DateTime<Utc>>,
    claim: Option<(Uuid, Uuid)>,
) -> Result<NewMessage<'a>, ApiError> {
    let (first, rest) = steps.split_first().ok_or_else(|| ApiError::internal("a draft without channels"))?;
    Ok(NewMessage {
        id: draft.id,
        tenant_id: draft.tenant,
        contact_id: Some(contact_id),
        conversation_id: draft.conversation_id,
        channel: first.channel,
        fallback: serde_json::to_value(rest).map_err(ApiError::internal)?,
        recipient: &first.recipient,
        content: serde_json::to_value(&first.content).map_err(ApiError::internal)?,
        status: if claim.is_some() { MessageStatus::Sending } else { draft.status },
        lane: draft.lane,
        scheduled_at,
        metadata: draft.metadata.clone(),
        supersedes: None,
        attempts: i32::from(claim.is_some()),
        claim,
    })
}

/// The claimed message as the dispatcher sees it: as it was before the claim, like a row the
/// batched claim returns.
pub(super) fn claimed_row(row: NewMessage<'_>, now: DateTime<Utc>) -> MessageRow {
    MessageRow {
        id: row.id,
        tenant_id: row.tenant_id.0,
        contact_id: row.contact_id,
        conversation_id: row.conversation_id,
        channel: row.channel,
        fallback: row.fallback,
        recipient: row.recipient.to_owned(),
        content: row.content,
        status: MessageStatus::Queued,
        status_reason: None,
        lane: row.lane,
        channel_account_id: None,
        provider: None,
        provider_message_id: None,
        attempts: 0,
        scheduled_at: row.scheduled_at,
        metadata: row.metadata,
        supersedes: row.supersedes,
        superseded_by: None,
        created_at: now,
        updated_at: now,
        sent_at: None,
        delivered_at: None,
        read_at: None,
        failed_at: None,
    }
}

/// The (tenant, channel, address) each draft's request names for the channels of its chain:
/// most messages go to exactly these, so their suppressions can be read before the contacts are.
fn named_endpoints(drafts: &[&Draft]) -> Vec<(Uuid, Channel, String)> {
    let mut named = Vec::new();
    for draft in drafts {
        let ContactRequest::Identifiers { phone, email } = &draft.recipient else { continue };
        for (channel, _) in &draft.chain {
            let address = match channel {
                Channel::Sms | Channel::Whatsapp => phone,
                Channel::Email => email,
                Channel::Webchat => &None,
            };
            if let Some(address) = address {
                named.push((draft.tenant.0, *channel, address.to_lowercase()));
            }
        }
    }
    let mut seen = HashSet::new();
    named.retain(|endpoint| seen.insert(endpoint.clone()));
    named
}

/// Drops each plan's steps whose address opted out (or bounced) on that channel; a draft with
/// no step left is a 422 on `to` naming why, and stores nothing. `suppressed` answers for the
/// `named` endpoints; the others (an address a stored contact gave) are read here.
async fn without_suppressed(
    tx: &mut PgConnection,
    drafts: &[&Draft],
    planned: Vec<Result<(ResolvedContact, Vec<FallbackStep>), ApiError>>,
    named: &[(Uuid, Channel, String)],
    mut suppressed: contacts::Suppressed,
) -> Result<Vec<Result<(ResolvedContact, Vec<FallbackStep>), ApiError>>, ApiError> {
    let named: HashSet<&(Uuid, Channel, String)> = named.iter().collect();
    let others: Vec<(Uuid, Channel, String)> = drafts
        .iter()
        .zip(&planned)
        .filter_map(|(draft, plan)| plan.as_ref().ok().map(|(_, steps)| (draft, steps)))
        .flat_map(|(draft, steps)| steps.iter().map(|s| (draft.tenant.0, s.channel, s.recipient.to_lowercase())))
        .filter(|endpoint| endpoint.1 != Channel::Webchat && !named.contains(endpoint))
        .collect();
    if !others.is_empty() {
        suppressed.extend(crate::compliance::suppressions_of(tx, &others).await?);
    }
    if suppressed.is_empty() {
        return Ok(planned);
    }
    Ok(drafts
        .iter()
        .zip(planned)
        .map(|(draft, plan)| {
            let (contact, steps) = plan?;
            let why = |step: &FallbackStep| {
                suppressed.get(&(draft.tenant.0, step.channel, step.recipient.to_lowercase())).cloned()
            };
            let first_refusal = steps.iter().find_map(|step| why(step).map(|reason| (step.channel, reason)));
            let kept: Vec<FallbackStep> = steps.into_iter().filter(|step| why(step).is_none()).collect();
            match (kept.is_empty(), first_refusal) {
                (true, Some((channel, reason))) => Err(ApiError::validation(
                    "to",
                    format!("the recipient's {} address is suppressed: {reason}", channel.as_str()),
                )),
                _ => Ok((contact, kept)),
            }
        })
        .collect())
}

/// Each draft's answer: accepted (and which lane's workers to wake), or its own error.
fn answers<T>(
    drafts: &[Draft],
    planned: Vec<Result<T, ApiError>>,
    now: DateTime<Utc>,
    deferred: &HashMap<Uuid, (DateTime<Utc>, String)>,
    paced: &HashMap<Uuid, std::time::Duration>,
    claimed: &[Uuid],
) -> Vec<Result<Accepted, ApiError>> {
    drafts
        .iter()
        .zip(planned)
        .map(|(draft, plan)| {
            plan.map(|_| {
                let due_now = draft.status == MessageStatus::Queued
                    && draft.later_than(now).is_none()
                    && !deferred.contains_key(&draft.id)
                    && paced.get(&draft.id).is_none_or(|wait| wait.is_zero())
                    && !claimed.contains(&draft.id);
                Accepted { id: draft.id, status: draft.status, wake: due_now.then_some(draft.lane) }
            })
        })
        .collect()
}

/// The status of an accepted send's response.
pub(super) const ACCEPTED: u16 = 202;

/// What the send API hands the acceptor: a draft, and the request's key if it has one.
#[derive(Debug, Clone)]
pub(crate) struct Submission {
    pub draft: Draft,
    pub key: Option<RequestKey>,
}

/// The send API's answer to a submission.
#[derive(Debug)]
pub(crate) enum Answer {
    Accepted(Accepted),
    /// The key was used before with the same body: its first response.
    Replay {
        status: u16,
        body: Value,
    },
}

/// The send API's batch: stores the submissions in one transaction, claiming their keys in it.
/// When that fails, each is tried alone, so one draft the database refuses cannot fail the
/// others with it. A key that appears twice in a batch is claimed by its first submission; the
/// repeat goes after the batch, and so finds the first one's answer as a later request would.
pub(crate) async fn accept_batch(
    db: &KeptConnections,
    rates: &RateDefaults,
    local: &LocalSlot,
    submissions: Vec<Submission>,
) -> Vec<Result<Answer, ApiError>> {
    kernel::batch::first_of_each_key(
        submissions,
        |submission| submission.key.as_ref().map(|key| (submission.draft.tenant, key.key.clone())),
        async |batch| accept_together(db, rates, local, batch).await,
        |submission| accept_alone(db, rates, local, submission),
    )
    .await
}

async fn accept_together(
    db: &KeptConnections,
    rates: &RateDefaults,
    local: &LocalSlot,
    submissions: Vec<Submission>,
) -> Vec<Result<Answer, ApiError>> {
    match store_in_transaction(db, rates, local, &submissions).await {
        Ok(answers) => answers,
        Err(error) if submissions.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(%error, drafts = submissions.len(), "storing a batch of messages failed; storing them one by one");
            let mut answers = Vec::with_capacity(submissions.len());
            for submission in submissions {
                answers.push(accept_alone(db, rates, local, submission).await);
            }
            answers
        }
    }
}

async fn accept_alone(
    db: &KeptConnections,
    rates: &RateDefaults,
    local: &LocalSlot,
    submission: Submission,
) -> Result<Answer, ApiError> {
    store_in_transaction(db, rates, local, std::slice::from_ref(&submission))
        .await?
        .pop()
        .unwrap_or_else(|| Err(ApiError::internal("no answer")))
}

/// Stores the submissions in two round trips where it can (`single_write.rs`); otherwise claims
/// their keys, stores the drafts whose key is new (or that have none), and completes each key
/// with its response — or gives it up if its draft was refused — in one transaction.
async fn store_in_transaction(
    db: &KeptConnections,
    rates: &RateDefaults,
    local: &LocalSlot,
    submissions: &[Submission],
) -> Result<Vec<Result<Answer, ApiError>>, ApiError> {
    let local = crate::dispatch::local::current(local);
    if let Some(answers) = super::single_write::store(db, local.as_ref(), submissions).await? {
        metrics::counter!("messages_accept_batches_total", "api" => "send", "path" => "single_write").increment(1);
        return Ok(answers);
    }
    metrics::counter!("messages_accept_batches_total", "api" => "send", "path" => "transaction").increment(1);
    // What each keyed request answers if its message is stored: the key is claimed with it.
    let expected: Vec<Option<Value>> = submissions
        .iter()
        .map(|s| {
            let accepted = Accepted { id: s.draft.id, status: s.draft.status, wake: None };
            s.key.as_ref().map(|_| serde_json::to_value(accepted)).transpose()
        })
        .collect::<Result<_, _>>()
        .map_err(ApiError::internal)?;
    let mut tx = db.pool().begin().await?;
    let keys: Vec<(TenantId, &RequestKey, u16, &Value)> = submissions
        .iter()
        .zip(&expected)
        .filter_map(|(s, body)| Some((s.draft.tenant, s.key.as_ref()?, ACCEPTED, body.as_ref()?)))
        .collect();
    let earlier = idempotency::claim(&mut tx, &keys).await?;
    let earlier_of = |s: &Submission| s.key.as_ref().and_then(|key| earlier.get(&(s.draft.tenant.0, key.key.clone())));
    let fresh: Vec<Draft> = submissions.iter().filter(|s| earlier_of(s).is_none()).map(|s| s.draft.clone()).collect();
    let (stored, handoffs) = store_with(&mut tx, &fresh, rates, local.as_ref()).await?;
    let mut stored = stored.into_iter();
    let mut answers = Vec::with_capacity(submissions.len());
    let (mut completed, mut released) = (Vec::new(), Vec::new());
    for (submission, expected) in submissions.iter().zip(&expected) {
        let tenant = submission.draft.tenant;
        if let (Some(key), Some(earlier)) = (&submission.key, earlier_of(submission)) {
            answers.push(earlier.replay(&key.hash).map(|(status, body)| Answer::Replay { status, body }));
            continue;
        }
        let answer = stored.next().unwrap_or_else(|| Err(ApiError::internal("no answer")));
        if let Some(key) = &submission.key {
            match &answer {
                Ok(accepted) => {
                    let body = serde_json::to_value(accepted).map_err(ApiError::internal)?;
                    if expected.as_ref() != Some(&body) {
                        completed.push((tenant, key.key.as_str(), ACCEPTED, body));
                    }
                }
                Err(_) => released.push((tenant, key.key.as_str())),
            }
        }
        answers.push(answer.map(Answer::Accepted));
    }
    idempotency::complete(&mut tx, &completed).await?;
    idempotency::release(&mut tx, &released).await?;
    tx.commit().await?;
    if let Some(local) = &local {
        local.hand_off(handoffs);
    }
    Ok(answers)
}
