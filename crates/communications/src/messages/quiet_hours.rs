//! Quiet hours at accept time: a bulk SMS or WhatsApp message (or a transactional one, when the
//! tenant's policy says so) that would go out inside the tenant's quiet hours — in the
//! contact's zone when known, else the tenant's — is scheduled for the window's end instead,
//! with the reason on its first event.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kernel::error::ApiError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::accept::Draft;
use super::model::{Channel, Lane, MessageStatus};
use super::service::FallbackStep;
use crate::contacts::ResolvedContact;

/// Which of the ready drafts wait, until when and why.
pub(crate) async fn deferrals(
    tx: &mut PgConnection,
    ready: &[(&Draft, &ResolvedContact, &[FallbackStep])],
    contact_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, (DateTime<Utc>, String)>, ApiError> {
    let candidates: Vec<(&Draft, Uuid)> = ready
        .iter()
        .zip(contact_ids)
        .filter(|((draft, _, steps), _)| {
            draft.status == MessageStatus::Queued
                && steps.first().is_some_and(|step| matches!(step.channel, Channel::Sms | Channel::Whatsapp))
        })
        .map(|((draft, _, _), contact)| (*draft, *contact))
        .collect();
    if candidates.is_empty() {
        return Ok(HashMap::new());
    }
    let mut tenants: Vec<Uuid> = candidates.iter().map(|(draft, _)| draft.tenant.0).collect();
    tenants.sort();
    tenants.dedup();
    let policies = crate::policy::quiet_hours_of(&mut *tx, &tenants).await?;
    let subject: Vec<(&Draft, Uuid)> = candidates
        .into_iter()
        .filter(|(draft, _)| {
            policies
                .get(&draft.tenant.0)
                .is_some_and(|p| p.quiet.is_some() && (draft.lane == Lane::Bulk || p.transactional))
        })
        .collect();
    if subject.is_empty() {
        return Ok(HashMap::new());
    }
    let contacts: Vec<Uuid> = subject.iter().map(|(_, contact)| *contact).collect();
    let zones: HashMap<Uuid, Tz> = sqlx::query!(
        r#"SELECT id, time_zone AS "time_zone!" FROM communications.contacts
           WHERE id = ANY($1) AND time_zone IS NOT NULL"#,
        &contacts,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .filter_map(|row| row.time_zone.parse().ok().map(|tz| (row.id, tz)))
    .collect();
    let mut deferred = HashMap::new();
    for (draft, contact) in subject {
        let Some(policy) = policies.get(&draft.tenant.0) else { continue };
        let Some(quiet) = policy.quiet else { continue };
        let tz = zones.get(&contact).copied().unwrap_or(policy.time_zone);
        let at = draft.scheduled_at.unwrap_or(now).max(now);
        let allowed = quiet.next_allowed(at, tz);
        if allowed > at {
            let why = format!(
                "quiet hours {}–{} in {}: deferred until {}",
                quiet.start.format("%H:%M"),
                quiet.end.format("%H:%M"),
                tz.name(),
                allowed.to_rfc3339()
            );
            deferred.insert(draft.id, (allowed, why));
        }
    }
    Ok(deferred)
}
