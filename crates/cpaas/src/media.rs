//! Inbound media: the bytes of an image, document, voice note… a contact sent, fetched from the
//! provider on demand with the account's credentials (docs/providers/meta-whatsapp.md §3.3,
//! docs/providers/twilio.md §4).
//!
//! - Meta: `GET {graph}/{version}/{media-id}` with the business token as Bearer answers
//!   `{"url","mime_type","sha256","file_size","id","messaging_product"}`; the `url` (on Meta's
//!   CDN, valid for minutes) is then fetched with the same Bearer token.
//! - Twilio: `GET <MediaUrl>` (under `{base}/2010-04-01/Accounts/{sid}/`) with Basic auth; Twilio
//!   answers with a redirect (302/307) to a signed storage URL.
//!
//! Credentials go only to the URL we were asked for (after checking it is the provider's):
//! redirects are followed by hand, without them. A signed storage URL needs none, may belong to
//! someone else, and S3 refuses a request that carries two kinds of authentication.
//!
//! The body is handed back as it arrives ([`FetchedMedia::chunk`]) so a large file is never held
//! in memory; it is capped at [`MAX_MEDIA_BYTES`] both by the announced size (refused before any
//! byte is read) and by counting (the stream fails once it passes the cap).

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::send::http::{base_url, describe};
use crate::send::meta::graph_node_url;
use crate::{MetaConfig, Provider, TwilioConfig};

/// The largest media we pass on. WhatsApp documents go up to 100 MB, Twilio MMS to 5 MB.
pub const MAX_MEDIA_BYTES: u64 = 100 * 1024 * 1024;

/// How many redirects a download may follow.
const MAX_REDIRECTS: usize = 3;

/// What to fetch, with whose credentials.
#[derive(Debug, Clone, Copy)]
pub enum MediaSource<'a> {
    /// A WhatsApp media id from an inbound message.
    Meta { config: &'a MetaConfig, media_id: &'a str },
    /// A `MediaUrlN` from an inbound MMS.
    Twilio { config: &'a TwilioConfig, url: &'a str },
}

impl MediaSource<'_> {
    pub fn provider(&self) -> Provider {
        match self {
            MediaSource::Meta { .. } => Provider::Meta,
            MediaSource::Twilio { .. } => Provider::Twilio,
        }
    }
}

/// Why media could not be fetched. Every variant names its provider.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The media id or URL is not one we may fetch with these credentials.
    #[error("{} media reference refused: {reason}", provider.as_str())]
    Invalid { provider: Provider, reason: String },
    /// The provider answered with an error status (an expired or deleted medium is a 404).
    #[error("{} answered HTTP {status}{}", provider.as_str(), detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status { provider: Provider, status: u16, detail: Option<String> },
    #[error("{} media is larger than the {limit} bytes we pass on", provider.as_str())]
    TooLarge { provider: Provider, limit: u64 },
    #[error("no answer from {} in time", provider.as_str())]
    Timeout { provider: Provider },
    #[error("{} could not be reached: {reason}", provider.as_str())]
    Transport { provider: Provider, reason: String },
    #[error("{} answered something we cannot read: {reason}", provider.as_str())]
    Malformed { provider: Provider, reason: String },
}

impl MediaError {
    pub fn provider(&self) -> Provider {
        match self {
            MediaError::Invalid { provider, .. }
            | MediaError::Status { provider, .. }
            | MediaError::TooLarge { provider, .. }
            | MediaError::Timeout { provider }
            | MediaError::Transport { provider, .. }
            | MediaError::Malformed { provider, .. } => *provider,
        }
    }

    fn transport(provider: Provider, error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            MediaError::Timeout { provider }
        } else {
            MediaError::Transport { provider, reason: describe(error) }
        }
    }
}

/// Media on its way: what the provider says it is, and its body, read with [`Self::chunk`].
#[derive(Debug)]
pub struct FetchedMedia {
    /// The provider's `Content-Type`, else the type the webhook or media lookup named.
    pub content_type: Option<String>,
    /// The file name, when the provider gave one.
    pub filename: Option<String>,
    /// The announced size, when the provider announced one.
    pub content_length: Option<u64>,
    provider: Provider,
    response: reqwest::Response,
    read: u64,
    limit: u64,
}

