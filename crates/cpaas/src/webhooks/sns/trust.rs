//! Which signing-certificate (and subscribe) URLs we are willing to fetch.
//!
//! An SNS signature is only as good as the certificate it is checked against, and the
//! certificate's location comes from the (unauthenticated) message itself. So before fetching,
//! the URL must point at a host we trust. Three independent sources of trust:
//!
//! 1. `aws_hosts` (default on): `https://sns.<region>.amazonaws.com[.cn]/….pem` on the default
//!    port — the AWS SDK for PHP's host pattern, covering commercial, GovCloud and China regions.
//! 2. `allowed_hosts`: extra exact hosts for the simulator or tests. An entry `host` matches
//!    that host on any port; `host:port` only that port. HTTPS only, unless `allow_http` is set
//!    (which never applies to the AWS pattern: AWS always serves HTTPS).
//! 3. `pinned_certificates`: URL → PEM. A pinned URL is never fetched and is trusted whatever
//!    its host or scheme: the certificate comes from our configuration, not from the network.
//!
//! In every case the URL may not carry userinfo, a query or a fragment, and a certificate URL's
//! path must end in `.pem`.

use std::collections::HashMap;
use std::time::Duration;

use url::Url;

use crate::webhooks::WebhookError;

/// Certificate trust configuration for [`SnsVerifier`](super::SnsVerifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsTrust {
    /// Trust AWS's own certificate hosts over HTTPS.
    pub aws_hosts: bool,
    /// Extra trusted hosts: `host` (any port) or `host:port`.
    pub allowed_hosts: Vec<String>,
    /// Allow `http://` for `allowed_hosts` (tests, a local simulator).
    pub allow_http: bool,
    /// Certificates configured by URL (PEM text); never fetched.
    pub pinned_certificates: HashMap<String, String>,
    /// Limit for fetching one certificate.
    pub fetch_timeout: Duration,
}

impl Default for SnsTrust {
    fn default() -> Self {
        Self::aws()
    }
}

impl SnsTrust {
    /// Production: AWS certificate hosts over HTTPS, nothing else.
    pub fn aws() -> Self {
        SnsTrust {
            aws_hosts: true,
            allowed_hosts: Vec::new(),
            allow_http: false,
            pinned_certificates: HashMap::new(),
            fetch_timeout: Duration::from_secs(10),
        }
    }

    /// Trust nothing until hosts or certificates are added (tests, simulator-only setups).
    pub fn nothing() -> Self {
        SnsTrust { aws_hosts: false, ..Self::aws() }
    }

    pub fn with_allowed_host(mut self, host: impl Into<String>) -> Self {
        self.allowed_hosts.push(host.into());
        self
    }

    pub fn with_http_allowed(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    pub fn with_pinned_certificate(mut self, url: impl Into<String>, pem: impl Into<String>) -> Self {
        self.pinned_certificates.insert(url.into(), pem.into());
        self
    }

    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Checks a `SigningCertURL` before it is fetched.
    pub fn check_certificate_url(&self, raw: &str) -> Result<Url, WebhookError> {
        let url = self.check_url(raw, false)?;
        if !url.path().ends_with(".pem") {
            return Err(untrusted(raw, "path does not end in .pem"));
        }
        Ok(url)
    }

    /// Checks a `SubscribeURL` before the route GETs it: same hosts as certificates, but it
    /// carries its action in the query string.
    pub fn check_subscribe_url(&self, raw: &str) -> Result<Url, WebhookError> {
        self.check_url(raw, true)
    }

    fn check_url(&self, raw: &str, query_allowed: bool) -> Result<Url, WebhookError> {
        let url = Url::parse(raw).map_err(|_| untrusted(raw, "not a URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(untrusted(raw, "userinfo is not allowed"));
        }
        if url.fragment().is_some() || (!query_allowed && url.query().is_some()) {
            return Err(untrusted(raw, "query or fragment is not allowed"));
        }
        let host = url.host_str().ok_or_else(|| untrusted(raw, "no host"))?;
        let https = url.scheme() == "https";
        // `Url` drops a port equal to the scheme's default, so `None` means the default port.
        if https && self.aws_hosts && url.port().is_none() && is_aws_sns_host(host) {
            return Ok(url);
        }
        let scheme_ok = https || (self.allow_http && url.scheme() == "http");
        if scheme_ok && self.is_allowed_host(host, url.port_or_known_default()) {
            return Ok(url);
        }
        Err(untrusted(raw, "host or scheme not trusted"))
    }

    fn is_allowed_host(&self, host: &str, port: Option<u16>) -> bool {
        self.allowed_hosts.iter().any(|allowed| match allowed.rsplit_once(':') {
            // `[::1]:8080` and `host:443`; a bare IPv6 literal has no port to split off.
            Some((allowed_host, allowed_port))
                if !allowed_host.ends_with(':') && allowed_port.parse::<u16>().is_ok() =>
            {
                allowed_host.eq_ignore_ascii_case(host) && allowed_port.parse::<u16>().ok() == port
            }
            _ => allowed.eq_ignore_ascii_case(host),
        })
    }
}

fn untrusted(raw: &str, why: &str) -> WebhookError {
    WebhookError::UntrustedCertificateUrl(format!("{raw}: {why}"))
}

/// `sns.<label>.amazonaws.com` or `….amazonaws.com.cn`, the label being at least three of
/// `[A-Za-z0-9-]` (the AWS SDK for PHP's `^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$`).
pub(crate) fn is_aws_sns_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let Some(region) = rest.strip_suffix(".amazonaws.com.cn").or_else(|| rest.strip_suffix(".amazonaws.com")) else {
        return false;
    };
    region.len() >= 3 && region.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}
