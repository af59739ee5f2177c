//! Adapters are built once per provider configuration (AWS clients are expensive) and rebuilt
//! when the configuration changes — the tenant's row, or the platform default it inherits from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cpaas::send::{Adapter, SendOptions};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use uuid::Uuid;

use crate::Communications;
use crate::channels::ProviderKind;
use crate::channels::repository::{self, ProviderRow};

/// How stale a platform default may be in a running process: its version is read at most this
/// often per provider, so a changed default reaches every worker within this long.
const PLATFORM_RECHECK: Duration = Duration::from_secs(2);

/// What an adapter was built from: the row's version and the platform defaults' version.
type Version = (DateTime<Utc>, repository::PlatformVersion);

#[derive(Debug, Default)]
struct Cached {
    adapters: HashMap<Uuid, (Version, Adapter)>,
    platform: HashMap<ProviderKind, (Instant, repository::PlatformVersion)>,
}

#[derive(Debug, Clone, Default)]
pub struct AdapterCache {
    cached: Arc<Mutex<Cached>>,
}

impl AdapterCache {
    pub async fn get(
        &self,
        module: &Communications,
        tenant: TenantId,
        provider: &ProviderRow,
    ) -> Result<Adapter, ApiError> {
        let version = (provider.updated_at, self.platform_version(module, provider.provider).await?);
        if let Some(adapter) = self.adapter(provider.id, &version) {
            return Ok(adapter);
        }
        let config = module.cpaas_config(tenant, provider).await?;
        let options = SendOptions { request_timeout: module.endpoints.request_timeout, ..SendOptions::default() };
        let adapter =
            Adapter::new(&config, &module.http, &options).map_err(|e| ApiError::validation("config", e.to_string()))?;
        if let Ok(mut cached) = self.cached.lock() {
            cached.adapters.insert(provider.id, (version, adapter.clone()));
        }
        Ok(adapter)
    }

    fn adapter(&self, id: Uuid, version: &Version) -> Option<Adapter> {
        let cached = self.cached.lock().ok()?;
        cached.adapters.get(&id).filter(|(built_from, _)| built_from == version).map(|(_, adapter)| adapter.clone())
    }

    async fn platform_version(
        &self,
        module: &Communications,
        kind: ProviderKind,
    ) -> Result<repository::PlatformVersion, ApiError> {
        let fresh = self.cached.lock().ok().and_then(|cached| {
            cached.platform.get(&kind).filter(|(read_at, _)| read_at.elapsed() < PLATFORM_RECHECK).map(|(_, v)| *v)
        });
        if let Some(version) = fresh {
            return Ok(version);
        }
        let version = repository::platform_version(&module.pool, kind).await?;
        if let Ok(mut cached) = self.cached.lock() {
            cached.platform.insert(kind, (Instant::now(), version));
        }
        Ok(version)
    }
}
