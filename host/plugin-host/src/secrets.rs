//! Where granted secrets come from (the caller's vault) and the clock plugins see.

use gatehouse_core::secret::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The source of plugin secrets. The host checks the plugin's grants before asking, so an
/// implementation only looks the value up.
pub trait SecretProvider: Send + Sync {
    /// The secret `name` for `plugin`, if it has a value.
    fn secret(&self, plugin: &str, name: &str) -> Option<SecretString>;
}

/// Secrets held in memory: for tests, fixtures and `gatehouse plugin test`.
#[derive(Debug, Default, Clone)]
pub struct StaticSecrets {
    values: BTreeMap<(String, String), SecretString>,
}

impl StaticSecrets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the secret `name` of `plugin`.
    pub fn insert(&mut self, plugin: &str, name: &str, value: SecretString) {
        self.values
            .insert((plugin.to_owned(), name.to_owned()), value);
    }
}

impl SecretProvider for StaticSecrets {
    fn secret(&self, plugin: &str, name: &str) -> Option<SecretString> {
        self.values
            .get(&(plugin.to_owned(), name.to_owned()))
            .cloned()
    }
}

/// No secrets at all.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSecrets;

impl SecretProvider for NoSecrets {
    fn secret(&self, _plugin: &str, _name: &str) -> Option<SecretString> {
        None
    }
}

/// The clock plugins read through `clock.now-unix-ms` (and the cache's expiry).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    fixed: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { fixed: None }
    }

    /// A clock that stays at `unix_ms` until [`Clock::set`].
    pub fn fixed(unix_ms: u64) -> Self {
        Self {
            fixed: Some(Arc::new(AtomicU64::new(unix_ms))),
        }
    }

    /// Moves a fixed clock (no effect on the system clock).
    pub fn set(&self, unix_ms: u64) {
        if let Some(fixed) = &self.fixed {
            fixed.store(unix_ms, Ordering::SeqCst);
        }
    }

    pub fn now_ms(&self) -> u64 {
        match &self.fixed {
            Some(fixed) => fixed.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }
}
