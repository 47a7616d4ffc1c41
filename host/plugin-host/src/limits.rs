//! Resource limits: per-plugin defaults the operator can override in `grants.toml`, the pool's
//! absolute ceilings, and the size caps applied to everything a plugin hands back.

use std::time::Duration;

/// Per-call limits of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory per instance, in MiB (default 32, at most the pool's ceiling).
    pub memory_mib: u32,
    /// CPU budget per call, in milliseconds of running WebAssembly, measured in epoch ticks
    /// (default 100).
    pub cpu_ms: u64,
    /// Wall-clock timeout per call including HTTP waits, in milliseconds (default 2000).
    pub timeout_ms: u64,
    /// Largest HTTP response body the plugin may receive, in KiB (default 1024).
    pub http_body_kib: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 32,
            cpu_ms: 100,
            timeout_ms: 2000,
            http_body_kib: 1024,
        }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) * 1024 * 1024
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Ceilings of the instance pool, fixed when the host starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Component instances alive at once (concurrent hook calls), default 128.
    pub max_instances: u32,
    /// Largest memory any plugin may be configured for, in MiB (default 256).
    pub max_memory_mib: u32,
    /// Epoch tick: the granularity of the CPU budget (default 5 ms).
    pub epoch_tick: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_instances: 128,
            max_memory_mib: 256,
            epoch_tick: Duration::from_millis(5),
        }
    }
}

/// Size caps on what plugins return or store. A value over its cap makes the answer malformed
/// (fail closed), it is never truncated silently.
pub mod caps {
    pub const REASON: usize = 1024;
    pub const PROMPT: usize = 512;
    pub const KEY: usize = 64;
    pub const GROUPS: usize = 64;
    pub const AUDIT_PAIRS: usize = 32;
    pub const AUDIT_VALUE: usize = 1024;
    pub const TICKET_ID: usize = 128;
    pub const PASSWORD: usize = 4096;
    pub const PRIVATE_KEY: usize = 64 * 1024;
    pub const ERROR: usize = 1024;
    /// One logged line, in bytes (longer lines are cut, with `…`).
    pub const LOG_MESSAGE: usize = 1024;
    /// Lines one call may log; past this or [`LOG_BYTES`] the rest of the call's log is dropped.
    pub const LOG_LINES: usize = 64;
    /// Bytes one call may log, all lines together.
    pub const LOG_BYTES: usize = 16 * 1024;
    pub const COOKIE: usize = 4096;
    pub const SESSION_VALUES: usize = 32;
    pub const CACHE_KEY: usize = 256;
    pub const CACHE_VALUE: usize = 64 * 1024;
    pub const CACHE_ENTRIES: usize = 10_000;
    /// What one cache entry costs beyond its key and value (map slot, expiry, allocations).
    /// Keys, values and this overhead together count against the plugin's memory limit.
    pub const CACHE_ENTRY_OVERHEAD: usize = 64;
    pub const CACHE_TTL_SECONDS: u32 = 86_400;
    pub const SECRET_NAME: usize = 256;
}
