//! Processing one event: claim its id, run the matching rules, queue the messages.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::kept::KeptConnections;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::types::Json;
use uuid::Uuid;

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use super::event::{IncomingEvent, lookup, parse_time};
use super::rules::{self, AudiencePaths, TriggerRule};
use crate::Communications;
use crate::contacts::RecipientInput;
use crate::dispatch::local::{LocalDispatch, LocalSlot};
use crate::inbox::context::{Link, Snapshot, SnapshotColumns};
use crate::messages::accept::{self, Draft};
use crate::messages::content::{ContentInput, TemplateRef};
use crate::messages::model::MessageStatus;
use crate::messages::queue::QueueWaker;
use crate::messages::service::{ChannelsInput, SendRequest};
use crate::messages::single_write::{self, EventClaims};
use crate::rate_limit::RateDefaults;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventOutcome {
    pub event_id: String,
    /// The event was processed before: nothing new was queued.
    pub duplicate: bool,
    pub messages: Vec<QueuedMessage>,
    /// Rules or recipients that matched but produced no message, and why.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueuedMessage {
    pub id: Uuid,
    pub rule_id: Uuid,
    pub status: MessageStatus,
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Skipped {
    pub rule_id: Uuid,
    pub reason: String,
}

/// An event with the messages its rules make, validated and rendered but not stored, and the
/// entity snapshot it brings. Its document stays behind: what the batch stores is made here,
/// where requests are handled side by side, rather than in the one task that stores batches.
#[derive(Debug, Clone)]
pub(crate) struct PlannedEvent {
    tenant: TenantId,
    id: String,
    name: String,
    snapshot: Option<Snapshot>,
    /// Each message with the rule that made it and when it is scheduled.
    drafts: Vec<(Uuid, Option<DateTime<Utc>>, Draft)>,
    skipped: Vec<(Uuid, String)>,
}

impl Communications {
    /// Processes an event once by its id: its matching rules' messages are rendered first, then
    /// stored with the event's claim in a transaction shared with the events arriving alongside
    /// it (see [`ingest_batch`]). A repeat of a processed event answers with the messages the
    /// first made, as they are now.
    pub async fn ingest_event(&self, tenant: TenantId, event: IncomingEvent) -> Result<EventOutcome, ApiError> {
        let planned = self.plan(tenant, event).await?;
        self.ingester().call(planned).await.ok_or_else(|| ApiError::internal("the event batcher stopped"))?
    }

    /// The messages `event`'s rules make: a rule or recipient that cannot make one is skipped
    /// with the reason (a bad address, a template variable missing from the event …).
    async fn plan(&self, tenant: TenantId, event: IncomingEvent) -> Result<PlannedEvent, ApiError> {
        let (mut drafts, mut skipped) = (Vec::new(), Vec::new());
        let link = crate::inbox::context::link_of_event(&event);
        let rules = self.rules_for(tenant, &event.name).await?;
        for rule in rules.iter() {
            if !rule.conditions.iter().all(|condition| condition.holds(&event.document)) {
                continue;
            }
            let scheduled_at = match scheduled_time(rule, &event) {
                Ok(at) => at,
                Err(reason) => {
                    skipped.push((rule.id, reason));
                    continue;
                }
            };
            for paths in &rule.audience {
                let Some(to) = recipient(paths, &event.document) else {
                    skipped.push((rule.id, "the event has no value at the audience paths".into()));
                    continue;
                };
                let request = request_for(rule, &event, link.as_ref(), to, scheduled_at);
                match self.draft_with(tenant, request, Some(&event.document)).await {
                    Ok(draft) => drafts.push((rule.id, scheduled_at, draft)),
                    Err(error @ (ApiError::Validation { .. } | ApiError::Conflict { .. })) => {
                        skipped.push((rule.id, skip_reason(&error)));
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        let snapshot = crate::inbox::context::snapshot_of(&event, link);
        let IncomingEvent { id, name, .. } = event;
        Ok(PlannedEvent { tenant, id, name, snapshot, drafts, skipped })
    }
}

impl Communications {
    /// The tenant's enabled rules for `event`, from the cache when it is fresh.
    async fn rules_for(&self, tenant: TenantId, event: &str) -> Result<std::sync::Arc<Vec<TriggerRule>>, ApiError> {
        let key = (tenant.0, event.to_owned());
        if let Some(rules) = self.rule_cache.get(&key) {
            return Ok(rules);
        }
        let generation = self.rule_cache.generation();
        let rules = std::sync::Arc::new(rules::for_event(&self.pool, tenant, event).await?);
        self.rule_cache.put(key, generation, rules.clone());
        Ok(rules)
    }
}

fn skip_reason(error: &ApiError) -> String {
    match error {
        ApiError::Validation { field, message } => format!("{field}: {message}"),
        other => other.to_string(),
    }
}

/// Stores a batch of planned events in one transaction: their ids claimed together, their
/// messages stored together, one commit. When the transaction fails, each event is tried alone.
/// An event id twice in a batch is claimed by the first; the repeat goes after the batch and
/// is answered as the duplicate it is.
pub(crate) async fn ingest_batch(
    db: &KeptConnections,
    rates: &RateDefaults,
    waker: &QueueWaker,
    local: &LocalSlot,
    events: Vec<PlannedEvent>,
) -> Vec<Result<EventOutcome, ApiError>> {
    kernel::batch::first_of_each_key(
        events,
        |planned| Some((planned.tenant, planned.id.clone())),
        async |batch| match store_events(db, rates, waker, local, &batch).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(error) if batch.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(%error, events = batch.len(), "storing a batch of events failed; storing them one by one");
                let mut outcomes = Vec::with_capacity(batch.len());
                for planned in &batch {
                    outcomes.push(store_alone(db, rates, waker, local, planned).await);
                }
                outcomes
            }
        },
        |planned| async move { store_alone(db, rates, waker, local, &planned).await },
    )
    .await
}

async fn store_alone(
    db: &KeptConnections,
    rates: &RateDefaults,
    waker: &QueueWaker,
    local: &LocalSlot,
    planned: &PlannedEvent,
) -> Result<EventOutcome, ApiError> {
    store_events(db, rates, waker, local, std::slice::from_ref(planned))
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("no outcome"))
}

/// Claims the events' ids (unique within `events`), stores the messages of those never seen,
/// and answers the others with what their first delivery made.
async fn store_events(
    db: &KeptConnections,
    rates: &RateDefaults,
    waker: &QueueWaker,
    local: &LocalSlot,
    events: &[PlannedEvent],
) -> Result<Vec<EventOutcome>, ApiError> {
    let local = crate::dispatch::local::current(local);
    if let Some(outcomes) = store_in_one_statement(db, local.as_ref(), events).await? {
        metrics::counter!("messages_accept_batches_total", "api" => "events", "path" => "single_write").increment(1);
        return Ok(outcomes);
    }
    metrics::counter!("messages_accept_batches_total", "api" => "events", "path" => "transaction").increment(1);
    let mut tx = db.pool().begin().await?;
    let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant.0).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    // Each event's messages as planned: recorded with the claim, and corrected below only for
    // an event a draft of which was refused.
    let (ends, planned_ids) = message_runs(events);
    // The entity snapshots the events carry are kept in the same statement. A duplicate event
    // writes its snapshot again: the same row at the same time, so nothing changes.
    let s = snapshot_columns(events);
    let claimed: HashSet<(Uuid, String)> = sqlx::query!(
        r#"WITH snapshots AS (
               INSERT INTO communications.entity_snapshots
                   (tenant_id, kind, entity_id, source, op, row, event_id, occurred_at)
               SELECT * FROM unnest($6::uuid[], $7::text[], $8::text[], $9::text[], $10::text[], $11::jsonb[],
                                    $12::text[], $13::timestamptz[])
               ON CONFLICT (tenant_id, kind, entity_id) DO UPDATE
                   SET source = EXCLUDED.source, op = EXCLUDED.op, row = EXCLUDED.row, event_id = EXCLUDED.event_id,
                       occurred_at = EXCLUDED.occurred_at
                   WHERE entity_snapshots.occurred_at <= EXCLUDED.occurred_at)
           INSERT INTO communications.processed_events (tenant_id, event_id, event, message_ids)
           SELECT e.tenant_id, e.event_id, e.event, ($5::uuid[])[lag(e.last, 1, 0) OVER (ORDER BY e.n) + 1 : e.last]
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int4[]) WITH ORDINALITY AS e(tenant_id, event_id, event, last, n)
           ORDER BY e.n
           ON CONFLICT DO NOTHING
           RETURNING tenant_id, event_id"#,
        &tenants,
        &ids as &[&str],
        &names as &[&str],
        &ends,
        &planned_ids,
        &s.tenants,
        &s.kinds as &[&str],
        &s.ids as &[&str],
        &s.sources as &[&str],
        &s.ops as &[&str],
        &s.rows as &[Json<&RawValue>],
        &s.event_ids as &[&str],
        &s.times,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.tenant_id, row.event_id))
    .collect();
    let is_new = |planned: &PlannedEvent| claimed.contains(&(planned.tenant.0, planned.id.clone()));
    let mut earlier = if claimed.len() < events.len() {
        let (tenants, ids): (Vec<Uuid>, Vec<String>) =
            tenants.iter().zip(&ids).map(|(t, i)| (*t, (*i).to_owned())).filter(|key| !claimed.contains(key)).unzip();
        earlier_messages(&mut tx, &tenants, &ids).await?
    } else {
        HashMap::new()
    };
    let fresh: Vec<&PlannedEvent> = events.iter().filter(|planned| is_new(planned)).collect();
    let drafts: Vec<Draft> = fresh.iter().flat_map(|p| p.drafts.iter().map(|(_, _, draft)| draft.clone())).collect();
    let (stored, handoffs) = accept::store_with(&mut tx, &drafts, rates, local.as_ref()).await?;
    let mut stored = stored.into_iter();
    let mut outcomes = Vec::with_capacity(events.len());
    let mut made: Vec<(Uuid, String, Uuid)> = Vec::new();
    let mut corrected: Vec<(Uuid, String)> = Vec::new();
    let mut wake = Vec::new();
    for planned in events {
        let event_id = planned.id.clone();
        if !is_new(planned) {
            let messages = earlier.remove(&(planned.tenant.0, event_id.clone())).unwrap_or_default();
            outcomes.push(EventOutcome { event_id, duplicate: true, messages, skipped: Vec::new() });
            continue;
        }
        let mut outcome = EventOutcome {
            event_id: event_id.clone(),
            duplicate: false,
            messages: Vec::new(),
            skipped: planned
                .skipped
                .iter()
                .map(|(rule_id, reason)| Skipped { rule_id: *rule_id, reason: reason.clone() })
                .collect(),
        };
        let mut refused = false;
        for (rule_id, scheduled_at, _) in &planned.drafts {
            match stored.next().unwrap_or_else(|| Err(ApiError::internal("no answer"))) {
                Ok(accepted) => {
                    wake.extend(accepted.wake);
                    made.push((planned.tenant.0, event_id.clone(), accepted.id));
                    outcome.messages.push(QueuedMessage {
                        id: accepted.id,
                        rule_id: *rule_id,
                        status: accepted.status,
                        scheduled_at: *scheduled_at,
                    });
                }
                Err(error) => {
                    refused = true;
                    let reason = skip_reason(&error);
                    tracing::warn!(tenant_id = %planned.tenant, %rule_id, event_id = %planned.id, %reason, "trigger rule produced no message");
                    outcome.skipped.push(Skipped { rule_id: *rule_id, reason });
                }
            }
        }
        if refused {
            corrected.push((planned.tenant.0, event_id));
        }
        outcomes.push(outcome);
    }
    record_messages(&mut tx, &corrected, &made).await?;
    tx.commit().await?;
    if let Some(local) = &local {
        local.hand_off(handoffs);
    }
    wake.sort_by_key(|lane| lane.as_str());
    wake.dedup();
    for lane in wake {
        waker.wake(lane);
    }
    Ok(outcomes)
}

