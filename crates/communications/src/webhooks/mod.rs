//! Provider webhooks: verified by `cpaas` before anything is parsed or stored.
//! So far the Meta subscription handshake; delivery tracking and inbound messages arrive with
//! the dispatcher and inbox.

pub mod http;
