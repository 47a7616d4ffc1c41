//! The store data of one hook call, and the host side of every `gatehouse:plugin` import:
//! logging, configuration, granted secrets, the cache, the clock and the cookies.

use crate::bindings::v0_1_0::aa::gatehouse::plugin::{
    cache, clock, config, cookies, log, secrets, types,
};
use crate::cache::{CacheRefusal, PluginCache};
use crate::grants::Grants;
use crate::http::HttpGate;
use crate::limits::caps;
use crate::manifest::{ConfigValue, ValidConfig};
use crate::secrets::{Clock, SecretProvider};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What a plugin may reach, fixed when the plugin is loaded.
pub(crate) struct PluginContext {
    pub(crate) name: String,
    pub(crate) config: ValidConfig,
    pub(crate) grants: Grants,
    pub(crate) secrets: Arc<dyn SecretProvider>,
    pub(crate) cache: Arc<PluginCache>,
    pub(crate) clock: Clock,
}

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    pub(crate) level: log::Level,
    pub(crate) message: String,
}

/// The `T` of `Store<T>`: everything one call may touch.
pub(crate) struct CallState {
    pub(crate) plugin: Arc<PluginContext>,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) gate: HttpGate,
    pub(crate) memory: MemoryCap,
    pub(crate) cookie: String,
    pub(crate) session_values: BTreeMap<String, String>,
    pub(crate) logs: Vec<LogLine>,
    /// Capabilities refused during the call, for the audit trail.
    pub(crate) denied: Vec<String>,
    pub(crate) cpu_ticks_used: u64,
    pub(crate) cpu_budget_ticks: u64,
}

/// The per-call memory limiter. Refusing a growth traps at once (and records that the cap was
/// hit), so a plugin cannot mistake the refusal for a recoverable error.
pub(crate) struct MemoryCap {
    pub(crate) limit_bytes: usize,
    pub(crate) hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.hit = true;
            return Err(wasmtime::Error::msg("plugin memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.gate,
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl CallState {
    pub(crate) fn cpu_exceeded(&self) -> bool {
        self.cpu_ticks_used >= self.cpu_budget_ticks
    }

    fn refuse(&mut self, what: String) -> types::HostError {
        if self.denied.len() < caps::LOG_LINES {
            self.denied.push(what.clone());
        }
        types::HostError::NotGranted(what)
    }
}

impl types::Host for CallState {}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, message: String) {
        let message = truncate(&message, caps::LOG_MESSAGE);
        let plugin = self.plugin.name.as_str();
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
        if self.logs.len() < caps::LOG_LINES {
            self.logs.push(LogLine { level, message });
        }
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> Option<config::Value> {
        self.plugin.config.get(&key).map(|value| match value {
            ConfigValue::Text(text) => config::Value::Text(text.clone()),
            ConfigValue::Integer(number) => config::Value::Integer(*number),
            ConfigValue::Flag(flag) => config::Value::Flag(*flag),
            ConfigValue::Texts(texts) => config::Value::Texts(texts.clone()),
        })
    }
}

impl secrets::Host for CallState {
    fn get(&mut self, name: String) -> Result<String, types::HostError> {
        if name.len() > caps::SECRET_NAME {
            return Err(types::HostError::TooLarge(format!(
                "secret name longer than {} bytes",
                caps::SECRET_NAME
            )));
        }
        if !self.plugin.grants.allows_secret(&name) {
            return Err(self.refuse(format!("secret `{name}` is not granted to this plugin")));
        }
        match self.plugin.secrets.secret(&self.plugin.name, &name) {
            Some(value) => Ok(value.expose().to_owned()),
            None => Err(types::HostError::NotFound(format!(
                "secret `{name}` has no value"
            ))),
        }
    }
}

fn cache_error(refusal: CacheRefusal) -> types::HostError {
    match refusal {
        CacheRefusal::TooLarge(message) => types::HostError::TooLarge(message),
    }
}

impl cache::Host for CallState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.plugin.cache.get(&key, self.plugin.clock.now_ms())
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: u32,
    ) -> Result<(), types::HostError> {
        let now = self.plugin.clock.now_ms();
        self.plugin
            .cache
            .set(&key, value, ttl_seconds, now)
            .map_err(cache_error)
    }

    fn insert_new(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: u32,
    ) -> Result<bool, types::HostError> {
        let now = self.plugin.clock.now_ms();
        self.plugin
            .cache
            .insert_new(&key, value, ttl_seconds, now)
            .map_err(cache_error)
    }

    fn delete(&mut self, key: String) {
        self.plugin.cache.delete(&key);
    }
}

impl clock::Host for CallState {
    fn now_unix_ms(&mut self) -> u64 {
        self.plugin.clock.now_ms()
    }
}

impl cookies::Host for CallState {
    fn plugin_cookie(&mut self) -> String {
        self.cookie.clone()
    }

    fn set_plugin_cookie(&mut self, value: String) -> Result<(), types::HostError> {
        if value.len() > caps::COOKIE {
            return Err(types::HostError::TooLarge(format!(
                "cookie larger than {} bytes",
                caps::COOKIE
            )));
        }
        self.cookie = value;
        Ok(())
    }

    fn session_value(&mut self, key: String) -> Option<String> {
        self.session_values.get(&key).cloned()
    }

    fn set_session_value(&mut self, key: String, value: String) -> Result<(), types::HostError> {
        if key.len() > caps::KEY || value.len() > caps::COOKIE {
            return Err(types::HostError::TooLarge(format!(
                "session values: keys of at most {} bytes, values of at most {} bytes",
                caps::KEY,
                caps::COOKIE
            )));
        }
        if !self.session_values.contains_key(&key)
            && self.session_values.len() >= caps::SESSION_VALUES
        {
            return Err(types::HostError::TooLarge(format!(
                "at most {} session values",
                caps::SESSION_VALUES
            )));
        }
        self.session_values.insert(key, value);
        Ok(())
    }
}
