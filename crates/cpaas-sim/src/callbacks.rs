//! Posting signed webhooks: status callbacks for accepted messages, inbound messages and events,
//! and the automatic sent→delivered(→read) sequence. Delivery and its retries are in
//! `delivery.rs`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::delivery::{Outgoing, Policy, deliver};
use crate::ledger::{Fate, SentMessage};
use crate::retry::{TwilioOverrides, split_fragment};
use crate::{SimState, meta, ses, signing, sns, twilio};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallbackStatus {
    Sent,
    Delivered,
    Read,
    Failed,
    Bounce,
    Complaint,
}

/// An inbound message or event to post as the provider would.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum InboundSpec {
    Meta {
        phone_number_id: String,
        from: String,
        text: String,
    },
    Twilio {
        account_sid: String,
        from: String,
        to: String,
        body: String,
    },
    /// A WhatsApp media message (`kind`: image, document, audio, video or sticker) whose bytes
    /// the sim then serves at a media id of its own (see `media.rs`).
    MetaMedia {
        phone_number_id: String,
        from: String,
        kind: String,
        caption: Option<String>,
        mime_type: String,
        /// Documents' file name (default `document.pdf`).
        filename: Option<String>,
    },
    /// An MMS with one medium per content type in `media`, served at Twilio media URLs of
    /// `account_sid`. `webhook_id` is the id in the webhook URL path
    /// (`/api/webhooks/twilio/{webhook_id}/inbound`, default `account_sid`).
    TwilioMms {
        account_sid: String,
        webhook_id: Option<String>,
        from: String,
        to: String,
        body: String,
        media: Vec<String>,
    },
    /// The raw shortcut: one voice status-callback form (`CallStatus` as given, `CallDuration=0`)
    /// posted to `/api/webhooks/twilio/{account_sid}/voice`. Real Twilio posts a ringing call to
    /// that (Voice) URL and expects TwiML: [`crate::SimHandle::place_call`] simulates that.
    TwilioMissedCall {
        account_sid: String,
        from: String,
        to: String,
        call_status: String,
    },
    /// `in_reply_to`: the Message-ID the mail answers (sent as In-Reply-To and References).
    SesInbound {
        from: String,
        to: String,
        subject: String,
        text: String,
        in_reply_to: Option<String>,
    },
}

pub(crate) async fn post_status_callbacks(
    state: &Arc<SimState>,
    id: &str,
    statuses: &[CallbackStatus],
) -> anyhow::Result<()> {
    let message =
        state.ledger().message(id).ok_or_else(|| anyhow::anyhow!("the simulator accepted no message with id {id}"))?;
    for status in statuses {
        post_one_status(state, id, &message, *status).await?;
    }
    Ok(())
}

async fn post_one_status(
    state: &Arc<SimState>,
    id: &str,
    message: &SentMessage,
    status: CallbackStatus,
) -> anyhow::Result<()> {
    match message {
        SentMessage::Meta { .. } => {
            let name = match status {
                CallbackStatus::Sent => "sent",
                CallbackStatus::Delivered => "delivered",
                CallbackStatus::Read => "read",
                CallbackStatus::Failed => "failed",
                other => anyhow::bail!("Meta has no {other:?} status"),
            };
            let (url, body) = meta::status_webhook(state, id, message, name)?;
            post_meta(state, &url, &body).await
        }
        SentMessage::Ses { .. } => {
            let record = ses::event_record(state, id, message, ses_event_type(status))?;
            post_sns(state, &state.config.ses_events_topic_arn(), &record.to_string()).await
        }
        SentMessage::Twilio { fate, .. } => {
            let (name, error_code) = match (status, fate) {
                (CallbackStatus::Sent, _) => ("sent", None),
                (CallbackStatus::Delivered, _) => ("delivered", None),
                (CallbackStatus::Read, _) => ("read", None),
                (CallbackStatus::Failed, Fate::Undeliverable) => ("undelivered", Some(30003)),
                (CallbackStatus::Failed, Fate::Rejected) => ("undelivered", Some(30007)),
                (CallbackStatus::Failed, _) => ("failed", Some(30008)),
                (other, _) => anyhow::bail!("Twilio has no {other:?} status"),
            };
            let (url, form) = twilio::status_callback(state, id, message, name, error_code)?;
            // The message's status at Twilio moves on whether or not the webhook gets through.
            state.twilio_messages().advance(id, name, error_code);
            post_twilio(state, &url, &form).await
        }
        SentMessage::Sns { phone_number } => anyhow::bail!(
            "SNS SMS to {phone_number} has no HTTP status callback: real AWS reports SMS delivery status to CloudWatch Logs"
        ),
    }
}

