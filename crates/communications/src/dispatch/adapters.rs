//! Adapters are built once per provider configuration (AWS clients are expensive) and rebuilt
//! when the configuration changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use cpaas::send::{Adapter, SendOptions};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use uuid::Uuid;

use crate::Communications;
use crate::channels::repository::ProviderRow;

/// Adapters by provider configuration id, with the configuration version they were built from.
type Adapters = HashMap<Uuid, (DateTime<Utc>, Adapter)>;

#[derive(Debug, Clone, Default)]
pub struct AdapterCache {
    adapters: Arc<Mutex<Adapters>>,
}

impl AdapterCache {
    pub async fn get(
        &self,
        module: &Communications,
        tenant: TenantId,
        provider: &ProviderRow,
    ) -> Result<Adapter, ApiError> {
        if let Some(adapter) = self.cached(provider) {
            return Ok(adapter);
        }
        let config = module.cpaas_config(tenant, provider).await?;
        let options = SendOptions { request_timeout: module.endpoints.request_timeout, ..SendOptions::default() };
        let adapter =
            Adapter::new(&config, &module.http, &options).map_err(|e| ApiError::validation("config", e.to_string()))?;
        if let Ok(mut adapters) = self.adapters.lock() {
            adapters.insert(provider.id, (provider.updated_at, adapter.clone()));
        }
        Ok(adapter)
    }

    fn cached(&self, provider: &ProviderRow) -> Option<Adapter> {
        let adapters = self.adapters.lock().ok()?;
        adapters
            .get(&provider.id)
            .filter(|(version, _)| *version == provider.updated_at)
            .map(|(_, adapter)| adapter.clone())
    }
}