/// Events (unique within `events`) whose messages all go out now through this process: the
/// reads, then one statement that claims their ids, keeps their snapshots and stores their
/// messages (`messages/single_write.rs`). `None` when they do not qualify, or one was processed
/// meanwhile: [`store_events`] goes the careful way.
async fn store_in_one_statement(
    db: &KeptConnections,
    local: Option<&LocalDispatch>,
    events: &[PlannedEvent],
) -> Result<Option<Vec<EventOutcome>>, ApiError> {
    if local.is_none() {
        return Ok(None);
    }
    let drafts: Vec<&Draft> = events.iter().flat_map(|p| p.drafts.iter().map(|(_, _, draft)| draft)).collect();
    let (ends, message_ids) = message_runs(events);
    let claims = EventClaims {
        tenants: events.iter().map(|e| e.tenant.0).collect(),
        ids: events.iter().map(|e| e.id.as_str()).collect(),
        names: events.iter().map(|e| e.name.as_str()).collect(),
        ends,
        message_ids,
        snapshots: snapshot_columns(events),
    };
    if !single_write::store_events(db, local, &drafts, &claims).await? {
        return Ok(None);
    }
    Ok(Some(
        events
            .iter()
            .map(|planned| EventOutcome {
                event_id: planned.id.clone(),
                duplicate: false,
                messages: planned
                    .drafts
                    .iter()
                    .map(|(rule_id, scheduled_at, draft)| QueuedMessage {
                        id: draft.id,
                        rule_id: *rule_id,
                        status: draft.status,
                        scheduled_at: *scheduled_at,
                    })
                    .collect(),
                skipped: planned
                    .skipped
                    .iter()
                    .map(|(rule_id, reason)| Skipped { rule_id: *rule_id, reason: reason.clone() })
                    .collect(),
            })
            .collect(),
    ))
}

