//! The identity module's HTTP surface: authentication middleware and routes.

mod agents;
mod api_keys;
mod auth;
mod cookies;
mod me;
mod middleware;

pub use cookies::{CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE};
pub use middleware::authenticate;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Identity;

/// `/api/v1/{auth,me,agents,api-keys}`. Expects [`authenticate`] to run in front of it.
pub fn router() -> OpenApiRouter<Identity> {
    OpenApiRouter::new()
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(me::me))
        .routes(routes!(agents::list_agents, agents::create_agent))
        .routes(routes!(agents::get_agent))
        .routes(routes!(api_keys::list_api_keys, api_keys::create_api_key))
        .routes(routes!(api_keys::get_api_key))
        .routes(routes!(api_keys::revoke_api_key))
}
