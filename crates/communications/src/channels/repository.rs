//! SQL for channel accounts and provider configurations. Every query filters by tenant.

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::pagination::PageRequest;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{ChannelStatus, ChannelType, ProviderKind};

#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub channel_type: ChannelType,
    pub display_name: String,
    pub status: ChannelStatus,
    pub status_reason: Option<String>,
    pub sender: Option<String>,
    pub verification: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A provider configuration as stored: secrets are envelopes, shown only through `masks`.
#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub channel_account_id: Option<Uuid>,
    pub channel_type: ChannelType,
    pub provider: ProviderKind,
    pub priority: i32,
    pub enabled: bool,
    pub settings: Value,
    pub secrets: Value,
    pub masks: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct NewAccount<'a> {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub channel_type: ChannelType,
    pub display_name: &'a str,
    pub sender: Option<&'a str>,
    pub verification: Value,
}

pub async fn insert_account(db: impl PgExecutor<'_>, account: NewAccount<'_>) -> Result<AccountRow, ApiError> {
    sqlx::query_as!(
        AccountRow,
        r#"INSERT INTO communications.channel_accounts (id, tenant_id, channel_type, display_name, sender, verification)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id, tenant_id, channel_type AS "channel_type: ChannelType", display_name,
                     status AS "status: ChannelStatus", status_reason, sender, verification, created_at, updated_at"#,
        account.id,
        account.tenant_id.0,
        account.channel_type.as_str(),
        account.display_name,
        account.sender,
        account.verification,
    )
    .fetch_one(db)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => ApiError::conflict(
            Some("channel_type"),
            format!("this workspace already has a {} channel account", account.channel_type.as_str()),
        ),
        _ => ApiError::from(error),
    })
}

pub async fn list_accounts(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    page: PageRequest,
) -> Result<Vec<AccountRow>, ApiError> {
    Ok(sqlx::query_as!(
        AccountRow,
        r#"SELECT id, tenant_id, channel_type AS "channel_type: ChannelType", display_name,
                  status AS "status: ChannelStatus", status_reason, sender, verification, created_at, updated_at
           FROM communications.channel_accounts
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
           ORDER BY id LIMIT $3"#,
        tenant_id.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(db)
    .await?)
}

pub async fn find_account(db: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<AccountRow, ApiError> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, tenant_id, channel_type AS "channel_type: ChannelType", display_name,
                  status AS "status: ChannelStatus", status_reason, sender, verification, created_at, updated_at
           FROM communications.channel_accounts WHERE tenant_id = $1 AND id = $2"#,
        tenant_id.0,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("channel account"))
}

/// A webchat account's settings (allowed origins, greeting), kept with what verification knows.
pub async fn set_webchat_settings(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: Uuid,
    settings: &Value,
) -> Result<(), ApiError> {
    sqlx::query!(
        r#"UPDATE communications.channel_accounts
           SET verification = jsonb_set(verification, '{webchat}', $3), updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND channel_type = 'webchat'"#,
        tenant_id.0,
        id,
        settings,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The account, locked until the transaction ends: lifecycle changes are serialised per account.
pub async fn lock_account(db: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<AccountRow, ApiError> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, tenant_id, channel_type AS "channel_type: ChannelType", display_name,
                  status AS "status: ChannelStatus", status_reason, sender, verification, created_at, updated_at
           FROM communications.channel_accounts WHERE tenant_id = $1 AND id = $2 FOR UPDATE"#,
        tenant_id.0,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("channel account"))
}

#[derive(Debug, Default)]
pub struct AccountChanges<'a> {
    pub display_name: Option<&'a str>,
    pub status: Option<ChannelStatus>,
    /// `Some(None)` clears the reason.
    pub status_reason: Option<Option<&'a str>>,
    pub sender: Option<&'a str>,
    pub verification: Option<Value>,
}