impl FetchedMedia {
    /// The next piece of the body; `None` at its end. Fails once more than the cap has arrived.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, MediaError> {
        let chunk = self.response.chunk().await.map_err(|e| MediaError::transport(self.provider, &e))?;
        if let Some(chunk) = &chunk {
            self.read += chunk.len() as u64;
            if self.read > self.limit {
                return Err(MediaError::TooLarge { provider: self.provider, limit: self.limit });
            }
        }
        Ok(chunk)
    }

    /// The whole body (for tests and small media).
    pub async fn bytes(mut self) -> Result<Vec<u8>, MediaError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }
}

/// Downloads media; holds its own HTTP client, which never follows redirects on its own.
#[derive(Debug, Clone)]
pub struct MediaFetcher {
    http: reqwest::Client,
    /// Each request, from connecting to the last byte of its body.
    timeout: Duration,
    limit: u64,
}

/// The answer of Meta's media lookup.
#[derive(Debug, Deserialize)]
struct MetaMediaInfo {
    url: String,
    mime_type: Option<String>,
    file_size: Option<u64>,
}

impl MediaFetcher {
    /// `timeout` bounds each request including its body: make room for a large file.
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Self, MediaError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchboard-cpaas/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MediaError::Transport { provider: Provider::Meta, reason: describe(&e) })?;
        Ok(MediaFetcher { http, timeout, limit: MAX_MEDIA_BYTES })
    }

    /// The same fetcher with another cap (tests).
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// One process-wide fetcher (2 s to connect, 2 minutes per request).
    pub fn shared() -> Result<&'static MediaFetcher, &'static str> {
        static SHARED: OnceLock<Result<MediaFetcher, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                MediaFetcher::new(Duration::from_secs(2), Duration::from_secs(120)).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Starts the download: the answer's headers are in, the body is read with
    /// [`FetchedMedia::chunk`].
    pub async fn fetch(&self, source: MediaSource<'_>) -> Result<FetchedMedia, MediaError> {
        match source {
            MediaSource::Meta { config, media_id } => self.fetch_meta(config, media_id).await,
            MediaSource::Twilio { config, url } => self.fetch_twilio(config, url).await,
        }
    }

    async fn fetch_meta(&self, config: &MetaConfig, media_id: &str) -> Result<FetchedMedia, MediaError> {
        let provider = Provider::Meta;
        let invalid = |reason: String| MediaError::Invalid { provider, reason };
        let lookup = url::Url::parse(&graph_node_url(config, media_id).map_err(|e| invalid(e.message))?)
            .map_err(|e| invalid(e.to_string()))?;
        let token = config.access_token.expose_secret();
        let auth = Auth::Bearer(token);
        // Naming our number makes Meta check that the media was sent to it.
        let mut lookup_with_number = lookup.clone();
        lookup_with_number.query_pairs_mut().append_pair("phone_number_id", &config.phone_number_id);
        let response = self.get(provider, lookup_with_number, &auth).await?;
        let response = success(provider, response).await?;
        let info: MetaMediaInfo = response
            .json()
            .await
            .map_err(|e| MediaError::Malformed { provider, reason: format!("media lookup: {}", describe(&e)) })?;
        if info.file_size.is_some_and(|size| size > self.limit) {
            return Err(MediaError::TooLarge { provider, limit: self.limit });
        }
        let download = url::Url::parse(&info.url)
            .map_err(|e| MediaError::Malformed { provider, reason: format!("media url: {e}") })?;
        // Meta's CDN is another host than the Graph API, so the host cannot be pinned; the
        // token still never leaves TLS unless the Graph API itself is plain HTTP (the simulator).
        if !(download.scheme() == "https" || download.scheme() == lookup.scheme()) {
            return Err(MediaError::Malformed { provider, reason: "the media url is not https".into() });
        }
        let response = self.get(provider, download, &auth).await?;
        self.body(provider, response, info.mime_type).await
    }

    async fn fetch_twilio(&self, config: &TwilioConfig, media_url: &str) -> Result<FetchedMedia, MediaError> {
        let provider = Provider::Twilio;
        let invalid = |reason: String| MediaError::Invalid { provider, reason };
        let url = url::Url::parse(media_url).map_err(|e| invalid(format!("not a URL: {e}")))?;
        // The Basic credentials are the account's: send them only to that account's resources.
        let account = format!(
            "{}/2010-04-01/Accounts/{}/",
            base_url("twilio", &config.base_url).map_err(|e| invalid(e.message))?,
            config.account_sid
        );
        let account = url::Url::parse(&account).map_err(|e| invalid(e.to_string()))?;
        let same_origin = url.origin() == account.origin();
        if !same_origin || !url.path().starts_with(account.path()) || url.path().contains("/../") {
            return Err(invalid("the media URL is not one of this Twilio account's resources".into()));
        }
        let auth = Auth::Basic(&config.account_sid, config.auth_token.expose_secret());
        let response = self.get(provider, url, &auth).await?;
        self.body(provider, response, None).await
    }

    /// GET `url` with `auth`, following redirects without it.
    async fn get(
        &self,
        provider: Provider,
        mut url: url::Url,
        auth: &Auth<'_>,
    ) -> Result<reqwest::Response, MediaError> {
        let mut credentials = Some(auth);
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.http.get(url.clone()).timeout(self.timeout);
            match credentials {
                Some(Auth::Bearer(token)) => request = request.bearer_auth(token),
                Some(Auth::Basic(user, password)) => request = request.basic_auth(user, Some(password)),
                None => {}
            }
            let response = request.send().await.map_err(|e| MediaError::transport(provider, &e))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| MediaError::Malformed { provider, reason: "a redirect without Location".into() })?;
            let next = url
                .join(location)
                .map_err(|e| MediaError::Malformed { provider, reason: format!("redirect location: {e}") })?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(MediaError::Malformed { provider, reason: "a redirect to a non-HTTP URL".into() });
            }
            url = next;
            credentials = None;
        }
        Err(MediaError::Malformed { provider, reason: format!("more than {MAX_REDIRECTS} redirects") })
    }

    async fn body(
        &self,
        provider: Provider,
        response: reqwest::Response,
        announced_type: Option<String>,
    ) -> Result<FetchedMedia, MediaError> {
        let response = success(provider, response).await?;
        let content_length = response.content_length();
        if content_length.is_some_and(|length| length > self.limit) {
            return Err(MediaError::TooLarge { provider, limit: self.limit });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .filter(|value| !value.is_empty())
            .or(announced_type);
        let filename = response
            .headers()
            .get(CONTENT_DISPOSITION)
            .and_then(|value| value.to_str().ok())
            .and_then(disposition_filename);
        Ok(FetchedMedia { content_type, filename, content_length, provider, response, read: 0, limit: self.limit })
    }
}

