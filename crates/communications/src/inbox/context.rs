//! The business context of a conversation: at most one upstream booking, service leg or invoice,
//! or one fulfillment appointment (a CHECK constraint holds it to one), set through the API or
//! inherited from the trigger rule's message the contact answered.
//!
//! The sidebar shows the entity's newest row as the Hasura events we receive anyway carried it
//! (`entity_snapshots`: table and primary key → the newest `new` row), so showing a conversation
//! never calls the upstream system.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::http::ConversationView;
use super::inbound::record_change;
use super::repository as conversations;
use crate::Communications;
use crate::triggers::event::IncomingEvent;

/// What a conversation is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Link {
    /// booking, service_leg, invoice or appointment.
    pub kind: String,
    pub id: String,
}

/// The linked entity's newest row as upstream events told it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Context {
    /// The Hasura table (schema.name).
    pub source: String,
    /// INSERT, UPDATE, DELETE or MANUAL.
    pub op: String,
    #[schema(value_type = Object)]
    pub row: Value,
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
}

/// The upstream kind a Hasura table holds: `bookings`, `BOOKING`, `commerce.booking` → booking.
pub fn kind_of_table(name: &str) -> Option<&'static str> {
    let name = name.to_lowercase();
    match name.strip_suffix('s').unwrap_or(&name) {
        "booking" => Some("booking"),
        "service_leg" => Some("service_leg"),
        "invoice" => Some("invoice"),
        _ => None,
    }
}

/// The link an event's messages carry: the row of a Hasura event on a booking, service leg or
/// invoice table, or a domain event's `data.booking_id` / `service_leg_id` / `invoice_id`.
pub fn link_of_event(event: &IncomingEvent) -> Option<Link> {
    let data = event.document.get("data")?;
    if let Some(table) = data.pointer("/table/name").and_then(Value::as_str) {
        let kind = kind_of_table(table)?;
        let row = data.get("new").filter(|row| row.is_object()).or_else(|| data.get("old"))?;
        return Some(Link { kind: kind.into(), id: scalar(row.get("id")?)? });
    }
    ["booking", "service_leg", "invoice", "appointment"]
        .into_iter()
        .find_map(|kind| Some(Link { kind: kind.into(), id: scalar(data.get(format!("{kind}_id"))?)? }))
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.trim().is_empty() && text.len() <= 200 => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The entity an event is about and its row as the event carries it: a row of
/// `communications.entity_snapshots`. It is made where the event is planned, its row serialized
/// there once, so that the batch storing the event (`triggers/ingest.rs`) only binds it.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    kind: String,
    id: String,
    source: String,
    op: String,
    row: Box<RawValue>,
    event_id: String,
    occurred_at: DateTime<Utc>,
}

/// The snapshot `event` brings, if any; `link` is the event's ([`link_of_event`]).
pub(crate) fn snapshot_of(event: &IncomingEvent, link: Option<Link>) -> Option<Snapshot> {
    let data = event.document.get("data")?;
    let raw = |row: &Value| serde_json::value::to_raw_value(row).ok();
    let (event_id, occurred_at) = (event.id.clone(), event.occurred_at);
    // Appointments come from our own fulfillment module as domain events: the event's data is
    // the appointment as it is now.
    if let (Some(change), Some(id)) =
        (event.name.strip_prefix("appointment."), data.get("appointment_id").and_then(scalar))
    {
        let (kind, source, op) = ("appointment".into(), "fulfillment".into(), change.into());
        return Some(Snapshot { kind, id, source, op, row: raw(data)?, event_id, occurred_at });
    }
    let table = data.get("table")?;
    let (Link { kind, id }, name) = (link?, table.get("name").and_then(Value::as_str)?);
    let schema = table.get("schema").and_then(Value::as_str).unwrap_or("public");
    let op = data.get("op").and_then(Value::as_str).unwrap_or("UNKNOWN").to_owned();
    let row = match data.get("new").filter(|row| row.is_object()).or_else(|| data.get("old")) {
        Some(row) => raw(row)?,
        None => raw(&Value::Null)?,
    };
    Some(Snapshot { kind, id, source: format!("{schema}.{name}"), op, row, event_id, occurred_at })
}

