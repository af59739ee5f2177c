//! Verification flows: prove with the provider that a channel works, then activate it.
//!
//! - WhatsApp (Meta Embedded Signup): exchange the signup code for a business token, register
//!   the number (when a PIN was given), subscribe our app to the WABA with this tenant's override
//!   callback URL (Meta then calls our webhook handshake), read display name, quality rating and
//!   messaging tier.
//! - Email (SES): create the domain identity (DKIM records go back to the operator, who
//!   publishes them); later verifies read the identity and activate once SES says it is verified.
//! - SMS (SNS): an authenticated check of the sender (origination number listed, credentials good).
//! - SMS (Twilio): the account exists, the token works, the account is active.
//! - Webchat: served by Switchboard itself, nothing to ask anyone.
//!
//! Provider calls run outside any database transaction; the result is written only if the
//! account is still pending by then.

use std::collections::BTreeMap;

use cpaas::provisioning::{self, ProvisioningError, ProvisioningErrorKind};
use cpaas::{MetaConfig, ProviderConfig, SesConfig, SnsConfig, TwilioConfig};
use kernel::crypto::random_token;
use kernel::error::ApiError;
use kernel::ids::TenantId;
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use super::adapter_config::{self, EffectiveConfig};
use super::repository::{self, AccountChanges, AccountRow, ProviderChanges, ProviderRow};
use super::service::ChannelAccountView;
use super::{ChannelStatus, ChannelType, LifecycleAction, ProviderKind, secrets};
use crate::Communications;

/// What a flow found out.
#[derive(Debug, Default)]
struct Outcome {
    verified: bool,
    sender: Option<String>,
    /// Merged into the account's `verification` document.
    facts: serde_json::Map<String, Value>,
}

impl Communications {
    pub async fn verify_channel_account(&self, tenant: TenantId, id: Uuid) -> Result<ChannelAccountView, ApiError> {
        let account = repository::find_account(&self.pool, tenant, id).await?;
        LifecycleAction::Verify.apply(account.status)?;
        let outcome = match account.channel_type {
            ChannelType::Webchat => Outcome { verified: true, ..Default::default() },
            _ => {
                let primary = repository::primary_provider(&self.pool, tenant, id)
                    .await?
                    .ok_or_else(|| ApiError::conflict(None, "the channel account has no enabled provider"))?;
                self.verify_with_provider(tenant, &account, &primary).await?
            }
        };
        self.record_outcome(tenant, &account, outcome).await?;
        self.channel_account(tenant, id).await
    }

    /// Creates the SES identity right after an email channel is created, so the DKIM records
    /// can be shown at once. A failure is recorded on the account, never fatal: verify retries.
    pub async fn prepare_email_identity(&self, tenant: TenantId, id: Uuid) -> Result<ChannelAccountView, ApiError> {
        let account = repository::find_account(&self.pool, tenant, id).await?;
        let Some(primary) = repository::primary_provider(&self.pool, tenant, id).await? else {
            return self.channel_account(tenant, id).await;
        };
        let result = match self.cpaas_config(tenant, &primary).await {
            Ok(ProviderConfig::Ses(config)) => create_identity(&config).await.map_err(provider_error),
            Ok(_) => return self.channel_account(tenant, id).await,
            Err(error) => Err(error),
        };
        let facts = match result {
            Ok(outcome) => outcome.facts,
            Err(error) => {
                tracing::warn!(tenant_id = %tenant, channel_account_id = %id, %error, "creating the SES identity failed; verify will retry");
                serde_json::Map::from_iter([("last_error".to_owned(), json!(error.to_string()))])
            }
        };
        let changes = AccountChanges { verification: Some(merged(&account.verification, facts)), ..Default::default() };
        repository::update_account(&self.pool, tenant, id, changes).await?;
        self.channel_account(tenant, id).await
    }

