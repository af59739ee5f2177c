//! What turning an event or a templated request into messages reads on every request — a
//! tenant's trigger rules for an event, a template with its variants — kept for a second.
//!
//! Without it the event path spent three round trips per message on reads whose answer changes
//! a few times a day. Writes through this process (templates and rules created, replaced or
//! deleted) bump a generation that voids every entry at once, so the API never reads its own
//! stale write; another process's write is seen within `TTL`. The dispatcher keeps channel
//! accounts and providers the same way (`dispatch/configs.rs`), voided by a notification that
//! every process receives when such a change commits.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(1);
/// Entries kept before the map is emptied (a bound, not a working size).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
pub(crate) struct PlanCache<K, V> {
    generation: AtomicU64,
    entries: Mutex<HashMap<K, (Instant, u64, V)>>,
    ttl: Duration,
}

impl<K, V> Default for PlanCache<K, V> {
    fn default() -> Self {
        Self::with_ttl(TTL)
    }
}

impl<K, V> PlanCache<K, V> {
    /// Entries kept for `ttl` unless voided before.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self { generation: AtomicU64::new(0), entries: Mutex::new(HashMap::new()), ttl }
    }
}

impl<K: Eq + Hash, V: Clone> PlanCache<K, V> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_kept_until_a_write_voids_it() {
        let cache: PlanCache<&str, u32> = PlanCache::default();
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
