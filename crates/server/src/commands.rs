//! The administrative CLI commands. They call the same module functions as the HTTP API.

use std::io::BufRead;

use anyhow::{Context, bail};
use identity::agents::{self, Email, NewAgent, NewPassword};
use identity::{api_keys, tenants};
use kernel::auth::Role;
use kernel::error::ApiError;
use serde_json::json;
use sqlx::PgPool;

use crate::cli::{AgentCommand, ApiKeyCommand, TenantCommand};

pub async fn tenant(pool: &PgPool, command: TenantCommand) -> anyhow::Result<()> {
    let TenantCommand::Create { name, slug, json } = command;
    let name = tenants::parse_name(&name).map_err(user_error)?;
    let slug = tenants::Slug::parse(&slug).map_err(user_error)?;
    let mut tx = pool.begin().await?;
    let tenant = tenants::create(&mut *tx, &name, &slug).await.map_err(user_error)?;
    let key = api_keys::issue(&mut *tx, tenant.id, "initial").await.map_err(user_error)?;
    tx.commit().await?;
    if json {
        println!("{}", json!({"tenant_id": tenant.id, "slug": tenant.slug, "api_key": key.secret}));
    } else {
        println!("Created tenant {} ({}) with id {}", tenant.name, tenant.slug, tenant.id);
        println!("API key (shown once): {}", key.secret);
    }
    Ok(())
}

pub async fn agent(pool: &PgPool, command: AgentCommand) -> anyhow::Result<()> {
    let AgentCommand::Create { tenant, email, name, role, password_stdin: _, json } = command;
    let tenant = find_tenant(pool, &tenant).await?;
    let email = Email::parse(&email).map_err(user_error)?;
    let name = agents::parse_name(&name).map_err(user_error)?;
    let password = NewPassword::parse(read_password_line()?).map_err(user_error)?;
    let password_hash = agents::hash_password(password).await.map_err(user_error)?;
    let agent = agents::create(
        pool,
        NewAgent { tenant_id: tenant.id, email: &email, name: &name, role: role.into(), password_hash: &password_hash },
    )
    .await
    .map_err(user_error)?;
    if json {
        println!("{}", json!({"agent_id": agent.id}));
    } else {
        println!("Created {} agent {} <{}> with id {}", agent.role.as_str(), agent.name, agent.email, agent.id);
    }
    Ok(())
}

pub async fn api_key(pool: &PgPool, command: ApiKeyCommand) -> anyhow::Result<()> {
    let ApiKeyCommand::Create { tenant, name, json } = command;
    let tenant = find_tenant(pool, &tenant).await?;
    let name = api_keys::parse_name(Some(&name)).map_err(user_error)?;
    let key = api_keys::issue(pool, tenant.id, &name).await.map_err(user_error)?;
    if json {
        println!("{}", json!({"api_key_id": key.key.id, "api_key": key.secret}));
    } else {
        println!("Created API key {} for {} (shown once): {}", key.key.id, tenant.slug, key.secret);
    }
    Ok(())
}

/// Re-seals every secret made under an older master key.
pub async fn rotate_keys(pool: &PgPool, settings: &crate::settings::Settings) -> anyhow::Result<()> {
    let keyring = std::sync::Arc::new(settings.secrets.keyring()?);
    let active = keyring.active_key_id().to_owned();
    let communications = communications::Communications::new(pool.clone(), keyring);
    let changed = communications.rotate_secrets().await.map_err(user_error)?;
    println!("re-sealed {changed} provider configuration(s) under key `{active}`");
    Ok(())
}

pub async fn platform_provider(
    pool: &PgPool,
    settings: &crate::settings::Settings,
    command: crate::cli::PlatformProviderCommand,
) -> anyhow::Result<()> {
    use communications::channels::ProviderKind;
    let keyring = std::sync::Arc::new(settings.secrets.keyring()?);
    let communications = communications::Communications::new(pool.clone(), keyring);
    match command {
        crate::cli::PlatformProviderCommand::Set { provider, config } => {
            let provider = match provider {
                crate::cli::ProviderArg::Ses => ProviderKind::Ses,
                crate::cli::ProviderArg::Sns => ProviderKind::Sns,
                crate::cli::ProviderArg::Twilio => ProviderKind::Twilio,
            };
            let config: serde_json::Value =
                serde_json::from_str(&config).map_err(|e| anyhow::anyhow!("--config is not JSON: {e}"))?;
            let view = communications.set_platform_default(provider, &config).await.map_err(user_error)?;
            println!("{}", serde_json::to_string(&view)?);
        }
        crate::cli::PlatformProviderCommand::List => {
            let views = communications.platform_defaults().await.map_err(user_error)?;
            println!("{}", serde_json::to_string(&views)?);
        }
    }
    Ok(())
}

/// What `demo` prints: the demo workspace and fresh credentials for it.
#[derive(Debug)]
pub struct DemoCredentials {
    pub slug: String,
    pub admin_email: String,
    pub admin_password: String,
    pub api_key: String,
}

const DEMO_SLUG: &str = "demo";
const DEMO_ADMIN: &str = "admin@demo.switchboard.test";

/// Makes the demo tenant and admin on first use; each run issues a new API key and a new
/// admin password, so credentials are printed once and never stored in clear.
pub async fn prepare_demo(pool: &PgPool) -> anyhow::Result<DemoCredentials> {
    let slug = tenants::Slug::parse(DEMO_SLUG).map_err(user_error)?;
    let tenant = match tenants::find_by_slug(pool, DEMO_SLUG).await.map_err(user_error)? {
        Some(tenant) => tenant,
        None => tenants::create(pool, "Demo Tours", &slug).await.map_err(user_error)?,
    };
    let admin_password = identity::secrets::random_token()[..20].to_owned();
    let password_hash = agents::hash_password(NewPassword::parse(admin_password.clone()).map_err(user_error)?)
        .await
        .map_err(user_error)?;
    match agents::find_credentials(pool, tenant.id, DEMO_ADMIN).await.map_err(user_error)? {
        Some(existing) => {
            agents::set_password_hash(pool, tenant.id, existing.agent.id, &password_hash).await.map_err(user_error)?
        }
        None => {
            let email = Email::parse(DEMO_ADMIN).map_err(user_error)?;
            let new = NewAgent {
                tenant_id: tenant.id,
                email: &email,
                name: "Demo Admin",
                role: Role::Admin,
                password_hash: &password_hash,
            };
            agents::create(pool, new).await.map_err(user_error)?;
        }
    }
    let key = api_keys::issue(pool, tenant.id, "demo").await.map_err(user_error)?;
    Ok(DemoCredentials { slug: tenant.slug, admin_email: DEMO_ADMIN.into(), admin_password, api_key: key.secret })
}

async fn find_tenant(pool: &PgPool, slug: &str) -> anyhow::Result<tenants::Tenant> {
    tenants::find_by_slug(pool, slug)
        .await
        .map_err(user_error)?
        .with_context(|| format!("no tenant with slug `{slug}`"))
}

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!(
            "no password on standard input (pipe it in: `echo \"$PASSWORD\" | switchboard agent create … --password-stdin`)"
        );
    }
    Ok(password)
}

/// CLI users get the API's message (which names the field), not a debug dump.
fn user_error(error: ApiError) -> anyhow::Error {
    match &error {
        ApiError::Validation { field, message } if !message.contains(field.as_str()) => {
            anyhow::anyhow!("{field}: {message}")
        }
        ApiError::Internal(source) => anyhow::anyhow!("internal error: {source}"),
        _ => anyhow::anyhow!("{error}"),
    }
}