/// The snapshots a batch of events brings, as the columns of `communications.entity_snapshots`:
/// one row per entity (a statement cannot update a row twice), the newest event's, in key order
/// (two batches that share entities then lock them in one order). The event path keeps them
/// within its claim of the events (`triggers/ingest.rs`), unless a newer event already did
/// (events may arrive out of order).
#[derive(Debug, Default)]
pub(crate) struct SnapshotColumns<'a> {
    pub tenants: Vec<Uuid>,
    pub kinds: Vec<&'a str>,
    pub ids: Vec<&'a str>,
    pub sources: Vec<&'a str>,
    pub ops: Vec<&'a str>,
    pub rows: Vec<sqlx::types::Json<&'a RawValue>>,
    pub event_ids: Vec<&'a str>,
    pub times: Vec<DateTime<Utc>>,
}

pub(crate) fn snapshot_columns<'a>(snapshots: impl Iterator<Item = (Uuid, &'a Snapshot)>) -> SnapshotColumns<'a> {
    let mut newest: BTreeMap<(Uuid, &str, &str), &Snapshot> = BTreeMap::new();
    for (tenant, snapshot) in snapshots {
        let key = (tenant, snapshot.kind.as_str(), snapshot.id.as_str());
        match newest.get(&key) {
            Some(kept) if kept.occurred_at > snapshot.occurred_at => {}
            _ => {
                newest.insert(key, snapshot);
            }
        }
    }
    let mut columns = SnapshotColumns::default();
    for ((tenant, ..), snapshot) in newest {
        columns.tenants.push(tenant);
        columns.kinds.push(&snapshot.kind);
        columns.ids.push(&snapshot.id);
        columns.sources.push(&snapshot.source);
        columns.ops.push(&snapshot.op);
        columns.rows.push(sqlx::types::Json(&snapshot.row));
        columns.event_ids.push(&snapshot.event_id);
        columns.times.push(snapshot.occurred_at);
    }
    columns
}

/// The snapshot of the linked entity, if events brought one.
pub async fn context_of(db: impl PgExecutor<'_>, tenant: Uuid, link: &Link) -> Result<Option<Context>, ApiError> {
    Ok(sqlx::query_as!(
        Context,
        r#"SELECT source, op, row, event_id, occurred_at FROM communications.entity_snapshots
           WHERE tenant_id = $1 AND kind = $2 AND entity_id = $3"#,
        tenant,
        link.kind,
        link.id,
    )
    .fetch_optional(db)
    .await?)
}

