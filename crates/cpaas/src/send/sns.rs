//! Amazon SNS SMS `Publish` through aws-sdk-sns (docs/providers/sns.md §1): `PhoneNumber`,
//! `Message`, and the message attributes `AWS.SNS.SMS.SMSType` (always), `AWS.SNS.SMS.SenderID`
//! and `AWS.MM.SMS.OriginationNumber` (when configured). Only text to an E.164 phone number is
//! supported (SNS has no MMS). The receipt id is `MessageId`.
//!
//! Note: a publish to an opted-out number *succeeds* (notes §1.5); the failure only shows in
//! delivery logs. `OptedOut` is tabled anyway in case the service starts returning it.
//!
//! ## Error codes
//! By the wire `Code` (`ErrorResponse/Error/Code`); an unlisted code falls back on the HTTP
//! status. Transport failures: see [`super::aws::classify_sdk_error`].
//!
//! | code | HTTP | class | why |
//! |---|---|---|---|
//! | `Throttling` | 400 | RateLimited | what Publish returns over the TPS quota ("Rate exceeded") |
//! | `Throttled` | 429 | RateLimited | opt-out/sandbox APIs' throttle |
//! | `KMSThrottling` | 400 | RateLimited | |
//! | `OptedOut` | 400 | Permanent | recipient opted out |
//! | `InvalidParameter` | 400 | Permanent | bad phone number, message… — **but** TenantBlocked when the message names `OriginationNumber` or `SenderID`, our configuration (an unknown origination number fails every send) |
//! | `ParameterValueInvalid` / `InvalidParameterValue` | 400 | Permanent | (the wire code is `ParameterValueInvalid`) |
//! | `ValidationException` | 400 | Permanent | |
//! | `NotFound` | 404 | Permanent | |
//! | `AuthorizationError` | 403 | TenantBlocked | IAM denies `sns:Publish` |
//! | `InvalidClientTokenId`, `UnrecognizedClientException` | 403 | TenantBlocked | unknown access key |
//! | `AccessDenied`, `AccessDeniedException` | 403 | TenantBlocked | |
//! | `SignatureDoesNotMatch`, `InvalidSecurity` | 403 | TenantBlocked | wrong secret key / signature |
//! | `ExpiredToken` | 403 | TenantBlocked | |
//! | `OptInRequired` | 403 | TenantBlocked | account not subscribed to SNS |
//! | `KMSAccessDenied`, `KMSDisabled`, `KMSInvalidState`, `KMSNotFound`, `KMSOptInRequired` | 400/403 | TenantBlocked | account configuration |
//! | `InternalError`, `InternalFailure`, `ServiceUnavailable` | 5xx | Retryable | |

use std::time::Duration;

use aws_sdk_sns::types::MessageAttributeValue;

use super::aws::{AwsClientSettings, classify_sdk_error};
use super::class::ErrorClass;
use super::compat::{e164_phone, unsupported_content};
use super::{ConfigError, SendOptions};
use crate::{Content, Provider, SendError, SendMessageCommand, SendReceipt, SmsType, SnsConfig};

pub const ATTR_SMS_TYPE: &str = "AWS.SNS.SMS.SMSType";
pub const ATTR_SENDER_ID: &str = "AWS.SNS.SMS.SenderID";
pub const ATTR_ORIGINATION_NUMBER: &str = "AWS.MM.SMS.OriginationNumber";

#[derive(Debug, Clone)]
pub struct SnsAdapter {
    client: aws_sdk_sns::Client,
    sender: SmsSender,
}

/// The account's sending settings that become message attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsSender {
    pub sms_type: SmsType,
    pub sender_id: Option<String>,
    pub origination_number: Option<String>,
}

impl SmsSender {
    pub fn from_config(config: &SnsConfig) -> Self {
        SmsSender {
            sms_type: config.sms_type,
            sender_id: config.sender_id.clone().filter(|s| !s.is_empty()),
            origination_number: config.origination_number.clone().filter(|s| !s.is_empty()),
        }
    }
}

/// One SMS publish, before it becomes an SDK call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsPublish {
    pub phone_number: String,
    pub message: String,
    /// (name, String value), in a fixed order.
    pub attributes: Vec<(&'static str, String)>,
}

/// Builds the SNS client for a channel account: static credentials, region, endpoint override,
/// no SDK retries, our timeouts.
pub fn build_client(config: &SnsConfig, options: &SendOptions) -> Result<aws_sdk_sns::Client, ConfigError> {
    let settings = AwsClientSettings::new(
        "sns",
        &config.region,
        config.endpoint_url.as_deref(),
        &config.access_key_id,
        &config.secret_access_key,
        options,
    )?;
    Ok(aws_sdk_sns::Client::new(&settings.sdk_config()))
}