    async fn verify_with_provider(
        &self,
        tenant: TenantId,
        account: &AccountRow,
        primary: &ProviderRow,
    ) -> Result<Outcome, ApiError> {
        let primary = match primary.provider {
            ProviderKind::Meta => self.complete_embedded_signup(tenant, primary).await?,
            _ => primary.clone(),
        };
        let config = self.cpaas_config(tenant, &primary).await?;
        let outcome = match config {
            ProviderConfig::Meta(config) => self.verify_meta(tenant, &primary, &config).await,
            ProviderConfig::Ses(config) => verify_ses(account, &config).await,
            ProviderConfig::Sns(config) => verify_sns(&config).await,
            ProviderConfig::Twilio(config) => self.verify_twilio(&config).await,
        };
        outcome.map_err(provider_error)
    }

    /// The provider's `cpaas` configuration: the row over the platform default.
    pub async fn cpaas_config(&self, tenant: TenantId, row: &ProviderRow) -> Result<ProviderConfig, ApiError> {
        let tenant_layer = EffectiveConfig {
            settings: row.settings.as_object().cloned().unwrap_or_default(),
            secrets: self.provider_secrets(row).await?,
        };
        let platform_layer = match repository::platform_default(&self.pool, row.provider).await? {
            Some(platform) => Some(EffectiveConfig {
                settings: platform.settings.as_object().cloned().unwrap_or_default(),
                secrets: self.provider_secrets(&platform).await?,
            }),
            None => None,
        };
        let effective = EffectiveConfig::layered(platform_layer, tenant_layer);
        adapter_config::build(row.provider, &effective, &self.endpoints, tenant.0)
    }

    /// Turns a signup code into a business token and makes sure a webhook verify token exists.
    /// Both are stored before anything else happens: the code works once, and Meta's handshake
    /// (triggered by the subscription) reads the verify token from the database. Returns the row
    /// as it is now.
    async fn complete_embedded_signup(&self, tenant: TenantId, row: &ProviderRow) -> Result<ProviderRow, ApiError> {
        let mut stored = self.provider_secrets(row).await?;
        let mut changed = false;
        if !stored.contains_key("access_token") {
            let code = stored.get("signup_code").cloned().ok_or_else(|| {
                ApiError::validation("config.signup_code", "neither a signup code nor an access token is stored")
            })?;
            let app = provisioning::meta::MetaApp {
                base_url: self.endpoints.meta_graph_url.clone(),
                api_version: self.endpoints.meta_api_version.clone(),
                app_id: self.endpoints.meta_app_id.clone(),
                app_secret: self.endpoints.meta_app_secret.clone(),
            };
            let token = provisioning::meta::exchange_code(&self.http, &app, &code).await.map_err(provider_error)?;
            stored.insert("access_token".into(), secrecy::ExposeSecret::expose_secret(&token).to_owned());
            stored.remove("signup_code");
            changed = true;
        }
        if !stored.contains_key("verify_token") {
            stored.insert("verify_token".into(), random_token());
            changed = true;
        }
        if !changed {
            return Ok(row.clone());
        }
        self.store_secrets(tenant, row, &stored).await
    }

    async fn store_secrets(
        &self,
        tenant: TenantId,
        row: &ProviderRow,
        stored: &BTreeMap<String, String>,
    ) -> Result<ProviderRow, ApiError> {
        let (sealed, masks) = secrets::seal_all(&self.keyring, &secrets::SecretOwner::from(row), stored);
        let changes = ProviderChanges { secrets: Some(sealed), masks: Some(masks), ..Default::default() };
        repository::update_provider(&self.pool, tenant, row.id, changes).await
    }

    async fn verify_meta(
        &self,
        tenant: TenantId,
        row: &ProviderRow,
        config: &MetaConfig,
    ) -> Result<Outcome, ProvisioningError> {
        let pin = self.provider_secrets(row).await.ok().and_then(|s| s.get("pin").cloned());
        if let Some(pin) = pin {
            provisioning::meta::register_phone(&self.http, config, &SecretString::from(pin)).await?;
        }
        let callback = self.endpoints.meta_webhook_url(tenant.0);
        provisioning::meta::subscribe_app(&self.http, config, Some(&callback), &config.verify_token).await?;
        let info = provisioning::meta::phone_number_info(&self.http, config).await?;
        let facts = json!({
            "display_phone_number": info.display_phone_number,
            "verified_name": info.verified_name,
            "quality_rating": info.quality_rating,
            "messaging_limit_tier": info.messaging_limit_tier,
            "webhook_url": callback,
        });
        Ok(Outcome { verified: true, sender: Some(info.display_phone_number), facts: object(facts) })
    }

