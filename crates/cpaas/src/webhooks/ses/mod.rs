//! Amazon SES notifications, delivered through SNS: sending events (configuration-set event
//! publishing, `eventType`) and identity feedback (`notificationType`), and inbound mail from a
//! receipt rule's SNS action (`notificationType: "Received"`).
//!
//! Input is the SNS Notification's `Message` string, after the SNS signature was verified.
//!
//! Mapping (all keyed by `mail.messageId`, the id SendEmail returned):
//!
//! | SES event | event |
//! |---|---|
//! | Send | `Sent` |
//! | Delivery | `Delivered`, one per recipient |
//! | Bounce | `Bounced`, one per bounced recipient; `permanent` when `bounceType` is `Permanent` |
//! | Complaint | `Complained`, one per complained recipient |
//! | Reject | `Rejected` (permanent) |
//! | Rendering Failure | `Failed` (permanent: the template will not render on a retry) |
//! | DeliveryDelay | `Delayed`, one per delayed recipient (not permanent) |
//! | Open | `Opened` |
//! | Click | `Opened`: a click proves the mail was opened even when the tracking pixel was blocked; we keep no per-link analytics |
//! | Subscription, anything else | `Unknown` |

mod events;
mod inbound;

use serde_json::Value;

use super::WebhookError;
use super::json::{describe, str_field};
use crate::{Provider, ProviderEvent};

/// Parses an SES notification (the SNS `Message`) into events.
pub fn parse(sns_message: &str) -> Result<Vec<ProviderEvent>, WebhookError> {
    let root: Value = serde_json::from_str(sns_message)
        .map_err(|error| WebhookError::Malformed(format!("SES notification is not JSON: {error}")))?;
    // Configuration-set events say `eventType`; identity notifications and inbound mail say
    // `notificationType`. The payload objects are the same.
    let kind = str_field(&root, "eventType").or_else(|| str_field(&root, "notificationType"));
    let events = match kind.as_deref() {
        Some("Received") => vec![inbound::parse_received(&root)],
        Some(kind) => events::parse_event(kind, &root),
        None => vec![unknown(format!("no eventType/notificationType: {}", describe(&root)))],
    };
    Ok(events)
}

fn unknown(description: String) -> ProviderEvent {
    ProviderEvent::Unknown { provider: Provider::Ses, description }
}
