//! Verifying SNS signatures, with the signing certificates fetched once and cached.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use url::Url;

use super::certificate::{MAX_CERTIFICATE_BYTES, SignatureVersion, SigningKey};
use super::{SnsMessage, SnsTrust};
use crate::webhooks::WebhookError;

/// Fetched certificates kept at most; AWS uses a handful, so hitting this means junk URLs on a
/// trusted host, and the cache is simply emptied.
const MAX_CACHED_CERTIFICATES: usize = 64;

/// Verifies SNS message signatures. Create one per process and share it (`Arc`): its cache is
/// what makes a certificate be fetched once.
#[derive(Debug)]
pub struct SnsVerifier {
    trust: SnsTrust,
    http: reqwest::Client,
    /// Keys of `trust.pinned_certificates`, parsed at construction.
    pinned: HashMap<String, Arc<SigningKey>>,
    /// Fetched keys by certificate URL. A std lock, never held across an await; two concurrent
    /// first requests may both fetch, which is harmless.
    fetched: RwLock<HashMap<String, Arc<SigningKey>>>,
}

impl SnsVerifier {
    /// Builds a verifier; a pinned certificate that does not parse is an error here, at start.
    pub fn new(trust: SnsTrust) -> Result<Self, WebhookError> {
        let http = reqwest::Client::builder()
            .timeout(trust.fetch_timeout)
            // A trusted URL must not be able to send us somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| WebhookError::CertificateFetch(format!("HTTP client: {error}")))?;
        let mut pinned = HashMap::new();
        for (url, pem) in &trust.pinned_certificates {
            let key = SigningKey::from_certificate(pem.as_bytes())
                .map_err(|error| WebhookError::CertificateFetch(format!("pinned certificate for {url}: {error}")))?;
            pinned.insert(url.clone(), Arc::new(key));
        }
        Ok(SnsVerifier { trust, http, pinned, fetched: RwLock::new(HashMap::new()) })
    }

    pub fn trust(&self) -> &SnsTrust {
        &self.trust
    }

    /// Parses the body and verifies it: the usual entry point for the route.
    pub async fn verify_body(&self, raw_body: &[u8]) -> Result<SnsMessage, WebhookError> {
        let message = SnsMessage::from_json(raw_body)?;
        self.verify(&message).await?;
        Ok(message)
    }

    /// Verifies the message's signature against its (trusted) signing certificate.
    ///
    /// Order matters: the version and the URL are checked before anything is fetched, so an
    /// unauthenticated request can never make us fetch from an arbitrary URL.
    pub async fn verify(&self, message: &SnsMessage) -> Result<(), WebhookError> {
        let version = SignatureVersion::parse(&message.signature_version)?;
        if message.signature.trim().is_empty() {
            return Err(WebhookError::MissingSignature);
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(message.signature.trim())
            .map_err(|_| WebhookError::BadSignature)?;
        let key = self.signing_key(&message.signing_cert_url).await?;
        key.verify(version, message.string_to_sign().as_bytes(), &signature)
    }

    /// The `SubscribeURL` of a subscription confirmation, checked against the same host policy
    /// as certificates; `None` for other message types. Call only after [`Self::verify`].
    pub fn confirmation_url(&self, message: &SnsMessage) -> Result<Option<Url>, WebhookError> {
        message.subscribe_url().map(|raw| self.trust.check_subscribe_url(raw)).transpose()
    }

    async fn signing_key(&self, cert_url: &str) -> Result<Arc<SigningKey>, WebhookError> {
        if let Some(key) = self.pinned.get(cert_url) {
            return Ok(Arc::clone(key));
        }
        let url = self.trust.check_certificate_url(cert_url)?;
        if let Some(key) = self.cached(cert_url) {
            return Ok(key);
        }
        let bytes = self.fetch(url).await?;
        let key = Arc::new(SigningKey::from_certificate(&bytes)?);
        self.remember(cert_url, Arc::clone(&key));
        Ok(key)
    }

    fn cached(&self, cert_url: &str) -> Option<Arc<SigningKey>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        let cache = self.fetched.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.get(cert_url).cloned()
    }

    fn remember(&self, cert_url: &str, key: Arc<SigningKey>) {
        let mut cache = self.fetched.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= MAX_CACHED_CERTIFICATES {
            cache.clear();
        }
        cache.insert(cert_url.to_owned(), key);
    }

    async fn fetch(&self, url: Url) -> Result<Vec<u8>, WebhookError> {
        let shown = url.to_string();
        let error = |what: String| WebhookError::CertificateFetch(format!("{shown}: {what}"));
        let mut response = self.http.get(url).send().await.map_err(|e| error(e.to_string()))?;
        if !response.status().is_success() {
            return Err(error(format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error(e.to_string()))? {
            if body.len() + chunk.len() > MAX_CERTIFICATE_BYTES {
                return Err(error("certificate too large".to_owned()));
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(url = %shown, "fetched SNS signing certificate");
        Ok(body)
    }
}
