//! Our own JavaScript and CSS, embedded in the binary. The file name carries no hash, so they are
//! revalidated (ETag = the content's hash) rather than cached for good.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const QUEUES_JS: &str = include_str!("../assets/queues.js");
/// Our icon (a speech bubble on the accent blue), drawn by hand: no third-party artwork.
const FAVICON: &str = include_str!("../assets/favicon.svg");
const SVG: &str = "image/svg+xml";

pub fn router() -> Router {
    Router::new()
        .route(
            "/assets/app.js",
            get(|headers: HeaderMap| async move { asset(&headers, APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/queues.js",
            get(|headers: HeaderMap| async move { asset(&headers, QUEUES_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/app.css",
            get(|headers: HeaderMap| async move { asset(&headers, APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/assets/favicon.svg", get(|headers: HeaderMap| async move { asset(&headers, FAVICON, SVG) }))
        // Browsers (and bookmarks, feed readers) ask for /favicon.ico whatever the page links;
        // the SVG itself answers, without a redirect's extra round trip.
        .route("/favicon.ico", get(|headers: HeaderMap| async move { asset(&headers, FAVICON, SVG) }))
}

pub(crate) fn asset(request: &HeaderMap, body: &'static str, content_type: &'static str) -> Response {
    // The content's hash: a new build with other assets is fetched again, an unchanged one not.
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(body, &mut hasher);
    let etag = format!("\"{:x}\"", std::hash::Hasher::finish(&hasher));
    if request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}
