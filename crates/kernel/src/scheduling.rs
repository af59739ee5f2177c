//! What fulfillment tells the rest of the system about appointments, and nothing more: the
//! server wires a listener (communications: confirmations, reminders, the inbox's view of the
//! appointment) without either module seeing the other.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::directory::Answer;
use crate::ids::TenantId;

/// What happened to an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppointmentChange {
    Booked,
    Rescheduled,
    Canceled,
}

impl AppointmentChange {
    /// The domain event's name: `appointment.booked`, `.rescheduled`, `.canceled`.
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Booked => "appointment.booked",
            Self::Rescheduled => "appointment.rescheduled",
            Self::Canceled => "appointment.canceled",
        }
    }
}

/// One appointment event, delivered at least once (the id is stable: a listener processes each
/// id once).
#[derive(Debug, Clone, PartialEq)]
pub struct AppointmentEvent {
    pub id: String,
    pub tenant: TenantId,
    pub change: AppointmentChange,
    pub appointment_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// The appointment as it is after the change: `appointment_id`, `contact_id`, `start`,
    /// `end`, `local_start`, `time_zone`, `status`, `resource` {id, name}, `service` {id, name},
    /// `price_cents`, `currency`; and `previous_start` for a reschedule.
    pub data: Value,
}

/// Told about every appointment change, after it was committed.
pub trait AppointmentListener: Send + Sync + std::fmt::Debug {
    fn appointment_changed(&self, event: AppointmentEvent) -> Answer<'_, ()>;
}

/// A free slot fulfillment offers: what a customer may pick.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OfferedSlot {
    pub resource_id: Uuid,
    pub service_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The start in the resource's zone, with its offset (RFC 3339).
    pub local_start: String,
    pub time_zone: String,
}

/// A hold or an appointment fulfillment made.
#[derive(Debug, Clone, PartialEq)]
pub struct Booked {
    pub appointment_id: Uuid,
    /// `held` or `booked`.
    pub status: String,
    /// When a hold lapses.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a slot could not be held or confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookingRefusal {
    /// Someone else has it (or a connected calendar is busy then).
    Taken,
    /// Not a slot any more: in the past, outside working hours, the service withdrawn.
    Unavailable(String),
    /// The hold lapsed before it was confirmed.
    Lapsed,
}

/// What communications may ask fulfillment when a customer books by SMS; the server wires it.
pub trait SlotBooker: Send + Sync + std::fmt::Debug {
    /// The next `count` free slots of `service` (default: the tenant's oldest active service) at
    /// or after `after`, earliest first, at most one per start time.
    fn next_slots(
        &self,
        tenant: TenantId,
        service: Option<Uuid>,
        after: DateTime<Utc>,
        count: usize,
    ) -> Answer<'_, Vec<OfferedSlot>>;

    /// Holds `slot` for `contact`. The same `key` answers the first hold (a retried turn).
    fn hold(
        &self,
        tenant: TenantId,
        slot: OfferedSlot,
        contact: Uuid,
        key: String,
    ) -> Answer<'_, Result<Booked, BookingRefusal>>;

    /// Turns a hold into an appointment; confirming twice answers the appointment.
    fn confirm(&self, tenant: TenantId, hold: Uuid) -> Answer<'_, Result<Booked, BookingRefusal>>;

    /// Lets a hold go before its time (the customer picked another slot).
    fn release(&self, tenant: TenantId, hold: Uuid) -> Answer<'_, ()>;

    /// Sets where a booked appointment takes place (the customer's address); its calendars are
    /// brought up to date.
    fn set_location(&self, tenant: TenantId, appointment: Uuid, location: String) -> Answer<'_, ()>;
}
