//! From a stored provider row to the `cpaas` configuration an adapter or provisioning call needs:
//! the row's settings and opened secrets, filled in from the platform default for that provider
//! (credentials, sender) where the tenant brought none, and the endpoints from platform config.

use std::collections::BTreeMap;

use cpaas::{MetaConfig, ProviderConfig, SesConfig, SmsType, SnsConfig, TwilioConfig};
use kernel::error::ApiError;
use secrecy::SecretString;
use serde_json::{Map, Value};

use super::ProviderKind;
use super::endpoints::ProviderEndpoints;

/// Settings and secrets of one provider, tenant's values over the platform default's.
#[derive(Debug, Default)]
pub struct EffectiveConfig {
    pub settings: Map<String, Value>,
    pub secrets: BTreeMap<String, String>,
}

impl EffectiveConfig {
    pub fn layered(platform: Option<EffectiveConfig>, tenant: EffectiveConfig) -> Self {
        let mut merged = platform.unwrap_or_default();
        merged.settings.extend(tenant.settings);
        merged.secrets.extend(tenant.secrets);
        merged
    }

    fn setting(&self, field: &str) -> Option<String> {
        self.settings.get(field).and_then(Value::as_str).map(str::to_owned).filter(|v| !v.is_empty())
    }

    fn required_setting(&self, field: &str) -> Result<String, ApiError> {
        self.setting(field).ok_or_else(|| missing(field))
    }

    fn secret(&self, field: &str) -> Option<SecretString> {
        self.secrets.get(field).filter(|v| !v.is_empty()).map(|v| SecretString::from(v.clone()))
    }

    fn required_secret(&self, field: &str) -> Result<SecretString, ApiError> {
        self.secret(field).ok_or_else(|| missing(field))
    }
}

fn missing(field: &str) -> ApiError {
    ApiError::validation(
        format!("config.{field}"),
        format!("`{field}` is needed and neither the channel nor a platform default provides it"),
    )
}

/// Builds the `cpaas` configuration for `provider`.
pub fn build(
    provider: ProviderKind,
    config: &EffectiveConfig,
    endpoints: &ProviderEndpoints,
    tenant_id: uuid::Uuid,
) -> Result<ProviderConfig, ApiError> {
    Ok(match provider {
        ProviderKind::Meta => ProviderConfig::Meta(MetaConfig {
            base_url: endpoints.meta_graph_url.clone(),
            api_version: endpoints.meta_api_version.clone(),
            phone_number_id: config.required_setting("phone_number_id")?,
            waba_id: config.required_setting("waba_id")?,
            access_token: config.required_secret("access_token")?,
            app_secret: endpoints.meta_app_secret.clone(),
            verify_token: config.required_secret("verify_token")?,
        }),
        ProviderKind::Ses => ProviderConfig::Ses(SesConfig {
            region: config.setting("region").unwrap_or_else(|| endpoints.aws_region.clone()),
            endpoint_url: endpoints.aws_endpoint_url.clone(),
            access_key_id: config.required_setting("access_key_id")?,
            secret_access_key: config.required_secret("secret_access_key")?,
            domain: config.required_setting("domain")?,
            from_address: config.required_setting("from_address")?,
            configuration_set: config.setting("configuration_set"),
        }),
        ProviderKind::Sns => ProviderConfig::Sns(SnsConfig {
            region: config.setting("region").unwrap_or_else(|| endpoints.aws_region.clone()),
            endpoint_url: endpoints.aws_endpoint_url.clone(),
            access_key_id: config.required_setting("access_key_id")?,
            secret_access_key: config.required_secret("secret_access_key")?,
            sender_id: config.setting("sender_id"),
            origination_number: config.setting("origination_number"),
            sms_type: match config.setting("sms_type").as_deref() {
                Some("promotional") => SmsType::Promotional,
                _ => SmsType::Transactional,
            },
        }),
        ProviderKind::Twilio => ProviderConfig::Twilio(TwilioConfig {
            base_url: endpoints.twilio_api_url.clone(),
            account_sid: config.required_setting("account_sid")?,
            auth_token: config.required_secret("auth_token")?,
            from: config.setting("from"),
            messaging_service_sid: config.setting("messaging_service_sid"),
            status_callback_url: Some(endpoints.twilio_status_url(tenant_id)),
        }),
    })
}
