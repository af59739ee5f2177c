//! The dialogue worker: takes due turns (`FOR UPDATE SKIP LOCKED`, every serve/worker process),
//! moves each conversation's dialogue on, and answers by SMS — state, reply and the turn's
//! deletion in one transaction. A turn that fails (fulfillment or the database away) is tried
//! again with a growing delay; after `MAX_ATTEMPTS` the conversation goes to a human.

use std::time::Duration;

use chrono::Utc;
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::scheduling::{BookingRefusal, SlotBooker};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::text::{self, Proposal};
use super::{HeldRef, hand_off};
use crate::Communications;
use crate::compliance::{self, Keyword};
use crate::contacts::RecipientInput;
use crate::dispatch::local::Pending;
use crate::messages::content::ContentInput;
use crate::messages::model::{Channel, Lane};
use crate::messages::service::{ChannelsInput, SendRequest};
use crate::policy::{self, Policy};

const MAX_ATTEMPTS: i32 = 8;
/// Turns one round takes before it looks at its wake-up signal again.
const ROUND: usize = 64;

/// Runs until the process ends: due turns at once, then on every signal, or each `poll`.
pub async fn run(module: Communications, poll: Duration) {
    loop {
        match process_due(&module).await {
            Ok(done) if done >= ROUND => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "dialogue turns: a round failed; trying again"),
        }
        tokio::select! {
            _ = module.dialogue_wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

struct Turn {
    id: Uuid,
    tenant_id: Uuid,
    conversation_id: Uuid,
    body: String,
    attempts: i32,
}

/// Processes the due turns, one transaction each; answers how many.
pub async fn process_due(module: &Communications) -> Result<usize, ApiError> {
    let mut done = 0;
    while done < ROUND {
        let mut tx = module.pool.begin().await?;
        let turn = sqlx::query_as!(
            Turn,
            r#"SELECT id, tenant_id, conversation_id, body, attempts FROM communications.dialogue_turns
               WHERE next_at <= now() ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"#,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(turn) = turn else { return Ok(done) };
        done += 1;
        // The answer is stored claimed for this process's dispatcher and handed over after the
        // commit, as a missed call's is.
        let mut pending = Pending::new(&module.local);
        match take_turn(module, &mut tx, &mut pending, &turn).await {
            Ok(sent) => {
                sqlx::query!("DELETE FROM communications.dialogue_turns WHERE id = $1", turn.id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                pending.hand_over();
                module.feed.signal();
                if sent {
                    module.queue_waker.wake(Lane::Urgent);
                }
            }
            Err(error) => {
                drop(tx);
                tracing::warn!(%error, turn = %turn.id, attempts = turn.attempts + 1, "a dialogue turn failed");
                give_up_or_retry(module, &turn, &error).await?;
            }
        }
    }
    Ok(done)
}

async fn give_up_or_retry(module: &Communications, turn: &Turn, error: &ApiError) -> Result<(), ApiError> {
    let mut tx = module.pool.begin().await?;
    if turn.attempts + 1 >= MAX_ATTEMPTS {
        hand_off(&mut tx, turn.tenant_id, turn.conversation_id, "the booking dialogue kept failing").await?;
        sqlx::query!("DELETE FROM communications.dialogue_turns WHERE id = $1", turn.id).execute(&mut *tx).await?;
    } else {
        let delay = 2f64.powi(turn.attempts.min(8)).min(300.0);
        sqlx::query!(
            r#"UPDATE communications.dialogue_turns
               SET attempts = attempts + 1, next_at = now() + make_interval(secs => $2), last_error = $3
               WHERE id = $1"#,
            turn.id,
            delay,
            error.to_string(),
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    module.feed.signal();
    Ok(())
}

struct Dialogue {
    state: String,
    contact_id: Uuid,
    appointment_id: Option<Uuid>,
    service_id: Option<Uuid>,
    proposals: serde_json::Value,
    hold: Option<serde_json::Value>,
}

/// One turn; answers whether an SMS was stored to go out.
async fn take_turn(
    module: &Communications,
    tx: &mut PgConnection,
    pending: &mut Pending,
    turn: &Turn,
) -> Result<bool, ApiError> {
    let tenant = turn.tenant_id;
    let conversation = turn.conversation_id;
    let keyword = compliance::classify(&turn.body);
    if keyword == Some(Keyword::Help) {
        let policy = policy::load(&mut *tx, tenant).await?;
        let contact =
            sqlx::query_scalar!("SELECT contact_id FROM communications.conversations WHERE id = $1", conversation)
                .fetch_one(&mut *tx)
                .await?;
        return send(module, tx, pending, (tenant, conversation), contact, &policy.help_text, "help").await;
    }
    let dialogue = sqlx::query_as!(
        Dialogue,
        r#"SELECT state, contact_id, appointment_id, service_id, proposals, hold FROM communications.dialogues
           WHERE conversation_id = $1 FOR UPDATE"#,
        conversation,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(dialogue) = dialogue else { return Ok(false) };
    // Opt-outs were applied with the webhook; START and UNSTOP are not answers. YES may be one.
    let confirming = dialogue.state == "confirming";
    match keyword {
        Some(Keyword::OptOut) => return Ok(false),
        Some(Keyword::OptIn) if !(confirming && text::is_yes(&turn.body)) => return Ok(false),
        _ => {}
    }
    if !matches!(dialogue.state.as_str(), "proposing" | "confirming" | "address") {
        return Ok(false);
    }
    let policy = policy::load(&mut *tx, tenant).await?;
    let Some(booker) = module.booker.clone() else {
        hand_off(tx, tenant, conversation, "booking is not available").await?;
        return send(module, tx, pending, (tenant, conversation), dialogue.contact_id, text::HANDED_OFF, "handed_off")
            .await;
    };
    let step = Step {
        module,
        booker: booker.as_ref(),
        tx,
        pending,
        policy: &policy,
        tenant,
        conversation,
        dialogue: &dialogue,
        turn,
    };
    step.run().await
}

struct Step<'a> {
    module: &'a Communications,
    booker: &'a dyn SlotBooker,
    tx: &'a mut PgConnection,
    pending: &'a mut Pending,
    policy: &'a Policy,
    tenant: Uuid,
    conversation: Uuid,
    dialogue: &'a Dialogue,
    turn: &'a Turn,
}

impl Step<'_> {
    async fn run(mut self) -> Result<bool, ApiError> {
        let proposals: Vec<Proposal> = serde_json::from_value(self.dialogue.proposals.clone()).unwrap_or_default();
        let held: Option<HeldRef> = self.dialogue.hold.clone().and_then(|h| serde_json::from_value(h).ok());
        let body = self.turn.body.as_str();
        if self.dialogue.state == "address" {
            return match self.dialogue.appointment_id.filter(|_| text::looks_like_address(body)) {
                Some(appointment) => {
                    let address = body.trim().to_owned();
                    self.booker.set_location(TenantId(self.tenant), appointment, address.clone()).await?;
                    self.set("booked", None, None, None).await?;
                    self.say(&text::address_noted(&address), "address").await
                }
                None => self.hand_over().await,
            };
        }
        if let Some(held) = held.filter(|_| self.dialogue.state == "confirming") {
            if text::is_yes(body) {
                let proposal = proposals.iter().find(|p| p.n == held.n).cloned();
                return match self.booker.confirm(TenantId(self.tenant), held.id).await? {
                    Ok(booked) => match proposal {
                        Some(proposal) => self.booked(&proposal, booked.appointment_id).await,
                        None => self.offer_again(text::TAKEN).await,
                    },
                    Err(BookingRefusal::Lapsed) => self.offer_again(text::LAPSED).await,
                    Err(_) => self.offer_again(text::TAKEN).await,
                };
            }
            if let Some(n) = text::pick(body, proposals.len()) {
                self.booker.release(TenantId(self.tenant), held.id).await?;
                return self.choose(&proposals, n).await;
            }
            if text::is_no(body) {
                self.booker.release(TenantId(self.tenant), held.id).await?;
                return self.offer_again("No problem.").await;
            }
            return self.hand_over().await;
        }
        match text::pick(body, proposals.len()) {
            Some(n) => self.choose(&proposals, n).await,
            None => self.hand_over().await,
        }
    }

    /// The customer picked slot `n`: hold it, then book it or ask to confirm.
    async fn choose(&mut self, proposals: &[Proposal], n: u8) -> Result<bool, ApiError> {
        let Some(proposal) = proposals.iter().find(|p| p.n == n).cloned() else { return self.hand_over().await };
        let key = format!("sms-turn:{}", self.turn.id);
        let hold =
            self.booker.hold(TenantId(self.tenant), proposal.slot.clone(), self.dialogue.contact_id, key).await?;
        let held = match hold {
            Ok(held) => held,
            Err(BookingRefusal::Lapsed) => return self.offer_again(text::LAPSED).await,
            Err(_) => return self.offer_again(text::TAKEN).await,
        };
        if held.status == "booked" {
            // A retried turn whose hold was confirmed before the crash.
            return self.booked(&proposal, held.appointment_id).await;
        }
        if self.policy.booking.confirm {
            let reference = HeldRef { id: held.appointment_id, n, expires_at: held.expires_at };
            self.set("confirming", None, Some(&reference), None).await?;
            let ask = text::ask_to_confirm(&proposal, held.expires_at, &proposal.slot.time_zone);
            return self.say(&ask, "confirming").await;
        }
        match self.booker.confirm(TenantId(self.tenant), held.appointment_id).await? {
            Ok(booked) => self.booked(&proposal, booked.appointment_id).await,
            Err(BookingRefusal::Lapsed) => self.offer_again(text::LAPSED).await,
            Err(_) => self.offer_again(text::TAKEN).await,
        }
    }

    async fn booked(&mut self, proposal: &Proposal, appointment: Uuid) -> Result<bool, ApiError> {
        metrics::counter!("sms_bookings_total").increment(1);
        if self.policy.booking.ask_address {
            self.set("address", None, None, Some(appointment)).await?;
            return self.say(&text::ask_address(proposal), "booked").await;
        }
        self.set("booked", None, None, Some(appointment)).await?;
        self.say(&text::booked(proposal), "booked").await
    }

    /// Fresh slots after `why` (taken, lapsed, declined); none left: a human takes over.
    async fn offer_again(&mut self, why: &str) -> Result<bool, ApiError> {
        let after = Utc::now() + chrono::Duration::minutes(i64::from(self.policy.booking.lead_minutes));
        let slots = self
            .booker
            .next_slots(
                TenantId(self.tenant),
                self.dialogue.service_id.or(self.policy.booking.service_id),
                after,
                usize::from(self.policy.booking.slots),
            )
            .await?;
        if slots.is_empty() {
            hand_off(self.tx, self.tenant, self.conversation, "no free slots").await?;
            return self.say(text::NO_SLOTS, "handed_off").await;
        }
        let proposals = text::numbered(slots);
        self.set("proposing", Some(&proposals), None, None).await?;
        metrics::counter!("sms_dialogue_reoffers_total").increment(1);
        self.say(&format!("{why} {}", text::offer(&proposals)), "proposing").await
    }

    async fn hand_over(&mut self) -> Result<bool, ApiError> {
        hand_off(self.tx, self.tenant, self.conversation, "a reply the dialogue does not understand").await?;
        self.say(text::HANDED_OFF, "handed_off").await
    }

    async fn set(
        &mut self,
        state: &str,
        proposals: Option<&[Proposal]>,
        hold: Option<&HeldRef>,
        appointment: Option<Uuid>,
    ) -> Result<(), ApiError> {
        let proposals = proposals.map(serde_json::to_value).transpose().map_err(ApiError::internal)?;
        let hold = hold.map(serde_json::to_value).transpose().map_err(ApiError::internal)?;
        sqlx::query!(
            r#"UPDATE communications.dialogues
               SET state = $2, proposals = COALESCE($3, proposals), hold = $4,
                   appointment_id = COALESCE($5, appointment_id), updated_at = now()
               WHERE conversation_id = $1"#,
            self.conversation,
            state,
            proposals,
            hold,
            appointment,
        )
        .execute(&mut *self.tx)
        .await?;
        metrics::counter!("sms_dialogue_transitions_total", "to" => state.to_owned()).increment(1);
        Ok(())
    }

    async fn say(&mut self, words: &str, step: &str) -> Result<bool, ApiError> {
        let at = (self.tenant, self.conversation);
        send(self.module, self.tx, self.pending, at, self.dialogue.contact_id, words, step).await
    }
}

/// Stores an SMS to the contact in the conversation (urgent lane) in `tx`; answers whether it
/// was accepted — a suppressed number is not, and that ends the matter quietly.
pub(crate) async fn send(
    module: &Communications,
    tx: &mut PgConnection,
    pending: &mut Pending,
    (tenant, conversation): (Uuid, Uuid),
    contact: Uuid,
    words: &str,
    step: &str,
) -> Result<bool, ApiError> {
    let request = SendRequest {
        to: RecipientInput { contact_id: Some(contact), ..Default::default() },
        channels: ChannelsInput::One(Channel::Sms),
        content: ContentInput { text: Some(words.to_owned()), ..Default::default() },
        scheduled_at: None,
        metadata: Some(json!({ "dialogue": step })),
        conversation_id: Some(conversation),
        lane: Some(Lane::Urgent),
        require_review: false,
    };
    match module.insert_message(tx, pending, TenantId(tenant), request).await {
        Ok(accepted) => {
            let payload = json!({ "direction": "outbound", "status": accepted.status, "automated": step });
            crate::inbox::inbound::record_change(
                tx,
                tenant,
                "message.created",
                conversation,
                Some(accepted.id),
                payload,
            )
            .await?;
            Ok(true)
        }
        Err(ApiError::Validation { message, .. }) => {
            tracing::info!(%conversation, reason = %message, "dialogue reply not sent");
            Ok(false)
        }
        Err(error) => Err(error),
    }
}
