//! Layered configuration: the built-in `config/default.toml` < `config/$SWITCHBOARD_ENV.toml`
//! < `SWITCHBOARD__SECTION__KEY` environment variables; `DATABASE_URL` sets `database.url`.
//! Everything is validated before anything starts; an error names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use identity::AuthSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// The smallest pool the service runs with (see `Settings::validate`).
const MIN_CONNECTIONS: u32 = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub secrets: SecretsSettings,
    pub providers: ProvidersSettings,
    pub dispatch: DispatchSettings,
    pub webhooks: WebhooksSettings,
    pub fulfillment: FulfillmentSettings,
    pub calendars: CalendarsSettings,
    pub worker: WorkerSettings,
}

/// `[worker]`: the `switchboard worker` process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Where the worker serves `GET /metrics` for Prometheus (e.g. `0.0.0.0:9100`); empty: it
    /// serves nothing.
    pub metrics_bind: String,
}

impl WorkerSettings {
    /// The metrics address, if one is set; a malformed one is a configuration error.
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let bind = self.metrics_bind.trim();
        if bind.is_empty() {
            return Ok(None);
        }
        bind.parse()
            .map(Some)
            .map_err(|_| ConfigError::at("worker.metrics_bind", "must be an address such as 0.0.0.0:9100"))
    }
}

/// `[calendars]`: the platform's Google and Jobber OAuth apps and their endpoints (tenants
/// connect their accounts through them). An app without a client id is not offered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarsSettings {
    pub google_api_url: String,
    pub google_token_url: String,
    pub google_client_id: String,
    pub google_client_secret: SecretString,
    pub jobber_graphql_url: String,
    pub jobber_token_url: String,
    pub jobber_client_id: String,
    pub jobber_client_secret: SecretString,
    /// Busy times are imported at least this often, push notifications or not.
    pub busy_sync_every_secs: u64,
}

impl CalendarsSettings {
    /// The apps as the fulfillment module uses them; push channels point at `public_base_url`
    /// (or the address the service listens on).
    pub fn apps(
        &self,
        providers: &ProvidersSettings,
        bound: std::net::SocketAddr,
    ) -> fulfillment::calendar::CalendarApps {
        let google = (!self.google_client_id.is_empty()).then(|| calendars::GoogleConfig {
            api_base: self.google_api_url.clone(),
            token_url: self.google_token_url.clone(),
            ..calendars::GoogleConfig::new(&self.google_client_id, self.google_client_secret.expose_secret(), "primary")
        });
        let jobber = (!self.jobber_client_id.is_empty()).then(|| calendars::JobberConfig {
            graphql_url: self.jobber_graphql_url.clone(),
            token_url: self.jobber_token_url.clone(),
            ..calendars::JobberConfig::new(&self.jobber_client_id, self.jobber_client_secret.expose_secret())
        });
        let public_base_url = if providers.public_base_url.is_empty() {
            format!("http://{bound}")
        } else {
            providers.public_base_url.clone()
        };
        fulfillment::calendar::CalendarApps {
            google,
            jobber,
            public_base_url,
            busy_sync_every: std::time::Duration::from_secs(self.busy_sync_every_secs),
        }
    }
}

/// `[fulfillment]`: scheduling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FulfillmentSettings {
    /// How long a reservation holds its slot unless the request asks otherwise.
    pub hold_ttl_secs: u64,
}

/// `[webhooks]`: what happens to provider callbacks after they were acknowledged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSettings {
    /// How long a status callback that matches no message (yet) is tried again.
    pub unmatched_retry_secs: u64,
}

