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
    /// It existed, but not any more (an expired hold).
    #[error("{0}")]
    Gone(String),
    #[error("request body is larger than this service accepts")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    /// A provider we depend on failed or is unreachable.
    #[error("{0}")]
    BadGateway(String),
    /// The database was unreachable (already detected, e.g. by a batch others shared).
    #[error("the database is unavailable for a moment: try again")]
    Unavailable(String),
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
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) if self.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
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
            Self::Gone(_) => "gone",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::BadGateway(_) => "provider_unavailable",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) if self.is_unavailable() => "unavailable",
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

impl ApiError {
    /// The database could not be reached (down, restarting, refusing connections): the same
    /// request is likely to work a moment later. Callers retry; clients get a 503.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Internal(source) => source.downcast_ref::<sqlx::Error>().is_some_and(database_unavailable),
            _ => false,
        }
    }

    /// PostgreSQL ended the statement to break a deadlock (40P01) or a serialization conflict
    /// (40001): nothing is wrong with it, and the same statement run again will most likely
    /// pass, the transaction it collided with having gone on.
    pub fn is_conflict(&self) -> bool {
        match self {
            Self::Internal(source) => {
                source.downcast_ref::<sqlx::Error>().is_some_and(database_conflict)
                    || source.downcast_ref::<SharedError>().is_some_and(|shared| shared.conflict)
            }
            _ => false,
        }
    }

    /// Worth doing again as it was: the database was away ([`Self::is_unavailable`]) or the
    /// statement lost a collision ([`Self::is_conflict`]).
    pub fn is_transient(&self) -> bool {
        self.is_unavailable() || self.is_conflict()
    }
}

/// Whether PostgreSQL chose the statement as a deadlock's or serialization conflict's victim.
pub fn database_conflict(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| matches!(code.as_ref(), "40P01" | "40001"))
}

/// A failure shared by every caller of a batched statement (`kernel::batch`): its text, whether
/// the database was unreachable, so each caller can still tell a 503 from a 500, and whether it
/// lost a collision, so each can still tell "do it again" from "it is broken".
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SharedError {
    pub message: String,
    pub unavailable: bool,
    pub conflict: bool,
}

impl SharedError {
    /// See [`ApiError::is_transient`].
    pub fn transient(&self) -> bool {
        self.unavailable || self.conflict
    }
}

impl From<ApiError> for SharedError {
    fn from(error: ApiError) -> Self {
        let message = match std::error::Error::source(&error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        };
        Self { unavailable: error.is_unavailable(), conflict: error.is_conflict(), message }
    }
}

impl From<sqlx::Error> for SharedError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from(error).into()
    }
}

impl From<SharedError> for ApiError {
    fn from(error: SharedError) -> Self {
        if error.unavailable { ApiError::Unavailable(error.message) } else { ApiError::internal(error) }
    }
}

impl ApiError {
    /// A unique constraint refused the write (a concurrent or earlier row holds the key).
    /// An exclusion constraint refused the row (SQLSTATE 23P01): e.g. an overlapping booking.
    pub fn is_exclusion_violation(&self) -> bool {
        match self {
            Self::Internal(source) => source
                .downcast_ref::<sqlx::Error>()
                .and_then(sqlx::Error::as_database_error)
                .is_some_and(|error| error.code().as_deref() == Some("23P01")),
            _ => false,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Internal(source) => source
                .downcast_ref::<sqlx::Error>()
                .and_then(sqlx::Error::as_database_error)
                .is_some_and(|error| error.is_unique_violation()),
            _ => false,
        }
    }
}

/// Whether `error` means "no database right now" rather than "this statement is wrong".
pub fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        // A closed pool is our own shutdown, not the database: not "try again".
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            // 08: connection exceptions; 57P0x: the server is shutting down, crashed or starting;
            // 53300: too many connections; 55000: "not currently accepting connections".
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300" | "55000")
        }),
        _ => false,
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
        match &self {
            // The cause goes to the log (with the request id from the span), never to the client.
            Self::Internal(source) if self.is_unavailable() => {
                tracing::warn!(error = %source, "request failed: database unavailable")
            }
            Self::Internal(source) => tracing::error!(error = %source, "request failed with an internal error"),
            Self::Unavailable(cause) => tracing::warn!(error = %cause, "request failed: database unavailable"),
            _ => {}
        }
        let message = if self.is_unavailable() {
            "the database is unavailable for a moment: try again".to_owned()
        } else {
            self.to_string()
        };
        let body = ErrorBody::new(self.code(), message, self.field().map(str::to_owned));
        let mut response = (self.status(), Json(body)).into_response();
        match &self {
            _ if self.is_unavailable() => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
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

#[cfg(test)]
mod unavailable_tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_and_a_broken_query_a_500() {
        let timed_out = ApiError::from(sqlx::Error::PoolTimedOut);
        assert!(timed_out.is_unavailable());
        assert_eq!(timed_out.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(timed_out.code(), "unavailable");
        let shared = ApiError::from(SharedError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(shared.status(), StatusCode::SERVICE_UNAVAILABLE, "still a 503 after a batch shared it");
        let broken = ApiError::from(sqlx::Error::RowNotFound);
        assert!(!broken.is_unavailable());
        assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!ApiError::from(sqlx::Error::PoolClosed).is_unavailable(), "our own shutdown");
        assert!(!broken.is_conflict() && !broken.is_transient());
        assert!(timed_out.is_transient());
    }

    #[test]
    fn a_deadlocks_victim_is_still_one_after_a_batch_shared_it() {
        let shared = SharedError { message: "deadlock detected".into(), unavailable: false, conflict: true };
        assert!(shared.transient());
        let error = ApiError::from(shared.clone());
        assert!(error.is_conflict() && error.is_transient() && !error.is_unavailable());
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(SharedError::from(error).conflict, "and again after another batch");
    }
}
