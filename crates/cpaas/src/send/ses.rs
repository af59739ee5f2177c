//! Amazon SES v2 `SendEmail` through aws-sdk-sesv2 (docs/providers/ses.md §1).
//!
//! Simple content (subject, text, html; UTF-8) when the mail has no attachments and answers
//! nothing; otherwise a Raw MIME message built by [`super::mime`]. `FromEmailAddress` is the
//! configured from address, `Destination.ToAddresses` the recipient, `ConfigurationSetName`
//! when configured (SES events flow through it), and `EmailTags` `sb_tenant` and
//! `sb_correlation` (echoed in every SES event's `mail.tags`). Only `Content::Email` to an email
//! recipient is supported. The receipt id is `MessageId`.
//!
//! ## Error codes
//! By the SDK's error metadata code (the `x-amzn-ErrorType` header or body `__type`/`code`);
//! an unlisted code falls back on the HTTP status. Transport failures: see
//! [`super::aws::classify_sdk_error`] (connect errors → Retryable, timeout after sending →
//! Unknown).
//!
//! | code | HTTP | class | why |
//! |---|---|---|---|
//! | `TooManyRequestsException` | 429 | RateLimited | send rate or daily quota ("Maximum sending rate exceeded") |
//! | `Throttling`, `ThrottlingException` | 400 | RateLimited | v1/Query names; harmless to accept |
//! | `LimitExceededException` | 400 | RateLimited | the notes: a quota-type failure, "treat as throttle: retry later" |
//! | `MessageRejected` | 400 | Permanent | invalid content, unverified sender or sandbox recipient |
//! | `MailFromDomainNotVerifiedException` | 400 | Permanent | custom MAIL FROM missing its MX |
//! | `BadRequestException` | 400 | Permanent | invalid input |
//! | `NotFoundException` | 404 | Permanent | unknown configuration set |
//! | `AccountSuspendedException` | 400 | TenantBlocked | sending permanently restricted |
//! | `SendingPausedException` | 400 | TenantBlocked | account or configuration set paused |
//! | `UnrecognizedClientException`, `InvalidClientTokenId` | 403 | TenantBlocked | unknown access key |
//! | `AccessDenied`, `AccessDeniedException` | 403 | TenantBlocked | IAM denies `ses:SendEmail` |
//! | `SignatureDoesNotMatch`, `InvalidSignatureException` | 403 | TenantBlocked | wrong secret key |
//! | `ExpiredToken`, `ExpiredTokenException` | 403 | TenantBlocked | |
//! | `InternalServiceErrorException`, `InternalFailure`, `ServiceUnavailable` | 5xx | Retryable | |

use std::time::Duration;

use aws_sdk_sesv2::operation::send_email::SendEmailInput;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Body, Content as SesText, Destination, EmailContent, Message, MessageTag, RawMessage};
use chrono::Utc;

use super::aws::{AwsClientSettings, classify_sdk_error};
use super::class::ErrorClass;
use super::compat::{invalid_recipient, recipient_kind, unsupported_content};
use super::mime::{self, MailParts};
use super::{ConfigError, SendOptions};
use crate::{Content, Provider, Recipient, SendError, SendMessageCommand, SendReceipt, SesConfig};

#[derive(Debug, Clone)]
pub struct SesAdapter {
    /// Internally reference-counted: cloning shares the connection pool and configuration.
    client: aws_sdk_sesv2::Client,
    from_address: String,
    configuration_set: Option<String>,
}

/// Builds the SES client for a channel account: static credentials, region, endpoint override,
/// no SDK retries, our timeouts.
pub fn build_client(config: &SesConfig, options: &SendOptions) -> Result<aws_sdk_sesv2::Client, ConfigError> {
    let settings = AwsClientSettings::new(
        "ses",
        &config.region,
        config.endpoint_url.as_deref(),
        &config.access_key_id,
        &config.secret_access_key,
        options,
    )?;
    Ok(aws_sdk_sesv2::Client::new(&settings.sdk_config()))
}

impl SesAdapter {
    pub fn new(config: &SesConfig, options: &SendOptions) -> Result<Self, ConfigError> {
        mime::format_mailbox(&config.from_address)
            .map_err(|e| ConfigError::new("ses", format!("from_address: {e}")))?;
        Ok(SesAdapter {
            client: build_client(config, options)?,
            from_address: config.from_address.clone(),
            configuration_set: config.configuration_set.clone().filter(|s| !s.is_empty()),
        })
    }

    pub async fn send(&self, command: &SendMessageCommand) -> Result<SendReceipt, SendError> {
        let input = send_email_input(&self.from_address, self.configuration_set.as_deref(), command)?;
        let output = self
            .client
            .send_email()
            .set_from_email_address(input.from_email_address)
            .set_destination(input.destination)
            .set_content(input.content)
            .set_email_tags(input.email_tags)
            .set_configuration_set_name(input.configuration_set_name)
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e, classify_error))?;
        match output.message_id() {
            Some(id) if !id.is_empty() => {
                Ok(SendReceipt { provider: Provider::Ses, provider_message_id: id.to_owned() })
            }
            _ => Err(SendError::Unknown { reason: "SES answered without a MessageId".into() }),
        }
    }
}