/// `[dispatch]`: the workers that send messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchSettings {
    pub in_serve: bool,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub retry_base_delay_ms: u64,
    pub retry_max_delay_secs: u64,
    pub poll_interval_ms: u64,
    pub stuck_after_secs: u64,
    /// Cron schedule (UTC; five fields, or six with seconds) of the stuck sweep and reconciliation.
    pub sweep_schedule: String,
    pub whatsapp_rate_per_sec: f64,
    pub email_rate_per_sec: f64,
    pub sms_rate_per_sec: f64,
    pub rate_burst_max: u32,
    pub heartbeat_secs: u64,
    pub unknown_settle_secs: u64,
    /// A dispatching process that has not renewed its lease for this long is dead.
    pub lease_secs: u64,
    /// A `sent` Twilio message with no status callback this long after sending is asked about.
    pub twilio_confirm_after_secs: u64,
    /// `switchboard worker` exits non-zero when no dispatch lane has run for this long.
    pub give_up_after_secs: u64,
    pub idempotency_retention_hours: u64,
}

impl DispatchSettings {
    /// The parsed `sweep_schedule`.
    pub fn sweep(&self) -> Result<communications::triggers::cron::CronSchedule, String> {
        communications::triggers::cron::CronSchedule::parse_config(&self.sweep_schedule)
    }

    pub fn rate_defaults(&self) -> communications::rate_limit::RateDefaults {
        communications::rate_limit::RateDefaults {
            whatsapp_per_second: self.whatsapp_rate_per_sec,
            email_per_second: self.email_rate_per_sec,
            sms_per_second: self.sms_rate_per_sec,
            burst: self.rate_burst_max,
        }
    }

    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_secs)
    }

    pub fn retry_policy(&self) -> communications::dispatch::RetryPolicy {
        communications::dispatch::RetryPolicy {
            max_attempts: self.max_attempts,
            base_delay: std::time::Duration::from_millis(self.retry_base_delay_ms),
            max_delay: std::time::Duration::from_secs(self.retry_max_delay_secs),
        }
    }
}

/// `[providers]`: where the providers are and who we are to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersSettings {
    pub public_base_url: String,
    pub meta_graph_url: String,
    pub meta_api_version: String,
    pub meta_app_id: String,
    pub meta_app_secret: SecretString,
    pub meta_verify_token: SecretString,
    pub twilio_api_url: String,
    pub aws_endpoint_url: String,
    pub aws_region: String,
    pub request_timeout_secs: u64,
    #[serde(deserialize_with = "string_list")]
    pub sns_cert_hosts: Vec<String>,
    pub sns_cert_allow_http: bool,
    #[serde(deserialize_with = "string_list")]
    pub sns_topic_arns: Vec<String>,
}

/// A list setting: an array in a file, or — environment variables being strings — one string of
/// comma-separated items (`a, b`; blanks around items are dropped, an empty string is an empty
/// list).
fn string_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;

    impl<'de> serde::de::Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list, or a string of comma-separated items")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect())
        }

        // One item that the environment source took for a number or a boolean.
        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
            Ok(vec![value.to_string()])
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(vec![value.to_string()])
        }

        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
            Ok(vec![value.to_string()])
        }

        fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
            Ok(vec![value.to_string()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_any(ListVisitor)
}

impl ProvidersSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let urls = [
            ("providers.public_base_url", &self.public_base_url, true),
            ("providers.meta_graph_url", &self.meta_graph_url, false),
            ("providers.twilio_api_url", &self.twilio_api_url, false),
            ("providers.aws_endpoint_url", &self.aws_endpoint_url, true),
        ];
        for (key, value, may_be_empty) in urls {
            let ok =
                (may_be_empty && value.is_empty()) || value.starts_with("http://") || value.starts_with("https://");
            if !ok {
                return Err(ConfigError::at(key, "must be an http(s) URL"));
            }
        }
        if self.request_timeout_secs == 0 {
            return Err(ConfigError::at("providers.request_timeout_secs", "must be greater than 0"));
        }
        self.topic_arns()?;
        Ok(())
    }

    /// `sns_topic_arns`, parsed.
    fn topic_arns(&self) -> Result<Vec<cpaas::webhooks::sns::TopicArn>, ConfigError> {
        self.sns_topic_arns
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                cpaas::webhooks::sns::TopicArn::parse(raw)
                    .map_err(|problem| ConfigError::at(&format!("providers.sns_topic_arns[{index}]"), problem))
            })
            .collect()
    }

    /// The endpoints `communications` uses; `bound` stands in for an empty public_base_url.
    pub fn endpoints(&self, bound: std::net::SocketAddr) -> communications::channels::endpoints::ProviderEndpoints {
        let public_base_url =
            if self.public_base_url.is_empty() { format!("http://{bound}") } else { self.public_base_url.clone() };
        communications::channels::endpoints::ProviderEndpoints {
            public_base_url,
            meta_graph_url: self.meta_graph_url.clone(),
            meta_api_version: self.meta_api_version.clone(),
            meta_app_id: self.meta_app_id.clone(),
            meta_app_secret: self.meta_app_secret.clone(),
            meta_verify_token: self.meta_verify_token.clone(),
            twilio_api_url: self.twilio_api_url.clone(),
            aws_endpoint_url: Some(self.aws_endpoint_url.clone()).filter(|url| !url.is_empty()),
            aws_region: self.aws_region.clone(),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs),
            sns_cert_hosts: self.sns_cert_hosts.clone(),
            sns_cert_allow_http: self.sns_cert_allow_http,
            // Checked when the settings loaded.
            sns_topic_arns: self
                .sns_topic_arns
                .iter()
                .filter_map(|raw| cpaas::webhooks::sns::TopicArn::parse(raw).ok())
                .collect(),
        }
    }
}

