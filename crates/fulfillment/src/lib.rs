//! Fulfillment: resources, working hours and availability, reservations (holds with a TTL),
//! appointments that can never double-book (a database exclusion constraint), quotes from local
//! rules, and calendar sync through an anti-corruption adapter.
//! Owns the Postgres schema `fulfillment`.
//!
//! Must not be here: SQL against any other schema, messaging or provider knowledge, or a
//! dependency on the `communications` crate: confirmations and reminders are requested through
//! narrow traits in `kernel`, wired together in the server.
