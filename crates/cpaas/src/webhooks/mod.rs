//! Inbound half: verifying that a webhook really comes from the provider, and turning its body
//! into [`ProviderEvent`](crate::ProviderEvent)s.
//!
//! Every provider module follows the same shape: a `verify_*` function (or, for SNS, a
//! [`sns::SnsVerifier`]) that must succeed on the **raw** request before anything is parsed,
//! then `parse*` functions. The rules the parsers share:
//!
//! - They never panic, whatever the bytes (property-tested).
//! - Only a body that cannot be decoded at all (not JSON, not the provider's envelope) is an
//!   error ([`WebhookError::Malformed`]). Anything authentic but not understood — a new message
//!   type, a status we do not model, an entry missing a field — becomes
//!   [`ProviderEvent::Unknown`](crate::ProviderEvent::Unknown) with a description, so the route
//!   can acknowledge it (providers retry on non-2xx) and keep it for inspection.

mod error;
mod json;
pub mod meta;
pub mod ses;
pub mod sns;
pub mod twilio;

pub use error::{WebhookError, WebhookRejection};
