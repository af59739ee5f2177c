//! What the AWS SDK adapters (SES, SNS) share: how their clients are configured and how an
//! `SdkError` becomes a [`SendError`] before the provider-specific code table is consulted.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_sesv2::config::retry::RetryConfig;
use aws_sdk_sesv2::config::timeout::TimeoutConfig;
use aws_sdk_sesv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, SendOptions};
use crate::SendError;

/// The settings both AWS clients are built from. `RetryConfig`, `TimeoutConfig`, `Credentials`
/// and `Region` are the same smithy/aws-types types in every SDK crate.
pub(crate) struct AwsClientSettings {
    pub region: aws_sdk_sesv2::config::Region,
    pub endpoint_url: Option<String>,
    pub credentials: Credentials,
    pub retry: RetryConfig,
    pub timeouts: TimeoutConfig,
}

impl AwsClientSettings {
    pub fn new(
        provider: &'static str,
        region: &str,
        endpoint_url: Option<&str>,
        access_key_id: &str,
        secret_access_key: &SecretString,
        options: &SendOptions,
    ) -> Result<Self, ConfigError> {
        if region.trim().is_empty() {
            return Err(ConfigError::new(provider, "region is empty"));
        }
        if access_key_id.trim().is_empty() || secret_access_key.expose_secret().is_empty() {
            return Err(ConfigError::new(provider, "access key id or secret access key is empty"));
        }
        if let Some(url) = endpoint_url {
            url::Url::parse(url).map_err(|e| ConfigError::new(provider, format!("endpoint_url is not a URL: {e}")))?;
        }
        Ok(AwsClientSettings {
            region: aws_sdk_sesv2::config::Region::new(region.to_owned()),
            endpoint_url: endpoint_url.map(str::to_owned),
            // Static credentials from the channel account; `Credentials`' Debug hides the secret.
            credentials: Credentials::new(
                access_key_id,
                secret_access_key.expose_secret(),
                None,
                None,
                "switchboard-channel-account",
            ),
            // Our pipeline owns retries (with its own backoff, budgets and failover); SDK retries
            // would multiply them and hide throttling from it.
            retry: RetryConfig::disabled(),
            timeouts: timeout_config(options),
        })
    }
}

impl AwsClientSettings {
    /// One `SdkConfig` from which both SDKs' clients are built (`Client::new(&sdk_config)`).
    pub fn sdk_config(self) -> aws_config::SdkConfig {
        let mut builder = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(self.region)
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(self.credentials))
            .retry_config(self.retry)
            .timeout_config(self.timeouts);
        if let Some(url) = self.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        builder.build()
    }
}

/// The connect timeout makes "never connected" a dispatch failure (retryable); the operation
/// timeout bounds the whole call and, when it fires, the outcome is unknown.
fn timeout_config(options: &SendOptions) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(options.connect_timeout)
        .operation_timeout(options.request_timeout)
        .operation_attempt_timeout(options.request_timeout)
        .build()
}

/// Classifies an SDK failure. Service errors (the provider answered with an error code) go to
/// `classify_service(http_status, code, message, retry_after)`; the rest is transport:
///
/// | SdkError | class | why |
/// |---|---|---|
/// | `ConstructionFailure` | Permanent `request_construction` | our input was invalid; nothing was sent |
/// | `DispatchFailure` (connect error, connect timeout, I/O) | Retryable | the request did not get through (the SDK classifies these as transient too) |
/// | `TimeoutError` (operation timeout) | Unknown | the request may have been accepted |
/// | `ResponseError` with 2xx | Unknown | accepted, probably, but we cannot read the id |
/// | `ResponseError` otherwise | `classify_service(status, None, …)` | the status decides |
pub(crate) fn classify_sdk_error<E>(
    error: &SdkError<E>,
    classify_service: fn(u16, Option<&str>, Option<&str>, Option<Duration>) -> SendError,
) -> SendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = DisplayErrorContext(error).to_string();
    match error {
        SdkError::ConstructionFailure(_) => SendError::Permanent { code: "request_construction".into(), reason },
        SdkError::DispatchFailure(_) => {
            SendError::Retryable { reason: format!("request not sent: {reason}"), retry_after: None }
        }
        SdkError::TimeoutError(_) => {
            SendError::Unknown { reason: format!("timed out waiting for the provider: {reason}") }
        }
        SdkError::ResponseError(context) => {
            let status = context.raw().status().as_u16();
            if (200..300).contains(&status) {
                SendError::Unknown { reason: format!("HTTP {status} with an unreadable body: {reason}") }
            } else {
                classify_service(status, None, None, retry_after(context.raw()))
            }
        }
        SdkError::ServiceError(context) => {
            let err = context.err();
            classify_service(context.raw().status().as_u16(), err.code(), err.message(), retry_after(context.raw()))
        }
        // `SdkError` is non-exhaustive; a future variant is treated as the cautious case.
        _ => SendError::Unknown { reason },
    }
}

fn retry_after(response: &aws_sdk_sesv2::config::http::HttpResponse) -> Option<Duration> {
    response.headers().get("retry-after").and_then(|v| super::http::parse_retry_after(v, Utc::now()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use secrecy::SecretString;

    #[test]
    fn settings_disable_retries_and_set_both_timeouts() {
        let options = SendOptions { request_timeout: Duration::from_secs(7), connect_timeout: Duration::from_secs(2) };
        let secret = SecretString::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        let s =
            AwsClientSettings::new("ses", "eu-west-1", Some("http://127.0.0.1:9"), "AKIDEXAMPLE", &secret, &options)
                .unwrap();
        assert_eq!(s.retry.max_attempts(), 1);
        assert_eq!(s.timeouts.connect_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(s.timeouts.operation_timeout(), Some(Duration::from_secs(7)));
        // The secret never shows in Debug output.
        assert!(!format!("{:?}", s.credentials).contains("EXAMPLEKEY"));
    }

    #[test]
    fn settings_reject_bad_endpoint_and_empty_region() {
        let secret = SecretString::from("x");
        let options = SendOptions::default();
        assert!(AwsClientSettings::new("ses", "", None, "AK", &secret, &options).is_err());
        assert!(AwsClientSettings::new("ses", "us-east-1", Some("not a url"), "AK", &secret, &options).is_err());
    }
}
