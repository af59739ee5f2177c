//! AWS SDK failures → [`ProvisioningError`] (SES and SNS share this).

use aws_sdk_sesv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{ProvisioningError, ProvisioningErrorKind};

pub(crate) fn from_sdk_error<E>(error: &SdkError<E>) -> ProvisioningError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            let err = context.err();
            let status = context.raw().status().as_u16();
            let kind = err.code().and_then(kind_for_code).unwrap_or_else(|| ProvisioningError::kind_for_status(status));
            let message = err.message().map(str::to_owned).unwrap_or_else(|| format!("HTTP {status}"));
            ProvisioningError::new(kind, err.code().map(str::to_owned), message)
        }
        SdkError::ResponseError(context) => {
            let status = context.raw().status().as_u16();
            ProvisioningError::new(
                ProvisioningError::kind_for_status(status),
                None,
                format!("unreadable answer (HTTP {status})"),
            )
        }
        SdkError::ConstructionFailure(_) => ProvisioningError::rejected(DisplayErrorContext(error).to_string()),
        _ => ProvisioningError::unavailable(DisplayErrorContext(error).to_string()),
    }
}

/// AWS error codes shared by SES and SNS that decide the kind regardless of status.
pub(crate) fn kind_for_code(code: &str) -> Option<ProvisioningErrorKind> {
    Some(match code {
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "AccessDenied"
        | "AccessDeniedException"
        | "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "AuthorizationError"
        | "InvalidSecurity"
        | "MissingAuthenticationToken"
        | "OptInRequired" => ProvisioningErrorKind::Unauthorized,
        "NotFoundException" | "NotFound" => ProvisioningErrorKind::NotFound,
        "TooManyRequestsException"
        | "Throttling"
        | "ThrottlingException"
        | "Throttled"
        | "InternalServiceErrorException"
        | "InternalError"
        | "InternalFailure"
        | "ServiceUnavailable" => ProvisioningErrorKind::Unavailable,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(kind_for_code("AuthorizationError"), Some(ProvisioningErrorKind::Unauthorized));
        assert_eq!(kind_for_code("UnrecognizedClientException"), Some(ProvisioningErrorKind::Unauthorized));
        assert_eq!(kind_for_code("NotFoundException"), Some(ProvisioningErrorKind::NotFound));
        assert_eq!(kind_for_code("Throttled"), Some(ProvisioningErrorKind::Unavailable));
        assert_eq!(kind_for_code("BadRequestException"), None);
    }
}