pub async fn update_account(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: Uuid,
    changes: AccountChanges<'_>,
) -> Result<AccountRow, ApiError> {
    sqlx::query_as!(
        AccountRow,
        r#"UPDATE communications.channel_accounts SET
               display_name = COALESCE($3, display_name),
               status = COALESCE($4, status),
               status_reason = CASE WHEN $5 THEN $6 ELSE status_reason END,
               sender = COALESCE($7, sender),
               verification = COALESCE($8, verification),
               updated_at = now()
           WHERE tenant_id = $1 AND id = $2
           RETURNING id, tenant_id, channel_type AS "channel_type: ChannelType", display_name,
                     status AS "status: ChannelStatus", status_reason, sender, verification, created_at, updated_at"#,
        tenant_id.0,
        id,
        changes.display_name,
        changes.status.map(ChannelStatus::as_str),
        changes.status_reason.is_some(),
        changes.status_reason.flatten(),
        changes.sender,
        changes.verification,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("channel account"))
}

#[derive(Debug)]
pub struct NewProvider {
    pub id: Uuid,
    pub tenant_id: Option<TenantId>,
    pub channel_account_id: Option<Uuid>,
    pub channel_type: ChannelType,
    pub provider: ProviderKind,
    pub priority: i32,
    pub enabled: bool,
    pub settings: Value,
    pub secrets: Value,
    pub masks: Value,
}

pub async fn insert_provider(db: impl PgExecutor<'_>, provider: NewProvider) -> Result<ProviderRow, ApiError> {
    sqlx::query_as!(
        ProviderRow,
        r#"INSERT INTO communications.provider_configs
               (id, tenant_id, channel_account_id, channel_type, provider, priority, enabled, settings, secrets, masks)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           RETURNING id, tenant_id, channel_account_id, channel_type AS "channel_type: ChannelType",
                     provider AS "provider: ProviderKind", priority, enabled, settings, secrets, masks, created_at, updated_at"#,
        provider.id,
        provider.tenant_id.map(|t| t.0),
        provider.channel_account_id,
        provider.channel_type.as_str(),
        provider.provider.as_str(),
        provider.priority,
        provider.enabled,
        provider.settings,
        provider.secrets,
        provider.masks,
    )
    .fetch_one(db)
    .await
    .map_err(priority_conflict)
}

fn priority_conflict(error: sqlx::Error) -> ApiError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::conflict(Some("priority"), "another provider of this account already has that priority")
        }
        _ => ApiError::from(error),
    }
}

/// The providers of the given accounts of one tenant, by account then priority.
pub async fn providers_of(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    account_ids: &[Uuid],
) -> Result<Vec<ProviderRow>, ApiError> {
    let accounts: Vec<(Uuid, Uuid)> = account_ids.iter().map(|id| (tenant_id.0, *id)).collect();
    providers_of_accounts(db, &accounts).await
}

/// The providers of the given (tenant, account) pairs, of any tenants, by account then
/// priority: one statement for a dispatch batch.
pub async fn providers_of_accounts(
    db: impl PgExecutor<'_>,
    accounts: &[(Uuid, Uuid)],
) -> Result<Vec<ProviderRow>, ApiError> {
    let tenants: Vec<Uuid> = accounts.iter().map(|(tenant, _)| *tenant).collect();
    let ids: Vec<Uuid> = accounts.iter().map(|(_, id)| *id).collect();
    Ok(sqlx::query_as!(
        ProviderRow,
        r#"SELECT id, tenant_id, channel_account_id, channel_type AS "channel_type: ChannelType",
                  provider AS "provider: ProviderKind", priority, enabled, settings, secrets, masks, created_at, updated_at
           FROM communications.provider_configs
           WHERE (tenant_id, channel_account_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))
           ORDER BY channel_account_id, priority"#,
        &tenants,
        &ids,
    )
    .fetch_all(db)
    .await?)
}

pub async fn lock_provider(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    account_id: Uuid,
    id: Uuid,
) -> Result<ProviderRow, ApiError> {
    sqlx::query_as!(
        ProviderRow,
        r#"SELECT id, tenant_id, channel_account_id, channel_type AS "channel_type: ChannelType",
                  provider AS "provider: ProviderKind", priority, enabled, settings, secrets, masks, created_at, updated_at
           FROM communications.provider_configs
           WHERE tenant_id = $1 AND channel_account_id = $2 AND id = $3 FOR UPDATE"#,
        tenant_id.0,
        account_id,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("provider"))
}

