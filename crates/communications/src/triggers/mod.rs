//! Triggers: upstream events in, messages out.
//!
//! `POST /api/v1/events` takes a domain event (`{"event","occurred_at","data","id"}`) or a Hasura
//! event-trigger payload exactly as Hasura sends it (`event.op`, `event.data.old/new`, `table`,
//! `trigger.name`, `id`, `created_at`). Each event id is processed once per tenant. Trigger rules
//! (`/api/v1/trigger-rules`) match an event by name, check conditions on the payload (e.g. the
//! status became `DELAYED`), find recipients by paths into it, render a template with the event
//! as variables, and queue messages — at once, or relative to a time in the payload (e.g. 24 h
//! before departure) — all in the transaction that marks the event processed. Cron triggers
//! (`/api/v1/cron-triggers`, [`cron`]) emit a named event on a schedule.

pub mod cron;
pub mod event;
pub mod hasura;
pub mod http;
pub(crate) mod ingest;
pub mod rules;

pub use event::IncomingEvent;
