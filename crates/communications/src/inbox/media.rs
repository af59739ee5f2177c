//! `GET /api/v1/messages/{id}/media`: the bytes of an inbound message's media, fetched from the
//! provider on demand with the tenant's credentials and passed on as they arrive.
//!
//! We keep no copy: providers keep media for a while (Meta's ids last about 30 days, Twilio keeps
//! MMS media until deleted), and storing every attachment would make us a file store with its
//! own retention problems. The price is that an old medium may be gone (a 502 naming the
//! provider).
//!
//! What a contact sends is hostile: the answer is always a download (`attachment`, never
//! `inline`), `nosniff`, and sandboxed should a browser render it anyway; the file name is
//! cleaned before it goes into a header.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cpaas::media::{FetchedMedia, MediaError, MediaFetcher, MediaSource};
use cpaas::{InboundContent, ProviderConfig};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Path, Query};
use serde::Deserialize;
use uuid::Uuid;

use crate::Communications;
use crate::channels::repository::ProviderRow;
use crate::channels::{ChannelType, ProviderKind};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MediaParams {
    /// Which medium of the message (0, the default, is the first).
    pub index: Option<usize>,
}

/// One medium of a message, as the provider named it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Medium {
    media_id: Option<String>,
    url: Option<String>,
    mime_type: Option<String>,
    filename: Option<String>,
}

/// Downloads the media of an inbound message (WhatsApp through Meta, MMS through Twilio).
/// The body is the provider's bytes with its content type, as an attachment.
#[utoipa::path(
    get, path = "/api/v1/messages/{id}/media", tag = "inbox", params(("id" = Uuid, Path), MediaParams),
    responses(
        (status = 200, content_type = "application/octet-stream", description = "The media's bytes, as an attachment with the provider's content type"),
        (status = 404, body = ErrorBody, description = "No such message, or it has no media"),
        (status = 409, body = ErrorBody, description = "No provider configuration of the tenant can fetch it"),
        (status = 422, body = ErrorBody, description = "`index` is beyond the message's media"),
        (status = 502, body = ErrorBody, description = "The provider failed, refused, or the media is over 100 MiB"),
    )
)]
pub async fn download(
    State(module): State<Communications>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(params): Query<MediaParams>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_id;
    let message = sqlx::query!(
        r#"SELECT m.provider, m.channel, m.content, c.channel_account_id AS "channel_account_id?"
           FROM communications.messages m
           LEFT JOIN communications.conversations c ON c.id = m.conversation_id AND c.tenant_id = m.tenant_id
           WHERE m.tenant_id = $1 AND m.id = $2 AND m.direction = 'inbound'"#,
        tenant.0,
        id,
    )
    .fetch_optional(&module.pool)
    .await?;
    // Outbound media are links we were given: the caller has them already.
    let Some(message) = message else {
        let exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM communications.messages WHERE tenant_id = $1 AND id = $2) AS "exists!""#,
            tenant.0,
            id,
        )
        .fetch_one(&module.pool)
        .await?;
        return Err(ApiError::NotFound(if exists { "media" } else { "message" }));
    };
    let media = media_of(&message.content);
    if media.is_empty() {
        return Err(ApiError::NotFound("media"));
    }
    let index = params.index.unwrap_or(0);
    let medium = media.get(index).ok_or_else(|| {
        ApiError::validation("index", format!("the message has {} media item(s); index counts from 0", media.len()))
    })?;
    let provider = match message.provider.as_deref() {
        Some("meta") => ProviderKind::Meta,
        Some("twilio") => ProviderKind::Twilio,
        _ => return Err(ApiError::NotFound("media")),
    };
    let channel = if message.channel == "whatsapp" { ChannelType::Whatsapp } else { ChannelType::Sms };
    let row = provider_row(&module, tenant.0, provider, channel, message.channel_account_id).await?;
    let config = module.cpaas_config(tenant, &row).await?;
    let source = match (&config, medium) {
        (ProviderConfig::Meta(config), Medium { media_id: Some(media_id), .. }) => {
            MediaSource::Meta { config, media_id }
        }
        (ProviderConfig::Twilio(config), Medium { url: Some(url), .. }) => MediaSource::Twilio { config, url },
        _ => return Err(ApiError::NotFound("media")),
    };
    let fetcher = MediaFetcher::shared().map_err(ApiError::internal)?;
    let fetched = fetcher.fetch(source).await.map_err(|error| provider_failure(id, &error))?;
    Ok(respond(id, fetched, medium))
}

/// The media items of stored inbound content (a Twilio MMS is stored one message per item, so
/// today every message has at most one).
fn media_of(content: &serde_json::Value) -> Vec<Medium> {
    match serde_json::from_value::<InboundContent>(content.clone()) {
        Ok(InboundContent::Media { media_id, url, mime_type, filename, .. }) if media_id.is_some() || url.is_some() => {
            vec![Medium { media_id, url, mime_type, filename }]
        }
        _ => Vec::new(),
    }
}

