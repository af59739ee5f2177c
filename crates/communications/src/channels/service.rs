//! Channel-account operations: what the handlers (and later the verification flows) call.

use std::collections::BTreeMap;
use std::sync::Arc;

use kernel::error::ApiError;
use kernel::ids::TenantId;
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::provider_input::{self, ParsedConfig};
use super::repository::{self, AccountChanges, AccountRow, NewAccount, NewProvider, ProviderChanges, ProviderRow};
use super::secrets::SecretOwner;
use super::{ChannelStatus, ChannelType, LifecycleAction, ProviderKind, secrets};
use crate::Communications;

/// A channel account as the API shows it: secrets only as masks.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelAccountView {
    pub id: Uuid,
    pub channel_type: ChannelType,
    pub display_name: String,
    pub status: ChannelStatus,
    /// Why it is suspended or revoked, when it is.
    pub status_reason: Option<String>,
    /// The sender identity: phone number id, E.164 number, email domain.
    pub sender: Option<String>,
    /// What verification needs or learned (DKIM records to publish, quality rating, tier…).
    #[schema(value_type = Object)]
    pub verification: Value,
    /// Providers by priority (0 = primary); webchat has none.
    pub providers: Vec<ProviderView>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    pub id: Uuid,
    pub provider: ProviderKind,
    pub priority: i32,
    pub enabled: bool,
    /// Non-secret configuration.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// Secret fields, masked (`"…a1b2"`).
    #[schema(value_type = Object)]
    pub secrets: Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<ProviderRow> for ProviderView {
    fn from(row: ProviderRow) -> Self {
        Self {
            id: row.id,
            provider: row.provider,
            priority: row.priority,
            enabled: row.enabled,
            settings: row.settings,
            secrets: row.masks,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

fn view(account: AccountRow, providers: Vec<ProviderRow>) -> ChannelAccountView {
    ChannelAccountView {
        id: account.id,
        channel_type: account.channel_type,
        display_name: account.display_name,
        status: account.status,
        status_reason: account.status_reason,
        sender: account.sender,
        verification: account.verification,
        providers: providers.into_iter().map(ProviderView::from).collect(),
        created_at: account.created_at,
        updated_at: account.updated_at,
    }
}

pub fn parse_display_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("display_name", "must be 1-200 characters"));
    }
    Ok(name.to_owned())
}

#[derive(Debug)]
pub struct CreateAccount {
    pub channel_type: ChannelType,
    pub provider: Option<ProviderKind>,
    pub display_name: String,
    pub config: Option<Value>,
}

