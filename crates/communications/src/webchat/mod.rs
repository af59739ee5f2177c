//! Webchat: the chat widget on an operator's website.
//!
//! The operator embeds `<script src="https://<switchboard>/webchat.js" data-channel="<id>">`
//! (served by the web crate); the script opens our frame page, whose `frame-ancestors` lists the
//! channel's allowed origins, so no other site can show it. Inside the frame, the widget talks
//! to these routes on our own origin:
//!
//! - `POST session`: a visitor is who their token says (`token.rs`: sealed, bound to the
//!   channel); a browser without one becomes a new visitor. Nothing is stored until they write.
//! - `POST messages`: a visitor's message becomes an inbound message of a contact identified by
//!   `webchat:<visitor id>`, in a conversation on the channel account, with its change — the
//!   inbox shows it like any other channel. Limited per visitor and per address (`limits.rs`).
//! - `GET stream`: the agents' answers, live, from the same change feed as the agents' streams.
//! - `POST seen`: the widget's receipts move the answers to delivered and read.
//!
//! Agents answer through `POST /api/v1/conversations/{id}/messages`, which stores a webchat
//! answer as `sent` at once ([`repository::store_reply`]): Switchboard is the provider, and
//! the visitor's stream is the delivery.

pub mod http;
mod limits;
pub mod repository;
pub mod token;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Communications;

/// The widget's routes; public (the visitor token is the credential).
pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(http::session))
        .routes(routes!(http::send))
        .routes(routes!(http::seen))
        .routes(routes!(http::stream))
}
