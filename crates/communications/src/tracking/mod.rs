//! Delivery tracking: provider events applied to messages, monotonically.
//!
//! Statuses only move forward on the lattice `sent < failed < delivered < read` (an `unknown`
//! or `sending` message is below all of them), so duplicates and any permutation of the same
//! callbacks converge on the same state: delivered never goes back to sent, and a late `sent`
//! changes nothing. Every new provider event is appended to the message's trail once (keyed by
//! provider, status and provider timestamp), with the raw payload. Superseded and canceled
//! messages keep their state; their late events are still recorded.
//!
//! A failure reported after the provider accepted a message hands over as a send-time failure
//! does: to the same channel again later when the provider's class says so (`Retry`), else to the
//! next channel of the chain. Bounces and complaints suppress an address only when they name the
//! message's own recipient. Callbacks that match no message yet are tried again (`rematch`).
//!
//! Envelopes that arrive together share a transaction (`batch`), and their plain status reports
//! are applied set-wise (`bulk`) by the same rules as the one-by-one path (`apply`).

mod apply;
pub(crate) mod batch;
mod bulk;
pub mod merge;
pub mod rematch;
pub(crate) mod repository;

pub use apply::{EnvelopeOutcome, TrackedEvent};
