//! `/api/v1/conversations`: the agents' inbox (agent session or operator key; another tenant's
//! conversation is a 404). Claims have exactly one winner: the loser gets a 409 naming the holder.

use axum::extract::State;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use kernel::pagination::{Page, PageParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::context::{Context, Link, context_of, link_from_columns};
use super::inbound::record_change;
use super::labels::{LabelView, labels_of};
use super::repository::{self as conversations, ConversationRow, ListFilter};
use crate::Communications;
use crate::messages::model::Channel;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(list_conversations))
        .routes(routes!(get_conversation))
        .routes(routes!(claim))
        .routes(routes!(release))
        .routes(routes!(assign))
        .routes(routes!(snooze))
        .routes(routes!(resolve))
        .routes(routes!(reopen))
        .routes(routes!(super::unread::mark_read))
        .routes(routes!(super::unread::unread_summary))
        .routes(routes!(super::reply::reply))
        .routes(routes!(super::stream::stream))
        .routes(routes!(super::context::put_link))
        .routes(routes!(super::participants::participants))
        .routes(routes!(super::participants::put_participant))
        .routes(routes!(super::thread::thread))
        .routes(routes!(super::search::search))
        .routes(routes!(super::media::download))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    pub id: Uuid,
    pub contact_id: Uuid,
    pub contact_name: Option<String>,
    pub channel: Channel,
    pub channel_account_id: Option<Uuid>,
    /// open, snoozed or resolved.
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// The newest message's content.
    #[schema(value_type = Option<Object>)]
    pub last_message: Option<Value>,
    /// Inbound messages the calling agent has not read (`null` for an operator key).
    pub unread_count: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// The booking, service leg, invoice or appointment it is about.
    pub link: Option<Link>,
    pub labels: Vec<LabelView>,
    /// The linked entity's newest row from upstream events (one conversation only, not lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
}

fn view(row: ConversationRow) -> ConversationView {
    ConversationView {
        id: row.id,
        contact_id: row.contact_id,
        contact_name: row.contact_name,
        channel: row.channel,
        channel_account_id: row.channel_account_id,
        status: row.status,
        assignee_id: row.assignee_id,
        snoozed_until: row.snoozed_until,
        last_message_at: row.last_message_at,
        last_inbound_at: row.last_inbound_at,
        last_message: row.preview,
        unread_count: row.unread_count,
        created_at: row.created_at,
        link: link_from_columns(row.booking_id, row.service_leg_id, row.invoice_id, row.appointment_id),
        labels: Vec::new(),
        context: None,
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationFilter {
    /// open, snoozed or resolved.
    pub status: Option<String>,
    /// `me` (the calling agent), `unassigned`, or an agent id.
    pub assignee: Option<String>,
    pub channel: Option<Channel>,
    pub contact_id: Option<Uuid>,
    /// Only conversations with messages the calling agent has not read.
    #[serde(default)]
    pub unread: bool,
    /// Only conversations about this booking (likewise `service_leg_id`, `invoice_id`,
    /// `appointment_id`; one at a time).
    pub booking_id: Option<String>,
    pub service_leg_id: Option<String>,
    pub invoice_id: Option<String>,
    pub appointment_id: Option<Uuid>,
    /// Only conversations with this label (id).
    pub label: Option<Uuid>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

const STATUSES: [&str; 3] = ["open", "snoozed", "resolved"];

/// Conversations, newest activity first.
#[utoipa::path(
    get, path = "/api/v1/conversations", tag = "inbox", params(ConversationFilter),
    responses((status = 200, body = Page<ConversationView>), (status = 422, body = ErrorBody))
)]
pub async fn list_conversations(
    State(module): State<Communications>,
    caller: Caller,
    Query(filter): Query<ConversationFilter>,
) -> Result<Json<Page<ConversationView>>, ApiError> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() }.parse()?;
    if let Some(status) = filter.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(ApiError::validation("status", format!("`{status}` is not one of open, snoozed, resolved")));
    }
    let assignee = match filter.assignee.as_deref() {
        None => None,
        Some("unassigned") => Some(None),
        Some("me") => Some(Some(
            caller.agent_id().ok_or_else(|| ApiError::validation("assignee", "`me` needs an agent's session"))?.0,
        )),
        Some(id) => Some(Some(
            Uuid::parse_str(id)
                .map_err(|_| ApiError::validation("assignee", "is not me, unassigned or an agent id"))?,
        )),
    };
    let agent = caller.agent_id().map(|agent| agent.0);
    if filter.unread && agent.is_none() {
        return Err(ApiError::validation("unread", "unread counts are an agent's"));
    }
    let list_filter = ListFilter {
        status: filter.status.clone(),
        assignee,
        channel: filter.channel,
        contact_id: filter.contact_id,
        unread_only: filter.unread,
        link: linked(&filter)?,
        label: filter.label,
    };
    let mut tx = conversations::planned_with_values(&module.pool).await?;
    let rows = conversations::list(&mut *tx, caller.tenant_id, agent, &list_filter, page).await?;
    tx.commit().await?;
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let mut labels = labels_of(&module.pool, caller.tenant_id, &ids).await?;
    let views: Vec<ConversationView> = rows
        .into_iter()
        .map(|row| {
            let mut view = view(row);
            view.labels = labels.remove(&view.id).unwrap_or_default();
            view
        })
        .collect();
    Ok(Json(Page::from_rows(views, page, |c| c.id)))
}