impl Communications {
    pub async fn create_channel_account(
        &self,
        tenant: TenantId,
        input: CreateAccount,
    ) -> Result<ChannelAccountView, ApiError> {
        let display_name = parse_display_name(&input.display_name)?;
        let provider = match (input.channel_type, input.provider) {
            (ChannelType::Webchat, None) => None,
            (ChannelType::Webchat, Some(_)) => {
                return Err(ApiError::validation("provider", "webchat is served by Switchboard itself: omit provider"));
            }
            (channel, Some(provider)) if provider.serves(channel) => Some(provider),
            (channel, Some(provider)) => {
                return Err(ApiError::validation(
                    "provider",
                    format!("{} cannot serve the {} channel", provider.as_str(), channel.as_str()),
                ));
            }
            (channel, None) => provider_input::default_provider(channel),
        };
        let account_id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        let account = match provider {
            None => {
                let settings = provider_input::parse_webchat(input.config.as_ref())?;
                let new = NewAccount {
                    id: account_id,
                    tenant_id: tenant,
                    channel_type: input.channel_type,
                    display_name: &display_name,
                    sender: None,
                    verification: json!({ "webchat": settings }),
                };
                repository::insert_account(&mut *tx, new).await?
            }
            Some(provider) => {
                let config = input.config.ok_or_else(|| ApiError::validation("config", "is required"))?;
                let parsed = provider_input::parse(provider, &config)?;
                let new = NewAccount {
                    id: account_id,
                    tenant_id: tenant,
                    channel_type: input.channel_type,
                    display_name: &display_name,
                    sender: parsed.sender.as_deref(),
                    verification: json!({}),
                };
                let account = repository::insert_account(&mut *tx, new).await?;
                self.insert_provider(&mut tx, tenant, &account, provider, 0, true, &parsed).await?;
                account
            }
        };
        tx.commit().await?;
        tracing::info!(tenant_id = %tenant, channel_account_id = %account.id, channel = account.channel_type.as_str(), "channel account created");
        self.channel_account(tenant, account.id).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_provider(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant: TenantId,
        account: &AccountRow,
        provider: ProviderKind,
        priority: i32,
        enabled: bool,
        parsed: &ParsedConfig,
    ) -> Result<ProviderRow, ApiError> {
        let id = Uuid::now_v7();
        let owner =
            SecretOwner { tenant_id: Some(tenant.0), channel_account_id: Some(account.id), provider_config_id: id };
        let (sealed, masks) = secrets::seal_all(&self.keyring, &owner, &parsed.secrets);
        let new = NewProvider {
            id,
            tenant_id: Some(tenant),
            channel_account_id: Some(account.id),
            channel_type: account.channel_type,
            provider,
            priority,
            enabled,
            settings: Value::Object(parsed.settings.clone()),
            secrets: sealed,
            masks,
        };
        repository::insert_provider(tx, new).await
    }

    pub async fn channel_account(&self, tenant: TenantId, id: Uuid) -> Result<ChannelAccountView, ApiError> {
        let account = repository::find_account(&self.pool, tenant, id).await?;
        let providers = repository::providers_of(&self.pool, tenant, &[id]).await?;
        Ok(view(account, providers))
    }

    pub async fn channel_accounts(
        &self,
        tenant: TenantId,
        page: kernel::pagination::PageRequest,
    ) -> Result<Vec<ChannelAccountView>, ApiError> {
        let accounts = repository::list_accounts(&self.pool, tenant, page).await?;
        let ids: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
        let mut by_account: BTreeMap<Uuid, Vec<ProviderRow>> = BTreeMap::new();
        for provider in repository::providers_of(&self.pool, tenant, &ids).await? {
            if let Some(account_id) = provider.channel_account_id {
                by_account.entry(account_id).or_default().push(provider);
            }
        }
        Ok(accounts
            .into_iter()
            .map(|account| {
                let providers = by_account.remove(&account.id).unwrap_or_default();
                view(account, providers)
            })
            .collect())
    }

    pub async fn rename_channel_account(
        &self,
        tenant: TenantId,
        id: Uuid,
        display_name: &str,
    ) -> Result<ChannelAccountView, ApiError> {
        let display_name = parse_display_name(display_name)?;
        let mut tx = self.pool.begin().await?;
        let account = repository::lock_account(&mut *tx, tenant, id).await?;
        if account.status == ChannelStatus::Revoked {
            return Err(ApiError::conflict(Some("status"), "a revoked channel account cannot change"));
        }
        let changes = AccountChanges { display_name: Some(&display_name), ..Default::default() };
        repository::update_account(&mut *tx, tenant, id, changes).await?;
        tx.commit().await?;
        self.channel_account(tenant, id).await
    }

    /// Suspend, reactivate or revoke (verification has its own flow).
    pub async fn change_channel_status(
        &self,
        tenant: TenantId,
        id: Uuid,
        action: LifecycleAction,
        reason: Option<&str>,
    ) -> Result<ChannelAccountView, ApiError> {
        let mut tx = self.pool.begin().await?;
        let account = repository::lock_account(&mut *tx, tenant, id).await?;
        let status = action.apply(account.status)?;
        let reason = match status {
            ChannelStatus::Suspended | ChannelStatus::Revoked => Some(reason.map(str::trim).filter(|r| !r.is_empty())),
            _ => Some(None),
        };
        let changes = AccountChanges { status: Some(status), status_reason: reason, ..Default::default() };
        repository::update_account(&mut *tx, tenant, id, changes).await?;
        tx.commit().await?;
        tracing::info!(tenant_id = %tenant, channel_account_id = %id, action = action.as_str(), "channel account status changed");
        self.channel_account(tenant, id).await
    }

    pub async fn add_provider(
        &self,
        tenant: TenantId,
        account_id: Uuid,
        provider: ProviderKind,
        priority: Option<i32>,
        enabled: bool,
        config: &Value,
    ) -> Result<ProviderView, ApiError> {
        let mut tx = self.pool.begin().await?;
        let account = repository::lock_account(&mut *tx, tenant, account_id).await?;
        if account.status == ChannelStatus::Revoked {
            return Err(ApiError::conflict(Some("status"), "a revoked channel account cannot change"));
        }
        if !provider.serves(account.channel_type) {
            return Err(ApiError::validation(
                "provider",
                format!("{} cannot serve the {} channel", provider.as_str(), account.channel_type.as_str()),
            ));
        }
        let priority = match priority {
            Some(p) => parse_priority(p)?,
            None => repository::next_priority(&mut *tx, tenant, account_id).await?,
        };
        let parsed = provider_input::parse(provider, config)?;
        let row = self.insert_provider(&mut tx, tenant, &account, provider, priority, enabled, &parsed).await?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// Changes priority, enabled flag and/or config; `config` is merged over the current one,
    /// so secrets need not be sent again.
    pub async fn update_provider(
        &self,
        tenant: TenantId,
        account_id: Uuid,
        id: Uuid,
        priority: Option<i32>,
        enabled: Option<bool>,
        config_patch: Option<&Value>,
    ) -> Result<ProviderView, ApiError> {
        let mut tx = self.pool.begin().await?;
        let account = repository::lock_account(&mut *tx, tenant, account_id).await?;
        if account.status == ChannelStatus::Revoked {
            return Err(ApiError::conflict(Some("status"), "a revoked channel account cannot change"));
        }
        let current = repository::lock_provider(&mut *tx, tenant, account_id, id).await?;
        let mut changes =
            ProviderChanges { priority: priority.map(parse_priority).transpose()?, enabled, ..Default::default() };
        if let Some(patch) = config_patch {
            let Some(patch) = patch.as_object() else {
                return Err(ApiError::validation("config", "must be an object"));
            };
            let mut merged: Map<String, Value> = current.settings.as_object().cloned().unwrap_or_default();
            for (field, value) in secrets::open_all(&self.keyring, &SecretOwner::from(&current), &current.secrets)? {
                merged.insert(field, Value::String(value));
            }
            merged.extend(patch.clone());
            let parsed = provider_input::parse(current.provider, &Value::Object(merged))?;
            let (sealed, masks) = secrets::seal_all(&self.keyring, &SecretOwner::from(&current), &parsed.secrets);
            changes.settings = Some(Value::Object(parsed.settings));
            changes.secrets = Some(sealed);
            changes.masks = Some(masks);
        }
        let row = repository::update_provider(&mut *tx, tenant, id, changes).await?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// Merges `config` into the account's primary (lowest-priority) provider; for webchat,
    /// which has none, replaces its settings (allowed origins, greeting).
    pub async fn update_primary_config(
        &self,
        tenant: TenantId,
        account_id: Uuid,
        config: &Value,
    ) -> Result<(), ApiError> {
        let providers = repository::providers_of(&self.pool, tenant, &[account_id]).await?;
        let Some(primary) = providers.first() else {
            let account = repository::find_account(&self.pool, tenant, account_id).await?;
            if account.channel_type == ChannelType::Webchat {
                let settings = provider_input::parse_webchat(Some(config))?;
                return repository::set_webchat_settings(&self.pool, tenant, account_id, &Value::Object(settings))
                    .await;
            }
            return Err(ApiError::validation("config", "this channel has no provider to configure"));
        };
        self.update_provider(tenant, account_id, primary.id, None, None, Some(config)).await.map(drop)
    }

    pub async fn remove_provider(&self, tenant: TenantId, account_id: Uuid, id: Uuid) -> Result<(), ApiError> {
        let mut tx = self.pool.begin().await?;
        repository::lock_account(&mut *tx, tenant, account_id).await?;
        repository::lock_provider(&mut *tx, tenant, account_id, id).await?;
        let remaining = repository::providers_of(&mut *tx, tenant, &[account_id]).await?.len();
        if remaining <= 1 {
            return Err(ApiError::conflict(
                None,
                "a channel account keeps at least one provider; revoke the account instead",
            ));
        }
        repository::delete_provider(&mut *tx, tenant, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets the platform default for a provider (replacing any previous one).
    pub async fn set_platform_default(&self, provider: ProviderKind, config: &Value) -> Result<ProviderView, ApiError> {
        let parsed = provider_input::parse_platform(provider, config)?;
        let id = Uuid::now_v7();
        let owner = SecretOwner { tenant_id: None, channel_account_id: None, provider_config_id: id };
        let (sealed, masks) = secrets::seal_all(&self.keyring, &owner, &parsed.secrets);
        let channel_type = match provider {
            ProviderKind::Ses => ChannelType::Email,
            ProviderKind::Meta => ChannelType::Whatsapp,
            ProviderKind::Sns | ProviderKind::Twilio => ChannelType::Sms,
        };
        let new = NewProvider {
            id,
            tenant_id: None,
            channel_account_id: None,
            channel_type,
            provider,
            priority: 0,
            enabled: true,
            settings: Value::Object(parsed.settings),
            secrets: sealed,
            masks,
        };
        let mut tx = self.pool.begin().await?;
        let row = repository::replace_platform_default(&mut tx, new).await?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// The platform defaults, masked.
    pub async fn platform_defaults(&self) -> Result<Vec<ProviderView>, ApiError> {
        let mut views = Vec::new();
        for provider in [ProviderKind::Meta, ProviderKind::Ses, ProviderKind::Sns, ProviderKind::Twilio] {
            if let Some(row) = repository::platform_default(&self.pool, provider).await? {
                views.push(row.into());
            }
        }
        Ok(views)
    }

    /// The decrypted configuration of one provider (for adapters and verification flows).
    pub async fn provider_secrets(&self, provider: &ProviderRow) -> Result<BTreeMap<String, String>, ApiError> {
        secrets::open_all(&self.keyring, &SecretOwner::from(provider), &provider.secrets)
    }

    /// Re-encrypts every secret sealed under an older master key; returns how many rows changed.
    pub async fn rotate_secrets(&self) -> Result<usize, ApiError> {
        let mut changed = 0;
        for stored in repository::all_secrets(&self.pool).await? {
            let owner = SecretOwner {
                tenant_id: stored.tenant_id,
                channel_account_id: stored.channel_account_id,
                provider_config_id: stored.id,
            };
            let Some(resealed) = secrets::reseal_stale(&self.keyring, &owner, &stored.secrets)? else {
                continue;
            };
            if repository::replace_secrets(&self.pool, stored.id, &stored.secrets, &resealed).await? {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

fn parse_priority(priority: i32) -> Result<i32, ApiError> {
    if (0..=99).contains(&priority) {
        Ok(priority)
    } else {
        Err(ApiError::validation("priority", "must be between 0 and 99"))
    }
}

impl Communications {
    /// The auth tokens a Twilio webhook for this tenant may be signed with: the tenant's Twilio
    /// providers', then the platform default's. Every status callback needs them, two or three
    /// per message sent: they are kept until the channel configuration changes (the dispatcher's
    /// notification, `dispatch::configs`), which spares each callback three reads and a
    /// decryption. A rotated token is seen as soon as its change commits.
    pub async fn twilio_tokens(&self, tenant: TenantId) -> Result<Arc<[String]>, ApiError> {
        if let Some(tokens) = self.webhook_tokens.get(&self.pool, &tenant.0) {
            return Ok(tokens);
        }
        // Taken before the reads: a change committed meanwhile voids what they return.
        let generation = self.webhook_tokens.generation();
        let tokens: Arc<[String]> = self.read_twilio_tokens(tenant).await?.into();
        self.webhook_tokens.put(tenant.0, generation, tokens.clone());
        Ok(tokens)
    }

    async fn read_twilio_tokens(&self, tenant: TenantId) -> Result<Vec<String>, ApiError> {
        let mut tokens = Vec::new();
        let accounts =
            repository::list_accounts(&self.pool, tenant, kernel::pagination::PageRequest { limit: 100, after: None })
                .await?;
        let ids: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
        for row in repository::providers_of(&self.pool, tenant, &ids).await? {
            if row.provider == ProviderKind::Twilio
                && let Some(token) = self.provider_secrets(&row).await?.remove("auth_token")
            {
                tokens.push(token);
            }
        }
        if let Some(platform) = repository::platform_default(&self.pool, ProviderKind::Twilio).await?
            && let Some(token) = self.provider_secrets(&platform).await?.remove("auth_token")
        {
            tokens.push(token);
        }
        Ok(tokens)
    }
}
