//! `POST /api/v1/conversations/{id}/messages`: an agent answers on the conversation's channel,
//! through the same pipeline as every outbound message (accept, dispatch, provider statuses).
//!
//! WhatsApp only lets a business write freely within 24 hours of the customer's last message;
//! after that only an approved template may start the conversation again, so free content is
//! refused here, before Meta would fail it. An email reply carries the answered mail's
//! Message-ID and References, so the customer's mail client threads it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{Duration, Utc};
use kernel::auth::{Actor, Caller};
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, parse_json};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::inbound::record_change;
use crate::Communications;
use crate::contacts::RecipientInput;
use crate::dispatch::local::Pending;
use crate::messages::accept;
use crate::messages::content::{ContentInput, MessageContent};
use crate::messages::model::Channel;
use crate::messages::repository::{self as messages, KeyClaim};
use crate::messages::service::{Accepted, ChannelsInput, SendRequest};

/// How long after the customer's last message WhatsApp allows free-form messages.
const WHATSAPP_WINDOW_HOURS: i64 = 24;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyRequest {
    /// Text, media, an email's subject/html/attachments, or a template (WhatsApp outside the
    /// 24-hour window). An email's subject defaults to `Re: ` and the answered mail's subject.
    pub content: ContentInput,
}

/// Sends a reply on the conversation's channel account to its contact; the calling agent is
/// recorded as its author (`metadata.author_agent_id`). The reply appears in the thread and its
/// statuses follow it there. With `Idempotency-Key`, a repeat (a double click, a retried
/// request) answers the first reply instead of sending another.
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/messages", tag = "inbox", params(("id" = Uuid, Path)),
    request_body = ReplyRequest,
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "Bad content, or free text outside WhatsApp's 24-hour window"))
)]
pub async fn reply(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    kernel::extract::require_json(&headers)?;
    let key = crate::messages::http::idempotency_key(&headers)?;
    let request: ReplyRequest = parse_json(&body)?;
    let tenant = caller.tenant_id;
    let conversation = sqlx::query!(
        r#"SELECT contact_id, channel AS "channel: Channel", last_inbound_at
           FROM communications.conversations WHERE tenant_id = $1 AND id = $2"#,
        tenant.0,
        id,
    )
    .fetch_optional(&module.pool)
    .await?
    .ok_or(ApiError::NotFound("conversation"))?;
    let mut content = request.content;
    if conversation.channel == Channel::Whatsapp && content.template.is_none() {
        let open =
            conversation.last_inbound_at.is_some_and(|last| Utc::now() - last < Duration::hours(WHATSAPP_WINDOW_HOURS));
        if !open {
            let field = if content.media.is_some() { "content.media" } else { "content.text" };
            let last = conversation.last_inbound_at.map_or_else(|| "never".to_owned(), |at| at.to_rfc3339());
            return Err(ApiError::validation(
                field,
                format!(
                    "the customer last wrote {last}, more than 24 hours ago: WhatsApp only allows an approved \
                     template now (content.template)"
                ),
            ));
        }
    }
    let answered = match conversation.channel {
        Channel::Email => answered_mail(&module, id).await?,
        _ => None,
    };
    if let Some(mail) = &answered
        && content.subject.as_deref().is_none_or(|subject| subject.trim().is_empty())
        && content.template.is_none()
    {
        let subject = mail.subject.trim();
        content.subject = Some(if subject.to_lowercase().starts_with("re:") || subject.is_empty() {
            subject.to_owned()
        } else {
            format!("Re: {subject}")
        });
    }
    let author = match caller.actor {
        Actor::Agent { id, .. } => json!(id.0),
        Actor::ApiKey(_) => json!(null),
    };
    if conversation.channel == Channel::Webchat {
        return reply_on_webchat(&module, tenant, id, key.as_deref(), &body, &content, author).await;
    }
    let send = SendRequest {
        to: RecipientInput { contact_id: Some(conversation.contact_id), phone: None, email: None },
        channels: ChannelsInput::One(conversation.channel),
        content,
        scheduled_at: None,
        metadata: Some(json!({ "author_agent_id": author, "reply": true })),
        conversation_id: Some(id),
        lane: None,
        require_review: false,
    };
    let mut draft = module.draft(tenant, send).await?;
    if let (Some(mail), Some((_, MessageContent::Email { in_reply_to, .. }))) = (&answered, draft.chain.first_mut()) {
        *in_reply_to = mail.thread();
    }
    // Stored claimed for this process's dispatcher and handed over after the commit, as a sent
    // message is: an agent's answer needs no job.
    let mut pending = Pending::new(&module.local);
    let mut tx = module.pool.begin().await?;
    if let Some(replay) = claim_key(&mut tx, tenant, key.as_deref(), id, &body).await? {
        return Ok(replay);
    }
    let accepted = accept::store_pending(&mut tx, std::slice::from_ref(&draft), &module.rates, &mut pending)
        .await?
        .pop()
        .unwrap_or_else(|| Err(ApiError::internal("no answer")))?;
    let payload = json!({ "direction": "outbound", "author_agent_id": author, "status": accepted.status });
    record_change(&mut tx, tenant.0, "message.created", id, Some(accepted.id), payload).await?;
    // Someone answers in person: the booking dialogue stops reading the customer's texts.
    crate::dialogue::take_over(&mut tx, id).await?;
    let answer = serde_json::to_value(&accepted).map_err(ApiError::internal)?;
    if let Some(key) = key.as_deref() {
        messages::complete_key(&mut tx, tenant, key, 202, &answer).await?;
    }
    tx.commit().await?;
    pending.hand_over();
    if let Some(lane) = accepted.wake {
        module.queue_waker.wake(lane);
    }
    module.feed.signal();
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

type Answer = (StatusCode, Json<Value>);

/// Claims the request's `Idempotency-Key` in `tx`; `Some` is the first answer to replay.
async fn claim_key(
    tx: &mut sqlx::PgConnection,
    tenant: kernel::ids::TenantId,
    key: Option<&str>,
    conversation: Uuid,
    body: &[u8],
) -> Result<Option<Answer>, ApiError> {
    let Some(key) = key else { return Ok(None) };
    // The conversation is part of the request: the same body to another conversation is
    // another request.
    let hash = Sha256::new().chain_update(conversation.as_bytes()).chain_update(body).finalize().to_vec();
    match messages::claim_key(tx, tenant, key, &hash).await? {
        KeyClaim::New => Ok(None),
        KeyClaim::Replay { status, body } => {
            Ok(Some((StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED), Json(body))))
        }
        KeyClaim::Mismatch => {
            Err(ApiError::validation("Idempotency-Key", "this key was used with a different request"))
        }
    }
}

