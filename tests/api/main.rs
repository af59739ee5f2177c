//! Black-box tests: the real application (in-process on port 0, or the real binary) against a
//! real PostgreSQL, one fresh database per test cloned from a migrated template.
//! Run them with `scripts/test`, which provides the PostgreSQL server (TEST_DATABASE_URL).

#![allow(clippy::unwrap_used)]

mod acceptance_slots;
mod agents;
mod api_keys;
mod auth;
mod batching;
mod bench_command;
mod binary;
mod browser;
mod calendar_sync;
mod channel_verification;
mod channels;
mod compliance;
mod config;
mod contacts;
mod conversations;
mod crash_safety;
mod delivery;
mod demo_channels;
mod embedded_postgres;
mod fulfillment;
mod fulfillment_events;
mod fulfillment_property;
mod health;
mod helpers;
mod http_basics;
mod inbound_kinds;
mod inbox;
mod inbox_context;
mod inbox_input;
mod inbox_replies;
mod isolation;
mod job_queue;
mod kept_connections;
mod labels_notes;
mod messages;
mod missed_calls;
mod module_boundaries;
mod ops_metrics;
mod pipeline;
mod queues;
mod rate_limits;
mod sent_records;
mod stream;
mod templates;
mod triggers;
mod webchat;
mod webhook_batches;
mod webhooks;
