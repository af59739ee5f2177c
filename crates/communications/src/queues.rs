//! The queue view for a tenant's admins: per lane how many messages are queued, scheduled,
//! running, retrying, failed (last 24 h) and unknown, and the age of the oldest due one; the
//! failed, dead (retry budget spent) and unknown messages with their reasons; replay and bulk
//! replay (with a dry run). Counted from the tenant's own messages, so no tenant sees another's.
//!
//! A replay is a new attempt of the same message: the same id — so an `Idempotency-Key` that
//! made it still answers with it — back to `queued` with a fresh retry budget and a new job,
//! and an event naming who replayed it. Only a `failed` message is replayed as a matter of
//! course; an `unknown` one may have reached the customer, so it needs `confirm_unknown`.
//! Anything else (sent, delivered, queued, canceled, superseded…) is a 409.

use axum::extract::State;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Communications;
use crate::compliance::actor;
use crate::messages::model::{Channel, EventSource, Lane, MessageStatus};
use crate::messages::queue::{self, DispatchJob};
use crate::messages::repository::{self, NewEvent};

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(queue_overview))
        .routes(routes!(queue_messages))
        .routes(routes!(replay_message))
        .routes(routes!(replay_many))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LaneView {
    pub lane: Lane,
    /// Due now, waiting for a worker (or their provider slot).
    pub queued: i64,
    /// Waiting for a time of their own (`scheduled_at`, quiet hours).
    pub scheduled: i64,
    /// Claimed by a worker, the provider request about to go or gone.
    pub running: i64,
    /// Queued again after a failed attempt.
    pub retrying: i64,
    /// Failed for good in the last 24 hours.
    pub failed: i64,
    /// The provider's answer was lost; callbacks or a lookup settle them.
    pub unknown: i64,
    /// Seconds the oldest due message has waited (0: none waits).
    pub oldest_due_seconds: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueOverview {
    pub lanes: Vec<LaneView>,
}

/// The tenant's queues, per lane.
#[utoipa::path(
    get, path = "/api/v1/queues", tag = "ops",
    responses((status = 200, body = QueueOverview), (status = 403, body = ErrorBody))
)]
pub async fn queue_overview(
    State(module): State<Communications>,
    caller: Caller,
) -> Result<Json<QueueOverview>, ApiError> {
    caller.require_admin()?;
    let rows = sqlx::query!(
        r#"SELECT lane AS "lane!: Lane",
                  count(*) FILTER (WHERE status = 'queued' AND attempts = 0
                                     AND (scheduled_at IS NULL OR scheduled_at <= now())) AS "queued!",
                  count(*) FILTER (WHERE status = 'queued' AND scheduled_at > now()) AS "scheduled!",
                  count(*) FILTER (WHERE status = 'sending') AS "running!",
                  count(*) FILTER (WHERE status = 'queued' AND attempts > 0
                                     AND (scheduled_at IS NULL OR scheduled_at <= now())) AS "retrying!",
                  count(*) FILTER (WHERE status = 'failed') AS "failed!",
                  count(*) FILTER (WHERE status = 'unknown') AS "unknown!",
                  COALESCE(EXTRACT(EPOCH FROM now() - min(COALESCE(scheduled_at, created_at))
                      FILTER (WHERE status = 'queued' AND (scheduled_at IS NULL OR scheduled_at <= now())))::float8, 0)
                      AS "oldest!"
           FROM communications.messages
           WHERE tenant_id = $1
             AND (status IN ('queued', 'sending', 'unknown')
                  OR (status = 'failed' AND updated_at > now() - interval '24 hours'))
           GROUP BY lane"#,
        caller.tenant_id.0,
    )
    .fetch_all(&module.pool)
    .await?;
    let lanes = [Lane::Urgent, Lane::Bulk]
        .into_iter()
        .map(|lane| match rows.iter().find(|r| r.lane == lane) {
            Some(r) => LaneView {
                lane,
                queued: r.queued,
                scheduled: r.scheduled,
                running: r.running,
                retrying: r.retrying,
                failed: r.failed,
                unknown: r.unknown,
                oldest_due_seconds: r.oldest.max(0.0),
            },
            None => LaneView {
                lane,
                queued: 0,
                scheduled: 0,
                running: 0,
                retrying: 0,
                failed: 0,
                unknown: 0,
                oldest_due_seconds: 0.0,
            },
        })
        .collect();
    Ok(Json(QueueOverview { lanes }))
}

/// Which messages a list or a bulk replay is about.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
pub struct ProblemFilter {
    /// `failed`, `dead` (failed after its retry budget) or `unknown`.
    pub status: String,
    pub lane: Option<Lane>,
    pub channel: Option<Channel>,
    /// Only messages that failed (or turned unknown) at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only messages whose reason contains this text (any case).
    pub reason_contains: Option<String>,
}

