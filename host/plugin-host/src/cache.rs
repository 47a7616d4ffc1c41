//! The per-plugin key-value cache with a time to live, shared by all calls of one plugin and
//! bounded in entries, sizes and bytes: keys, values and a fixed overhead per entry count
//! against the plugin's memory limit, so a full cache refuses the write instead of growing the
//! host.

use crate::limits::caps;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug)]
pub(crate) struct PluginCache {
    inner: Mutex<Entries>,
}

#[derive(Debug)]
struct Entries {
    map: HashMap<String, (Vec<u8>, u64)>,
    /// What `map` holds, counted as [`cost`] per entry.
    bytes: usize,
    /// The most `bytes` may reach (the plugin's memory limit).
    limit_bytes: usize,
}

/// Why a cache write was refused (becomes a `host-error` for the plugin).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CacheRefusal {
    TooLarge(String),
}

/// What one entry counts against the limit.
fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + caps::CACHE_ENTRY_OVERHEAD
}

impl Entries {
    fn remove_expired(&mut self, now_ms: u64) {
        let mut freed = 0;
        self.map.retain(|key, (value, expires)| {
            let keep = *expires > now_ms;
            if !keep {
                freed += cost(key, value);
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }

    /// Stores `key`, first dropping expired entries when the new one would not fit.
    fn store(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expires: u64,
        now_ms: u64,
    ) -> Result<(), CacheRefusal> {
        let new_cost = cost(key, &value);
        let fits = |entries: &Entries| {
            let old_cost = entries.map.get(key).map_or(0, |(old, _)| cost(key, old));
            let count_ok = entries.map.contains_key(key) || entries.map.len() < caps::CACHE_ENTRIES;
            let bytes_ok = entries.bytes - old_cost + new_cost <= entries.limit_bytes;
            (count_ok, bytes_ok)
        };
        if fits(self) != (true, true) {
            self.remove_expired(now_ms);
        }
        match fits(self) {
            (false, _) => {
                return Err(CacheRefusal::TooLarge(format!(
                    "cache holds {} entries already",
                    caps::CACHE_ENTRIES
                )));
            }
            (true, false) => {
                return Err(CacheRefusal::TooLarge(format!(
                    "cache full: {} entries use {} of the {} bytes of the plugin's memory limit \
                     (keys, values and {} bytes per entry); delete entries or use shorter TTLs",
                    self.map.len(),
                    self.bytes,
                    self.limit_bytes,
                    caps::CACHE_ENTRY_OVERHEAD
                )));
            }
            (true, true) => {}
        }
        if let Some((old, _)) = self.map.insert(key.to_owned(), (value, expires)) {
            self.bytes -= cost(key, &old);
        }
        self.bytes += new_cost;
        Ok(())
    }
}

impl PluginCache {
    /// An empty cache that holds at most `limit_bytes` (keys, values and per-entry overhead).
    pub(crate) fn new(limit_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                bytes: 0,
                limit_bytes,
            }),
        }
    }

    fn check(key: &str, value: &[u8], ttl_seconds: u32) -> Result<(), CacheRefusal> {
        if key.len() > caps::CACHE_KEY {
            return Err(CacheRefusal::TooLarge(format!(
                "cache key longer than {} bytes",
                caps::CACHE_KEY
            )));
        }
        if value.len() > caps::CACHE_VALUE {
            return Err(CacheRefusal::TooLarge(format!(
                "cache value larger than {} bytes",
                caps::CACHE_VALUE
            )));
        }
        if ttl_seconds > caps::CACHE_TTL_SECONDS {
            return Err(CacheRefusal::TooLarge(format!(
                "cache ttl longer than {} seconds",
                caps::CACHE_TTL_SECONDS
            )));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A poisoned lock only means another call panicked mid-update; the map is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new limit (the plugin's memory limit changed). Entries already stored stay until they
    /// expire or are deleted; writes are refused while the cache is over the new limit.
    pub(crate) fn set_limit(&self, limit_bytes: usize) {
        self.lock().limit_bytes = limit_bytes;
    }

    /// Bytes held (keys, values and per-entry overhead) and entries, expired ones included.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let entries = self.lock();
        (entries.bytes, entries.map.len())
    }

    pub(crate) fn get(&self, key: &str, now_ms: u64) -> Option<Vec<u8>> {
        let entries = self.lock();
        entries
            .map
            .get(key)
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(value, _)| value.clone())
    }

    pub(crate) fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_seconds: u32,
        now_ms: u64,
    ) -> Result<(), CacheRefusal> {
        Self::check(key, &value, ttl_seconds)?;
        let expires = now_ms + u64::from(ttl_seconds) * 1000;
        self.lock().store(key, value, expires, now_ms)
    }

