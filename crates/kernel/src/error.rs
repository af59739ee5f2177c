//! The one error type handlers return. Every failure leaves the service as
//! `{"error":{"code","message","field"?}}` with the matching status code.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON syntax, wrong content type).
    #[error("{message}")]
    BadRequest { message: String, field: Option<String> },
    /// The request is well-formed but a field's value is not acceptable.
    #[error("{message}")]
    Validation { field: String, message: String },
    #[error("authentication required: send an API key as `Authorization: Bearer <key>` or log in")]
    Unauthenticated,
    #[error("{0}")]
    InvalidCredentials(String),
    #[error("{0}")]
    Forbidden(String),
    /// Also what another tenant's object looks like: it does not exist for the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { message: String, field: Option<String> },
    #[error("request body is larger than this service accepts")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    /// A provider we depend on failed or is unreachable.
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(#[source] anyhow_like::BoxError),
}

/// Kept local so the kernel does not depend on anyhow.
pub mod anyhow_like {
    pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation { field: field.into(), message: message.into() }
    }

    pub fn conflict(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::Conflict { message: message.into(), field: field.map(str::to_owned) }
    }

    pub fn internal(error: impl Into<anyhow_like::BoxError>) -> Self {
        Self::Internal(error.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated | Self::InvalidCredentials(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad_request",
            Self::Validation { .. } => "validation_failed",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidCredentials(_) => "invalid_credentials",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::BadGateway(_) => "provider_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Self::BadRequest { field, .. } | Self::Conflict { field, .. } => field.as_deref(),
            Self::Validation { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(error)
    }
}

/// The wire shape of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code such as `not_found` or `validation_failed`.
    pub code: String,
    /// A sentence for humans.
    pub message: String,
    /// The request field at fault, when there is one (dotted path for nested fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>, field: Option<String>) -> Self {
        Self { error: ErrorDetail { code: code.to_owned(), message: message.into(), field } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(source) = &self {
            // The cause goes to the log (with the request id from the span), never to the client.
            tracing::error!(error = %source, "request failed with an internal error");
        }
        let body = ErrorBody::new(self.code(), self.to_string(), self.field().map(str::to_owned));
        let mut response = (self.status(), Json(body)).into_response();
        match &self {
            Self::TooManyRequests { retry_after_secs, .. } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Unauthenticated | Self::InvalidCredentials(_) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
