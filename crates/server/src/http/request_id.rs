//! `X-Request-Id`: a caller's well-formed id is kept, otherwise one is generated; it is echoed
//! on the response and recorded on the request's span, hence on every log line.

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId as MakeRequestIdTrait, RequestId};
use tracing::Span;

#[derive(Debug, Clone, Copy, Default)]
pub struct MakeRequestId;

impl MakeRequestIdTrait for MakeRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()).ok().map(RequestId::new)
    }
}

/// Removes a caller-supplied id that is too long or unprintable, so a fresh one replaces it.
pub async fn drop_unacceptable(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.headers().get("x-request-id").is_some_and(|value| !is_acceptable(value)) {
        request.headers_mut().remove("x-request-id");
    }
    next.run(request).await
}

/// A caller-supplied id is kept only if it is short and printable, so logs stay sane.
fn is_acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
}

pub fn make_span<B>(request: &Request<B>) -> Span {
    let request_id = request.headers().get("x-request-id").and_then(|value| value.to_str().ok()).unwrap_or_default();
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}