    /// Inserts only when absent or expired, atomically; true when inserted.
    pub(crate) fn insert_new(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_seconds: u32,
        now_ms: u64,
    ) -> Result<bool, CacheRefusal> {
        Self::check(key, &value, ttl_seconds)?;
        let mut entries = self.lock();
        if entries
            .map
            .get(key)
            .is_some_and(|(_, expires)| *expires > now_ms)
        {
            return Ok(false);
        }
        let expires = now_ms + u64::from(ttl_seconds) * 1000;
        entries.store(key, value, expires, now_ms)?;
        Ok(true)
    }

    pub(crate) fn delete(&self, key: &str) {
        let mut entries = self.lock();
        if let Some((value, _)) = entries.map.remove(key) {
            entries.bytes -= cost(key, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_insert_new_is_exclusive() {
        let cache = PluginCache::new(1 << 20);
        assert_eq!(cache.insert_new("k", b"1".to_vec(), 30, 1_000), Ok(true));
        assert_eq!(cache.insert_new("k", b"2".to_vec(), 30, 2_000), Ok(false));
        assert_eq!(cache.get("k", 30_999), Some(b"1".to_vec()));
        assert_eq!(cache.get("k", 31_000), None);
        assert_eq!(cache.insert_new("k", b"3".to_vec(), 30, 31_000), Ok(true));
        cache.delete("k");
        assert_eq!(cache.get("k", 31_001), None);
        assert!(cache.set(&"x".repeat(300), vec![], 1, 0).is_err());
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn bytes_are_bounded_replacements_and_deletes_are_counted_and_expiry_frees_room() {
        let entry = cost("k0", &[0; 1000]);
        let cache = PluginCache::new(3 * entry);
        for i in 0..3 {
            cache.set(&format!("k{i}"), vec![0; 1000], 10, 0).unwrap();
        }
        assert_eq!(cache.usage(), (3 * entry, 3));
        let refused = cache.set("k3", vec![0; 1000], 10, 0).unwrap_err();
        let CacheRefusal::TooLarge(message) = refused;
        assert!(
            message.starts_with("cache full: 3 entries use"),
            "{message}"
        );
        // Replacing an entry with one of the same size fits; a bigger one does not.
        cache.set("k0", vec![1; 1000], 10, 0).unwrap();
        assert!(cache.set("k0", vec![1; 1001], 10, 0).is_err());
        assert_eq!(cache.get("k0", 1), Some(vec![1; 1000]));
        cache.delete("k1");
        assert_eq!(cache.usage(), (2 * entry, 2));
        cache.set("k3", vec![0; 1000], 10, 0).unwrap();
        // Everything expired at 10 s: the write that would not fit drops the expired entries.
        assert!(cache.set("big", vec![0; 2000], 10, 10_000).is_ok());
        assert_eq!(cache.usage(), (cost("big", &[0; 2000]), 1));
        // A lowered limit refuses writes until entries go.
        cache.set_limit(100);
        assert!(cache.insert_new("new", vec![0; 10], 10, 10_000).is_err());
        cache.delete("big");
        assert_eq!(cache.insert_new("new", vec![0; 10], 10, 10_000), Ok(true));
    }
}