/// A webchat answer is ours to deliver: stored `sent`, and the visitor's open widget takes it
/// from the live stream (their receipts move it on to delivered and read).
async fn reply_on_webchat(
    module: &Communications,
    tenant: kernel::ids::TenantId,
    id: Uuid,
    key: Option<&str>,
    body: &[u8],
    content: &ContentInput,
    author: Value,
) -> Result<Answer, ApiError> {
    if content.template.is_some() {
        return Err(ApiError::validation("content.template", "webchat has no templates: write the answer as text"));
    }
    let MessageContent::Text { text } = crate::messages::content::for_channel(content, Channel::Webchat)? else {
        return Err(ApiError::validation("content.text", "webchat answers are text"));
    };
    let mut tx = module.pool.begin().await?;
    if let Some(replay) = claim_key(&mut tx, tenant, key, id, body).await? {
        return Ok(replay);
    }
    let metadata = json!({ "author_agent_id": author, "reply": true });
    let message = crate::webchat::repository::store_reply(&mut tx, tenant.0, id, &text, metadata).await?;
    let payload = json!({ "direction": "outbound", "author_agent_id": author, "status": "sent" });
    record_change(&mut tx, tenant.0, "message.created", id, Some(message), payload).await?;
    let answer = json!({ "id": message, "status": "sent" });
    if let Some(key) = key {
        messages::complete_key(&mut tx, tenant, key, 202, &answer).await?;
    }
    tx.commit().await?;
    module.feed.signal();
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// The newest mail the customer sent in the conversation: what a reply answers.
struct AnsweredMail {
    subject: String,
    message_id: Option<String>,
    references: Vec<String>,
}

impl AnsweredMail {
    /// The References of a reply to it: its own, then its Message-ID.
    fn thread(&self) -> Option<String> {
        let mut ids: Vec<&str> = self.references.iter().map(String::as_str).collect();
        ids.extend(self.message_id.as_deref());
        let ids: Vec<String> = ids
            .into_iter()
            .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>'))
            .collect();
        (!ids.is_empty()).then(|| ids.join(" "))
    }
}

async fn answered_mail(module: &Communications, conversation: Uuid) -> Result<Option<AnsweredMail>, ApiError> {
    let content = sqlx::query_scalar!(
        r#"SELECT content FROM communications.messages
           WHERE conversation_id = $1 AND direction = 'inbound' AND channel = 'email'
           ORDER BY id DESC LIMIT 1"#,
        conversation,
    )
    .fetch_optional(&module.pool)
    .await?;
    Ok(content.and_then(|content| match serde_json::from_value(content) {
        Ok(cpaas::InboundContent::Email { subject, message_id, references, .. }) => {
            Some(AnsweredMail { subject: subject.unwrap_or_default(), message_id, references })
        }
        _ => None,
    }))
}
