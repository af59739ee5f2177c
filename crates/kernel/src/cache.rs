//! Values read on every request whose answer changes a few times a day, kept in memory.
//!
//! [`Cache`] keeps them for a TTL; a write through this process bumps a generation that voids
//! every entry at once, so the API never reads its own stale write. [`Notified`] adds what makes
//! a change made *elsewhere* (another process, an operator in `psql`) count at once: a statement
//! trigger notifies a channel when the table changes, PostgreSQL delivers the notification when
//! the change commits, and every process's listener voids its entries. While its listener is not
//! connected (at start-up, the database restarting) a `Notified` cache answers nothing, so every
//! caller reads the database: a notification sent meanwhile would be lost.
//!
//! Users: the event path's trigger rules and templates (`communications`, a plain `Cache`), the
//! dispatcher's channel accounts and providers, and the API keys (both `Notified`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;

const TTL: Duration = Duration::from_secs(1);
/// Entries kept before the map is emptied (a bound, not a working size).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
pub struct Cache<K, V> {
    generation: AtomicU64,
    entries: Mutex<HashMap<K, (Instant, u64, V)>>,
    ttl: Duration,
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Self::with_ttl(TTL)
    }
}

impl<K, V> Cache<K, V> {
    /// Entries kept for `ttl` unless voided before.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self { generation: AtomicU64::new(0), entries: Mutex::new(HashMap::new()), ttl }
    }
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    /// The generation to store a value read from the database under: take it before the read,
    /// so a write that lands during the read voids the value.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let generation = self.generation();
        let entries = self.entries.lock().ok()?;
        let (at, stored, value) = entries.get(key)?;
        (*stored == generation && at.elapsed() < self.ttl).then(|| value.clone())
    }

    pub fn put(&self, key: K, generation: u64, value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, (Instant::now(), generation, value));
        }
    }

    /// Voids every entry: call after writing what they cache.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A [`Cache`] voided by PostgreSQL notifications on `channel` (see the module's notes). Its
/// listener starts on the first [`Notified::get`] and stops when the cache is dropped.
#[derive(Debug)]
pub struct Notified<K, V> {
    channel: &'static str,
    cache: Arc<Cache<K, V>>,
    /// True while the listener is connected and listening.
    live: Arc<AtomicBool>,
    listener: OnceLock<tokio::task::JoinHandle<()>>,
}

impl<K, V> Notified<K, V> {
    /// Entries kept for `ttl` at most, voided by every notification on `channel`.
    pub fn new(channel: &'static str, ttl: Duration) -> Self {
        Self {
            channel,
            cache: Arc::new(Cache::with_ttl(ttl)),
            live: Arc::new(AtomicBool::new(false)),
            listener: OnceLock::new(),
        }
    }
}

impl<K, V> Drop for Notified<K, V> {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

impl<K: Eq + Hash + Send + 'static, V: Clone + Send + 'static> Notified<K, V> {
    /// The kept value, if the listener is connected. Starts the listener (on the current Tokio
    /// runtime) on first use.
    pub fn get(&self, pool: &PgPool, key: &K) -> Option<V> {
        self.listener
            .get_or_init(|| tokio::spawn(listen(pool.clone(), self.channel, self.cache.clone(), self.live.clone())));
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.cache.get(key)
    }

    /// See [`Cache::generation`]: take it before reading what is to be kept.
    pub fn generation(&self) -> u64 {
        self.cache.generation()
    }

    pub fn put(&self, key: K, generation: u64, value: V) {
        self.cache.put(key, generation, value);
    }

    /// Voids every entry: call after this process wrote what they cache, so that its next read
    /// does not wait for the notification.
    pub fn invalidate(&self) {
        self.cache.invalidate();
    }
}

/// Voids the cache on every notification, and whenever the connection is lost or regained
/// (notifications sent meanwhile are lost with it); `live` says whether it is listening.
async fn listen<K: Eq + Hash, V: Clone>(
    pool: PgPool,
    channel: &'static str,
    cache: Arc<Cache<K, V>>,
    live: Arc<AtomicBool>,
) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(channel).await {
                Ok(()) => {
                    cache.invalidate();
                    live.store(true, Ordering::Release);
                    // `Ok(None)`: the connection was lost. Reconnecting here rather than in the
                    // next `try_recv` is how we learn when listening resumes.
                    while let Ok(Some(_notification)) = listener.try_recv().await {
                        cache.invalidate();
                    }
                    live.store(false, Ordering::Release);
                    cache.invalidate();
                }
                Err(error) => tracing::warn!(%error, channel, "LISTEN failed"),
            },
            Err(error) => tracing::debug!(%error, channel, "cannot connect to LISTEN"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_kept_until_a_write_voids_it() {
        let cache: Cache<&str, u32> = Cache::default();
        let generation = cache.generation();
        cache.put("rules", generation, 1);
        assert_eq!(cache.get(&"rules"), Some(1));
        cache.invalidate();
        assert_eq!(cache.get(&"rules"), None);
        // A value read before the write is never served after it.
        cache.put("rules", generation, 2);
        assert_eq!(cache.get(&"rules"), None);
        cache.put("rules", cache.generation(), 3);
        assert_eq!(cache.get(&"rules"), Some(3));
    }
}
