//! Message content: what the send API accepts, checked at accept time against every channel of
//! the chain (a message that cannot be sent is refused now, not failed later), and what is
//! stored per message and handed to the provider adapters.

use base64::Engine;
use kernel::error::ApiError;
use serde::{Deserialize, Serialize};

use super::model::Channel;

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentInput {
    /// Plain text: the SMS or WhatsApp body, or the email's text part.
    pub text: Option<String>,
    /// Email subject.
    pub subject: Option<String>,
    /// Email HTML part.
    pub html: Option<String>,
    /// Email attachments.
    pub attachments: Option<Vec<AttachmentInput>>,
    /// WhatsApp media by URL.
    pub media: Option<MediaInput>,
    /// A notification template by name (see `/api/v1/templates`).
    pub template: Option<TemplateRef>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    pub filename: String,
    pub content_type: String,
    /// Base64.
    pub data: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaInput {
    pub kind: MediaKind,
    pub url: String,
    pub caption: Option<String>,
    pub filename: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Document,
    Audio,
    Video,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    pub name: String,
    pub locale: Option<String>,
    #[schema(value_type = Object)]
    pub variables: Option<serde_json::Value>,
}

/// The content of one message on one channel, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    Text {
        text: String,
    },
    Media {
        kind: MediaKind,
        url: String,
        caption: Option<String>,
        filename: Option<String>,
    },
    Email {
        subject: String,
        text: Option<String>,
        html: Option<String>,
        attachments: Vec<StoredAttachment>,
        /// An agent's reply: the answered mail's References then its Message-ID, space-separated
        /// (sent as `References`, the last one as `In-Reply-To`), so the customer's client
        /// threads it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_reply_to: Option<String>,
    },
    /// An approved Meta template (WhatsApp outside the 24-hour window).
    WhatsappTemplate {
        name: String,
        language: String,
        #[serde(default)]
        body_parameters: Vec<String>,
        components: Option<serde_json::Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAttachment {
    pub filename: String,
    pub content_type: String,
    /// Base64, as received.
    pub data: String,
}

const MAX_TEXT: usize = 4096;
const MAX_SUBJECT: usize = 998;

/// The content `input` means on `channel`, or a 422 naming the field that is missing or wrong.
pub fn for_channel(input: &ContentInput, channel: Channel) -> Result<MessageContent, ApiError> {
    if input.template.is_some() {
        return Err(ApiError::internal("templated content is rendered by the templates module"));
    }
    let text = input.text.as_deref().map(str::trim).filter(|t| !t.is_empty());
    if text.is_some_and(|t| t.chars().count() > MAX_TEXT) {
        return Err(ApiError::validation("content.text", format!("must be at most {MAX_TEXT} characters")));
    }
    match channel {
        Channel::Sms | Channel::Webchat => {
            if input.media.is_some() {
                let message = format!("media cannot be sent on the {} channel", channel.as_str());
                return Err(ApiError::validation("content.media", message));
            }
            let text = text.ok_or_else(|| required("content.text", channel))?;
            Ok(MessageContent::Text { text: text.to_owned() })
        }
        Channel::Whatsapp => match &input.media {
            Some(media) => {
                let url_ok = media.url.starts_with("https://") || media.url.starts_with("http://");
                if !url_ok {
                    return Err(ApiError::validation("content.media.url", "must be an http(s) URL"));
                }
                Ok(MessageContent::Media {
                    kind: media.kind,
                    url: media.url.clone(),
                    caption: media.caption.clone().or_else(|| text.map(str::to_owned)),
                    filename: media.filename.clone(),
                })
            }
            None => {
                Ok(MessageContent::Text { text: text.ok_or_else(|| required("content.text", channel))?.to_owned() })
            }
        },
        Channel::Email => {
            let subject = input
                .subject
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| required("content.subject", channel))?;
            if subject.chars().count() > MAX_SUBJECT || subject.contains(['\r', '\n']) {
                return Err(ApiError::validation("content.subject", "must be one line of at most 998 characters"));
            }
            let html = input.html.clone().filter(|h| !h.trim().is_empty());
            if text.is_none() && html.is_none() {
                return Err(required("content.text", channel));
            }
            Ok(MessageContent::Email {
                subject: subject.to_owned(),
                text: text.map(str::to_owned),
                html,
                attachments: attachments(input.attachments.as_deref().unwrap_or_default())?,
                in_reply_to: None,
            })
        }
    }
}

fn required(field: &str, channel: Channel) -> ApiError {
    ApiError::validation(field, format!("is required for the {} channel", channel.as_str()))
}