fn ses_event_type(status: CallbackStatus) -> &'static str {
    match status {
        CallbackStatus::Sent => "Send",
        CallbackStatus::Delivered => "Delivery",
        CallbackStatus::Read => "Open",
        CallbackStatus::Failed => "Reject",
        CallbackStatus::Bounce => "Bounce",
        CallbackStatus::Complaint => "Complaint",
    }
}

/// The SES event record for `status` of a mail the sim accepted.
pub(crate) fn ses_event_record(
    state: &SimState,
    id: &str,
    status: CallbackStatus,
) -> anyhow::Result<serde_json::Value> {
    let message =
        state.ledger().message(id).ok_or_else(|| anyhow::anyhow!("the simulator accepted no message with id {id}"))?;
    ses::event_record(state, id, &message, ses_event_type(status))
}

pub(crate) async fn post_inbound(state: &Arc<SimState>, inbound: InboundSpec) -> anyhow::Result<()> {
    match inbound {
        InboundSpec::Meta { phone_number_id, from, text } => {
            let (url, body) = meta::inbound_webhook(state, &phone_number_id, &from, &text)?;
            post_meta(state, &url, &body).await
        }
        InboundSpec::Twilio { account_sid, from, to, body } => {
            let (url, form) = twilio::inbound_sms(state, &account_sid, &from, &to, &body)?;
            post_twilio(state, &url, &form).await
        }
        InboundSpec::MetaMedia { phone_number_id, from, kind, caption, mime_type, filename } => {
            let (url, body) = crate::media::meta_inbound(
                state,
                &phone_number_id,
                &from,
                &kind,
                caption.as_deref(),
                &mime_type,
                filename.as_deref(),
            )?;
            post_meta(state, &url, &body).await
        }
        InboundSpec::TwilioMms { account_sid, webhook_id, from, to, body, media } => {
            let webhook_id = webhook_id.as_deref().unwrap_or(&account_sid);
            let inbound =
                twilio::InboundForm { webhook_id, account_sid: &account_sid, from: &from, to: &to, body: &body };
            let (url, form) = crate::media::twilio_inbound(state, inbound, &media)?;
            post_twilio(state, &url, &form).await
        }
        InboundSpec::TwilioMissedCall { account_sid, from, to, call_status } => {
            let (url, form) = twilio::missed_call(state, &account_sid, &from, &to, &call_status)?;
            post_twilio(state, &url, &form).await
        }
        InboundSpec::SesInbound { from, to, subject, text, in_reply_to } => {
            let record = ses::inbound_record(state, &from, &to, &subject, &text, in_reply_to.as_deref());
            post_sns(state, &state.config.ses_inbound_topic_arn(), &record.to_string()).await
        }
    }
}

