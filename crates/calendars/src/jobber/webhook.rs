//! Jobber webhooks: `X-Jobber-Hmac-SHA256` = base64(HMAC-SHA256(app client secret, raw body)),
//! checked in constant time over the bytes as received, before the JSON is read. The payload
//! names an item only (`{"data":{"webHookEvent":{topic, appId, accountId, itemId,
//! occurredAt}}}`; apps created before 8 Dec 2023 get `occuredAt`): fetch the item to learn
//! what it is now, e.g. [`super::Jobber::visit`]. Delivery is at least once: deduplicate.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::ExternalRef;

/// An authentic webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobberWebhook {
    /// `VISIT_UPDATE`, `VISIT_DESTROY`, `APP_DISCONNECT`, …
    pub topic: String,
    pub app_id: String,
    /// Which connected account it concerns.
    pub account_id: String,
    pub item_id: ExternalRef,
    pub occurred_at: DateTime<FixedOffset>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("no X-Jobber-Hmac-SHA256 header")]
    MissingSignature,
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("authentic, but not a webhook event we can read: {0}")]
    Malformed(String),
}

/// Checks the signature over the raw body, then reads the event.
pub fn verify_webhook(
    body: &[u8],
    signature: Option<&str>,
    client_secret: &str,
) -> Result<JobberWebhook, WebhookError> {
    let signature = signature.map(str::trim).filter(|s| !s.is_empty()).ok_or(WebhookError::MissingSignature)?;
    let expected = BASE64.decode(signature).map_err(|_| WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(client_secret.as_bytes()).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected).map_err(|_| WebhookError::BadSignature)?;

    let value: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let event =
        value.pointer("/data/webHookEvent").ok_or_else(|| WebhookError::Malformed("no data.webHookEvent".into()))?;
    let field = |name: &str| {
        event
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| WebhookError::Malformed(format!("no {name}")))
    };
    let occurred = field("occurredAt").or_else(|_| field("occuredAt"))?;
    let occurred_at =
        DateTime::parse_from_rfc3339(&occurred).map_err(|e| WebhookError::Malformed(format!("occurredAt: {e}")))?;
    Ok(JobberWebhook {
        topic: field("topic")?,
        app_id: field("appId")?,
        account_id: field("accountId")?,
        item_id: ExternalRef(field("itemId")?),
        occurred_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        BASE64.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn the_research_test_vector_verifies() {
        // The signature is authentic; the placeholder `occurredAt` is not a date.
        let body = br#"{"data":{"webHookEvent":{"topic":"APP_CONNECT","appId":"id","accountId":"id","itemId":"id","occurredAt":"ISO8601DateTime"}}}"#;
        let result =
            verify_webhook(body, Some("+PXo5mRPCuHqX3CePBACS8afHQPY9rXzPlp9AG/a8BI="), "my app's OAuth client secret");
        assert!(matches!(result, Err(WebhookError::Malformed(_))));
    }

    #[test]
    fn an_authentic_webhook_is_read_and_a_forged_one_refused() {
        let body = br#"{"data":{"webHookEvent":{"topic":"VISIT_UPDATE","appId":"a","accountId":"MQ==","itemId":"Z2lk","occuredAt":"2025-10-14T09:31:36-05:00"}}}"#;
        let event = verify_webhook(body, Some(&sign("s", body)), "s").unwrap();
        assert_eq!(event.topic, "VISIT_UPDATE");
        assert_eq!(event.item_id, ExternalRef("Z2lk".into()));
        assert_eq!(verify_webhook(body, Some(&sign("other", body)), "s"), Err(WebhookError::BadSignature));
        assert_eq!(verify_webhook(body, None, "s"), Err(WebhookError::MissingSignature));
        assert_eq!(verify_webhook(body, Some("not base64!"), "s"), Err(WebhookError::BadSignature));
        // Garbage is refused for its signature before anyone reads it.
        assert_eq!(
            verify_webhook(b"{not json", Some(&sign("other", b"{not json")), "s"),
            Err(WebhookError::BadSignature)
        );
    }
}
