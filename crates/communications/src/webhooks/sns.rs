//! Amazon SNS: SES sending events, inbound mail and subscription handshakes.
//!
//! A valid signature only proves that AWS delivered the message for *some* topic: anyone can
//! create a topic, subscribe our endpoint and publish on it. So, in this order:
//! 1. the signature is verified (forged → 401/403, nothing stored);
//! 2. the `TopicArn` must be expected — listed in `providers.sns_topic_arns` or in an SES
//!    configuration's `sns_topic_arns` — else the envelope is kept as `refused` and answered
//!    403, and a subscription to it is never confirmed;
//! 3. an SES sending event must be about mail sent by the topic's AWS account, or by the
//!    account an SES configuration listing the topic names (`aws_account_id`), else `refused`;
//! 4. a tenant's own topic only ever touches that tenant's messages.

use axum::extract::State;
use cpaas::ProviderEvent;
use cpaas::webhooks::sns::{SnsMessage, SnsMessageType, TopicArn};
use kernel::error::ApiError;
use uuid::Uuid;

use super::{Acknowledged, record, rejected};
use crate::Communications;
use crate::channels::repository;

/// Amazon SNS: SES delivery events and inbound mail, and subscription confirmations; verified
/// by the SNS message signature against a trusted signing certificate, from an expected topic.
#[utoipa::path(
    post, path = "/api/webhooks/aws/sns", tag = "webhooks",
    responses(
        (status = 200, body = Acknowledged),
        (status = 400, body = kernel::error::ErrorBody),
        (status = 403, body = kernel::error::ErrorBody, description = "Forged, or from a topic or AWS account we do not expect"),
    )
)]
pub async fn sns_webhook(
    State(module): State<Communications>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    let message = module.sns.verify_body(&body).await.map_err(|e| rejected("sns", &e))?;
    let kind = match message.message_type {
        SnsMessageType::Notification => "notification",
        SnsMessageType::SubscriptionConfirmation => "subscription",
        SnsMessageType::UnsubscribeConfirmation => "unsubscribe",
    };
    let Some(audience) = Audience::of(&module, &message.topic_arn).await? else {
        let why = format!(
            "SNS topic {} is not expected here (providers.sns_topic_arns, or an SES configuration's sns_topic_arns)",
            message.topic_arn
        );
        return refuse(&module, kind, &message, &body, why).await;
    };
    let id = Some(message.message_id.as_str());
    match message.message_type {
        SnsMessageType::SubscriptionConfirmation => {
            if let Some(url) = module.sns.confirmation_url(&message).map_err(|e| rejected("sns", &e))? {
                let confirmed = module.http.get(url).send().await.map(|r| r.status().is_success()).unwrap_or(false);
                tracing::info!(topic = %message.topic_arn, confirmed, "SNS subscription confirmation");
            }
            return record(&module, "sns", kind, &audience.tenants, id, &body, &[], None).await;
        }
        SnsMessageType::UnsubscribeConfirmation => {
            return record(&module, "sns", kind, &audience.tenants, id, &body, &[], None).await;
        }
        SnsMessageType::Notification => {}
    }
    let events = cpaas::webhooks::ses::parse(&message.message).map_err(|e| rejected("sns", &e))?;
    if events.iter().any(|event| matches!(event, ProviderEvent::StatusUpdate { .. })) {
        let sender = cpaas::webhooks::ses::sending_account_id(&message.message);
        if !sender.as_ref().is_some_and(|account| audience.accounts.contains(account)) {
            let why = format!(
                "the record is about mail sent by AWS account {}, but {} carries mail of {}",
                sender.as_deref().unwrap_or("(none named)"),
                message.topic_arn,
                audience.accounts.join(", "),
            );
            return refuse(&module, kind, &message, &body, why).await;
        }
    }
    record(&module, "sns", kind, &audience.tenants, id, &body, &events, None).await
}

/// Keeps the envelope as `refused` and answers 403.
async fn refuse(
    module: &Communications,
    kind: &str,
    message: &SnsMessage,
    body: &[u8],
    why: String,
) -> Result<axum::Json<Acknowledged>, ApiError> {
    tracing::warn!(topic = %message.topic_arn, message_id = %message.message_id, %why, "SNS notification refused");
    module.record_refused("sns", kind, &message.message_id, body).await?;
    Err(ApiError::Forbidden(why))
}

/// Whom an expected topic's notifications may concern.
#[derive(Debug)]
struct Audience {
    /// The tenants whose messages they may touch; empty: any (a platform topic).
    tenants: Vec<Uuid>,
    /// The AWS accounts whose mail they may report on.
    accounts: Vec<String>,
}

impl Audience {
    /// `None` when nobody configured the topic.
    async fn of(module: &Communications, topic: &str) -> Result<Option<Audience>, ApiError> {
        let platform = module.endpoints.sns_topic_arns.iter().any(|expected| expected.as_str() == topic);
        let owners = repository::ses_topic_owners(&module.pool, topic).await?;
        if !platform && owners.is_empty() {
            return Ok(None);
        }
        let mut accounts: Vec<String> = TopicArn::parse(topic).map(|t| t.account_id().to_owned()).into_iter().collect();
        accounts.extend(owners.iter().filter_map(|owner| owner.aws_account_id.clone()));
        accounts.sort();
        accounts.dedup();
        let any_tenant = platform || owners.iter().any(|owner| owner.tenant_id.is_none());
        let mut tenants: Vec<Uuid> =
            if any_tenant { Vec::new() } else { owners.iter().filter_map(|owner| owner.tenant_id).collect() };
        tenants.sort_unstable();
        tenants.dedup();
        Ok(Some(Audience { tenants, accounts }))
    }
}
