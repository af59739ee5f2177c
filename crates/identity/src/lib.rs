//! Identity: who may act in which tenant.
//!
//! Belongs here: tenants (workspaces), operator API keys, agents with their passwords, server-side
//! sessions, login throttling, the authentication middleware that turns credentials into a
//! [`kernel::auth::Caller`], and the `/api/v1/{auth,me,agents,api-keys}` routes.
//! Owns the Postgres schema `identity`; no other module reads it. Other modules learn the
//! caller only through `Caller`.
//!
//! Must not be here: anything about channels, messages, conversations or bookings.

pub mod agents;
pub mod api_keys;
pub mod http;
pub mod secrets;
pub mod sessions;
pub mod settings;
pub mod tenants;
pub mod throttle;

pub use settings::AuthSettings;

/// The identity module's handle: a pool and its settings, cheap to clone.
#[derive(Debug, Clone)]
pub struct Identity {
    pub pool: sqlx::PgPool,
    pub settings: AuthSettings,
}

impl Identity {
    pub fn new(pool: sqlx::PgPool, settings: AuthSettings) -> Self {
        Self { pool, settings }
    }
}