#[utoipa::path(
    get, path = "/api/v1/conversations/{id}", tag = "inbox", params(("id" = Uuid, Path)),
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody))
)]
pub async fn get_conversation(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ConversationView>, ApiError> {
    conversation_view(&module, caller, id).await.map(Json)
}

/// One conversation as the caller sees it, with its business context.
pub(crate) async fn conversation_view(
    module: &Communications,
    caller: Caller,
    id: Uuid,
) -> Result<ConversationView, ApiError> {
    let agent = caller.agent_id().map(|agent| agent.0);
    let mut view = view(conversations::find(&module.pool, caller.tenant_id, agent, id).await?);
    view.labels = labels_of(&module.pool, caller.tenant_id, &[id]).await?.remove(&id).unwrap_or_default();
    if let Some(link) = &view.link {
        view.context = context_of(&module.pool, caller.tenant_id.0, link).await?;
    }
    Ok(view)
}

fn linked(filter: &ConversationFilter) -> Result<Option<(String, String)>, ApiError> {
    let given: Vec<(&str, String)> = [
        ("booking", filter.booking_id.clone()),
        ("service_leg", filter.service_leg_id.clone()),
        ("invoice", filter.invoice_id.clone()),
        ("appointment", filter.appointment_id.map(|id| id.to_string())),
    ]
    .into_iter()
    .filter_map(|(kind, id)| id.map(|id| (kind, id)))
    .collect();
    match given.as_slice() {
        [] => Ok(None),
        [(kind, id)] => Ok(Some(((*kind).to_owned(), id.trim().to_owned()))),
        [_, (second, _), ..] => {
            Err(ApiError::validation(format!("{second}_id"), "filter by one linked entity at a time"))
        }
    }
}

/// The calling agent takes the conversation. Exactly one of concurrent claims wins; claiming
/// one's own conversation again is a no-op.
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/claim", tag = "inbox", params(("id" = Uuid, Path)),
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Another agent holds it"),
              (status = 422, body = ErrorBody, description = "Only an agent can claim"))
)]
pub async fn claim(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ConversationView>, ApiError> {
    let agent = caller.agent_id().ok_or_else(|| ApiError::validation("agent", "only an agent's session can claim"))?.0;
    change(&module, caller, id, "conversation.assigned", |state| match state.assignee_id {
        Some(holder) if holder != agent => {
            Err(ApiError::conflict(Some("assignee_id"), format!("agent {holder} holds this conversation")))
        }
        _ => Ok((state.status.clone(), state.snoozed_until, Some(agent))),
    })
    .await
}

/// The holder (or an admin) gives the conversation back to the unassigned queue.
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/release", tag = "inbox", params(("id" = Uuid, Path)),
    responses((status = 200, body = ConversationView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn release(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ConversationView>, ApiError> {
    let me = caller.agent_id().map(|agent| agent.0);
    change(&module, caller, id, "conversation.assigned", |state| {
        if state.assignee_id.is_some() && state.assignee_id != me && !caller.is_admin() {
            return Err(ApiError::Forbidden("only its holder or an admin can release a conversation".into()));
        }
        Ok((state.status.clone(), state.snoozed_until, None))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// The agent to hold the conversation; `null` leaves it unassigned.
    pub agent_id: Option<Uuid>,
}

/// An admin (or operator key) gives the conversation to an agent of the workspace, or to nobody,
/// whoever holds it now.
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/assign", tag = "inbox", params(("id" = Uuid, Path)), request_body = AssignRequest,
    responses((status = 200, body = ConversationView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "No such agent in this workspace"))
)]
pub async fn assign(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<AssignRequest>,
) -> Result<Json<ConversationView>, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::Forbidden("only an admin reassigns conversations".into()));
    }
    if let Some(agent) = request.agent_id {
        let directory = module.agents.as_ref().ok_or_else(|| ApiError::internal("no agent directory"))?;
        if !directory.is_agent(caller.tenant_id, kernel::ids::AgentId(agent)).await? {
            return Err(ApiError::validation("agent_id", "is not an agent of this workspace"));
        }
    }
    change(&module, caller, id, "conversation.assigned", |state| {
        Ok((state.status.clone(), state.snoozed_until, request.agent_id))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeRequest {
    /// When it comes back (RFC 3339, in the future).
    pub until: DateTime<Utc>,
}

/// Puts the conversation aside until a time; it opens again then (or at a new inbound message).
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/snooze", tag = "inbox", params(("id" = Uuid, Path)), request_body = SnoozeRequest,
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn snooze(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<SnoozeRequest>,
) -> Result<Json<ConversationView>, ApiError> {
    if request.until <= Utc::now() {
        return Err(ApiError::validation("until", "must be in the future"));
    }
    change(&module, caller, id, "conversation.status_changed", |state| {
        Ok(("snoozed".into(), Some(request.until), state.assignee_id))
    })
    .await
}

#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/resolve", tag = "inbox", params(("id" = Uuid, Path)),
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody))
)]
pub async fn resolve(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ConversationView>, ApiError> {
    change(&module, caller, id, "conversation.status_changed", |state| Ok(("resolved".into(), None, state.assignee_id)))
        .await
}

/// Opens a resolved or snoozed conversation again. A contact's other unresolved conversation on
/// the same account is a 409: there is one at a time.
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/reopen", tag = "inbox", params(("id" = Uuid, Path)),
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn reopen(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ConversationView>, ApiError> {
    change(&module, caller, id, "conversation.status_changed", |state| Ok(("open".into(), None, state.assignee_id)))
        .await
}

/// What a change makes of the locked state: (status, snoozed until, assignee).
type Decision = (String, Option<DateTime<Utc>>, Option<Uuid>);

/// Locks the conversation, applies `decide`, records the change, and answers the new view.
async fn change(
    module: &Communications,
    caller: Caller,
    id: Uuid,
    kind: &str,
    decide: impl FnOnce(&conversations::Locked) -> Result<Decision, ApiError>,
) -> Result<Json<ConversationView>, ApiError> {
    let mut tx = module.pool.begin().await?;
    let state = conversations::lock(&mut tx, caller.tenant_id, id).await?;
    let (status, snoozed_until, assignee) = decide(&state)?;
    conversations::update(&mut tx, id, &status, snoozed_until, assignee).await.map_err(|error| {
        // The one unique index of the table: one unresolved conversation per contact and account.
        if error.is_unique_violation() {
            ApiError::conflict(Some("status"), "the contact has another unresolved conversation on this account")
        } else {
            error
        }
    })?;
    let payload = json!({ "status": status, "assignee_id": assignee, "snoozed_until": snoozed_until });
    record_change(&mut tx, caller.tenant_id.0, kind, id, None, payload).await?;
    if assignee.is_some() {
        // An agent holds it now: the booking dialogue stops there.
        crate::dialogue::take_over(&mut tx, id).await?;
    }
    tx.commit().await?;
    module.feed.signal();
    conversation_view(module, caller, id).await.map(Json)
}