/// The messages earlier deliveries of these events made, as they are now, with the rule that
/// made each (kept in its metadata).
async fn earlier_messages(
    tx: &mut PgConnection,
    tenants: &[Uuid],
    ids: &[String],
) -> Result<HashMap<(Uuid, String), Vec<QueuedMessage>>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT p.tenant_id, p.event_id, x.id AS "id?", (m.metadata->>'trigger_rule_id')::uuid AS rule_id,
                  m.status AS "status?: MessageStatus", m.scheduled_at
           FROM unnest($1::uuid[], $2::text[]) AS e(tenant_id, event_id)
           JOIN communications.processed_events p ON p.tenant_id = e.tenant_id AND p.event_id = e.event_id
           LEFT JOIN LATERAL unnest(p.message_ids) WITH ORDINALITY AS x(id, k) ON true
           LEFT JOIN communications.messages m ON m.tenant_id = p.tenant_id AND m.id = x.id
           ORDER BY p.tenant_id, p.event_id, x.k"#,
        tenants,
        ids,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut earlier: HashMap<(Uuid, String), Vec<QueuedMessage>> = HashMap::new();
    for row in rows {
        let messages = earlier.entry((row.tenant_id, row.event_id)).or_default();
        if let Some(id) = row.id {
            messages.push(QueuedMessage {
                id,
                rule_id: row.rule_id.unwrap_or_default(),
                status: row.status.unwrap_or(MessageStatus::Queued),
                scheduled_at: row.scheduled_at,
            });
        }
    }
    Ok(earlier)
}

