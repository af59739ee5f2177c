//! Calls to an operator's Twilio number, and the missed call answered by SMS within
//! milliseconds. Routes (signature checked before anything is read, envelope stored before the
//! answer):
//!
//! - `POST /api/webhooks/twilio/{tenant}/voice` — the number's "a call comes in" URL: TwiML that
//!   rings the business's `forward_to` with `<Dial action=…/voice-dial>`; without a forwarding
//!   number the call is refused (busy, unbilled) and is a missed call at once.
//! - `…/voice-dial` — the `<Dial>` outcome: `no-answer`, `busy`, `failed`, `canceled`, or a
//!   completed call shorter than `missed_call.short_call_secs`, is a missed call.
//! - `…/voice-status` — the number's status callback, as a backstop with the same rules.
//!
//! A missed call is recorded once per call, however often Twilio retries and whichever callback
//! comes first: it is an inbound message with the CallSid as its provider id (the unique index
//! makes a repeat a no-op) in the caller's SMS conversation, opened or reopened. In the same
//! transaction the auto-reply is accepted on the urgent lane (the tenant's template or text,
//! with the next free slots from fulfillment when booking is on) and the booking dialogue starts.
//! The SMS carries `metadata.missed_call.received_at`; the dispatcher observes
//! `missed_call_sms_seconds` (webhook received → provider request) just before the request.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cpaas::webhooks::twilio::twiml;
use cpaas::{InboundContent, Provider, ProviderEvent};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde_json::json;
use uuid::Uuid;

use crate::Communications;
use crate::contacts::RecipientInput;
use crate::dialogue::text::{self, Proposal};
use crate::dispatch::local::Pending;
use crate::inbox::inbound::{self, Received};
use crate::messages::accept::{self, Draft};
use crate::messages::content::{ContentInput, TemplateRef};
use crate::messages::model::{Channel, Lane};
use crate::messages::service::{ChannelsInput, SendRequest};
use crate::policy::{self, Policy};
use crate::tracking::repository as envelopes;

/// The voice webhook kinds (the last path segment).
pub const KINDS: [&str; 3] = ["voice", "voice-dial", "voice-status"];

/// What a call came to.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// Missed: answer by SMS. `outcome` as shown in the thread.
    Missed {
        outcome: String,
        duration: Option<u32>,
    },
    Answered,
    /// Nothing to decide yet (ringing) or not understood.
    Nothing,
}

