//! A test message: one message through an active channel's primary provider, sent at once and
//! synchronously (not queued), so an operator sees immediately whether the channel really works.

use cpaas::send::{Adapter, SendOptions};
use cpaas::{Content, Recipient, SendError, SendMessageCommand, SendReceipt, TemplateContent};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::repository;
use super::validate;
use super::{ChannelStatus, ChannelType};
use crate::Communications;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestMessage {
    /// E.164 phone (SMS, WhatsApp) or email address.
    pub to: String,
    /// The text (SMS, WhatsApp inside the 24-hour window, email body).
    pub text: Option<String>,
    /// Email subject (default "Switchboard test message").
    pub subject: Option<String>,
    /// An approved WhatsApp template, e.g. `{"name": "hello_world", "language": "en_US"}`.
    pub template: Option<TestTemplate>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestTemplate {
    pub name: String,
    pub language: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestMessageReceipt {
    pub provider: String,
    /// The provider's id for the message.
    pub provider_message_id: String,
}

impl Communications {
    pub async fn send_test_message(
        &self,
        tenant: TenantId,
        id: Uuid,
        message: TestMessage,
    ) -> Result<TestMessageReceipt, ApiError> {
        let account = repository::find_account(&self.pool, tenant, id).await?;
        if account.status != ChannelStatus::Active {
            return Err(ApiError::conflict(
                Some("status"),
                format!("test messages need an active channel account; this one is {}", account.status.as_str()),
            ));
        }
        let (recipient, content) = test_content(account.channel_type, message)?;
        let primary = repository::primary_provider(&self.pool, tenant, id)
            .await?
            .ok_or_else(|| ApiError::conflict(None, "the channel account has no enabled provider"))?;
        let config = self.cpaas_config(tenant, &primary).await?;
        let options = SendOptions { request_timeout: self.endpoints.request_timeout, ..SendOptions::default() };
        let adapter = Adapter::new(&config, &self.http, &options)
            .map_err(|error| ApiError::validation("config", error.to_string()))?;
        let command = SendMessageCommand {
            correlation_id: format!("test-{}", Uuid::now_v7()),
            tenant_id: tenant.0,
            recipient,
            content,
        };
        let SendReceipt { provider, provider_message_id } = adapter.send(&command).await.map_err(send_error)?;
        tracing::info!(tenant_id = %tenant, channel_account_id = %id, %provider_message_id, "test message sent");
        Ok(TestMessageReceipt { provider: provider.as_str().to_owned(), provider_message_id })
    }
}

fn test_content(channel: ChannelType, message: TestMessage) -> Result<(Recipient, Content), ApiError> {
    let text = message.text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    match channel {
        ChannelType::Webchat => {
            Err(ApiError::validation("channel_type", "webchat messages go to live visitors, not to an address"))
        }
        ChannelType::Email => {
            let to = message.to.trim().to_ascii_lowercase();
            let valid = to.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
            if !valid {
                return Err(ApiError::validation("to", "must be an email address"));
            }
            let content = Content::Email {
                subject: message.subject.unwrap_or_else(|| "Switchboard test message".into()),
                text: Some(text.unwrap_or_else(|| "This is a test message from Switchboard.".into())),
                html: None,
                attachments: Vec::new(),
                in_reply_to: None,
            };
            Ok((Recipient::Email(to), content))
        }
        ChannelType::Sms | ChannelType::Whatsapp => {
            let to = validate::e164("to", message.to.trim())?;
            let content = match (message.template, text) {
                (Some(template), _) if channel == ChannelType::Whatsapp => Content::Template(TemplateContent {
                    name: template.name,
                    language: template.language,
                    body_parameters: Vec::new(),
                    components: None,
                }),
                (Some(_), _) => return Err(ApiError::validation("template", "templates are for WhatsApp")),
                (None, Some(body)) => Content::Text { body },
                (None, None) => return Err(ApiError::validation("text", "is required (or a template for WhatsApp)")),
            };
            Ok((Recipient::Phone(to), content))
        }
    }
}

/// What a failed test send tells the operator.
fn send_error(error: SendError) -> ApiError {
    match error {
        SendError::Permanent { code, reason } => {
            ApiError::validation("to", format!("the provider refused the message ({code}): {reason}"))
        }
        SendError::TenantBlocked { code, reason } => {
            ApiError::validation("config", format!("the provider refused the account ({code}): {reason}"))
        }
        SendError::RateLimited { reason, .. } => {
            ApiError::TooManyRequests { message: format!("the provider is throttling: {reason}"), retry_after_secs: 1 }
        }
        SendError::Retryable { reason, .. } => ApiError::BadGateway(format!("the provider failed: {reason}")),
        SendError::Unknown { reason } => {
            ApiError::BadGateway(format!("no answer from the provider; the message may still arrive: {reason}"))
        }
    }
}