/// The tenant's configuration of `provider`: the one of the conversation's account first, then
/// the channel's other non-revoked accounts; enabled before disabled (a disabled provider's
/// credentials still open its media), then by priority.
async fn provider_row(
    module: &Communications,
    tenant: Uuid,
    provider: ProviderKind,
    channel: ChannelType,
    account: Option<Uuid>,
) -> Result<ProviderRow, ApiError> {
    let row = sqlx::query_as!(
        ProviderRow,
        r#"SELECT p.id, p.tenant_id, p.channel_account_id, p.channel_type AS "channel_type: ChannelType",
                  p.provider AS "provider: ProviderKind", p.priority, p.enabled, p.settings, p.secrets, p.masks,
                  p.created_at, p.updated_at
           FROM communications.provider_configs p
           JOIN communications.channel_accounts a ON a.id = p.channel_account_id AND a.tenant_id = p.tenant_id
           WHERE p.tenant_id = $1 AND p.provider = $2 AND a.channel_type = $3 AND a.status <> 'revoked'
           ORDER BY (a.id IS NOT DISTINCT FROM $4) DESC, p.enabled DESC, p.priority
           LIMIT 1"#,
        tenant,
        provider.as_str(),
        channel.as_str(),
        account,
    )
    .fetch_optional(&module.pool)
    .await?;
    row.ok_or_else(|| {
        ApiError::conflict(
            None,
            format!(
                "the workspace has no {} configuration of {} to fetch this media with",
                provider.as_str(),
                channel.as_str()
            ),
        )
    })
}

fn provider_failure(message: Uuid, error: &MediaError) -> ApiError {
    tracing::warn!(message_id = %message, provider = error.provider().as_str(), %error, "fetching inbound media failed");
    ApiError::BadGateway(format!("fetching the media from {} failed: {error}", error.provider().as_str()))
}

fn respond(message: Uuid, mut fetched: FetchedMedia, medium: &Medium) -> Response {
    let content_type = fetched
        .content_type
        .as_deref()
        .or(medium.mime_type.as_deref())
        .filter(|value| is_media_type(value))
        .and_then(|value| HeaderValue::from_str(value).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let filename = medium.filename.clone().or_else(|| fetched.filename.take());
    let length = fetched.content_length;
    // Errors after the headers went out can only cut the body short; say why in the log.
    let body = futures_util::stream::try_unfold(fetched, move |mut fetched| async move {
        match fetched.chunk().await {
            Ok(Some(chunk)) => Ok(Some((chunk, fetched))),
            Ok(None) => Ok(None),
            Err(error) => {
                tracing::warn!(message_id = %message, %error, "inbound media cut short");
                Err(error)
            }
        }
    });
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let disposition = content_disposition(filename.as_deref());
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    response
}

/// `type/subtype` with optional parameters, in token characters: anything else a provider
/// sends becomes `application/octet-stream`.
fn is_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let token =
        |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    value.len() <= 200
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence.split_once('/').is_some_and(|(kind, subtype)| token(kind) && token(subtype))
}

/// `attachment`, with the file name when there is one (RFC 6266): an ASCII `filename` with
/// anything unsafe replaced, and the exact name as RFC 8187 `filename*`.
fn content_disposition(filename: Option<&str>) -> String {
    // Only the last path component, without control characters, at most 150 characters.
    let name: String = filename
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(150)
        .collect();
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." {
        return "attachment".to_owned();
    }
    let ascii: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%')) || c == ' ' { c } else { '_' })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn file_names_cannot_break_out_of_the_header() {
        assert_eq!(content_disposition(None), "attachment");
        assert_eq!(content_disposition(Some("  ")), "attachment");
        assert_eq!(content_disposition(Some("../..")), "attachment");
        assert_eq!(
            content_disposition(Some("invoice 7.pdf")),
            "attachment; filename=\"invoice 7.pdf\"; filename*=UTF-8''invoice%207.pdf"
        );
        let hostile = content_disposition(Some("C:\\x\\a\";\r\ninline; b=\"Straße%.exe"));
        assert_eq!(
            hostile,
            "attachment; filename=\"a_;inline; b=_Stra_e_.exe\"; filename*=UTF-8''a%22%3Binline%3B%20b%3D%22Stra%C3%9Fe%25.exe"
        );
        assert!(HeaderValue::from_str(&hostile).is_ok());
    }

    #[test]
    fn only_plain_media_types_pass() {
        assert!(is_media_type("image/jpeg"));
        assert!(is_media_type("audio/ogg; codecs=opus"));
        assert!(!is_media_type("text"));
        assert!(!is_media_type("image/jpeg\r\nSet-Cookie: a=b"));
        assert!(!is_media_type("bild/jpeg€"));
    }

    #[test]
    fn media_come_from_stored_media_content_only() {
        let image = json!({"type": "media", "kind": "image", "media_id": "123", "url": null, "mime_type": "image/jpeg",
                           "caption": null, "filename": null});
        assert_eq!(
            media_of(&image),
            [Medium { media_id: Some("123".into()), url: None, mime_type: Some("image/jpeg".into()), filename: None }]
        );
        assert!(media_of(&json!({"type": "text", "body": "hi"})).is_empty());
        assert!(media_of(&json!({"text": "an outbound message"})).is_empty());
    }
}