    async fn verify_twilio(&self, config: &TwilioConfig) -> Result<Outcome, ProvisioningError> {
        let account = provisioning::twilio::check_account(&self.http, config).await?;
        if !account.is_active() {
            return Err(ProvisioningError::new(
                ProvisioningErrorKind::Rejected,
                None,
                format!("the Twilio account is {}", account.status),
            ));
        }
        let facts = json!({ "twilio_account": account.friendly_name, "twilio_status": account.status });
        Ok(Outcome { verified: true, sender: None, facts: object(facts) })
    }

    async fn record_outcome(&self, tenant: TenantId, account: &AccountRow, outcome: Outcome) -> Result<(), ApiError> {
        let mut tx = self.pool.begin().await?;
        let current = repository::lock_account(&mut *tx, tenant, account.id).await?;
        if current.status != ChannelStatus::PendingVerification {
            return Err(ApiError::conflict(
                Some("status"),
                format!("the channel account became {} meanwhile", current.status.as_str()),
            ));
        }
        let mut facts = outcome.facts;
        facts.insert("last_error".into(), Value::Null);
        let changes = AccountChanges {
            status: outcome.verified.then_some(ChannelStatus::Active),
            sender: outcome.sender.as_deref(),
            verification: Some(merged(&current.verification, facts)),
            ..Default::default()
        };
        repository::update_account(&mut *tx, tenant, account.id, changes).await?;
        tx.commit().await?;
        if outcome.verified {
            tracing::info!(tenant_id = %tenant, channel_account_id = %account.id, "channel account verified");
        }
        Ok(())
    }
}

async fn create_identity(config: &SesConfig) -> Result<Outcome, ProvisioningError> {
    let identity = provisioning::ses::create_domain_identity(config).await?;
    let facts = json!({ "dkim_records": identity.dkim_records, "verified_for_sending": identity.verified });
    Ok(Outcome { verified: identity.verified, sender: Some(config.domain.clone()), facts: object(facts) })
}

async fn verify_ses(account: &AccountRow, config: &SesConfig) -> Result<Outcome, ProvisioningError> {
    if account.verification.get("dkim_records").is_none() {
        return create_identity(config).await;
    }
    let status = provisioning::ses::domain_identity_status(config).await?;
    let facts = json!({ "verified_for_sending": status.verified_for_sending, "dkim_status": status.dkim_status });
    Ok(Outcome { verified: status.verified_for_sending, sender: Some(config.domain.clone()), facts: object(facts) })
}

async fn verify_sns(config: &SnsConfig) -> Result<Outcome, ProvisioningError> {
    let check = provisioning::sns::check_sender(config).await?;
    let facts = json!({ "origination_number": check.origination_number.map(|n| json!({
        "phone_number": n.phone_number, "status": n.status, "country": n.iso2_country_code, "capabilities": n.capabilities,
    })) });
    let sender = config.origination_number.clone().or_else(|| config.sender_id.clone());
    Ok(Outcome { verified: true, sender, facts: object(facts) })
}

fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

fn merged(current: &Value, facts: serde_json::Map<String, Value>) -> Value {
    let mut document = current.as_object().cloned().unwrap_or_default();
    document.extend(facts);
    Value::Object(document)
}

/// A provider's refusal is the operator's to fix (422 on `config`); its absence is ours (502).
fn provider_error(error: ProvisioningError) -> ApiError {
    let detail = match &error.code {
        Some(code) => format!("{} (provider code {code})", error.message),
        None => error.message.clone(),
    };
    match error.kind {
        ProvisioningErrorKind::Unauthorized => {
            ApiError::validation("config", format!("the provider refused the credentials: {detail}"))
        }
        ProvisioningErrorKind::NotFound => {
            ApiError::validation("config", format!("the provider does not know this resource: {detail}"))
        }
        ProvisioningErrorKind::Rejected => {
            ApiError::validation("config", format!("the provider rejected the request: {detail}"))
        }
        ProvisioningErrorKind::Unavailable => ApiError::BadGateway(format!("the provider is unavailable: {detail}")),
    }
}
