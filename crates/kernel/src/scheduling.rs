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
