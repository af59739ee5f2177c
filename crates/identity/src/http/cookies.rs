//! The session and CSRF cookies.

use axum::http::{HeaderMap, HeaderValue, header};

pub const SESSION_COOKIE: &str = "sb_session";
/// Readable by the web UI's script, which echoes it in [`CSRF_HEADER`] on writes.
pub const CSRF_COOKIE: &str = "sb_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

pub fn set(headers: &mut HeaderMap, name: &str, value: &str, max_age_secs: u64, http_only: bool, secure: bool) {
    let mut cookie = format!("{name}={value}; Path=/; Max-Age={max_age_secs}; SameSite=Lax");
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    if secure {
        cookie.push_str("; Secure");
    }
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, value);
    }
}

pub fn clear(headers: &mut HeaderMap, name: &str, http_only: bool, secure: bool) {
    set(headers, name, "", 0, http_only, secure);
}
