//! Where providers live and who we are to them: platform configuration, never tenant input
//! (a tenant must not be able to point our server at an arbitrary URL).

use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct ProviderEndpoints {
    /// Base URL providers use to reach our webhooks, e.g. `https://switchboard.example`.
    pub public_base_url: String,
    pub meta_graph_url: String,
    pub meta_api_version: String,
    pub meta_app_id: String,
    pub meta_app_secret: SecretString,
    /// What Meta's subscription handshake must present at the app-level callback
    /// (`GET /api/webhooks/meta`); empty refuses every handshake there.
    pub meta_verify_token: SecretString,
    pub twilio_api_url: String,
    /// SES and SNS endpoint override (the simulator); `None`: AWS.
    pub aws_endpoint_url: Option<String>,
    pub aws_region: String,
    pub request_timeout: std::time::Duration,
    /// Hosts besides AWS's own whose SNS signing certificates we trust (the simulator).
    pub sns_cert_hosts: Vec<String>,
    /// Whether those extra hosts may serve certificates over plain http.
    pub sns_cert_allow_http: bool,
    /// SNS topics whose notifications concern any tenant (the platform's SES event destinations
    /// and receipt rules); tenants' own topics are in their SES configurations.
    pub sns_topic_arns: Vec<cpaas::webhooks::sns::TopicArn>,
}

impl Default for ProviderEndpoints {
    fn default() -> Self {
        Self {
            public_base_url: "http://127.0.0.1:8080".into(),
            meta_graph_url: "https://graph.facebook.com".into(),
            meta_api_version: "v21.0".into(),
            meta_app_id: String::new(),
            meta_app_secret: SecretString::from(String::new()),
            meta_verify_token: SecretString::from(String::new()),
            twilio_api_url: "https://api.twilio.com".into(),
            aws_endpoint_url: None,
            aws_region: "eu-central-1".into(),
            request_timeout: std::time::Duration::from_secs(20),
            sns_cert_hosts: Vec::new(),
            sns_cert_allow_http: false,
            sns_topic_arns: Vec::new(),
        }
    }
}

impl ProviderEndpoints {
    /// The SNS signature trust policy: AWS's certificate hosts, plus the configured extra ones.
    pub fn sns_trust(&self) -> cpaas::webhooks::sns::SnsTrust {
        self.sns_cert_hosts
            .iter()
            .fold(cpaas::webhooks::sns::SnsTrust::aws(), |trust, host| trust.with_allowed_host(host.clone()))
            .with_http_allowed(self.sns_cert_allow_http)
    }

    /// The URL Meta posts this tenant's WhatsApp webhooks to (the WABA override callback).
    pub fn meta_webhook_url(&self, tenant_id: uuid::Uuid) -> String {
        format!("{}/api/webhooks/meta/{tenant_id}", self.public_base_url.trim_end_matches('/'))
    }

    /// The URL Twilio posts this tenant's message status callbacks to.
    pub fn twilio_status_url(&self, tenant_id: uuid::Uuid) -> String {
        format!("{}/api/webhooks/twilio/{tenant_id}/status", self.public_base_url.trim_end_matches('/'))
    }
}