/// `[secrets]`: master keys for secrets at rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    pub active_key: String,
    pub allow_dev_key: bool,
    pub keys: std::collections::BTreeMap<String, SecretString>,
}

/// The public development key shipped in config/default.toml.
const DEV_KEY: &str = "c3dpdGNoYm9hcmQtcHVibGljLWRldi1rZXktMzJieXQ=";

impl SecretsSettings {
    pub fn keyring(&self) -> Result<kernel::crypto::Keyring, ConfigError> {
        let keys: Vec<(&str, &str)> = self.keys.iter().map(|(id, key)| (id.as_str(), key.expose_secret())).collect();
        kernel::crypto::Keyring::from_base64(&self.active_key, keys).map_err(|error| ConfigError::at("secrets", error))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.keyring()?;
        let uses_dev_key = self.keys.get(&self.active_key).is_some_and(|key| key.expose_secret() == DEV_KEY);
        if uses_dev_key && !self.allow_dev_key {
            return Err(ConfigError::at(
                "secrets.active_key",
                "the public development key is not allowed here: configure your own key",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: SocketAddr,
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Empty means: run the embedded cluster.
    pub url: SecretString,
    pub data_dir: PathBuf,
    pub pg_bin_dir: PathBuf,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    pub start_timeout_secs: u64,
}

impl DatabaseSettings {
    pub fn external_url(&self) -> Option<&str> {
        Some(self.url.expose_secret().trim()).filter(|url| !url.is_empty())
    }

    pub fn pg_bin_dir(&self) -> Option<&Path> {
        Some(self.pg_bin_dir.as_path()).filter(|dir| !dir.as_os_str().is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// A configuration problem, phrased as `key: what is wrong`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn at(key: &str, problem: impl std::fmt::Display) -> Self {
        Self(format!("{key}: {problem}"))
    }
}

impl Settings {
    /// Loads from `config_dir` and the process environment.
    pub fn load(config_dir: &Path) -> Result<Self, ConfigError> {
        Self::load_from(config_dir, std::env::vars())
    }

    /// Loads from `config_dir` and the given environment (tests pass their own).
    pub fn load_from(config_dir: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(profile) = env.get("SWITCHBOARD_ENV").filter(|p| !p.is_empty()) {
            let path = config_dir.join(format!("{profile}.toml"));
            if !path.is_file() {
                return Err(ConfigError::at("SWITCHBOARD_ENV", format!("there is no {}", path.display())));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        builder = builder.add_source(
            Environment::with_prefix("SWITCHBOARD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env.clone().into_iter().collect())),
        );
        if let Some(url) = env.get("DATABASE_URL").filter(|url| !url.is_empty()) {
            builder = builder.set_override("database.url", url.as_str()).map_err(|e| ConfigError(e.to_string()))?;
        }
        let merged: config::Value =
            builder.build().and_then(Config::try_deserialize).map_err(|error| ConfigError(error.to_string()))?;
        let settings: Settings = serde_path_to_error::deserialize(merged).map_err(|error| {
            let key = error.path().to_string();
            ConfigError::at(&key, error.into_inner())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("http.body_limit_bytes", self.http.body_limit_bytes as u64),
            ("http.request_timeout_secs", self.http.request_timeout_secs),
            ("database.max_connections", u64::from(self.database.max_connections)),
            ("database.acquire_timeout_secs", self.database.acquire_timeout_secs),
            ("database.start_timeout_secs", self.database.start_timeout_secs),
            ("dispatch.concurrency", self.dispatch.concurrency as u64),
            ("dispatch.max_attempts", u64::from(self.dispatch.max_attempts)),
            ("dispatch.poll_interval_ms", self.dispatch.poll_interval_ms),
            ("dispatch.stuck_after_secs", self.dispatch.stuck_after_secs),
            ("dispatch.rate_burst_max", u64::from(self.dispatch.rate_burst_max)),
            ("dispatch.heartbeat_secs", self.dispatch.heartbeat_secs),
            ("dispatch.unknown_settle_secs", self.dispatch.unknown_settle_secs),
            ("dispatch.lease_secs", self.dispatch.lease_secs),
            ("dispatch.twilio_confirm_after_secs", self.dispatch.twilio_confirm_after_secs),
            ("dispatch.give_up_after_secs", self.dispatch.give_up_after_secs),
            ("webhooks.unmatched_retry_secs", self.webhooks.unmatched_retry_secs),
            ("fulfillment.hold_ttl_secs", self.fulfillment.hold_ttl_secs),
            ("calendars.busy_sync_every_secs", self.calendars.busy_sync_every_secs),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::at(key, "must be greater than 0"));
        }
        self.dispatch.sweep().map_err(|message| ConfigError::at("dispatch.sweep_schedule", message))?;
        self.worker.metrics_addr()?;
        if self.dispatch.idempotency_retention_hours < 24 {
            return Err(ConfigError::at("dispatch.idempotency_retention_hours", "must be at least 24"));
        }
        // Dispatch jobs share batched statements instead of holding a connection each; what
        // remains at once: three batchers with two batches each, both lanes' fetches and
        // acknowledgements, the pollers, and the API.
        if self.database.max_connections < MIN_CONNECTIONS {
            return Err(ConfigError::at(
                "database.max_connections",
                format!("must be at least {MIN_CONNECTIONS} (the dispatch workers' batches, queues and pollers)"),
            ));
        }
        for (key, rate) in [
            ("dispatch.whatsapp_rate_per_sec", self.dispatch.whatsapp_rate_per_sec),
            ("dispatch.email_rate_per_sec", self.dispatch.email_rate_per_sec),
            ("dispatch.sms_rate_per_sec", self.dispatch.sms_rate_per_sec),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ConfigError::at(key, "must be a positive number"));
            }
        }
        if let Some(url) = self.database.external_url()
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::at("database.url", "must start with postgres:// or postgresql://"));
        }
        if self.database.external_url().is_none() && self.database.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::at("database.data_dir", "must be set when database.url is empty"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|error| ConfigError::at("log.level", format!("not a valid filter: {error}")))?;
        self.auth.validate().map_err(|(key, problem)| ConfigError::at(key, problem))?;
        self.secrets.validate()?;
        self.providers.validate()?;
        Ok(())
    }
}

/// Where environment-specific files live: `SWITCHBOARD_CONFIG_DIR`, default `./config`.
pub fn config_dir() -> PathBuf {
    std::env::var_os("SWITCHBOARD_CONFIG_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("config"))
}
