//! Extractors whose rejections are [`ApiError`]s that name the offending field, instead of
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body (deserialised with the failing field's path) or a JSON response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a request body with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(Json)
    }
}

/// `Option<Json<T>>`: an empty body is `None`; anything else must be valid JSON.
impl<T, S> OptionalFromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let json = has_json_content_type(request.headers());
        let bytes = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType(
                "expected a request body with `Content-Type: application/json`".into(),
            ));
        }
        parse_json(&bytes).map(|value| Some(Json(value)))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A 415 unless the request says its body is JSON (for handlers that read the raw bytes).
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    if has_json_content_type(headers) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType("expected a request body with `Content-Type: application/json`".into()))
    }
}

fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest { message: rejection.body_text(), field: None }
    }
}

/// Deserialises JSON, reporting syntax errors as 400 and shape errors as 422 with the field.
/// A string with a NUL character (`\u0000`, valid JSON) is a 422 naming its field: PostgreSQL
/// cannot store one in `text` or `jsonb`, so it would otherwise fail at the database.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.windows(6).any(|window| window == b"\\u0000")
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(path) = nul_path(&value)
    {
        let field = if path.is_empty() { "body".to_owned() } else { path };
        return Err(ApiError::validation(field, "must not contain NUL characters (\\u0000)"));
    }
    // Tracking the path costs on every key; only a refused body needs it, so it is read again.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
    let error = match result {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let path = error.path().to_string();
    let inner = error.into_inner();
    match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            Err(ApiError::BadRequest { message: format!("request body is not valid JSON: {inner}"), field: None })
        }
        serde_json::error::Category::Io | serde_json::error::Category::Data => {
            let message = strip_position(&inner.to_string());
            let field = field_of(&path, &message);
            Err(ApiError::Validation { message: describe(&field, &message), field })
        }
    }
}

/// The dotted path of the first string (value or key) holding a NUL character.
fn nul_path(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let join = |base: &str, name: &str| if base.is_empty() { name.to_owned() } else { format!("{base}.{name}") };
    let mut pending = vec![(String::new(), value)];
    while let Some((path, value)) = pending.pop() {
        match value {
            Value::String(text) if text.contains('\0') => return Some(path),
            Value::Array(items) => {
                pending.extend(items.iter().enumerate().rev().map(|(i, item)| (format!("{path}[{i}]"), item)))
            }
            Value::Object(fields) => {
                for (name, item) in fields.iter().rev() {
                    if name.contains('\0') {
                        return Some(join(&path, name));
                    }
                    pending.push((join(&path, name), item));
                }
            }
            _ => {}
        }
    }
    None
}

/// serde_json appends " at line L column C"; the field name says more than the position.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// The dotted path of the failing field. For a missing field, serde reports the path of the
/// enclosing object, so the missing name is appended.
fn field_of(path: &str, message: &str) -> String {
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match (base, missing) {
        ("", Some(name)) => name.to_owned(),
        (base, Some(name)) => format!("{base}.{name}"),
        ("", None) => "body".to_owned(),
        (base, None) => base.to_owned(),
    }
}

fn describe(field: &str, message: &str) -> String {
    if message.starts_with("missing field") {
        format!("`{field}` is required")
    } else {
        format!("`{field}`: {message}")
    }
}

/// Path parameters; a malformed one (e.g. not a UUID) is a 404: no such object exists.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|_| ApiError::NotFound("resource"))
    }
}

/// Query string parameters with the failing parameter named.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        // PostgreSQL text cannot hold NUL: refused here, naming the parameter, like JSON bodies.
        if let Some((name, _)) = form_urlencoded::parse(query.as_bytes()).find(|(_, value)| value.contains('\0')) {
            return Err(ApiError::validation(name.into_owned(), "must not contain NUL characters (%00)"));
        }
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map(Query).map_err(|error| {
            let field = error.path().to_string();
            let message = error.into_inner().to_string();
            let field = field_of(&field, &message);
            ApiError::Validation { message: describe(&field, &message), field }
        })
    }
}
