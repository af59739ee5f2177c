//! Fulfillment: resources, working hours and availability, reservations (holds with a TTL),
//! appointments that can never double-book (a database exclusion constraint), quotes from local
//! rules, and calendar sync through an anti-corruption adapter.
//! Owns the Postgres schema `fulfillment`.
//!
//! - `schedule.rs`, `slots.rs`: pure time arithmetic — a resource's working intervals in its time
//!   zone (daylight saving included) and the free slots in them. The same `fits` decides what
//!   availability shows and what a reservation may take.
//! - `resources.rs`, `services.rs`: the catalogue (CRUD), working hours and exceptions,
//!   surcharges.
//! - `availability.rs`: `GET /api/v1/availability`.
//! - `appointments.rs` (+ `appointments_repository.rs`): holds, confirmation, cancellation,
//!   rescheduling; `quotes.rs`: prices from local rules.
//! - `events.rs`: `appointment.booked` / `.rescheduled` / `.canceled`, written in the
//!   appointment's transaction and relayed to a `kernel::scheduling::AppointmentListener`.
//!
//! Must not be here: SQL against any other schema, messaging or provider knowledge, or a
//! dependency on the `communications` crate: confirmations and reminders are requested through
//! narrow traits in `kernel`, wired together in the server.

pub mod appointments;
mod appointments_repository;
pub mod availability;
pub mod booking;
pub mod calendar;
pub mod events;
pub mod quotes;
pub mod resources;
pub mod schedule;
pub mod services;
pub mod slots;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use utoipa_axum::router::OpenApiRouter;

/// The module's handle: pool and settings, cheap to clone.
#[derive(Debug, Clone)]
pub struct Fulfillment {
    pub pool: sqlx::PgPool,
    /// How long a reservation holds its slot before it lapses.
    pub hold_ttl: Duration,
    /// Wakes this process's event relay after a commit that wrote events.
    pub events: Arc<Notify>,
    /// Seals calendar credentials.
    pub keyring: Arc<kernel::crypto::Keyring>,
    /// The calendar vendors' apps and endpoints.
    pub calendars: Arc<calendar::CalendarApps>,
    /// Wakes this process's sync worker after a commit that queued sync jobs.
    pub sync_wake: Arc<Notify>,
    /// Wakes this process's busy-time import (a push notification came).
    pub busy_wake: Arc<Notify>,
}

impl Fulfillment {
    pub fn new(pool: sqlx::PgPool, keyring: Arc<kernel::crypto::Keyring>) -> Self {
        Self {
            pool,
            hold_ttl: Duration::from_secs(300),
            events: Arc::default(),
            keyring,
            calendars: Arc::default(),
            sync_wake: Arc::default(),
            busy_wake: Arc::default(),
        }
    }

    pub fn with_calendars(mut self, apps: calendar::CalendarApps) -> Self {
        self.calendars = Arc::new(apps);
        self
    }

    pub fn with_events(mut self, events: Arc<Notify>) -> Self {
        self.events = events;
        self
    }

    pub fn with_hold_ttl(mut self, ttl: Duration) -> Self {
        self.hold_ttl = ttl;
        self
    }
}

/// The module's API routes (behind the authenticate middleware).
pub fn router() -> OpenApiRouter<Fulfillment> {
    OpenApiRouter::new()
        .merge(resources::router())
        .merge(services::router())
        .merge(availability::router())
        .merge(appointments::router())
        .merge(quotes::router())
        .merge(calendar::connections::router())
}

/// The vendors' push routes (public: verified by their signatures and tokens).
pub fn webhooks_router() -> OpenApiRouter<Fulfillment> {
    calendar::webhooks::router()
}

/// Marks lapsed holds expired, a batch at a time, every `poll`, until the task is dropped. A
/// database error ends the loop (its supervisor starts it again).
pub async fn run_upkeep(pool: sqlx::PgPool, poll: Duration) {
    loop {
        match appointments_repository::expire_all_lapsed(&pool).await {
            Ok(n) if n > 0 => tracing::debug!(expired = n, "lapsed holds expired"),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "expiring lapsed holds failed");
                return;
            }
        }
        tokio::time::sleep(poll).await;
    }
}