#[derive(Debug, Default)]
pub struct ProviderChanges {
    pub priority: Option<i32>,
    pub enabled: Option<bool>,
    pub settings: Option<Value>,
    pub secrets: Option<Value>,
    pub masks: Option<Value>,
}

pub async fn update_provider(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: Uuid,
    changes: ProviderChanges,
) -> Result<ProviderRow, ApiError> {
    sqlx::query_as!(
        ProviderRow,
        r#"UPDATE communications.provider_configs SET
               priority = COALESCE($3, priority),
               enabled = COALESCE($4, enabled),
               settings = COALESCE($5, settings),
               secrets = COALESCE($6, secrets),
               masks = COALESCE($7, masks),
               updated_at = now()
           WHERE tenant_id = $1 AND id = $2
           RETURNING id, tenant_id, channel_account_id, channel_type AS "channel_type: ChannelType",
                     provider AS "provider: ProviderKind", priority, enabled, settings, secrets, masks, created_at, updated_at"#,
        tenant_id.0,
        id,
        changes.priority,
        changes.enabled,
        changes.settings,
        changes.secrets,
        changes.masks,
    )
    .fetch_optional(db)
    .await
    .map_err(priority_conflict)?
    .ok_or(ApiError::NotFound("provider"))
}

pub async fn delete_provider(db: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<(), ApiError> {
    sqlx::query!("DELETE FROM communications.provider_configs WHERE tenant_id = $1 AND id = $2", tenant_id.0, id)
        .execute(db)
        .await?;
    Ok(())
}

/// The next free priority of an account (one past the highest).
pub async fn next_priority(db: impl PgExecutor<'_>, tenant_id: TenantId, account_id: Uuid) -> Result<i32, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT COALESCE(max(priority) + 1, 0) AS "next!" FROM communications.provider_configs
           WHERE tenant_id = $1 AND channel_account_id = $2"#,
        tenant_id.0,
        account_id,
    )
    .fetch_one(db)
    .await?)
}

/// Secrets of every provider configuration, platform defaults included: for key rotation.
#[derive(Debug)]
pub struct StoredSecrets {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub channel_account_id: Option<Uuid>,
    pub secrets: Value,
}

pub async fn all_secrets(db: impl PgExecutor<'_>) -> Result<Vec<StoredSecrets>, ApiError> {
    Ok(sqlx::query_as!(
        StoredSecrets,
        "SELECT id, tenant_id, channel_account_id, secrets FROM communications.provider_configs ORDER BY id"
    )
    .fetch_all(db)
    .await?)
}

