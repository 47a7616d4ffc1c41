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
    /// What the call logged within its budget (the warnings and errors go to the audit trail).
    pub(crate) logs: Vec<LogLine>,
    pub(crate) log_budget: LogBudget,
    /// Whether an audit sink takes the call's warnings and errors (see `call::audit_logs`).
    pub(crate) audited: bool,
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

/// A logged line as it may reach the gateway's log: at most `max` bytes (cut at a character
/// boundary, with `…`), control characters escaped so one call cannot forge other log lines.
pub(crate) fn log_text(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 3);
    for c in text.chars() {
        let before = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(before);
            out.push('…');
            break;
        }
    }
    out
}

/// What one call may still log: [`caps::LOG_LINES`] lines and [`caps::LOG_BYTES`] bytes, after
/// which everything else the call logs is dropped (and counted, for the one line saying so).
#[derive(Debug, Default)]
pub(crate) struct LogBudget {
    lines: usize,
    bytes: usize,
    pub(crate) dropped_lines: u64,
    pub(crate) dropped_bytes: u64,
}

impl LogBudget {
    /// Whether a line of `len` bytes (as logged) may be logged; once one line is refused, every
    /// later one is too. A refused line counts `original_len` bytes as dropped.
    fn admit(&mut self, len: usize, original_len: usize) -> bool {
        if self.dropped_lines == 0
            && self.lines < caps::LOG_LINES
            && self.bytes + len <= caps::LOG_BYTES
        {
            self.lines += 1;
            self.bytes += len;
            return true;
        }
        self.dropped_lines += 1;
        self.dropped_bytes += original_len as u64;
        false
    }
}

impl CallState {
    pub(crate) fn cpu_exceeded(&self) -> bool {
        self.cpu_ticks_used >= self.cpu_budget_ticks
    }

    fn refuse(&mut self, what: String) -> types::HostError {
        if self.denied.len() < caps::LOG_LINES && !self.denied.contains(&what) {
            self.denied.push(what.clone());
        }
        types::HostError::NotGranted(what)
    }
}

impl types::Host for CallState {}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, message: String) {
        // The budget is spent before anything reaches the gateway's log or the audit copy; the
        // call's end reports what was dropped (`call::report_dropped_logs`).
        if self.log_budget.dropped_lines > 0 {
            // Past the budget: counted, nothing else done.
            self.log_budget.dropped_lines += 1;
            self.log_budget.dropped_bytes += message.len() as u64;
            return;
        }
        let text = log_text(&message, caps::LOG_MESSAGE);
        if !self.log_budget.admit(text.len(), message.len()) {
            return;
        }
        let message = text;
        let plugin = self.plugin.name.as_str();
        // Warnings and errors go to the audit trail at the call's end, which the gateway's log
        // mirrors: printed here as well, each would reach the log twice.
        let audited = self.audited && matches!(level, log::Level::Warn | log::Level::Error);
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            _ if audited => {}
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
        self.logs.push(LogLine { level, message });
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
