//! Processing one event: claim its id, run the matching rules, queue the messages.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::event::{IncomingEvent, lookup, parse_time};
use super::rules::{self, AudiencePaths, TriggerRule};
use crate::Communications;
use crate::contacts::RecipientInput;
use crate::messages::content::{ContentInput, TemplateRef};
use crate::messages::service::{ChannelsInput, SendRequest};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventOutcome {
    pub event_id: String,
    /// The event was processed before: nothing new was queued.
    pub duplicate: bool,
    pub messages: Vec<QueuedMessage>,
    /// Rules or recipients that matched but produced no message, and why.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueuedMessage {
    pub id: Uuid,
    pub rule_id: Uuid,
    pub status: crate::messages::model::MessageStatus,
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Skipped {
    pub rule_id: Uuid,
    pub reason: String,
}

impl Communications {
    pub async fn ingest_event(&self, tenant: TenantId, event: IncomingEvent) -> Result<EventOutcome, ApiError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query!(
            r#"INSERT INTO communications.processed_events (tenant_id, event_id, event, message_ids)
               VALUES ($1, $2, $3, '{}') ON CONFLICT DO NOTHING"#,
            tenant.0,
            event.id,
            event.name,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            let ids: Vec<Uuid> = sqlx::query_scalar!(
                "SELECT message_ids FROM communications.processed_events WHERE tenant_id = $1 AND event_id = $2",
                tenant.0,
                event.id,
            )
            .fetch_one(&mut *tx)
            .await?;
            let messages = ids
                .into_iter()
                .map(|id| QueuedMessage {
                    id,
                    rule_id: Uuid::nil(),
                    status: crate::messages::model::MessageStatus::Queued,
                    scheduled_at: None,
                })
                .collect();
            return Ok(EventOutcome { event_id: event.id, duplicate: true, messages, skipped: Vec::new() });
        }
        crate::inbox::context::record_snapshot(&mut tx, tenant.0, &event).await?;
        let mut outcome =
            EventOutcome { event_id: event.id.clone(), duplicate: false, messages: Vec::new(), skipped: Vec::new() };
        let mut wake = Vec::new();
        for rule in rules::for_event(&mut *tx, tenant, &event.name).await? {
            if !rule.conditions.iter().all(|condition| condition.holds(&event.document)) {
                continue;
            }
            let scheduled_at = match scheduled_time(&rule, &event) {
                Ok(at) => at,
                Err(reason) => {
                    outcome.skipped.push(Skipped { rule_id: rule.id, reason });
                    continue;
                }
            };
            for paths in &rule.audience {
                let Some(to) = recipient(paths, &event.document) else {
                    outcome.skipped.push(Skipped {
                        rule_id: rule.id,
                        reason: "the event has no value at the audience paths".into(),
                    });
                    continue;
                };
                let request = request_for(&rule, &event, to, scheduled_at);
                // A savepoint per message: one bad recipient does not undo the others.
                let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
                match self.insert_message(&mut savepoint, tenant, request).await {
                    Ok(accepted) => {
                        savepoint.commit().await?;
                        wake.extend(accepted.wake);
                        outcome.messages.push(QueuedMessage {
                            id: accepted.id,
                            rule_id: rule.id,
                            status: accepted.status,
                            scheduled_at,
                        });
                    }
                    Err(error @ (ApiError::Validation { .. } | ApiError::Conflict { .. })) => {
                        savepoint.rollback().await?;
                        let reason = match &error {
                            ApiError::Validation { field, message } => format!("{field}: {message}"),
                            other => other.to_string(),
                        };
                        tracing::warn!(tenant_id = %tenant, rule_id = %rule.id, event_id = %event.id, %reason, "trigger rule produced no message");
                        outcome.skipped.push(Skipped { rule_id: rule.id, reason });
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        let ids: Vec<Uuid> = outcome.messages.iter().map(|m| m.id).collect();
        sqlx::query!(
            "UPDATE communications.processed_events SET message_ids = $3 WHERE tenant_id = $1 AND event_id = $2",
            tenant.0,
            event.id,
            &ids,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        for lane in wake {
            self.queue_waker.wake(lane);
        }
        Ok(outcome)
    }
}

/// When the rule's messages go out: at once, or at a time in the event plus an offset.
fn scheduled_time(rule: &TriggerRule, event: &IncomingEvent) -> Result<Option<DateTime<Utc>>, String> {
    let Some(schedule) = &rule.schedule else { return Ok(None) };
    let at = lookup(&event.document, &schedule.relative_to)
        .and_then(Value::as_str)
        .and_then(parse_time)
        .ok_or_else(|| format!("no time at {}", schedule.relative_to))?;
    let when = at + chrono::Duration::seconds(schedule.offset_secs);
    if when < Utc::now() {
        return Err(format!("the scheduled time {} has passed", when.to_rfc3339()));
    }
    Ok(Some(when))
}

fn recipient(paths: &AudiencePaths, document: &Value) -> Option<RecipientInput> {
    let text = |path: &Option<String>| {
        path.as_deref().and_then(|p| lookup(document, p)).and_then(|v| match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let to = RecipientInput {
        contact_id: text(&paths.contact_id).and_then(|id| id.parse().ok()),
        phone: text(&paths.phone),
        email: text(&paths.email),
    };
    (to.contact_id.is_some() || to.phone.is_some() || to.email.is_some()).then_some(to)
}

fn request_for(
    rule: &TriggerRule,
    event: &IncomingEvent,
    to: RecipientInput,
    scheduled_at: Option<DateTime<Utc>>,
) -> SendRequest {
    let locale =
        rule.locale_path.as_deref().and_then(|p| lookup(&event.document, p)).and_then(Value::as_str).map(str::to_owned);
    let to = if to.contact_id.is_some() { RecipientInput { phone: None, email: None, ..to } } else { to };
    SendRequest {
        to,
        channels: ChannelsInput::Chain(rule.channels.clone()),
        content: ContentInput {
            template: Some(TemplateRef {
                name: rule.template_name.clone(),
                locale,
                variables: Some(event.document.clone()),
            }),
            ..ContentInput::default()
        },
        scheduled_at,
        metadata: Some(match crate::inbox::context::link_of_event(event) {
            // A reply to this message opens a conversation about the same entity.
            Some(link) => {
                json!({ "trigger_rule_id": rule.id, "event_id": event.id, "event": event.name, "link": link })
            }
            None => json!({ "trigger_rule_id": rule.id, "event_id": event.id, "event": event.name }),
        }),
        conversation_id: None,
        lane: Some(rule.lane),
        require_review: rule.require_review,
    }
}