/// Swaps the secrets only if they are still `expected`: a concurrent edit (which seals under the
/// active key anyway) wins over rotation. Returns whether the row changed.
pub async fn replace_secrets(
    db: impl PgExecutor<'_>,
    id: Uuid,
    expected: &Value,
    secrets: &Value,
) -> Result<bool, ApiError> {
    let result = sqlx::query!(
        "UPDATE communications.provider_configs SET secrets = $3, updated_at = now() WHERE id = $1 AND secrets = $2",
        id,
        expected,
        secrets,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The account's provider tried first: enabled, lowest priority.
pub async fn primary_provider(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    account_id: Uuid,
) -> Result<Option<ProviderRow>, ApiError> {
    Ok(sqlx::query_as!(
        ProviderRow,
        r#"SELECT id, tenant_id, channel_account_id, channel_type AS "channel_type: ChannelType",
                  provider AS "provider: ProviderKind", priority, enabled, settings, secrets, masks, created_at, updated_at
           FROM communications.provider_configs
           WHERE tenant_id = $1 AND channel_account_id = $2 AND enabled
           ORDER BY priority LIMIT 1"#,
        tenant_id.0,
        account_id,
    )
    .fetch_optional(db)
    .await?)
}

/// The platform's default configuration for a provider, if the platform has one.
/// Changes whenever a platform default of the provider is added, changed or removed: how many
/// there are and the latest change.
pub type PlatformVersion = (i64, Option<DateTime<Utc>>);

pub async fn platform_version(db: impl PgExecutor<'_>, provider: ProviderKind) -> Result<PlatformVersion, ApiError> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "count!", max(updated_at) AS latest FROM communications.provider_configs
           WHERE tenant_id IS NULL AND provider = $1"#,
        provider.as_str(),
    )
    .fetch_one(db)
    .await?;
    Ok((row.count, row.latest))
}

pub async fn platform_default(
    db: impl PgExecutor<'_>,
    provider: ProviderKind,
) -> Result<Option<ProviderRow>, ApiError> {
    Ok(sqlx::query_as!(
        ProviderRow,
        r#"SELECT id, tenant_id, channel_account_id, channel_type AS "channel_type: ChannelType",
                  provider AS "provider: ProviderKind", priority, enabled, settings, secrets, masks, created_at, updated_at
           FROM communications.provider_configs
           WHERE tenant_id IS NULL AND provider = $1 AND enabled
           ORDER BY priority LIMIT 1"#,
        provider.as_str(),
    )
    .fetch_optional(db)
    .await?)
}

/// Replaces the platform default for a provider (there is one per provider).
pub async fn replace_platform_default(
    db: &mut sqlx::PgConnection,
    provider: NewProvider,
) -> Result<ProviderRow, ApiError> {
    sqlx::query!(
        "DELETE FROM communications.provider_configs WHERE tenant_id IS NULL AND provider = $1",
        provider.provider.as_str()
    )
    .execute(&mut *db)
    .await?;
    insert_provider(&mut *db, provider).await
}

/// A tenant's WhatsApp providers, for the webhook handshake.
pub async fn meta_providers(db: impl PgExecutor<'_>, tenant_id: TenantId) -> Result<Vec<ProviderRow>, ApiError> {
    Ok(sqlx::query_as!(
        ProviderRow,
        r#"SELECT p.id, p.tenant_id, p.channel_account_id, p.channel_type AS "channel_type: ChannelType",
                  p.provider AS "provider: ProviderKind", p.priority, p.enabled, p.settings, p.secrets, p.masks,
                  p.created_at, p.updated_at
           FROM communications.provider_configs p
           JOIN communications.channel_accounts a ON a.id = p.channel_account_id AND a.tenant_id = p.tenant_id
           WHERE p.tenant_id = $1 AND p.provider = 'meta' AND a.status <> 'revoked'"#,
        tenant_id.0,
    )
    .fetch_all(db)
    .await?)
}

/// An SES configuration expecting notifications from an SNS topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOwner {
    /// `None`: a platform default (its notifications concern any tenant).
    pub tenant_id: Option<Uuid>,
    /// The AWS account that sends with it, when it is not the topic's own.
    pub aws_account_id: Option<String>,
}

/// The SES configurations, platform defaults included, that list `topic_arn` among their SNS
/// topics.
pub async fn ses_topic_owners(db: impl PgExecutor<'_>, topic_arn: &str) -> Result<Vec<TopicOwner>, ApiError> {
    Ok(sqlx::query_as!(
        TopicOwner,
        r#"SELECT tenant_id, settings->>'aws_account_id' AS aws_account_id
           FROM communications.provider_configs
           WHERE provider = 'ses' AND settings->'sns_topic_arns' ? $1"#,
        topic_arn,
    )
    .fetch_all(db)
    .await?)
}

/// The non-revoked account of each (tenant, channel type) in `keys` that has one, in one
/// statement.
pub async fn active_accounts_for_channels(
    db: impl PgExecutor<'_>,
    keys: &[(Uuid, ChannelType)],
) -> Result<Vec<AccountRow>, ApiError> {
    let tenants: Vec<Uuid> = keys.iter().map(|(tenant, _)| *tenant).collect();
    let types: Vec<&str> = keys.iter().map(|(_, channel)| channel.as_str()).collect();
    Ok(sqlx::query_as!(
        AccountRow,
        r#"SELECT id, tenant_id, channel_type AS "channel_type: ChannelType", display_name,
                  status AS "status: ChannelStatus", status_reason, sender, verification, created_at, updated_at
           FROM communications.channel_accounts
           WHERE (tenant_id, channel_type) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))
             AND status <> 'revoked'"#,
        &tenants,
        &types as &[&str],
    )
    .fetch_all(db)
    .await?)
}
