//! Amazon SNS HTTP(S) deliveries: the message envelope, its RSA signature, and the policy for
//! which signing certificates we trust.
//!
//! Flow for the route: `SnsMessage::from_json(body)` → `SnsVerifier::verify(&message)` → then
//! either confirm the subscription ([`SnsVerifier::confirmation_url`], GET it) or hand
//! `message.message` to the service-specific parser (e.g. [`super::ses`]). Checking that the
//! `TopicArn` is one we were told about ([`TopicArn`]) is the route's job: the verifier only
//! knows that AWS (or the trusted simulator) signed the message, not that it was meant for us.

mod certificate;
mod message;
mod topic;
mod trust;
mod verifier;

pub use message::{SnsMessage, SnsMessageType};
pub use topic::{TopicArn, is_account_id};
pub use trust::SnsTrust;
pub use verifier::SnsVerifier;
