//! Delivery tracking: provider events applied to messages, monotonically.
//!
//! Statuses only move forward on the lattice `sent < failed < delivered < read` (an `unknown`
//! or `sending` message is below all of them), so duplicates and any permutation of the same
//! callbacks converge on the same state: delivered never goes back to sent, and a late `sent`
//! changes nothing. Every new provider event is appended to the message's trail once (keyed by
//! provider, status and provider timestamp), with the raw payload. Superseded and canceled
//! messages keep their state; their late events are still recorded.

mod apply;
pub mod merge;

pub use apply::{EnvelopeOutcome, TrackedEvent};
