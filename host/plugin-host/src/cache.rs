//! The per-plugin key-value cache with a time to live, shared by all calls of one plugin and
//! bounded in entries and sizes.

use crate::limits::caps;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub(crate) struct PluginCache {
    entries: Mutex<HashMap<String, (Vec<u8>, u64)>>,
}

/// Why a cache write was refused (becomes a `host-error` for the plugin).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CacheRefusal {
    TooLarge(String),
}

impl PluginCache {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, u64)>> {
        // A poisoned lock only means another call panicked mid-update; the map is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &str, now_ms: u64) -> Option<Vec<u8>> {
        let entries = self.lock();
        entries
            .get(key)
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(value, _)| value.clone())
    }

    fn make_room(
        entries: &mut HashMap<String, (Vec<u8>, u64)>,
        now_ms: u64,
    ) -> Result<(), CacheRefusal> {
        if entries.len() >= caps::CACHE_ENTRIES {
            entries.retain(|_, (_, expires)| *expires > now_ms);
        }
        if entries.len() >= caps::CACHE_ENTRIES {
            return Err(CacheRefusal::TooLarge(format!(
                "cache holds {} entries already",
                caps::CACHE_ENTRIES
            )));
        }
        Ok(())
    }

    pub(crate) fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_seconds: u32,
        now_ms: u64,
    ) -> Result<(), CacheRefusal> {
        Self::check(key, &value, ttl_seconds)?;
        let mut entries = self.lock();
        if !entries.contains_key(key) {
            Self::make_room(&mut entries, now_ms)?;
        }
        entries.insert(
            key.to_owned(),
            (value, now_ms + u64::from(ttl_seconds) * 1000),
        );
        Ok(())
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
            .get(key)
            .is_some_and(|(_, expires)| *expires > now_ms)
        {
            return Ok(false);
        }
        if !entries.contains_key(key) {
            Self::make_room(&mut entries, now_ms)?;
        }
        entries.insert(
            key.to_owned(),
            (value, now_ms + u64::from(ttl_seconds) * 1000),
        );
        Ok(true)
    }

    pub(crate) fn delete(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_insert_new_is_exclusive() {
        let cache = PluginCache::default();
        assert_eq!(cache.insert_new("k", b"1".to_vec(), 30, 1_000), Ok(true));
        assert_eq!(cache.insert_new("k", b"2".to_vec(), 30, 2_000), Ok(false));
        assert_eq!(cache.get("k", 30_999), Some(b"1".to_vec()));
        assert_eq!(cache.get("k", 31_000), None);
        assert_eq!(cache.insert_new("k", b"3".to_vec(), 30, 31_000), Ok(true));
        cache.delete("k");
        assert_eq!(cache.get("k", 31_001), None);
        assert!(cache.set(&"x".repeat(300), vec![], 1, 0).is_err());
    }
}
