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
//! | Bounce | `Bounced`, one per bounced recipient; class `Permanent` when `bounceType` is `Permanent`, else `Transient` |
//! | Complaint | `Complained`, one per complained recipient; `Permanent` (`Transient` for the rare "not-spam") |
//! | Reject | `Rejected` (`Permanent`) |
//! | Rendering Failure | `Failed` (`Permanent`: the template will not render on a retry) |
//! | DeliveryDelay | `Delayed`, one per delayed recipient (`Transient`; not a failure) |
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
///
/// The SNS envelope around it was decoded and verified already, so a `Message` that is not an
/// SES record at all (a console test publish, AWS's "Hello world!", another publisher on a
/// shared topic) is authentic but unknown: one [`ProviderEvent::Unknown`], never an error.
pub fn parse(sns_message: &str) -> Result<Vec<ProviderEvent>, WebhookError> {
    let Ok(root) = serde_json::from_str::<Value>(sns_message) else {
        return Ok(vec![unknown(format!("not an SES record: {} bytes of non-JSON text", sns_message.len()))]);
    };
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

/// The AWS account that sent the mail a sending-event record is about: `mail.sendingAccountId`,
/// or, without it, the account in `mail.sourceArn` (`arn:aws:ses:<region>:<account>:identity/…`).
/// `None` for anything else (inbound mail, non-SES messages).
pub fn sending_account_id(sns_message: &str) -> Option<String> {
    let root: Value = serde_json::from_str(sns_message).ok()?;
    let mail = root.get("mail")?;
    str_field(mail, "sendingAccountId")
        .or_else(|| str_field(mail, "sourceArn").and_then(|arn| arn.split(':').nth(4).map(str::to_owned)))
        .filter(|account| !account.is_empty())
}