/// After an accepted send, posts the statuses a real provider would, spaced by the configured
/// delay, in a background task (failures are logged: nobody is waiting for them).
pub(crate) fn schedule_auto_callbacks(state: &Arc<SimState>, id: &str) {
    let Some(delay) = state.config.auto_callbacks else { return };
    let Some(message) = state.ledger().message(id) else { return };
    use CallbackStatus::{Bounce, Delivered, Failed, Read, Sent};
    let statuses: &[CallbackStatus] = match &message {
        SentMessage::Meta { fate: Fate::Delivered, .. } => &[Sent, Delivered, Read],
        SentMessage::Meta { .. } => &[Sent, Failed],
        SentMessage::Ses { fate: Fate::Delivered, .. } => &[Sent, Delivered],
        SentMessage::Ses { .. } => &[Sent, Bounce],
        SentMessage::Twilio { fate: Fate::Delivered, .. } => &[Sent, Delivered],
        SentMessage::Twilio { .. } => &[Sent, Failed],
        SentMessage::Sns { .. } => return,
    };
    let state = Arc::clone(state);
    let id = id.to_owned();
    tokio::spawn(async move {
        for status in statuses {
            tokio::time::sleep(delay).await;
            if let Err(error) = post_one_status(&state, &id, &message, *status).await {
                tracing::warn!(%error, id, ?status, "automatic status callback failed");
            }
        }
    });
}

async fn post_meta(state: &Arc<SimState>, url: &str, body: &serde_json::Value) -> anyhow::Result<()> {
    let bytes = meta::serialize_ascii_json(body);
    let signature = signing::meta_signature(&state.config.meta_app_secret, &bytes);
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-hub-signature-256".to_owned(), signature),
        ("user-agent".to_owned(), "facebookexternalua".to_owned()),
    ];
    let policy = Policy::Meta(state.config.meta_schedule());
    deliver(state, Outgoing { method: reqwest::Method::POST, url: url.to_owned(), headers, body: bytes, policy }).await
}

/// A connection-override fragment steers Twilio's retries and is never sent; Twilio signs the
/// URL it requests, without the fragment (docs/providers/twilio.md §5.1).
async fn post_twilio(state: &Arc<SimState>, url: &str, form: &[(String, String)]) -> anyhow::Result<()> {
    deliver(state, twilio_request(state, reqwest::Method::POST, url, form)?).await
}

/// A signed Twilio request to `url` (which may carry a connection-override fragment) with
/// `form` as the body of a POST, or appended to the query of a GET. A GET is signed over the
/// URL alone, query included; a POST over the URL and the sorted params.
pub(crate) fn twilio_request(
    state: &SimState,
    method: reqwest::Method,
    url: &str,
    form: &[(String, String)],
) -> anyhow::Result<Outgoing> {
    let (wire_url, fragment) = split_fragment(url);
    let policy = Policy::Twilio(TwilioOverrides::parse(fragment));
    let mut headers = Vec::new();
    let (url, body) = if method == reqwest::Method::GET {
        let separator = if wire_url.contains('?') { '&' } else { '?' };
        let url = format!("{wire_url}{separator}{}", serde_urlencoded::to_string(form)?);
        headers.push((
            "x-twilio-signature".to_owned(),
            signing::twilio_signature(&state.config.twilio_auth_token, &url, &[]),
        ));
        (url, Vec::new())
    } else {
        headers.push(("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()));
        headers.push((
            "x-twilio-signature".to_owned(),
            signing::twilio_signature(&state.config.twilio_auth_token, wire_url, form),
        ));
        (wire_url.to_owned(), serde_urlencoded::to_string(form)?.into_bytes())
    };
    headers.push(("user-agent".to_owned(), "TwilioProxy/1.1".to_owned()));
    // One token per webhook, repeated on its retries, so a receiver can drop duplicates.
    headers.push(("i-twilio-idempotency-token".to_owned(), uuid::Uuid::new_v4().to_string()));
    Ok(Outgoing { method, url, headers, body, policy })
}

/// Posts a signed SNS notification of `message` (any text) on the topic `arn`. A retry sends the
/// same notification again: same `MessageId`, and the same `Timestamp` (the time it was
/// published), so the same signature.
pub(crate) async fn post_sns(state: &Arc<SimState>, arn: &str, message: &str) -> anyhow::Result<()> {
    let (url, headers, body) = sns::signed_notification(state, arn, message)?;
    let policy = Policy::Sns(state.config.sns_delivery_policy);
    deliver(state, Outgoing { method: reqwest::Method::POST, url, headers, body, policy }).await
}
