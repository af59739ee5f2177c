//! Booking for other modules (the SMS dialogue), through `kernel::scheduling::SlotBooker`: the
//! next free slots, a hold, its confirmation, its release. The same rules as the HTTP API —
//! availability's `free_slots`, the appointments' `take_slot` and `confirm_hold` — so a slot
//! offered by SMS is one the API would offer, and taken by the same constraint.

use chrono::{DateTime, Duration, Utc};
use kernel::error::ApiError;
use kernel::scheduling::{Booked, BookingRefusal, OfferedSlot};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Fulfillment;
use crate::appointments::{self, Kind, TakeInput};
use crate::appointments_repository as repository;
use crate::schedule::Interval;
use crate::{availability, services};

/// How far ahead the dialogue looks for free slots.
const HORIZON_DAYS: i64 = 14;

impl Fulfillment {
    /// The next `count` free slots of `service` (default: the tenant's oldest active service),
    /// earliest first; of several resources free at one time, the first by name.
    pub async fn next_slots(
        &self,
        tenant: Uuid,
        service: Option<Uuid>,
        after: DateTime<Utc>,
        count: usize,
    ) -> Result<Vec<OfferedSlot>, ApiError> {
        let service_id = match service {
            Some(id) => id,
            None => match default_service(self, tenant).await? {
                Some(id) => id,
                None => return Ok(Vec::new()),
            },
        };
        let service = services::find(&self.pool, tenant, service_id).await?;
        let resources = sqlx::query_scalar!(
            "SELECT id FROM fulfillment.resources WHERE tenant_id = $1 AND active ORDER BY name, id LIMIT 100",
            tenant,
        )
        .fetch_all(&self.pool)
        .await?;
        let step = Duration::minutes(i64::from(service.duration_minutes));
        let now = Utc::now();
        let mut offered: Vec<OfferedSlot> = Vec::new();
        // A day at a time, so a busy resource does not make us compute two weeks for three slots;
        // from midnight, so starts keep the working hours' rhythm (09:00, 10:00, not 09:17).
        let midnight = after.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        let mut from = midnight;
        let until = midnight + Duration::days(HORIZON_DAYS);
        while offered.len() < count && from < until {
            let to = (from + Duration::days(1)).min(until);
            for resource in &resources {
                let (tz, slots) =
                    availability::free_slots(self, tenant, &service, *resource, Interval::new(from, to), step, now)
                        .await?;
                for slot in slots {
                    if slot.start < after || offered.iter().any(|o| o.start == slot.start) {
                        continue;
                    }
                    offered.push(OfferedSlot {
                        resource_id: *resource,
                        service_id: service.id,
                        start: slot.start,
                        end: slot.end,
                        local_start: slot.start.with_timezone(&tz).to_rfc3339(),
                        time_zone: tz.name().to_owned(),
                    });
                }
            }
            from = to;
        }
        offered.sort_by_key(|slot| slot.start);
        offered.truncate(count);
        Ok(offered)
    }

    /// Holds `slot` for `contact` for the configured TTL. The same `key` answers the first hold.
    pub async fn hold_slot(
        &self,
        tenant: Uuid,
        slot: &OfferedSlot,
        contact: Uuid,
        key: &str,
    ) -> Result<Result<Booked, BookingRefusal>, ApiError> {
        let hash = Sha256::new()
            .chain_update(b"sms-hold")
            .chain_update(slot.resource_id.as_bytes())
            .chain_update(slot.service_id.as_bytes())
            .chain_update(slot.start.to_rfc3339().as_bytes())
            .chain_update(contact.as_bytes())
            .finalize()
            .to_vec();
        let input = TakeInput {
            service_id: slot.service_id,
            resource_id: slot.resource_id,
            start: slot.start,
            contact_id: Some(contact),
            source: "sms",
            title: None,
            note: None,
            location: None,
            hold: self.hold_ttl,
            kind: Kind::Hold,
            key: Some((key, &hash)),
        };
        match appointments::take_slot(self, tenant, input).await {
            Ok(id) => Ok(Ok(self.booked(tenant, id).await?)),
            Err(error) => refusal(error),
        }
    }

    /// Confirms a hold: the appointment, or why not.
    pub async fn confirm_slot(&self, tenant: Uuid, hold: Uuid) -> Result<Result<Booked, BookingRefusal>, ApiError> {
        match appointments::confirm_hold(self, tenant, hold).await {
            Ok(()) => Ok(Ok(self.booked(tenant, hold).await?)),
            Err(error) => refusal(error),
        }
    }

    /// Lets a hold go (it stops blocking at once); anything but a live hold is left alone.
    pub async fn release_hold(&self, tenant: Uuid, hold: Uuid) -> Result<(), ApiError> {
        sqlx::query!(
            r#"UPDATE fulfillment.appointments SET status = 'canceled', canceled_at = now(), updated_at = now()
               WHERE tenant_id = $1 AND id = $2 AND status = 'held'"#,
            tenant,
            hold,
        )
        .execute(&self.pool)
        .await?;
        appointments::wake(self);
        Ok(())
    }

    /// Sets a booked appointment's location and has its calendars show it.
    pub async fn set_location(&self, tenant: Uuid, id: Uuid, location: &str) -> Result<(), ApiError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query!(
            r#"UPDATE fulfillment.appointments SET location = $3, updated_at = now()
               WHERE tenant_id = $1 AND id = $2 AND status = 'booked'"#,
            tenant,
            id,
            location,
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 1 {
            crate::calendar::enqueue(&mut tx, tenant, id).await?;
        }
        tx.commit().await?;
        appointments::wake(self);
        Ok(())
    }

    async fn booked(&self, tenant: Uuid, id: Uuid) -> Result<Booked, ApiError> {
        let row = repository::find(&self.pool, tenant, id).await?;
        Ok(Booked { appointment_id: id, status: row.status, expires_at: row.expires_at })
    }
}

/// The tenant's oldest active service: what a caller books when the policy names none.
async fn default_service(module: &Fulfillment, tenant: Uuid) -> Result<Option<Uuid>, ApiError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM fulfillment.services WHERE tenant_id = $1 AND active ORDER BY created_at, id LIMIT 1",
        tenant,
    )
    .fetch_optional(&module.pool)
    .await?)
}

/// A refusal the customer can act on (pick another slot), or an error that is ours.
fn refusal(error: ApiError) -> Result<Result<Booked, BookingRefusal>, ApiError> {
    match error {
        ApiError::Conflict { .. } => Ok(Err(BookingRefusal::Taken)),
        ApiError::Gone(_) => Ok(Err(BookingRefusal::Lapsed)),
        ApiError::Validation { message, .. } => Ok(Err(BookingRefusal::Unavailable(message))),
        ApiError::NotFound(what) => Ok(Err(BookingRefusal::Unavailable(format!("{what} not found")))),
        other => Err(other),
    }
}
