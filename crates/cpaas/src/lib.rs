//! CPaaS adapters: the edge where our generic commands meet providers' wire formats.
//!
//! Belongs here: turning a generic `SendMessageCommand` into a Meta WhatsApp Cloud API, Amazon
//! SES, Amazon SNS or Twilio request (base URLs configurable, so tests and the demo talk to the
//! simulator), classifying their errors, verifying webhook signatures, and parsing webhooks into
//! generic provider events.
//!
//! Must not be here: database access of any kind, or our domain's types (conversations,
//! contacts, tenants' business rules). It knows providers, not Switchboard.
