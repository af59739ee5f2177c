//! Calendar vendor adapters: the edge where our appointments meet Google Calendar and Jobber.
//!
//! Belongs here: the vendor-neutral contract ([`CalendarEvent`], [`Busy`], [`SyncError`],
//! [`Credentials`]), turning it into Google Calendar API v3 and Jobber GraphQL requests (base
//! URLs configurable, so tests and the demo talk to `cpaas-sim`), OAuth token refresh (Jobber's
//! rotating refresh tokens included), classifying vendor errors into what the caller should do,
//! and verifying and parsing what the vendors push to us (Google channel notifications, Jobber
//! webhooks).
//!
//! Must not be here: database access of any kind, our domain's types (appointments, resources,
//! tenants), scheduling of sync jobs or retries (the caller owns them; errors say when to retry).
//! No Google or Jobber shape leaves this crate; vendor ids leave as opaque strings
//! ([`ExternalRef`], `Busy::external_id`, sync tokens).
//!
//! ## Using it
//!
//! Every call takes the account's `&mut Credentials` and returns an [`Outcome`]: if
//! `credentials_changed`, persist the credentials first, whatever the result (Jobber has already
//! invalidated the previous refresh token). Calls are safe to repeat after `Retryable` or
//! `RateLimited`; `Unauthorized` means the operator must connect the account again.

pub mod contract;
pub mod credentials;
pub mod google;
mod http;
pub mod jobber;

pub use contract::{Busy, BusyChanges, BusyTime, CalendarEvent, EventKey, ExternalRef, Outcome, SyncError};
pub use credentials::Credentials;
pub use google::{GoogleCalendar, GoogleConfig, WatchChannel};
pub use jobber::{Customer, Jobber, JobberConfig, JobberLink, PostalAddress, VisitTimes};