impl ProblemFilter {
    /// The message status it selects, and whether only spent retry budgets.
    fn parse(&self) -> Result<(&'static str, bool), ApiError> {
        match self.status.as_str() {
            "failed" => Ok(("failed", false)),
            "dead" => Ok(("failed", true)),
            "unknown" => Ok(("unknown", false)),
            _ => Err(ApiError::validation("status", "must be failed, dead or unknown")),
        }
    }

    fn pattern(&self) -> Result<Option<String>, ApiError> {
        match self.reason_contains.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
            Some(text) if text.chars().count() > 200 || text.contains('\0') => {
                Err(ApiError::validation("reason_contains", "must be at most 200 characters"))
            }
            Some(text) => Ok(Some(format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")))),
            None => Ok(None),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemMessage {
    pub id: Uuid,
    pub status: MessageStatus,
    pub status_reason: Option<String>,
    pub lane: Lane,
    pub channel: Channel,
    pub recipient: String,
    pub attempts: i32,
    pub provider: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemList {
    pub items: Vec<ProblemMessage>,
    /// How many match in all (the list shows the newest 200).
    pub total: i64,
}

/// The failed, dead or unknown messages, newest first, with their reasons.
#[utoipa::path(
    get, path = "/api/v1/queues/messages", tag = "ops", params(ProblemFilter),
    responses((status = 200, body = ProblemList), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn queue_messages(
    State(module): State<Communications>,
    caller: Caller,
    Query(filter): Query<ProblemFilter>,
) -> Result<Json<ProblemList>, ApiError> {
    caller.require_admin()?;
    let (status, dead) = filter.parse()?;
    let pattern = filter.pattern()?;
    let rows = sqlx::query!(
        r#"SELECT id, status AS "status: MessageStatus", status_reason, lane AS "lane: Lane",
                  channel AS "channel: Channel", recipient, attempts, provider, created_at, updated_at,
                  count(*) OVER () AS "total!"
           FROM communications.messages
           WHERE tenant_id = $1 AND status = $2 AND direction = 'outbound'
             AND (NOT $3 OR status_reason LIKE 'retry budget%')
             AND ($4::text IS NULL OR lane = $4) AND ($5::text IS NULL OR channel = $5)
             AND ($6::timestamptz IS NULL OR updated_at >= $6)
             AND ($7::text IS NULL OR status_reason ILIKE $7)
           ORDER BY updated_at DESC, id DESC LIMIT 200"#,
        caller.tenant_id.0,
        status,
        dead,
        filter.lane.map(Lane::as_str),
        filter.channel.map(Channel::as_str),
        filter.since,
        pattern,
    )
    .fetch_all(&module.pool)
    .await?;
    let total = rows.first().map_or(0, |r| r.total);
    let items = rows
        .into_iter()
        .map(|r| ProblemMessage {
            id: r.id,
            status: r.status,
            status_reason: r.status_reason,
            lane: r.lane,
            channel: r.channel,
            recipient: r.recipient,
            attempts: r.attempts,
            provider: r.provider,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
        .collect();
    Ok(Json(ProblemList { items, total }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Replay an `unknown` message even though the provider may have delivered it.
    #[serde(default)]
    pub confirm_unknown: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    pub id: Uuid,
    pub status: MessageStatus,
}

/// Sends a failed (or, confirmed, an unknown) message again: the same message, a new attempt.
#[utoipa::path(
    post, path = "/api/v1/messages/{id}/replay", tag = "ops", params(("id" = Uuid, Path)), request_body = ReplayRequest,
    responses((status = 200, body = Replayed), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Not failed (or unknown without confirm_unknown)"))
)]
pub async fn replay_message(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    request: Option<Json<ReplayRequest>>,
) -> Result<Json<Replayed>, ApiError> {
    caller.require_admin()?;
    let request = request.map(|Json(r)| r).unwrap_or_default();
    let who = actor(&caller);
    let mut tx = module.pool.begin().await?;
    let message = repository::lock(&mut tx, caller.tenant_id, id).await?;
    let lane = match message.status {
        MessageStatus::Failed => message.lane,
        MessageStatus::Unknown if request.confirm_unknown => message.lane,
        MessageStatus::Unknown => {
            return Err(ApiError::conflict(
                Some("confirm_unknown"),
                "the provider may have delivered this message (its answer was lost): replay it with confirm_unknown",
            ));
        }
        other => {
            return Err(ApiError::conflict(
                Some("status"),
                format!("a message that is {} cannot be replayed; only failed or unknown ones", other.as_str()),
            ));
        }
    };
    replay(&mut tx, caller.tenant_id.0, &[(id, lane)], &who).await?;
    tx.commit().await?;
    module.queue_waker.wake(lane);
    Ok(Json(Replayed { id, status: MessageStatus::Queued }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplayRequest {
    #[serde(flatten)]
    pub filter: ProblemFilter,
    /// Count what would be replayed, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Needed to replay `unknown` messages.
    #[serde(default)]
    pub confirm_unknown: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkReplayed {
    /// How many match the filter (at most 10,000 are replayed per call).
    pub matched: i64,
    pub replayed: usize,
    pub dry_run: bool,
}

/// Most messages one bulk replay takes; call again for more.
const MAX_BULK: i64 = 10_000;

/// Replays every message the filter selects (failed, dead, or — confirmed — unknown); with
/// `dry_run`, only says how many.
#[utoipa::path(
    post, path = "/api/v1/queues/replay", tag = "ops", request_body = BulkReplayRequest,
    responses((status = 200, body = BulkReplayed), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody))
)]
pub async fn replay_many(
    State(module): State<Communications>,
    caller: Caller,
    Json(request): Json<BulkReplayRequest>,
) -> Result<Json<BulkReplayed>, ApiError> {
    caller.require_admin()?;
    let (status, dead) = request.filter.parse()?;
    if status == "unknown" && !request.confirm_unknown && !request.dry_run {
        return Err(ApiError::conflict(
            Some("confirm_unknown"),
            "unknown messages may have been delivered: replay them with confirm_unknown",
        ));
    }
    let pattern = request.filter.pattern()?;
    let mut tx = module.pool.begin().await?;
    let matched = sqlx::query_scalar!(
        r#"SELECT count(*) AS "matched!" FROM communications.messages
           WHERE tenant_id = $1 AND status = $2 AND direction = 'outbound'
             AND (NOT $3 OR status_reason LIKE 'retry budget%')
             AND ($4::text IS NULL OR lane = $4) AND ($5::text IS NULL OR channel = $5)
             AND ($6::timestamptz IS NULL OR updated_at >= $6)
             AND ($7::text IS NULL OR status_reason ILIKE $7)"#,
        caller.tenant_id.0,
        status,
        dead,
        request.filter.lane.map(Lane::as_str),
        request.filter.channel.map(Channel::as_str),
        request.filter.since,
        pattern,
    )
    .fetch_one(&mut *tx)
    .await?;
    if request.dry_run {
        return Ok(Json(BulkReplayed { matched, replayed: 0, dry_run: true }));
    }
    let rows = sqlx::query!(
        r#"SELECT id, lane AS "lane: Lane" FROM communications.messages
           WHERE tenant_id = $1 AND status = $2 AND direction = 'outbound'
             AND (NOT $3 OR status_reason LIKE 'retry budget%')
             AND ($4::text IS NULL OR lane = $4) AND ($5::text IS NULL OR channel = $5)
             AND ($6::timestamptz IS NULL OR updated_at >= $6)
             AND ($7::text IS NULL OR status_reason ILIKE $7)
           ORDER BY updated_at, id LIMIT $8 FOR UPDATE SKIP LOCKED"#,
        caller.tenant_id.0,
        status,
        dead,
        request.filter.lane.map(Lane::as_str),
        request.filter.channel.map(Channel::as_str),
        request.filter.since,
        pattern,
        MAX_BULK,
    )
    .fetch_all(&mut *tx)
    .await?;
    let picked: Vec<(Uuid, Lane)> = rows.iter().map(|r| (r.id, r.lane)).collect();
    replay(&mut tx, caller.tenant_id.0, &picked, &actor(&caller)).await?;
    tx.commit().await?;
    for lane in [Lane::Urgent, Lane::Bulk] {
        if picked.iter().any(|(_, l)| *l == lane) {
            module.queue_waker.wake(lane);
        }
    }
    metrics::counter!("messages_replayed_total").increment(picked.len() as u64);
    Ok(Json(BulkReplayed { matched, replayed: picked.len(), dry_run: false }))
}

/// Puts the (locked) messages back in their queues with a fresh budget, a new job each and an
/// event naming who.
async fn replay(tx: &mut PgConnection, tenant: Uuid, messages: &[(Uuid, Lane)], who: &str) -> Result<(), ApiError> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = messages.iter().map(|(id, _)| *id).collect();
    let reason = format!("replayed by {who}");
    let previous = sqlx::query!(
        r#"UPDATE communications.messages m
           SET status = 'queued', status_reason = $3, attempts = 0, claimed_by = NULL, claim = NULL,
               requested_at = NULL, updated_at = now()
           FROM (SELECT id, attempts, status FROM communications.messages WHERE id = ANY($2) FOR UPDATE) old
           WHERE m.id = old.id AND m.tenant_id = $1
           RETURNING m.id, old.attempts, old.status"#,
        tenant,
        &ids,
        reason,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut jobs = Vec::with_capacity(previous.len());
    for row in &previous {
        let note = format!("{reason} (was {} after {} attempts)", row.status, row.attempts);
        repository::record_event(
            &mut *tx,
            NewEvent {
                tenant_id: tenant,
                message_id: row.id,
                status: MessageStatus::Queued,
                reason: Some(&note),
                source: EventSource::Api,
                payload: Some(json!({ "replayed_by": who, "previous_status": row.status })),
                occurred_at: None,
            },
        )
        .await?;
        let lane = messages.iter().find(|(id, _)| *id == row.id).map_or(Lane::Urgent, |(_, lane)| *lane);
        jobs.push((lane, DispatchJob::again(row.id, tenant, 0), None));
    }
    queue::enqueue_many(tx, &jobs).await
}
