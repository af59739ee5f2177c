//! The agent web UI: the inbox in a browser, served by the binary.
//!
//! Belongs here: page handlers, templates (minijinja, auto-escaped: every piece of message
//! content is untrusted), our own small JavaScript and CSS (embedded with `include_str!`, so the
//! binary is the whole deployment), the Content-Security-Policy of the pages, and the UI's
//! strings in English and German.
//!
//! Pages call the modules' services in process — the same handlers the JSON API serves, so the
//! UI shows exactly what the API answers — never the JSON API over HTTP. The browser's script
//! follows the live stream (`/api/v1/stream`) and sends actions to the JSON API with the
//! session's CSRF token.
//!
//! Must not be here: SQL, business rules, or anything a module would need (no module depends on
//! this crate).

mod assets;
mod i18n;
mod pages;
mod queues;
mod webchat;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use communications::Communications;
use identity::Identity;

/// What the pages need: the modules and the templates.
#[derive(Debug, Clone)]
pub struct Web {
    pub(crate) communications: Communications,
    pub(crate) templates: Arc<minijinja::Environment<'static>>,
    /// The server's largest request body (`http.body_limit_bytes`): the composer refuses
    /// attachments that would not fit before reading them, instead of a 413 after uploading.
    pub(crate) body_limit: usize,
}

/// No inline script or style, nothing from elsewhere: a message that slipped past escaping still
/// could not run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The UI's routes: `/`, `/login`, `/inbox` and its fragments, `/assets/*`. Pages need an agent's
/// session (the identity middleware reads the cookie); without one they redirect to `/login`.
/// `body_limit` is the server's largest request body in bytes.
pub fn router(communications: Communications, identity: Identity, body_limit: usize) -> Router {
    let mut templates = pages::templates();
    webchat::templates(&mut templates);
    let web = Web { communications, templates: Arc::new(templates), body_limit };
    let web_state = web.clone();
    let pages = Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login))
        .route("/inbox", get(pages::inbox))
        .route("/inbox/list", get(pages::list_fragment))
        .route("/inbox/conversations/{id}", get(pages::thread_fragment))
        .route("/queues", get(queues::page))
        .with_state(web)
        .layer(from_fn_with_state(identity, identity::http::authenticate))
        .layer(axum::middleware::map_response(secure_headers));
    // The webchat widget's pages set their own policy: they are meant to be framed.
    let webchat = webchat::router(web_state);
    Router::new().merge(pages).merge(assets::router()).merge(webchat)
}

async fn secure_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
