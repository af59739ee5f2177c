//! The OpenAPI document's frame; paths come from the routers themselves (utoipa-axum), so the
//! document cannot drift from the routes.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard", description = "Omnichannel inbox, notification dispatcher and fulfillment for operators."),
    components(schemas(kernel::error::ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Agent login sessions and the caller's identity"),
        (name = "agents", description = "The people who work the inbox"),
        (name = "api-keys", description = "Operator API keys"),
        (name = "channels", description = "Channel accounts (WhatsApp, email, SMS, webchat) and their providers"),
        (name = "messages", description = "The send API: accept, read, list, cancel"),
        (name = "templates", description = "Notification templates per channel and locale"),
        (name = "triggers", description = "Upstream events (domain or Hasura) and the rules that turn them into messages"),
        (name = "webhooks", description = "Provider callbacks (verified by signature or token)"),
        (name = "webchat", description = "The website chat widget's calls, authenticated by the visitor's token"),
        (name = "fulfillment", description = "Resources, services, availability, reservations and appointments"),
        (name = "ops", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // A webchat visitor's token (see `communications::webchat::token`).
        components.add_security_scheme(
            "visitor_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(identity::http::SESSION_COOKIE))),
        );
    }
}
