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
use std::time::Duration;

use kernel::batch::Batcher;
use kernel::cache::Notified;
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
    /// The live keys found, by the digest of their secret (see [`Identity::authenticate_key`]).
    known_keys: Arc<Notified<Vec<u8>, (ApiKeyId, TenantId)>>,
}

type KeyLookups = Batcher<String, Result<Option<(ApiKeyId, TenantId)>, kernel::error::SharedError>>;

/// Most API keys looked up in one statement, and such statements at once.
const MAX_KEY_BATCH: usize = 256;
const KEY_BATCHES_IN_FLIGHT: usize = 2;
/// The statement triggers' channel (migration `…20261202000100_api_key_notify`).
const KEYS_CHANNEL: &str = "switchboard_api_keys";
/// How long a found key is kept at most: also how stale `last_used_at` may get beyond its own
/// resolution, as it is refreshed when a key is read.
const KEYS_TTL: Duration = Duration::from_secs(30);

impl Identity {
    pub fn new(pool: sqlx::PgPool, settings: AuthSettings) -> Self {
        Self {
            pool,
            settings,
            key_lookups: Arc::default(),
            known_keys: Arc::new(Notified::new(KEYS_CHANNEL, KEYS_TTL)),
        }
    }

    /// The live key behind a presented secret, if any.
    ///
    /// A key found is kept in memory, so a client's requests do not each read the database; one
    /// not found is never kept. Revoking a key (or deleting it, or its tenant) notifies every
    /// process when it commits, and each forgets all the keys it kept: a revoked key fails at
    /// once, in this process without waiting for the notification. While that notification
    /// cannot reach us (the database restarting) nothing kept is used. Requests arriving
    /// together share one lookup statement.
    pub async fn authenticate_key(&self, presented: &str) -> Result<Option<(ApiKeyId, TenantId)>, ApiError> {
        if !presented.starts_with(api_keys::KEY_PREFIX) {
            return Ok(None);
        }
        let digest = secrets::digest(presented);
        if let Some(known) = self.known_keys.get(&self.pool, &digest) {
            return Ok(Some(known));
        }
        let lookups = self.key_lookups.get_or_init(|| {
            let (pool, known_keys) = (self.pool.clone(), self.known_keys.clone());
            Batcher::spawn(MAX_KEY_BATCH, KEY_BATCHES_IN_FLIGHT, move |presented: Vec<String>| {
                let (pool, known_keys) = (pool.clone(), known_keys.clone());
                async move {
                    // Taken before the read: a revocation committed meanwhile voids what it finds.
                    let generation = known_keys.generation();
                    match api_keys::authenticate_many(&pool, &presented).await {
                        Ok(found) => {
                            for (secret, key) in presented.iter().zip(&found) {
                                if let Some(key) = key {
                                    known_keys.put(secrets::digest(secret), generation, *key);
                                }
                            }
                            found.into_iter().map(Ok).collect()
                        }
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

    /// Forgets the keys kept in this process: after revoking one here, so that its next request
    /// does not wait for the notification.
    pub fn forget_keys(&self) {
        self.known_keys.invalidate();
    }
}