enum Auth<'a> {
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

/// The response if it is a 2xx; else its status with the start of the provider's error text.
async fn success(provider: Provider, response: reqwest::Response) -> Result<reqwest::Response, MediaError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    Err(MediaError::Status { provider, status: status.as_u16(), detail: error_detail(&text) })
}

/// The plain `filename` parameter of a `Content-Disposition` (quoted or not); the caller cleans
/// it before using it.
fn disposition_filename(value: &str) -> Option<String> {
    value.split(';').map(str::trim).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        (name.trim().eq_ignore_ascii_case("filename") && !value.is_empty()).then(|| value.to_owned())
    })
}

/// The message of a Graph (`{"error":{"message"}}`) or Twilio (`{"message"}`) error body,
/// shortened: it ends up in our own error message.
fn error_detail(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let message = value.pointer("/error/message").or_else(|| value.get("message"))?.as_str()?;
    Some(message.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_details_come_from_either_provider_shape() {
        assert_eq!(
            error_detail(r#"{"error":{"message":"(#100) Invalid parameter"}}"#).as_deref(),
            Some("(#100) Invalid parameter")
        );
        assert_eq!(error_detail(r#"{"code":20404,"message":"Not found"}"#).as_deref(), Some("Not found"));
        assert_eq!(error_detail("<html>"), None);
    }

    #[test]
    fn file_names_from_content_disposition() {
        assert_eq!(disposition_filename(r#"attachment; filename="a b.pdf""#).as_deref(), Some("a b.pdf"));
        assert_eq!(disposition_filename("inline;filename=x.jpg").as_deref(), Some("x.jpg"));
        assert_eq!(disposition_filename("attachment"), None);
    }

    #[test]
    fn every_error_names_its_provider() {
        let error = MediaError::Status { provider: Provider::Twilio, status: 500, detail: None };
        assert_eq!(error.to_string(), "twilio answered HTTP 500");
        assert_eq!(error.provider(), Provider::Twilio);
        let error = MediaError::TooLarge { provider: Provider::Meta, limit: 10 };
        assert!(error.to_string().starts_with("meta "), "{error}");
    }
}