impl Communications {
    /// A verified voice webhook of `tenant`: stores it, handles a missed call, answers TwiML.
    pub(crate) async fn voice_webhook(
        &self,
        tenant: Uuid,
        kind: &str,
        params: &[(String, String)],
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Response, ApiError> {
        let event = cpaas::webhooks::twilio::parse_voice_status(params, received_at);
        let policy = policy::load(&self.pool, tenant).await?;
        let call = &policy.missed_call;
        let state = param(params, "DialCallStatus").or_else(|| param(params, "CallStatus")).unwrap_or("none");
        let call_id = param(params, "CallSid").unwrap_or_default();
        let envelope_id = format!("{kind}:{call_id}:{state}");
        let body = String::from_utf8_lossy(body);
        let (verdict, answer) = match &event {
            ProviderEvent::IncomingCall { .. } => match &call.forward_to {
                Some(number) => {
                    let action = format!(
                        "{}/api/webhooks/twilio/{tenant}/voice-dial",
                        self.endpoints.public_base_url.trim_end_matches('/')
                    );
                    (Verdict::Nothing, twiml::dial(number, &action, call.dial_timeout_secs))
                }
                None if call.enabled => {
                    (Verdict::Missed { outcome: "rejected".into(), duration: None }, twiml::reject_busy())
                }
                None => (Verdict::Nothing, twiml::reject_busy()),
            },
            ProviderEvent::MissedCall { reason, .. } if call.enabled => {
                (Verdict::Missed { outcome: reason.clone(), duration: None }, twiml::hangup(call.say.as_deref()))
            }
            ProviderEvent::CallCompleted { duration_secs, .. }
                if call.enabled && duration_secs.is_some_and(|d| d < call.short_call_secs) =>
            {
                let verdict = Verdict::Missed { outcome: "short".into(), duration: *duration_secs };
                (verdict, twiml::hangup(call.say.as_deref()))
            }
            ProviderEvent::CallCompleted { .. } => (Verdict::Answered, twiml::hangup(None)),
            _ => (Verdict::Nothing, twiml::hangup(None)),
        };
        let outcome = match (&verdict, &event) {
            (
                Verdict::Missed { outcome, duration },
                ProviderEvent::IncomingCall { call_id, from, to, timestamp, .. }
                | ProviderEvent::MissedCall { call_id, from, to, timestamp, .. }
                | ProviderEvent::CallCompleted { call_id, from, to, timestamp, .. },
            ) => {
                let missed =
                    MissedCall { tenant, call_id, from, to, outcome, duration: *duration, at: *timestamp, received_at };
                self.missed_call(&policy, missed, (kind, &envelope_id, &body)).await?
            }
            _ => {
                let stored = envelopes::insert_envelope(
                    &self.pool,
                    Uuid::now_v7(),
                    Some(tenant),
                    "twilio",
                    kind,
                    Some(&envelope_id),
                    &body,
                    if verdict == Verdict::Answered { "applied" } else { "ignored" },
                )
                .await?;
                if stored { "applied" } else { "duplicate" }
            }
        };
        metrics::counter!("voice_webhooks_total", "kind" => kind.to_owned(), "outcome" => outcome).increment(1);
        // Status callbacks get an empty answer; Twilio reads TwiML only from the other two.
        let answer = if kind == "voice-status" { twiml::empty() } else { answer };
        Ok(([(CONTENT_TYPE, twiml::CONTENT_TYPE)], answer).into_response())
    }

    /// Records the missed call (once per call) and sends the auto-reply; answers the envelope's
    /// outcome.
    async fn missed_call(
        &self,
        policy: &Policy,
        call: MissedCall<'_>,
        (kind, envelope_id, body): (&str, &str, &str),
    ) -> Result<&'static str, ApiError> {
        let tenant = call.tenant;
        let caller = crate::channels::validate::e164("From", call.from).ok();
        // Everything that reads outside our transaction first: the slots (fulfillment) and the
        // drafts (templates), with proposals and without (for a conversation an agent holds).
        let proposals = match (&caller, &self.booker) {
            (Some(_), Some(booker)) if policy.booking.enabled => {
                let after = Utc::now() + chrono::Duration::minutes(i64::from(policy.booking.lead_minutes));
                let count = usize::from(policy.booking.slots);
                match booker.next_slots(TenantId(tenant), policy.booking.service_id, after, count).await {
                    Ok(slots) => text::numbered(slots),
                    Err(error) => {
                        tracing::warn!(%error, "missed call: no slots to offer (fulfillment failed)");
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        let drafts = match &caller {
            Some(phone) => {
                let offered = self.auto_reply(tenant, policy, phone, &proposals, &call).await?;
                let plain = if proposals.is_empty() {
                    offered.clone()
                } else {
                    self.auto_reply(tenant, policy, phone, &[], &call).await?
                };
                Some((offered, plain))
            }
            None => None,
        };
        // The answer is stored claimed for this process's dispatcher and handed over after the
        // commit: no job and no wake-up between a missed call and its SMS.
        let mut pending = Pending::new(&self.local);
        let mut tx = self.pool.begin().await?;
        let envelope = Uuid::now_v7();
        if !envelopes::insert_envelope(
            &mut *tx,
            envelope,
            Some(tenant),
            "twilio",
            kind,
            Some(envelope_id),
            body,
            "received",
        )
        .await?
        {
            return Ok("duplicate");
        }
        let record = ProviderEvent::InboundMessage {
            provider: Provider::Twilio,
            channel: cpaas::Channel::Sms,
            provider_message_id: call.call_id.to_owned(),
            from: call.from.to_owned(),
            to: call.to.to_owned(),
            from_name: None,
            timestamp: call.at,
            content: InboundContent::Call { outcome: call.outcome.to_owned(), duration_secs: call.duration },
            in_reply_to: None,
        };
        let outcome = match inbound::receive(&mut tx, tenant, &record).await? {
            // Another callback about this call came first: it sent the one SMS.
            Received::Duplicate | Received::NotInbound => "duplicate",
            Received::Stored { conversation_id, .. } => {
                if let Some((offered, plain)) = drafts {
                    self.answer_by_sms(
                        &mut tx,
                        &mut pending,
                        tenant,
                        conversation_id,
                        offered,
                        plain,
                        &proposals,
                        policy,
                        call.call_id,
                    )
                    .await?;
                }
                "applied"
            }
        };
        envelopes::settle_envelope(&mut *tx, envelope, outcome, Some(tenant), None).await?;
        tx.commit().await?;
        pending.hand_over();
        self.feed.signal();
        self.queue_waker.wake(Lane::Urgent);
        if outcome == "applied" {
            metrics::counter!("missed_calls_total", "outcome" => call.outcome.to_owned()).increment(1);
        }
        Ok(outcome)
    }

    /// Stores the auto-reply in the caller's conversation and starts the dialogue when slots
    /// were offered (unless an agent holds the conversation: then the plain text, no dialogue).
    #[allow(clippy::too_many_arguments)]
    async fn answer_by_sms(
        &self,
        tx: &mut sqlx::PgConnection,
        pending: &mut Pending,
        tenant: Uuid,
        conversation: Uuid,
        offered: Draft,
        plain: Draft,
        proposals: &[Proposal],
        policy: &Policy,
        call_id: &str,
    ) -> Result<(), ApiError> {
        let held = sqlx::query!(
            "SELECT contact_id, assignee_id FROM communications.conversations WHERE id = $1",
            conversation,
        )
        .fetch_one(&mut *tx)
        .await?;
        let offer = !proposals.is_empty() && held.assignee_id.is_none();
        let mut draft = if offer { offered } else { plain };
        draft.conversation_id = Some(conversation);
        let accepted = accept::store_pending(tx, std::slice::from_ref(&draft), &self.rates, pending)
            .await?
            .pop()
            .unwrap_or_else(|| Err(ApiError::internal("no answer")));
        match accepted {
            Ok(accepted) => {
                let payload = json!({ "direction": "outbound", "status": accepted.status, "automated": "missed_call" });
                inbound::record_change(tx, tenant, "message.created", conversation, Some(accepted.id), payload).await?;
                if offer {
                    let service = policy.booking.service_id.or(proposals.first().map(|p| p.slot.service_id));
                    crate::dialogue::start(tx, tenant, conversation, held.contact_id, service, proposals, call_id)
                        .await?;
                }
            }
            // The caller opted out (or the number cannot be served): the call stays on record.
            Err(ApiError::Validation { message, .. }) => {
                tracing::info!(%conversation, reason = %message, "missed call: no SMS");
                metrics::counter!("missed_call_sms_refused_total").increment(1);
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// The auto-reply to `phone`, drafted: the policy's template (variables `slots`, `has_slots`)
    /// or its text with `{slots}` replaced.
    async fn auto_reply(
        &self,
        tenant: Uuid,
        policy: &Policy,
        phone: &str,
        proposals: &[Proposal],
        call: &MissedCall<'_>,
    ) -> Result<Draft, ApiError> {
        let offer = text::offer(proposals);
        let content = match &policy.missed_call.template {
            Some(name) => ContentInput {
                template: Some(TemplateRef {
                    name: name.clone(),
                    locale: None,
                    variables: Some(json!({ "slots": offer, "has_slots": !proposals.is_empty() })),
                }),
                ..Default::default()
            },
            None => {
                let words = policy.missed_call.text.replace("{slots}", &offer);
                ContentInput { text: Some(words.trim().to_owned()), ..Default::default() }
            }
        };
        let request = SendRequest {
            to: RecipientInput { phone: Some(phone.to_owned()), ..Default::default() },
            channels: ChannelsInput::One(Channel::Sms),
            content,
            scheduled_at: None,
            metadata: Some(json!({
                "missed_call": { "call_id": call.call_id, "received_at": call.received_at },
                "dialogue": if proposals.is_empty() { "none" } else { "proposing" },
            })),
            conversation_id: None,
            lane: Some(Lane::Urgent),
            require_review: false,
        };
        self.draft(TenantId(tenant), request).await
    }
}

struct MissedCall<'a> {
    tenant: Uuid,
    call_id: &'a str,
    from: &'a str,
    to: &'a str,
    outcome: &'a str,
    duration: Option<u32>,
    /// When the provider says the call ended.
    at: DateTime<Utc>,
    /// When its webhook reached us: the SLI's start.
    received_at: DateTime<Utc>,
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).filter(|v| !v.is_empty())
}