/// The `SendEmail` request for a command (pure: no network, no clock except the Raw `Date`).
pub fn send_email_input(
    from: &str,
    configuration_set: Option<&str>,
    command: &SendMessageCommand,
) -> Result<SendEmailInput, SendError> {
    let Recipient::Email(to) = &command.recipient else {
        return Err(unsupported_content("SES", &format!("email to {}", recipient_kind(&command.recipient))));
    };
    mime::format_mailbox(to).map_err(|e| invalid_recipient(e.to_string()))?;
    let Content::Email { subject, text, html, attachments, in_reply_to } = &command.content else {
        return Err(unsupported_content("SES", content_name(&command.content)));
    };
    let content = if attachments.is_empty() && in_reply_to.is_none() {
        simple_content(subject, text.as_deref(), html.as_deref())
    } else {
        let parts = MailParts {
            from,
            to,
            subject,
            text: text.as_deref(),
            html: html.as_deref(),
            attachments,
            in_reply_to: in_reply_to.as_deref(),
        };
        let raw = mime::build_message(&parts, Utc::now(), &mime::new_boundary_id())
            .map_err(|e| SendError::Permanent { code: "invalid_message".into(), reason: e.to_string() })?;
        raw_content(raw.into_bytes())?
    };
    SendEmailInput::builder()
        .from_email_address(from)
        .destination(Destination::builder().to_addresses(to.clone()).build())
        .content(content)
        .set_email_tags(Some(email_tags(command)))
        .set_configuration_set_name(configuration_set.map(str::to_owned))
        .build()
        .map_err(|e| SendError::Permanent { code: "request_construction".into(), reason: e.to_string() })
}

fn content_name(content: &Content) -> &'static str {
    match content {
        Content::Text { .. } => "plain text content (use Content::Email)",
        Content::Template(_) => "WhatsApp template content",
        Content::Media { .. } => "media content",
        Content::Email { .. } => "email content",
    }
}

fn simple_content(subject: &str, text: Option<&str>, html: Option<&str>) -> EmailContent {
    let utf8 = |data: &str| SesText::builder().data(data).charset("UTF-8").build().ok();
    let body = Body::builder().set_text(text.and_then(utf8)).set_html(html.and_then(utf8)).build();
    EmailContent::builder().simple(Message::builder().set_subject(utf8(subject)).body(body).build()).build()
}

fn raw_content(mime: Vec<u8>) -> Result<EmailContent, SendError> {
    let raw = RawMessage::builder()
        .data(Blob::new(mime))
        .build()
        .map_err(|e| SendError::Permanent { code: "request_construction".into(), reason: e.to_string() })?;
    Ok(EmailContent::builder().raw(raw).build())
}

/// Tags SES copies into every event of this mail. Values must be ASCII letters, digits, `_` and
/// `-` (at most 256): a correlation id that is not is left out rather than failing the send.
fn email_tags(command: &SendMessageCommand) -> Vec<MessageTag> {
    let valid = |v: &str| {
        !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let mut tags = vec![("sb_tenant", command.tenant_id.to_string())];
    if valid(&command.correlation_id) {
        tags.push(("sb_correlation", command.correlation_id.clone()));
    }
    tags.into_iter().filter_map(|(name, value)| MessageTag::builder().name(name).value(value).build().ok()).collect()
}

/// Classifies an SES service error (the table in the module documentation).
pub fn classify_error(
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    retry_after: Option<Duration>,
) -> SendError {
    let class = code.and_then(code_class).unwrap_or_else(|| ErrorClass::from_http_status(status));
    let code_text = code.map(str::to_owned).unwrap_or_else(|| format!("http_{status}"));
    let reason = message.map(str::to_owned).unwrap_or_else(|| format!("HTTP {status} without a message"));
    class.into_error(code_text, reason, retry_after)
}

pub(crate) fn code_class(code: &str) -> Option<ErrorClass> {
    Some(match code {
        "TooManyRequestsException" | "Throttling" | "ThrottlingException" | "LimitExceededException" => {
            ErrorClass::RateLimited
        }
        "MessageRejected" | "MailFromDomainNotVerifiedException" | "BadRequestException" | "NotFoundException" => {
            ErrorClass::Permanent
        }
        "AccountSuspendedException"
        | "SendingPausedException"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "AccessDenied"
        | "AccessDeniedException"
        | "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "ExpiredToken"
        | "ExpiredTokenException" => ErrorClass::TenantBlocked,
        "InternalServiceErrorException" | "InternalFailure" | "ServiceUnavailable" => ErrorClass::Retryable,
        _ => return None,
    })
}

#[cfg(test)]
#[path = "ses_tests.rs"]
mod tests;
