//! Identity: who may act in which tenant.
//!
//! Belongs here: tenants (workspaces), operator API keys, agents with their passwords, server-side
//! sessions, login throttling, the authentication middleware that turns credentials into a
//! [`kernel::auth::Caller`], and the `/api/v1/{auth,me,agents,api-keys}` routes.
//! Owns the Postgres schema `identity`; no other module reads it. Other modules learn the
//! caller only through `Caller`.
//!
//! Must not be here: anything about channels, messages, conversations or bookings.

pub mod agents;
pub mod api_keys;
pub mod http;
pub mod secrets;
pub mod sessions;
pub mod settings;
pub mod tenants;
pub mod throttle;

use std::sync::{Arc, OnceLock};

use kernel::batch::Batcher;
use kernel::error::ApiError;
use kernel::ids::{ApiKeyId, TenantId};

pub use settings::AuthSettings;

/// The identity module's handle: a pool and its settings, cheap to clone.
#[derive(Debug, Clone)]
pub struct Identity {
    pub pool: sqlx::PgPool,
    pub settings: AuthSettings,
    /// Looks up presented API keys for many requests at once; started on first use.
    key_lookups: Arc<OnceLock<KeyLookups>>,
}

type KeyLookups = Batcher<String, Result<Option<(ApiKeyId, TenantId)>, kernel::error::SharedError>>;

/// Most API keys looked up in one statement, and such statements at once.
const MAX_KEY_BATCH: usize = 256;
const KEY_BATCHES_IN_FLIGHT: usize = 2;

impl Identity {
    pub fn new(pool: sqlx::PgPool, settings: AuthSettings) -> Self {
        Self { pool, settings, key_lookups: Arc::default() }
    }

    /// The live key behind a presented secret, if any. Requests arriving together share one
    /// lookup statement (every request still reads the database: a revoked key fails at once).
    pub async fn authenticate_key(&self, presented: &str) -> Result<Option<(ApiKeyId, TenantId)>, ApiError> {
        if !presented.starts_with(api_keys::KEY_PREFIX) {
            return Ok(None);
        }
        let lookups = self.key_lookups.get_or_init(|| {
            let pool = self.pool.clone();
            Batcher::spawn(MAX_KEY_BATCH, KEY_BATCHES_IN_FLIGHT, move |presented: Vec<String>| {
                let pool = pool.clone();
                async move {
                    match api_keys::authenticate_many(&pool, &presented).await {
                        Ok(found) => found.into_iter().map(Ok).collect(),
                        Err(error) => {
                            let error = kernel::error::SharedError::from(error);
                            presented.iter().map(|_| Err(error.clone())).collect()
                        }
                    }
                }
            })
        });
        let answer =
            lookups.call(presented.to_owned()).await.ok_or_else(|| ApiError::internal("key lookups stopped"))?;
        answer.map_err(ApiError::from)
    }
}