/// Records which messages the `corrected` events made after all (`made`: `(tenant, event id,
/// message id)` in order), replacing the planned ones their claim recorded: a draft was refused.
async fn record_messages(
    tx: &mut PgConnection,
    corrected: &[(Uuid, String)],
    made: &[(Uuid, String, Uuid)],
) -> Result<(), ApiError> {
    if corrected.is_empty() {
        return Ok(());
    }
    let (tenants, events): (Vec<Uuid>, Vec<String>) = corrected.iter().cloned().unzip();
    let made_tenants: Vec<Uuid> = made.iter().map(|(tenant, ..)| *tenant).collect();
    let made_events: Vec<String> = made.iter().map(|(_, event, _)| event.clone()).collect();
    let messages: Vec<Uuid> = made.iter().map(|(.., message)| *message).collect();
    sqlx::query!(
        r#"UPDATE communications.processed_events p
           SET message_ids = ARRAY(
               SELECT x.message_id
               FROM unnest($3::uuid[], $4::text[], $5::uuid[]) WITH ORDINALITY AS x(tenant_id, event_id, message_id, n)
               WHERE x.tenant_id = p.tenant_id AND x.event_id = p.event_id ORDER BY x.n)
           FROM unnest($1::uuid[], $2::text[]) AS c(tenant_id, event_id)
           WHERE p.tenant_id = c.tenant_id AND p.event_id = c.event_id"#,
        &tenants,
        &events,
        &made_tenants,
        &made_events,
        &messages,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// When the rule's messages go out: at once, or at a time in the event plus an offset.
fn scheduled_time(rule: &TriggerRule, event: &IncomingEvent) -> Result<Option<DateTime<Utc>>, String> {
    let Some(schedule) = &rule.schedule else { return Ok(None) };
    let at = lookup(&event.document, &schedule.relative_to)
        .and_then(Value::as_str)
        .and_then(parse_time)
        .ok_or_else(|| format!("no time at {}", schedule.relative_to))?;
    let when = at + chrono::Duration::seconds(schedule.offset_secs);
    if when < Utc::now() {
        return Err(format!("the scheduled time {} has passed", when.to_rfc3339()));
    }
    Ok(Some(when))
}

fn recipient(paths: &AudiencePaths, document: &Value) -> Option<RecipientInput> {
    let text = |path: &Option<String>| {
        path.as_deref().and_then(|p| lookup(document, p)).and_then(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let to = RecipientInput {
        contact_id: text(&paths.contact_id).and_then(|id| id.parse().ok()),
        phone: text(&paths.phone),
        email: text(&paths.email),
    };
    (to.contact_id.is_some() || to.phone.is_some() || to.email.is_some()).then_some(to)
}

/// The entity snapshots `events` bring, as columns.
fn snapshot_columns(events: &[PlannedEvent]) -> SnapshotColumns<'_> {
    crate::inbox::context::snapshot_columns(
        events.iter().filter_map(|planned| Some((planned.tenant.0, planned.snapshot.as_ref()?))),
    )
}

/// The events' planned message ids in one array, and where each event's run of them ends
/// (counting from 1, as PostgreSQL arrays do): event n's are `ids[ends[n - 1] + 1 : ends[n]]`,
/// an empty slice when it made none.
fn message_runs(events: &[PlannedEvent]) -> (Vec<i32>, Vec<Uuid>) {
    let ids: Vec<Uuid> = events.iter().flat_map(|p| p.drafts.iter().map(|(_, _, draft)| draft.id)).collect();
    let ends = events
        .iter()
        .scan(0, |end, planned| {
            *end += i32::try_from(planned.drafts.len()).unwrap_or(i32::MAX);
            Some(*end)
        })
        .collect();
    (ends, ids)
}

fn request_for(
    rule: &TriggerRule,
    event: &IncomingEvent,
    link: Option<&Link>,
    to: RecipientInput,
    scheduled_at: Option<DateTime<Utc>>,
) -> SendRequest {
    let locale =
        rule.locale_path.as_deref().and_then(|p| lookup(&event.document, p)).and_then(Value::as_str).map(str::to_owned);
    let to = if to.contact_id.is_some() { RecipientInput { phone: None, email: None, ..to } } else { to };
    SendRequest {
        to,
        channels: ChannelsInput::Chain(rule.channels.clone()),
        content: ContentInput {
            template: Some(TemplateRef {
                name: rule.template_name.clone(),
                locale,
                variables: None, // the event's document, lent to the render
            }),
            ..ContentInput::default()
        },
        scheduled_at,
        metadata: Some(match link {
            // A reply to this message opens a conversation about the same entity.
            Some(link) => {
                json!({ "trigger_rule_id": rule.id, "event_id": event.id, "event": event.name, "link": link })
            }
            None => json!({ "trigger_rule_id": rule.id, "event_id": event.id, "event": event.name }),
        }),
        conversation_id: None,
        lane: Some(rule.lane),
        require_review: rule.require_review,
    }
}