/// A new conversation takes the link of the newest linked message sent to its contact in the
/// last 30 days: the customer is answering that booking's confirmation.
pub async fn inherit_link(
    tx: &mut PgConnection,
    tenant: Uuid,
    conversation: Uuid,
    contact: Uuid,
) -> Result<(), ApiError> {
    // With the tenant, the (tenant, contact, id) index walks this contact's messages newest
    // first; without it, every new conversation read the whole table.
    let link = sqlx::query_scalar!(
        r#"SELECT metadata->'link' AS "link!" FROM communications.messages
           WHERE tenant_id = $2 AND contact_id = $1 AND direction = 'outbound' AND metadata ? 'link'
             AND created_at > now() - interval '30 days'
           ORDER BY id DESC LIMIT 1"#,
        contact,
        tenant,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(link) = link.and_then(|link| serde_json::from_value::<Link>(link).ok()) {
        set_link(tx, conversation, Some(&link)).await?;
    }
    Ok(())
}

async fn set_link(tx: &mut PgConnection, conversation: Uuid, link: Option<&Link>) -> Result<(), ApiError> {
    let of = |kind: &str| link.filter(|l| l.kind == kind).map(|l| l.id.clone());
    let appointment = match of("appointment") {
        Some(id) => Some(id.parse::<Uuid>().map_err(|_| ApiError::validation("appointment_id", "is not a UUID"))?),
        None => None,
    };
    sqlx::query!(
        r#"UPDATE communications.conversations
           SET booking_id = $2, service_leg_id = $3, invoice_id = $4, appointment_id = $5, updated_at = now()
           WHERE id = $1"#,
        conversation,
        of("booking"),
        of("service_leg"),
        of("invoice"),
        appointment,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// At most one of the fields; none clears the link.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub booking_id: Option<String>,
    pub service_leg_id: Option<String>,
    pub invoice_id: Option<String>,
    pub appointment_id: Option<Uuid>,
}

impl LinkRequest {
    fn link(self) -> Result<Option<Link>, ApiError> {
        let given: Vec<(&str, String)> = [
            ("booking", self.booking_id),
            ("service_leg", self.service_leg_id),
            ("invoice", self.invoice_id),
            ("appointment", self.appointment_id.map(|id| id.to_string())),
        ]
        .into_iter()
        .filter_map(|(kind, id)| id.map(|id| (kind, id)))
        .collect();
        match given.as_slice() {
            [] => Ok(None),
            [(kind, id)] => {
                let id = id.trim();
                if id.is_empty() || id.chars().count() > 200 {
                    return Err(ApiError::validation(format!("{kind}_id"), "must be 1 to 200 characters"));
                }
                Ok(Some(Link { kind: (*kind).into(), id: id.to_owned() }))
            }
            [_, (second, _), ..] => Err(ApiError::validation(
                format!("{second}_id"),
                "a conversation links to at most one of booking, service leg, invoice or appointment",
            )),
        }
    }
}

/// Links the conversation to a booking, service leg, invoice or appointment (replacing any
/// link), or clears the link with `{}`.
#[utoipa::path(
    put, path = "/api/v1/conversations/{id}/link", tag = "inbox", params(("id" = Uuid, Path)), request_body = LinkRequest,
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn put_link(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<LinkRequest>,
) -> Result<Json<ConversationView>, ApiError> {
    let link = request.link()?;
    let mut tx = module.pool.begin().await?;
    conversations::lock(&mut tx, caller.tenant_id, id).await?;
    set_link(&mut tx, id, link.as_ref()).await?;
    record_change(&mut tx, caller.tenant_id.0, "conversation.updated", id, None, json!({ "link": link })).await?;
    tx.commit().await?;
    module.feed.signal();
    super::http::conversation_view(&module, caller, id).await.map(Json)
}

/// The link stored in a conversation row's columns.
pub fn link_from_columns(
    booking: Option<String>,
    service_leg: Option<String>,
    invoice: Option<String>,
    appointment: Option<Uuid>,
) -> Option<Link> {
    let link = |kind: &str, id: String| Link { kind: kind.into(), id };
    booking
        .map(|id| link("booking", id))
        .or_else(|| service_leg.map(|id| link("service_leg", id)))
        .or_else(|| invoice.map(|id| link("invoice", id)))
        .or_else(|| appointment.map(|id| link("appointment", id.to_string())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tables_name_their_kind_in_any_case_and_number() {
        assert_eq!(kind_of_table("bookings"), Some("booking"));
        assert_eq!(kind_of_table("BOOKING"), Some("booking"));
        assert_eq!(kind_of_table("service_legs"), Some("service_leg"));
        assert_eq!(kind_of_table("Invoice"), Some("invoice"));
        assert_eq!(kind_of_table("passengers"), None);
    }

    #[test]
    fn a_link_request_names_at_most_one_entity() {
        let two = LinkRequest { booking_id: Some("B1".into()), invoice_id: Some("I1".into()), ..Default::default() };
        match two.link() {
            Err(ApiError::Validation { field, .. }) => assert_eq!(field, "invoice_id"),
            other => panic!("{other:?}"),
        }
        assert_eq!(LinkRequest::default().link().unwrap(), None);
        let one = LinkRequest { service_leg_id: Some(" L-7 ".into()), ..Default::default() };
        assert_eq!(one.link().unwrap(), Some(Link { kind: "service_leg".into(), id: "L-7".into() }));
    }
}
