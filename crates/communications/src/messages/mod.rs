//! Messages: accepted through the send API (or triggers), dispatched by workers through the
//! channel's providers, moved on by provider callbacks, every change on the record.

pub(crate) mod accept;
pub mod content;
pub mod http;
pub(crate) mod idempotency;
pub mod model;
pub(crate) mod pacing;
pub mod queue;
pub(crate) mod quiet_hours;
pub mod repository;
pub mod service;
pub(crate) mod single_write;
