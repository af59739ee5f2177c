//! The one error type of webhook verification and parsing, and what it means for HTTP.

/// Why a webhook was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The request carries no signature at all.
    #[error("missing signature")]
    MissingSignature,
    /// A signature (or verify token) is present but does not match: forged or misconfigured.
    #[error("bad signature")]
    BadSignature,
    /// SNS: the signing certificate URL is not one we are willing to fetch.
    #[error("untrusted certificate URL: {0}")]
    UntrustedCertificateUrl(String),
    /// SNS: a `SignatureVersion` we do not implement (only "1" and "2" exist today).
    #[error("unsupported signature version: {0}")]
    UnsupportedSignatureVersion(String),
    /// SNS: the signing certificate could not be fetched or used (network, HTTP status, not
    /// an RSA certificate…). Not the sender's fault necessarily, so not a forgery.
    #[error("certificate fetch failed: {0}")]
    CertificateFetch(String),
    /// The body (or a required part of the request) cannot be decoded.
    #[error("malformed webhook: {0}")]
    Malformed(String),
}

/// How the HTTP route should answer a rejected webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookRejection {
    /// No credentials presented: 401.
    Unauthenticated,
    /// Presented but wrong (forged, replayed to the wrong URL, untrusted certificate): 403.
    Forged,
    /// Undecodable request: 400.
    Malformed,
    /// We could not check it right now (certificate fetch failed): 503, so the provider retries.
    Unavailable,
}

impl WebhookRejection {
    pub fn status_code(self) -> u16 {
        match self {
            WebhookRejection::Unauthenticated => 401,
            WebhookRejection::Forged => 403,
            WebhookRejection::Malformed => 400,
            WebhookRejection::Unavailable => 503,
        }
    }
}

impl WebhookError {
    /// The class of HTTP answer this error calls for.
    pub fn rejection(&self) -> WebhookRejection {
        match self {
            WebhookError::MissingSignature => WebhookRejection::Unauthenticated,
            WebhookError::BadSignature
            | WebhookError::UntrustedCertificateUrl(_)
            | WebhookError::UnsupportedSignatureVersion(_) => WebhookRejection::Forged,
            WebhookError::Malformed(_) => WebhookRejection::Malformed,
            WebhookError::CertificateFetch(_) => WebhookRejection::Unavailable,
        }
    }

    /// The HTTP status for the route to answer with (401, 403, 400 or 503).
    pub fn http_status(&self) -> u16 {
        self.rejection().status_code()
    }

    /// Whether the request should be treated as not coming from the provider (401/403).
    pub fn is_forged(&self) -> bool {
        matches!(self.rejection(), WebhookRejection::Unauthenticated | WebhookRejection::Forged)
    }
}
