//! The webchat widget's browser side: `/webchat.js` (what an operator's page includes), the
//! frame it opens (`/webchat/{channel}/frame`), and a demo page that embeds it.
//!
//! The widget lives in an iframe on our origin, so the visitor's token, our script and the
//! messages never touch the host page's DOM or scripts, and the host page's CSS cannot break
//! it. The frame's `frame-ancestors` is the channel's allowed origins (plus our own): a site
//! the operator did not list cannot show it. The frame talks only to `/api/webchat/…`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use communications::webchat::repository::{self, WebchatChannel};
use minijinja::Environment;
use serde_json::json;
use uuid::Uuid;

use crate::{Web, assets};

const WIDGET_JS: &str = include_str!("../assets/webchat.js");
const FRAME_JS: &str = include_str!("../assets/webchat-frame.js");
const FRAME_CSS: &str = include_str!("../assets/webchat.css");

pub fn templates(env: &mut Environment<'static>) {
    for (name, source) in [
        ("webchat_frame.html", include_str!("../templates/webchat_frame.html")),
        ("webchat_demo.html", include_str!("../templates/webchat_demo.html")),
    ] {
        if let Err(error) = env.add_template(name, source) {
            tracing::error!(%error, name, "web template does not compile");
        }
    }
}

pub fn router(web: Web) -> Router {
    Router::new()
        .route("/webchat.js", get(|headers: HeaderMap| async move { widget_script(&headers) }))
        .route(
            "/assets/webchat-frame.js",
            get(
                |headers: HeaderMap| async move { assets::asset(&headers, FRAME_JS, "text/javascript; charset=utf-8") },
            ),
        )
        .route(
            "/assets/webchat.css",
            get(|headers: HeaderMap| async move { assets::asset(&headers, FRAME_CSS, "text/css; charset=utf-8") }),
        )
        .route("/webchat/{channel}/frame", get(frame))
        .route("/webchat/{channel}/demo", get(demo))
        .with_state(web)
}

/// Included by other sites' pages: readable cross-origin.
fn widget_script(headers: &HeaderMap) -> Response {
    let mut response = assets::asset(headers, WIDGET_JS, "text/javascript; charset=utf-8");
    response.headers_mut().insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    response
}

/// The channel, or `None` for an id that is not an active webchat channel.
async fn channel_of(web: &Web, raw: &str) -> Option<WebchatChannel> {
    let id = raw.parse::<Uuid>().ok()?;
    repository::channel(&web.communications.pool, id).await.ok()
}

/// The chat itself, shown inside the operator's page.
async fn frame(State(web): State<Web>, Path(channel): Path<String>, headers: HeaderMap) -> Response {
    let Some(channel) = channel_of(&web, &channel).await else {
        return not_found();
    };
    // Browsers send the embedding page's origin as the Referer of a cross-origin frame
    // (strict-origin-when-cross-origin): refuse what the operator did not list, besides the
    // frame-ancestors CSP below.
    if let Some(embedder) = headers.get(header::REFERER).and_then(|r| r.to_str().ok()).and_then(origin_of)
        && !communications::webchat::http::is_own_origin(&embedder, &headers)
        && !channel.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(&embedder))
    {
        return (StatusCode::FORBIDDEN, "This site may not show this chat.").into_response();
    }
    let lang = crate::i18n::language(&headers);
    let strings = widget_strings(lang);
    let context = json!({
        "lang": lang,
        "channel": channel.id,
        "name": channel.name,
        "greeting": channel.greeting.clone().unwrap_or_else(|| strings["greeting"].clone()),
        "t": strings,
        "strings": serde_json::to_string(&strings).unwrap_or_default(),
    });
    let ancestors: Vec<&str> = channel.allowed_origins.iter().map(String::as_str).collect();
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'self' {}",
        ancestors.join(" ")
    );
    page(&web, "webchat_frame.html", context, &csp)
}

/// A page that embeds the channel's widget, for trying it out (`demo` prints its address).
async fn demo(State(web): State<Web>, Path(channel): Path<String>, headers: HeaderMap) -> Response {
    let Some(channel) = channel_of(&web, &channel).await else {
        return not_found();
    };
    let lang = crate::i18n::language(&headers);
    let context = json!({ "lang": lang, "channel": channel.id, "name": channel.name });
    page(
        &web,
        "webchat_demo.html",
        context,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    )
}

fn page(web: &Web, name: &str, context: serde_json::Value, csp: &str) -> Response {
    let context = minijinja::Value::from(minijinja::value::Serde(context));
    let html = match web.templates.get_template(name).and_then(|template| template.render(context)) {
        Ok(html) => html,
        Err(error) => {
            tracing::error!(%error, name, "rendering a page failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("strict-origin-when-cross-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The widget's own strings (the visitor's language, not the agent's).
const WIDGET_STRINGS: &[(&str, &str, &str)] = &[
    ("open_chat", "Chat with us", "Chatten Sie mit uns"),
    ("close", "Close the chat", "Chat schließen"),
    ("greeting", "Hello! How can we help?", "Hallo! Wie können wir helfen?"),
    ("message", "Your message", "Ihre Nachricht"),
    ("placeholder", "Write a message…", "Nachricht schreiben…"),
    ("send", "Send", "Senden"),
    ("introduce", "Introduce yourself (optional)", "Stellen Sie sich vor (optional)"),
    ("name", "Name", "Name"),
    ("email", "Email", "E-Mail"),
    ("sending", "Sending…", "Wird gesendet…"),
    ("failed", "Not sent.", "Nicht gesendet."),
    ("retry", "Retry", "Erneut senden"),
    (
        "slow_down",
        "You are writing very quickly; please wait a moment.",
        "Sie schreiben sehr schnell; bitte warten Sie kurz.",
    ),
    ("offline", "Reconnecting…", "Verbinde neu…"),
    ("you", "You", "Sie"),
    ("unread", "new messages", "neue Nachrichten"),
];

pub fn widget_strings(language: &str) -> std::collections::BTreeMap<&'static str, String> {
    WIDGET_STRINGS.iter().map(|(key, en, de)| (*key, (if language == "de" { *de } else { *en }).to_owned())).collect()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "No such chat.").into_response()
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedding_pages_origin() {
        assert_eq!(origin_of("https://Shop.Example/page?x=1").as_deref(), Some("https://shop.example"));
        assert_eq!(origin_of("http://localhost:8080/").as_deref(), Some("http://localhost:8080"));
        assert_eq!(origin_of("nonsense"), None);
    }
}