impl SnsAdapter {
    pub fn new(config: &SnsConfig, options: &SendOptions) -> Result<Self, ConfigError> {
        let sender = SmsSender::from_config(config);
        if let Some(number) = &sender.origination_number
            && !super::compat::is_e164(number)
        {
            return Err(ConfigError::new("sns", "origination_number is not in E.164 form"));
        }
        Ok(SnsAdapter { client: build_client(config, options)?, sender })
    }

    pub async fn send(&self, command: &SendMessageCommand) -> Result<SendReceipt, SendError> {
        let publish = build_publish(&self.sender, command)?;
        let mut request = self.client.publish().phone_number(publish.phone_number).message(publish.message);
        for (name, value) in publish.attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| SendError::Permanent { code: "request_construction".into(), reason: e.to_string() })?;
            request = request.message_attributes(name, value);
        }
        let output = request.send().await.map_err(|e| classify_sdk_error(&e, classify_error))?;
        match output.message_id() {
            Some(id) if !id.is_empty() => {
                Ok(SendReceipt { provider: Provider::Sns, provider_message_id: id.to_owned() })
            }
            _ => Err(SendError::Unknown { reason: "SNS answered without a MessageId".into() }),
        }
    }
}

/// The publish for a command (pure).
pub fn build_publish(sender: &SmsSender, command: &SendMessageCommand) -> Result<SmsPublish, SendError> {
    let phone_number = e164_phone("SNS SMS", &command.recipient)?.to_owned();
    let message = match &command.content {
        Content::Text { body } => body.clone(),
        Content::Template(_) => return Err(unsupported_content("SNS SMS", "WhatsApp template content")),
        Content::Media { .. } => return Err(unsupported_content("SNS SMS", "media content (no MMS)")),
        Content::Email { .. } => return Err(unsupported_content("SNS SMS", "email content")),
    };
    let sms_type = match sender.sms_type {
        SmsType::Transactional => "Transactional",
        SmsType::Promotional => "Promotional",
    };
    let mut attributes = vec![(ATTR_SMS_TYPE, sms_type.to_owned())];
    if let Some(id) = &sender.sender_id {
        attributes.push((ATTR_SENDER_ID, id.clone()));
    }
    if let Some(number) = &sender.origination_number {
        attributes.push((ATTR_ORIGINATION_NUMBER, number.clone()));
    }
    Ok(SmsPublish { phone_number, message, attributes })
}

/// Classifies an SNS service error (the table in the module documentation).
pub fn classify_error(
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    retry_after: Option<Duration>,
) -> SendError {
    let class = code
        .and_then(|c| code_class(c, message.unwrap_or_default()))
        .unwrap_or_else(|| ErrorClass::from_http_status(status));
    let code_text = code.map(str::to_owned).unwrap_or_else(|| format!("http_{status}"));
    let reason = message.map(str::to_owned).unwrap_or_else(|| format!("HTTP {status} without a message"));
    class.into_error(code_text, reason, retry_after)
}

pub(crate) fn code_class(code: &str, message: &str) -> Option<ErrorClass> {
    Some(match code {
        "Throttling" | "Throttled" | "KMSThrottling" => ErrorClass::RateLimited,
        // Our configured sender, not this message, is what SNS refuses.
        "InvalidParameter" | "ParameterValueInvalid" | "InvalidParameterValue"
            if message.contains("OriginationNumber") || message.contains("SenderID") =>
        {
            ErrorClass::TenantBlocked
        }
        "OptedOut"
        | "InvalidParameter"
        | "ParameterValueInvalid"
        | "InvalidParameterValue"
        | "ValidationException"
        | "NotFound" => ErrorClass::Permanent,
        "AuthorizationError"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "AccessDenied"
        | "AccessDeniedException"
        | "SignatureDoesNotMatch"
        | "InvalidSecurity"
        | "ExpiredToken"
        | "OptInRequired"
        | "KMSAccessDenied"
        | "KMSDisabled"
        | "KMSInvalidState"
        | "KMSNotFound"
        | "KMSOptInRequired" => ErrorClass::TenantBlocked,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" => ErrorClass::Retryable,
        _ => return None,
    })
}

#[cfg(test)]
#[path = "sns_tests.rs"]
mod tests;