fn attachments(inputs: &[AttachmentInput]) -> Result<Vec<StoredAttachment>, ApiError> {
    inputs
        .iter()
        .enumerate()
        .map(|(index, attachment)| {
            let field = |name: &str| format!("content.attachments[{index}].{name}");
            if attachment.filename.trim().is_empty() || attachment.filename.contains(['/', '\\', '\r', '\n']) {
                return Err(ApiError::validation(field("filename"), "must be a plain file name"));
            }
            if !attachment.content_type.contains('/') {
                return Err(ApiError::validation(field("content_type"), "must be a MIME type such as application/pdf"));
            }
            base64::engine::general_purpose::STANDARD
                .decode(&attachment.data)
                .map_err(|_| ApiError::validation(field("data"), "must be base64"))?;
            Ok(StoredAttachment {
                filename: attachment.filename.clone(),
                content_type: attachment.content_type.clone(),
                data: attachment.data.clone(),
            })
        })
        .collect()
}

impl MessageContent {
    /// The provider-agnostic content the adapters take.
    pub fn to_cpaas(&self) -> Result<cpaas::Content, String> {
        Ok(match self {
            Self::Text { text } => cpaas::Content::Text { body: text.clone() },
            Self::Media { kind, url, caption, filename } => cpaas::Content::Media {
                kind: match kind {
                    MediaKind::Image => cpaas::MediaKind::Image,
                    MediaKind::Document => cpaas::MediaKind::Document,
                    MediaKind::Audio => cpaas::MediaKind::Audio,
                    MediaKind::Video => cpaas::MediaKind::Video,
                },
                url: url.clone(),
                caption: caption.clone(),
                filename: filename.clone(),
            },
            Self::WhatsappTemplate { name, language, body_parameters, components } => {
                cpaas::Content::Template(cpaas::TemplateContent {
                    name: name.clone(),
                    language: language.clone(),
                    body_parameters: body_parameters.clone(),
                    components: components.clone(),
                })
            }
            Self::Email { subject, text, html, attachments, in_reply_to } => cpaas::Content::Email {
                subject: subject.clone(),
                text: text.clone(),
                html: html.clone(),
                attachments: attachments
                    .iter()
                    .map(|a| {
                        let data =
                            base64::engine::general_purpose::STANDARD.decode(&a.data).map_err(|e| e.to_string())?;
                        Ok(cpaas::Attachment {
                            filename: a.filename.clone(),
                            content_type: a.content_type.clone(),
                            data,
                        })
                    })
                    .collect::<Result<_, String>>()?,
                in_reply_to: in_reply_to.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn field(result: Result<MessageContent, ApiError>) -> String {
        match result {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn text_serves_sms_and_whatsapp_but_email_needs_a_subject() {
        let input = ContentInput { text: Some("Your bus leaves at 9".into()), ..Default::default() };
        assert_eq!(
            for_channel(&input, Channel::Sms).unwrap(),
            MessageContent::Text { text: "Your bus leaves at 9".into() }
        );
        assert!(for_channel(&input, Channel::Whatsapp).is_ok());
        assert_eq!(field(for_channel(&input, Channel::Email)), "content.subject");
        let with_subject = ContentInput { subject: Some("Departure".into()), ..input };
        assert!(matches!(for_channel(&with_subject, Channel::Email).unwrap(), MessageContent::Email { .. }));
    }

    #[test]
    fn media_is_for_whatsapp() {
        let input = ContentInput {
            media: Some(MediaInput {
                kind: MediaKind::Document,
                url: "https://x.example/t.pdf".into(),
                caption: None,
                filename: None,
            }),
            ..Default::default()
        };
        assert!(for_channel(&input, Channel::Whatsapp).is_ok());
        assert_eq!(field(for_channel(&input, Channel::Sms)), "content.media");
    }

    #[test]
    fn attachments_are_checked() {
        let input = ContentInput {
            subject: Some("Ticket".into()),
            text: Some("Attached".into()),
            attachments: Some(vec![AttachmentInput {
                filename: "t.pdf".into(),
                content_type: "application/pdf".into(),
                data: "not base64!".into(),
            }]),
            ..Default::default()
        };
        assert_eq!(field(for_channel(&input, Channel::Email)), "content.attachments[0].data");
    }

    #[test]
    fn stored_content_becomes_cpaas_content() {
        let email = MessageContent::Email {
            subject: "S".into(),
            text: Some("T".into()),
            html: None,
            attachments: vec![StoredAttachment {
                filename: "a.txt".into(),
                content_type: "text/plain".into(),
                data: "aGk=".into(),
            }],
            in_reply_to: None,
        };
        match email.to_cpaas().unwrap() {
            cpaas::Content::Email { attachments, .. } => assert_eq!(attachments[0].data, b"hi"),
            other => panic!("{other:?}"),
        }
    }
}
