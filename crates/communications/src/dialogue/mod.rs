//! The SMS booking dialogue: a persisted state machine per conversation.
//!
//! ```text
//! missed call ─▶ proposing ──"2"──▶ (hold) ──▶ booked                  (policy: book at once)
//!                    │      └─────▶ (hold) ──▶ confirming ──"YES"──▶ booked
//!                    │                             └── hold lapsed / taken ─▶ proposing (fresh slots)
//!   booked (policy `ask_address`) ─▶ address ──the address──▶ booked (the appointment's location)
//!                    ├── anything else ─▶ handed_off (unassigned, labelled "needs agent")
//!                    ├── STOP ─▶ stopped
//!                    └── an agent claims or answers ─▶ agent
//! ```
//!
//! Inbound texts of a conversation with an active dialogue (and HELP) become *turns* in the
//! webhook's transaction (`dialogue_turns`, keyed by the inbound message: a redelivered webhook
//! is the same message, so it never makes a second turn). The worker (`worker.rs`) takes a turn
//! with its dialogue row locked, asks fulfillment through `kernel::scheduling::SlotBooker`
//! (holds carry the turn's id as idempotency key, so a turn retried after a crash finds its own
//! hold), and stores the new state, the reply SMS and the turn's deletion in one transaction.
//!
//! - `text.rs`: reading numbers and YES, writing the offers.
//! - `worker.rs`: the turns' loop and the transitions.

pub mod text;
pub mod worker;

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use text::Proposal;

/// The slot held while the customer is asked to confirm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldRef {
    pub id: Uuid,
    pub n: u8,
    pub expires_at: Option<DateTime<Utc>>,
}

/// States in which the dialogue still reads the customer's texts.
const ACTIVE: [&str; 3] = ["proposing", "confirming", "address"];

/// Starts (or restarts: a new missed call) the dialogue of a conversation with these proposals.
pub(crate) async fn start(
    tx: &mut PgConnection,
    tenant: Uuid,
    conversation: Uuid,
    contact: Uuid,
    service: Option<Uuid>,
    proposals: &[Proposal],
    call: &str,
) -> Result<(), ApiError> {
    sqlx::query!(
        r#"INSERT INTO communications.dialogues
               (conversation_id, tenant_id, contact_id, state, service_id, proposals, started_by)
           VALUES ($1, $2, $3, 'proposing', $4, $5, $6)
           ON CONFLICT (conversation_id) DO UPDATE SET state = 'proposing', contact_id = $3, service_id = $4,
               proposals = $5, hold = NULL, appointment_id = NULL, started_by = $6, updated_at = now()"#,
        conversation,
        tenant,
        contact,
        service,
        serde_json::to_value(proposals).map_err(ApiError::internal)?,
        call,
    )
    .execute(&mut *tx)
    .await?;
    metrics::counter!("sms_dialogue_transitions_total", "to" => "proposing").increment(1);
    Ok(())
}

/// Ends an active dialogue: `agent` (an agent took over), `stopped` (the customer opted out).
pub(crate) async fn stop(tx: &mut PgConnection, conversation: Uuid, state: &str) -> Result<bool, ApiError> {
    let stopped = sqlx::query!(
        r#"UPDATE communications.dialogues SET state = $2, updated_at = now()
           WHERE conversation_id = $1 AND state = ANY($3)"#,
        conversation,
        state,
        &ACTIVE.map(str::to_owned),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if stopped {
        metrics::counter!("sms_dialogue_transitions_total", "to" => state.to_owned()).increment(1);
    }
    Ok(stopped)
}

/// An agent claimed, was given or answered the conversation: the dialogue stops there.
pub(crate) async fn take_over(tx: &mut PgConnection, conversation: Uuid) -> Result<(), ApiError> {
    stop(tx, conversation, "agent").await.map(|_| ())
}

/// Queues an inbound text for the dialogue worker when it has something to do with it: HELP
/// (the help text), or any text while the conversation's dialogue is active. Answers whether a
/// turn was queued. The inbound message's id is the turn's: one turn per message, ever.
pub(crate) async fn queue_turn(
    tx: &mut PgConnection,
    tenant: Uuid,
    conversation: Uuid,
    message: Uuid,
    body: &str,
    help: bool,
) -> Result<bool, ApiError> {
    let queued = sqlx::query!(
        r#"INSERT INTO communications.dialogue_turns (id, tenant_id, conversation_id, body)
           SELECT $1, $2, $3, $4
           WHERE $5 OR EXISTS (SELECT 1 FROM communications.dialogues
                               WHERE conversation_id = $3 AND state = ANY($6))
           ON CONFLICT (id) DO NOTHING"#,
        message,
        tenant,
        conversation,
        body,
        help,
        &ACTIVE.map(str::to_owned),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    Ok(queued)
}

/// Hands the conversation to a human: unassigned, open, labelled "needs agent", the dialogue
/// stopped there; the change reaches the agents' streams.
pub(crate) async fn hand_off(
    tx: &mut PgConnection,
    tenant: Uuid,
    conversation: Uuid,
    reason: &str,
) -> Result<(), ApiError> {
    stop(tx, conversation, "handed_off").await?;
    sqlx::query!(
        r#"UPDATE communications.conversations
           SET assignee_id = NULL, status = 'open', snoozed_until = NULL, updated_at = now()
           WHERE id = $1"#,
        conversation,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"INSERT INTO communications.labels (id, tenant_id, name, color) VALUES ($1, $2, $3, '#b45309')
           ON CONFLICT (tenant_id, lower(name)) DO NOTHING"#,
        Uuid::now_v7(),
        tenant,
        NEEDS_AGENT,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"INSERT INTO communications.conversation_labels (conversation_id, label_id)
           SELECT $1, id FROM communications.labels WHERE tenant_id = $2 AND lower(name) = lower($3)
           ON CONFLICT DO NOTHING"#,
        conversation,
        tenant,
        NEEDS_AGENT,
    )
    .execute(&mut *tx)
    .await?;
    let payload = json!({ "status": "open", "assignee_id": null, "handed_off": reason });
    crate::inbox::inbound::record_change(tx, tenant, "conversation.assigned", conversation, None, payload).await?;
    metrics::counter!("sms_dialogue_handoffs_total").increment(1);
    Ok(())
}

/// The label a conversation handed to a human carries.
pub const NEEDS_AGENT: &str = "needs agent";
