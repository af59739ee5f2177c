//! SES sending events → status updates.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::unknown;
use crate::webhooks::json::{array, describe, non_empty, rfc3339, str_field, strings};
use crate::{DeliveryStatus, FailureClass, Provider, ProviderError, ProviderEvent};

/// One event record; `kind` is its `eventType` / `notificationType`.
pub(super) fn parse_event(kind: &str, root: &Value) -> Vec<ProviderEvent> {
    let mail = root.get("mail").unwrap_or(&Value::Null);
    let Some(message_id) = non_empty(mail, "messageId") else {
        return vec![unknown(format!("{kind} without mail.messageId: {}", describe(root)))];
    };
    let mail_time = rfc3339(mail, "timestamp");
    let update = Update { message_id: &message_id, mail, mail_time };
    let events = match kind {
        "Send" => update.whole_mail(DeliveryStatus::Sent, mail_time, None),
        "Delivery" => delivery(&update, root.get("delivery")),
        "Bounce" => bounce(&update, root.get("bounce")),
        "Complaint" => complaint(&update, root.get("complaint")),
        "Reject" => {
            let reason = root
                .get("reject")
                .and_then(|reject| non_empty(reject, "reason"))
                .unwrap_or_else(|| "rejected".to_owned());
            let error = ProviderError { code: "Reject".to_owned(), reason, class: FailureClass::Permanent };
            update.whole_mail(DeliveryStatus::Rejected, mail_time, Some(error))
        }
        "Rendering Failure" => {
            let failure = root.get("failure").unwrap_or(&Value::Null);
            let reason = non_empty(failure, "errorMessage").unwrap_or_else(|| "template rendering failed".to_owned());
            let error = ProviderError { code: "RenderingFailure".to_owned(), reason, class: FailureClass::Permanent };
            update.whole_mail(DeliveryStatus::Failed, mail_time, Some(error))
        }
        "Open" => update.whole_mail(
            DeliveryStatus::Opened,
            root.get("open").and_then(|open| rfc3339(open, "timestamp")),
            None,
        ),
        "Click" => update.whole_mail(
            DeliveryStatus::Opened,
            root.get("click").and_then(|click| rfc3339(click, "timestamp")),
            None,
        ),
        "DeliveryDelay" => delivery_delay(&update, root.get("deliveryDelay")),
        other => return vec![unknown(format!("SES {other} for {message_id}"))],
    };
    if events.is_empty() {
        return vec![unknown(format!("SES {kind} for {message_id} without usable recipients or timestamp"))];
    }
    events
}

/// What every status update of one record shares.
struct Update<'a> {
    message_id: &'a str,
    mail: &'a Value,
    mail_time: Option<DateTime<Utc>>,
}

impl Update<'_> {
    fn event(
        &self,
        status: DeliveryStatus,
        time: Option<DateTime<Utc>>,
        recipient: Option<String>,
        error: Option<ProviderError>,
    ) -> Option<ProviderEvent> {
        Some(ProviderEvent::StatusUpdate {
            provider: Provider::Ses,
            provider_message_id: self.message_id.to_owned(),
            status,
            // The event's own time when it has one; the send time is the honest fallback.
            timestamp: time.or(self.mail_time)?,
            recipient,
            error,
            correlation_id: self.mail.pointer("/tags/sb_correlation/0").and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// An event about the mail as a whole; the recipient is named when there is only one.
    fn whole_mail(
        &self,
        status: DeliveryStatus,
        time: Option<DateTime<Utc>>,
        error: Option<ProviderError>,
    ) -> Vec<ProviderEvent> {
        let destinations = strings(self.mail, "destination");
        let recipient = match destinations.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        };
        self.event(status, time, recipient, error).into_iter().collect()
    }
}

fn delivery(update: &Update<'_>, delivery: Option<&Value>) -> Vec<ProviderEvent> {
    let delivery = delivery.unwrap_or(&Value::Null);
    let time = rfc3339(delivery, "timestamp");
    let mut recipients = strings(delivery, "recipients");
    if recipients.is_empty() {
        recipients = strings(update.mail, "destination");
    }
    recipients
        .into_iter()
        .filter_map(|recipient| update.event(DeliveryStatus::Delivered, time, Some(recipient), None))
        .collect()
}

fn bounce(update: &Update<'_>, bounce: Option<&Value>) -> Vec<ProviderEvent> {
    let bounce = bounce.unwrap_or(&Value::Null);
    let bounce_type = str_field(bounce, "bounceType").unwrap_or_else(|| "Undetermined".to_owned());
    let sub_type = str_field(bounce, "bounceSubType").unwrap_or_else(|| "Undetermined".to_owned());
    // Only a permanent bounce means "suppress this address"; transient and undetermined ones
    // come after SES's own retries, so the message is lost but the address is not.
    let class = if bounce_type == "Permanent" { FailureClass::Permanent } else { FailureClass::Transient };
    let time = rfc3339(bounce, "timestamp");
    array(bounce, "bouncedRecipients")
        .iter()
        .filter_map(|bounced| {
            let address = non_empty(bounced, "emailAddress")?;
            let detail = non_empty(bounced, "diagnosticCode").or_else(|| non_empty(bounced, "status"));
            let reason = match detail {
                Some(detail) => format!("{bounce_type} bounce ({sub_type}): {detail}"),
                None => format!("{bounce_type} bounce ({sub_type})"),
            };
            let error = ProviderError { code: format!("{bounce_type}/{sub_type}"), reason, class };
            update.event(DeliveryStatus::Bounced, time, Some(address), Some(error))
        })
        .collect()
}

fn complaint(update: &Update<'_>, complaint: Option<&Value>) -> Vec<ProviderEvent> {
    let complaint = complaint.unwrap_or(&Value::Null);
    let feedback = non_empty(complaint, "complaintFeedbackType").unwrap_or_else(|| "complaint".to_owned());
    let time = rfc3339(complaint, "timestamp");
    array(complaint, "complainedRecipients")
        .iter()
        .filter_map(|complained| {
            let address = non_empty(complained, "emailAddress")?;
            // A complaint means "stop mailing me", except the rare explicit "not-spam" report.
            let error = ProviderError {
                code: feedback.clone(),
                reason: format!("recipient complained ({feedback})"),
                class: if feedback == "not-spam" { FailureClass::Transient } else { FailureClass::Permanent },
            };
            update.event(DeliveryStatus::Complained, time, Some(address), Some(error))
        })
        .collect()
}

fn delivery_delay(update: &Update<'_>, delay: Option<&Value>) -> Vec<ProviderEvent> {
    let delay = delay.unwrap_or(&Value::Null);
    let delay_type = non_empty(delay, "delayType").unwrap_or_else(|| "Undetermined".to_owned());
    let time = rfc3339(delay, "timestamp");
    array(delay, "delayedRecipients")
        .iter()
        .filter_map(|delayed| {
            let address = non_empty(delayed, "emailAddress")?;
            let reason = non_empty(delayed, "diagnosticCode")
                .or_else(|| non_empty(delayed, "status"))
                .unwrap_or_else(|| delay_type.clone());
            let error = ProviderError { code: delay_type.clone(), reason, class: FailureClass::Transient };
            update.event(DeliveryStatus::Delayed, time, Some(address), Some(error))
        })
        .collect()
}
