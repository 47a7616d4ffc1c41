//! `PluginHost`: loads the enabled plugins from the registry, then runs each hook in a fresh
//! pooled instance under its limits, failing closed with a typed `PluginFailure`. A reload
//! ([`PluginHost::reload`]) swaps the loaded set at once: calls already running finish on the
//! set they started with, the next ones use the new set.

use crate::bindings::v0_1_0::{aa, credential_store, ticketing};
use crate::cache::PluginCache;
use crate::call::{Call, CallOutput, Returned, audit_logs, classify, cpu_ticks, invoke, missing};
use crate::convert::{self, PluginVerdict};
use crate::engine::{EpochTicker, engine};
use crate::error::{FailureKind, Hook, HostError, PluginFailure};
use crate::grants::HttpDestination;
use crate::http::{HttpGate, tls_connector};
use crate::limits::{Limits, PoolLimits, caps};
use crate::manifest::PluginKind;
use crate::registry::{InstalledPlugin, Registry};
use crate::secrets::{Clock, NoSecrets, SecretProvider};
use crate::state::{CallState, LogBudget, MemoryCap, PluginContext, log_text};
use crate::types::*;
use gatehouse_core::secret::SecretString;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

/// How the host is set up.
#[derive(Clone)]
pub struct HostOptions {
    pub pool: PoolLimits,
    /// Where compiled components are cached (for example `<data-dir>/plugins/.compiled`);
    /// `None` compiles at every start.
    pub compile_cache_dir: Option<PathBuf>,
    pub secrets: Arc<dyn SecretProvider>,
    pub clock: Clock,
    /// Where plugins' warnings and errors go besides the log (the gateway's audit trail).
    pub audit: Option<Arc<dyn AuditSink>>,
}

/// Receives what plugins log at warn and error level, for the audit trail.
pub trait AuditSink: Send + Sync {
    fn plugin_log(&self, session: &str, plugin: &str, hook: &str, message: &str);
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            pool: PoolLimits::default(),
            compile_cache_dir: None,
            secrets: Arc::new(NoSecrets),
            clock: Clock::system(),
            audit: None,
        }
    }
}

/// A plugin as loaded: compiled, linked, with its context fixed.
pub(crate) struct Loaded {
    pub(crate) context: Arc<PluginContext>,
    pub(crate) source: Source,
    pub(crate) limits: Limits,
    pub(crate) http_allowed: Arc<[HttpDestination]>,
    pub(crate) kinds: Vec<PluginKind>,
    pub(crate) aa: Option<aa::AaPluginPre<CallState>>,
    pub(crate) credential_store: Option<credential_store::CredentialStorePluginPre<CallState>>,
    pub(crate) ticketing: Option<ticketing::TicketingPluginPre<CallState>>,
}

/// What does not change when plugins are reloaded.
struct Shared {
    engine: Engine,
    linker: Linker<CallState>,
    pool: PoolLimits,
    tls: Arc<tokio_rustls::TlsConnector>,
    options: HostOptions,
    registry: Registry,
    selection: Selection,
    /// The loaded set; replaced whole by a reload.
    current: RwLock<Arc<PluginSet>>,
    /// Each installed plugin's cache, kept across reloads (and while a plugin is disabled), so
    /// that a reload does not forget which one-time codes were used.
    caches: Mutex<BTreeMap<String, Arc<PluginCache>>>,
    /// Hook calls counted for the metrics endpoint.
    stats: crate::stats::Counter,
    /// Reloads one at a time.
    reloading: Mutex<()>,
    _ticker: EpochTicker,
}

/// Which installed plugins a host loads.
enum Selection {
    Enabled,
    /// The names picked at start (fixtures, tests).
    Named(Vec<String>),
}

impl Selection {
    fn picks(&self, installed: &InstalledPlugin) -> bool {
        match self {
            Selection::Enabled => installed.grants.enabled,
            Selection::Named(names) => names.iter().any(|n| n == installed.name()),
        }
    }
}

/// The plugins loaded at one moment.
struct PluginSet {
    plugins: BTreeMap<String, Arc<Loaded>>,
    /// Enabled plugins that failed to load: every call to them fails closed with this message.
    broken: BTreeMap<String, String>,
    /// Enabled AA plugins (loaded or broken), in order.
    aa_order: Arc<[String]>,
}

/// The plugin runtime. Cheap to clone; share one per gateway process (clones see reloads).
#[derive(Clone)]
pub struct PluginHost {
    shared: Arc<Shared>,
}

/// One enabled plugin as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedPluginInfo {
    pub name: String,
    pub kinds: Vec<PluginKind>,
    /// `Some(message)` when the plugin could not be loaded (every call to it fails).
    pub load_error: Option<String>,
}

impl PluginHost {
    /// The hook calls counted since the host started (for `/metrics`).
    pub fn call_stats(&self) -> crate::stats::CallStats {
        self.shared.stats.snapshot()
    }

    /// Loads every enabled plugin of `registry`. A plugin that cannot be loaded does not stop
    /// the others; calls to it fail closed (see [`PluginHost::plugins`]). With no plugin
    /// enabled the host is empty (every AA round accepts at once) until a reload.
    pub fn start(registry: &Registry, options: HostOptions) -> Result<Self, HostError> {
        Self::start_with(registry, options, Selection::Enabled)
    }

    /// Loads the installed plugins `select` picks, enabled or not (for fixtures and tests). A
    /// reload keeps to the plugins picked here.
    pub fn start_selected(
        registry: &Registry,
        options: HostOptions,
        select: impl Fn(&InstalledPlugin) -> bool,
    ) -> Result<Self, HostError> {
        let names = registry
            .list()?
            .iter()
            .filter(|installed| select(installed))
            .map(|installed| installed.name().to_owned())
            .collect();
        Self::start_with(registry, options, Selection::Named(names))
    }

    fn start_with(
        registry: &Registry,
        options: HostOptions,
        selection: Selection,
    ) -> Result<Self, HostError> {
        let engine = engine(&options.pool, options.compile_cache_dir.as_deref())?;
        let mut linker: Linker<CallState> = Linker::new(&engine);
        let link_error = |e: wasmtime::Error| HostError::Engine(format!("linking: {e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_error)?;
        aa::AaPlugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(link_error)?;
        let tls = Arc::new(tls_connector().map_err(HostError::Engine)?);
        let ticker = EpochTicker::start(&engine, options.pool.epoch_tick)?;
        let shared = Arc::new(Shared {
            engine,
            linker,
            pool: options.pool,
            tls,
            options,
            registry: registry.clone(),
            selection,
            current: RwLock::new(Arc::new(PluginSet {
                plugins: BTreeMap::new(),
                broken: BTreeMap::new(),
                aa_order: Arc::from(Vec::new()),
            })),
            caches: Mutex::new(BTreeMap::new()),
            stats: crate::stats::Counter::default(),
            reloading: Mutex::new(()),
            _ticker: ticker,
        });
        let host = Self { shared };
        host.reload()?;
        Ok(host)
    }

    /// Reads the registry again and swaps in the plugins it now selects (for [`start`]: the
    /// enabled ones). Plugins whose component, grants and configuration did not change are
    /// kept as loaded; the others are loaded anew (from the compile cache when it has them).
    /// Calls already running finish on the previous set. Each plugin keeps its cache.
    ///
    /// When the registry cannot be read the previous set stays and the error is returned; a
    /// plugin that fails to load is listed with its error, and calls to it fail closed.
    ///
    /// [`start`]: PluginHost::start
    pub fn reload(&self) -> Result<Vec<LoadedPluginInfo>, HostError> {
        let shared = &self.shared;
        let _one_at_a_time = shared.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let installed = shared.registry.list()?;
        let previous = self.set();
        let mut plugins = BTreeMap::new();
        let mut broken = BTreeMap::new();
        let mut aa_plugins = Vec::new();
        let caches = {
            let mut caches = shared.caches.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the caches of plugins no longer installed.
            caches.retain(|name, _| installed.iter().any(|p| p.name() == name));
            for plugin in &installed {
                let limit = cache_limit(&plugin.grants.limits);
                caches
                    .entry(plugin.name().to_owned())
                    .and_modify(|cache| cache.set_limit(limit))
                    .or_insert_with(|| Arc::new(PluginCache::new(limit)));
            }
            caches.clone()
        };
        for plugin in installed {
            if !shared.selection.picks(&plugin) {
                continue;
            }
            let name = plugin.name().to_owned();
            if plugin.manifest.kinds.contains(&PluginKind::Aa) {
                aa_plugins.push((plugin.grants.order, name.clone()));
            }
            let source = Source::of(&plugin);
            if let Some(loaded) = previous.plugins.get(&name)
                && loaded.source == source
            {
                plugins.insert(name, loaded.clone());
                continue;
            }
            let cache = caches
                .get(&name)
                .cloned()
                .unwrap_or_else(|| Arc::new(PluginCache::new(cache_limit(&plugin.grants.limits))));
            match load(shared, &plugin, source, cache) {
                Ok(loaded) => {
                    plugins.insert(name, Arc::new(loaded));
                }
                Err(message) => {
                    tracing::error!(plugin = %name, "plugin not loaded: {message}");
                    broken.insert(name, message);
                }
            }
        }
        aa_plugins.sort();
        let set = Arc::new(PluginSet {
            plugins,
            broken,
            aa_order: aa_plugins.into_iter().map(|(_, name)| name).collect(),
        });
        *shared.current.write().unwrap_or_else(|e| e.into_inner()) = set;
        Ok(self.plugins())
    }

    /// The registry this host loads from.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The loaded set now (a call keeps the one it started with).
    fn set(&self) -> Arc<PluginSet> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The enabled plugins, loaded or not.
    pub fn plugins(&self) -> Vec<LoadedPluginInfo> {
        let set = self.set();
        let mut all: Vec<LoadedPluginInfo> = set
            .plugins
            .iter()
            .map(|(name, loaded)| LoadedPluginInfo {
                name: name.clone(),
                kinds: loaded.kinds.clone(),
                load_error: None,
            })
            .chain(set.broken.iter().map(|(name, message)| LoadedPluginInfo {
                name: name.clone(),
                kinds: Vec::new(),
                load_error: Some(message.clone()),
            }))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The enabled AA plugins in the order their hooks run (empty: the AA hooks accept at once,
    /// and the caller may skip keyboard-interactive).
    pub fn aa_plugins(&self) -> Arc<[String]> {
        self.set().aa_order.clone()
    }

    /// Bytes (keys, values and per-entry overhead) and entries in a plugin's cache; `None` for
    /// a plugin that is not installed.
    pub fn cache_usage(&self, plugin: &str) -> Option<(usize, usize)> {
        let caches = self.shared.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.get(plugin).map(|cache| cache.usage())
    }

    /// Runs the `authenticate` hook of every enabled AA plugin, in order. Plugins that already
    /// accepted in this session are not run again.
    pub async fn authenticate(
        &self,
        conn: &ConnectionInfo,
        cookies: &mut SessionCookies,
        answers: &[Answer],
    ) -> Result<AaVerdict, PluginFailure> {
        self.run_aa(AaHook::Authenticate, conn, cookies, answers)
            .await
    }

    /// Runs the `authorize` hook of every enabled AA plugin, in order.
    pub async fn authorize(
        &self,
        conn: &ConnectionInfo,
        cookies: &mut SessionCookies,
        answers: &[Answer],
    ) -> Result<AaVerdict, PluginFailure> {
        self.run_aa(AaHook::Authorize, conn, cookies, answers).await
    }

    /// Tells every enabled AA plugin that the session ended and closes the session's tickets.
    /// Runs everything; returns the failures (for the audit trail).
    pub async fn session_ended(
        &self,
        conn: &ConnectionInfo,
        cookies: &mut SessionCookies,
        end: &SessionEnd,
    ) -> Vec<PluginFailure> {
        let set = self.set();
        let mut failures = Vec::new();
        let wit_end = convert::session_end(end);
        for name in set.aa_order.iter() {
            let call = Call::AaSessionEnded(convert::connection(conn, &[]), wit_end.clone());
            if let Err(failure) = self.call_with_cookies(&set, name, call, cookies).await {
                failures.push(failure);
            }
        }
        for (plugin, request) in cookies.tickets.clone() {
            if let Err(failure) = self.close_ticket_in(&set, &plugin, &request, end).await {
                failures.push(failure);
            }
        }
        failures
    }

    /// Asks a credential-store plugin for a password or private key. `Ok(None)`: the store has
    /// no such credential.
    pub async fn credential(
        &self,
        plugin: &str,
        kind: CredentialKind,
        request: &CredentialRequest,
    ) -> Result<Option<Credential>, PluginFailure> {
        let set = self.set();
        let call = Call::Credential(kind, convert::credential_request(request));
        let hook = call.hook();
        let (returned, output) = self
            .call(&set, plugin, call, String::new(), BTreeMap::new())
            .await?;
        let fail = |kind| output.failure(plugin, hook, kind);
        let Returned::Secret(answer) = returned else {
            return Err(fail(FailureKind::Malformed("unexpected answer".into())));
        };
        let secret = answer.map_err(|e| fail(convert::reported_error(e)))?;
        let Some(secret) = secret else {
            return Ok(None);
        };
        let secret = SecretString::new(secret);
        let cap = match kind {
            CredentialKind::Password => caps::PASSWORD,
            CredentialKind::PrivateKey => caps::PRIVATE_KEY,
        };
        if secret.expose().len() > cap || secret.expose().is_empty() {
            return Err(fail(FailureKind::Malformed(format!(
                "the credential is {} bytes long (expected 1 to {cap})",
                secret.expose().len()
            ))));
        }
        Ok(Some(match kind {
            CredentialKind::Password => Credential::Password(secret),
            CredentialKind::PrivateKey => Credential::PrivateKey(secret),
        }))
    }

    /// Tells a credential-store plugin about the credential's life cycle.
    pub async fn credential_event(
        &self,
        plugin: &str,
        request: &CredentialRequest,
        event: CredentialEvent,
    ) -> Result<(), PluginFailure> {
        let set = self.set();
        let call = Call::CredentialEvent(convert::credential_request(request), event);
        self.call(&set, plugin, call, String::new(), BTreeMap::new())
            .await
            .map(|_| ())
    }

    /// Asks a ticketing plugin whether a ticket is valid for a request.
    pub async fn validate_ticket(
        &self,
        plugin: &str,
        request: &TicketRequest,
    ) -> Result<TicketVerdict, PluginFailure> {
        self.validate_ticket_in(&self.set(), plugin, request).await
    }

    async fn validate_ticket_in(
        &self,
        set: &PluginSet,
        plugin: &str,
        request: &TicketRequest,
    ) -> Result<TicketVerdict, PluginFailure> {
        let call = Call::Validate(convert::ticket_request(request));
        let (returned, output) = self
            .call(set, plugin, call, String::new(), BTreeMap::new())
            .await?;
        let fail = |kind| output.failure(plugin, Hook::ValidateTicket, kind);
        match returned {
            Returned::Ticket(verdict) => convert::ticket_verdict(verdict).map_err(fail),
            _ => Err(fail(FailureKind::Malformed("unexpected answer".into()))),
        }
    }

    /// Asks a ticketing plugin to annotate or close a ticket at the end of a session.
    pub async fn close_ticket(
        &self,
        plugin: &str,
        request: &TicketRequest,
        end: &SessionEnd,
    ) -> Result<(), PluginFailure> {
        self.close_ticket_in(&self.set(), plugin, request, end)
            .await
    }

    async fn close_ticket_in(
        &self,
        set: &PluginSet,
        plugin: &str,
        request: &TicketRequest,
        end: &SessionEnd,
    ) -> Result<(), PluginFailure> {
        let call = Call::Close(convert::ticket_request(request), convert::session_end(end));
        let (returned, output) = self
            .call(set, plugin, call, String::new(), BTreeMap::new())
            .await?;
        let fail = |kind| output.failure(plugin, Hook::CloseTicket, kind);
        match returned {
            Returned::Closed(Ok(())) => Ok(()),
            Returned::Closed(Err(error)) => Err(fail(convert::reported_error(error))),
            _ => Err(fail(FailureKind::Malformed("unexpected answer".into()))),
        }
    }

    async fn run_aa(
        &self,
        hook: AaHook,
        conn: &ConnectionInfo,
        cookies: &mut SessionCookies,
        answers: &[Answer],
    ) -> Result<AaVerdict, PluginFailure> {
        // One round runs on one set, even if a reload swaps it meanwhile.
        let set = self.set();
        let mut current = conn.clone();
        let mut audit = Vec::new();
        let mut ran = Vec::new();
        for name in set.aa_order.iter() {
            let name = name.clone();
            let key = (hook, name.clone());
            let acceptance = match cookies.accepted.get(&key) {
                Some(acceptance) => acceptance.clone(),
                None => {
                    let wit_conn = convert::connection(&current, answers);
                    let call = match hook {
                        AaHook::Authenticate => Call::Authenticate(wit_conn),
                        AaHook::Authorize => Call::Authorize(wit_conn),
                    };
                    let wit_hook = call.hook();
                    let (returned, denied) =
                        self.call_with_cookies(&set, &name, call, cookies).await?;
                    let fail = |kind| PluginFailure {
                        plugin: name.clone(),
                        hook: wit_hook,
                        kind,
                        denied: denied.clone(),
                    };
                    let Returned::Verdict(verdict) = returned else {
                        return Err(fail(FailureKind::Malformed("unexpected answer".into())));
                    };
                    match convert::verdict(verdict).map_err(fail)? {
                        PluginVerdict::Deny(reason) => {
                            return Ok(AaVerdict::Deny {
                                plugin: name,
                                reason,
                            });
                        }
                        PluginVerdict::NeedInfo(question) => {
                            return Ok(AaVerdict::NeedInfo {
                                plugin: name,
                                question,
                            });
                        }
                        PluginVerdict::Accept(acceptance) => {
                            if let Some(denial) = self
                                .check_ticket(
                                    &set,
                                    &name,
                                    &acceptance,
                                    &current,
                                    cookies,
                                    &mut audit,
                                )
                                .await?
                            {
                                return Ok(denial);
                            }
                            cookies.accepted.insert(key, acceptance.clone());
                            acceptance
                        }
                    }
                }
            };
            if let Some(user) = &acceptance.rename_user {
                current.gateway_user = user.clone();
            }
            if let Some(groups) = &acceptance.set_groups {
                current.groups = groups.clone();
            }
            audit.extend(acceptance.audit.iter().map(|(key, value)| AuditNote {
                plugin: name.clone(),
                key: key.clone(),
                value: value.clone(),
            }));
            if let Some(ticket) = &acceptance.ticket {
                audit.push(AuditNote {
                    plugin: name.clone(),
                    key: "ticket".into(),
                    value: ticket.clone(),
                });
            }
            ran.push(name);
        }
        Ok(AaVerdict::Accept(Accepted {
            gateway_user: current.gateway_user,
            groups: current.groups,
            audit,
            plugins: ran,
        }))
    }

    /// When an AA plugin accepts with a ticket and the operator linked a ticketing plugin to
    /// it, the ticketing plugin must say the ticket is valid. Returns a denial if not.
    async fn check_ticket(
        &self,
        set: &PluginSet,
        aa_plugin: &str,
        acceptance: &Acceptance,
        conn: &ConnectionInfo,
        cookies: &mut SessionCookies,
        audit: &mut Vec<AuditNote>,
    ) -> Result<Option<AaVerdict>, PluginFailure> {
        let Some(ticket) = &acceptance.ticket else {
            return Ok(None);
        };
        let Some(loaded) = set.plugins.get(aa_plugin) else {
            return Ok(None);
        };
        let Some(ticketing) = loaded.context.grants.ticketing.clone() else {
            return Ok(None);
        };
        let request = TicketRequest {
            ticket_id: ticket.clone(),
            session_id: conn.session_id.clone(),
            gateway_user: conn.gateway_user.clone(),
            target_account: conn.target_account.clone(),
            target_asset: conn.target_asset.clone(),
            client_address: conn.client_address.clone(),
        };
        match self.validate_ticket_in(set, &ticketing, &request).await? {
            TicketVerdict::Valid { audit: notes } => {
                audit.extend(notes.into_iter().map(|(key, value)| AuditNote {
                    plugin: ticketing.clone(),
                    key,
                    value,
                }));
                cookies.tickets.push((ticketing, request));
                Ok(None)
            }
            TicketVerdict::Invalid { reason } => Ok(Some(AaVerdict::Deny {
                plugin: ticketing,
                reason: format!("ticket `{ticket}`: {reason}"),
            })),
        }
    }

    async fn call_with_cookies(
        &self,
        set: &PluginSet,
        name: &str,
        call: Call,
        cookies: &mut SessionCookies,
    ) -> Result<(Returned, Vec<String>), PluginFailure> {
        let cookie = cookies.per_plugin.get(name).cloned().unwrap_or_default();
        let (returned, output) = self
            .call(set, name, call, cookie, cookies.shared.clone())
            .await?;
        cookies.per_plugin.insert(name.to_owned(), output.cookie);
        cookies.shared = output.session_values;
        Ok((returned, output.denied))
    }

    /// Runs one hook in a fresh instance under the plugin's limits, counted for the metrics.
    async fn call(
        &self,
        set: &PluginSet,
        name: &str,
        call: Call,
        cookie: String,
        session_values: BTreeMap<String, String>,
    ) -> Result<(Returned, CallOutput), PluginFailure> {
        let hook = call.hook();
        let _running = self.shared.stats.started();
        let started = std::time::Instant::now();
        let result = self
            .call_counted(set, name, call, cookie, session_values)
            .await;
        let failure = result.as_ref().err().map(|failure| &failure.kind);
        self.shared
            .stats
            .ended(name, hook, started.elapsed(), failure);
        result
    }

    async fn call_counted(
        &self,
        set: &PluginSet,
        name: &str,
        call: Call,
        cookie: String,
        session_values: BTreeMap<String, String>,
    ) -> Result<(Returned, CallOutput), PluginFailure> {
        let shared = &self.shared;
        let hook = call.hook();
        let fail = |kind| PluginFailure::new(name, hook, kind);
        let loaded = match set.plugins.get(name) {
            Some(loaded) => loaded.clone(),
            None => {
                return Err(fail(match set.broken.get(name) {
                    Some(message) => FailureKind::Instantiate(message.clone()),
                    None => FailureKind::Missing,
                }));
            }
        };
        if !loaded.kinds.contains(&call.kind()) {
            return Err(fail(missing(call.kind())));
        }
        let limits = loaded.limits;
        let denied = Arc::new(Mutex::new(Vec::new()));
        let state = CallState {
            plugin: loaded.context.clone(),
            wasi: WasiCtxBuilder::new()
                .allow_tcp(false)
                .allow_udp(false)
                .build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            gate: HttpGate {
                allowed: loaded.http_allowed.clone(),
                denied: denied.clone(),
                body_limit: limits.http_body_kib as usize * 1024,
                tls: shared.tls.clone(),
            },
            memory: MemoryCap {
                limit_bytes: usize::try_from(limits.memory_bytes()).unwrap_or(usize::MAX),
                hit: false,
            },
            cookie,
            session_values,
            logs: Vec::new(),
            log_budget: LogBudget::default(),
            audited: shared.options.audit.is_some(),
            denied: Vec::new(),
            cpu_ticks_used: 0,
            cpu_budget_ticks: cpu_ticks(&limits, &shared.pool),
        };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut context| {
            let state = context.data_mut();
            state.cpu_ticks_used += 1;
            if state.cpu_exceeded() {
                return Err(wasmtime::Error::msg("plugin CPU budget exhausted"));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        let session = call.session_id();
        let result =
            tokio::time::timeout(limits.timeout(), invoke(&mut store, &loaded, call)).await;
        let state = store.into_data();
        let mut refused = state.denied.clone();
        if let Ok(mut http_denied) = denied.lock() {
            refused.append(&mut http_denied);
        }
        audit_logs(
            name,
            hook,
            &session,
            &state,
            shared.options.audit.as_deref(),
        );
        for what in &refused {
            let what = log_text(what, caps::LOG_MESSAGE);
            tracing::warn!(plugin = name, %hook, audit = true, "capability refused: {what}");
        }
        let failure = |kind| PluginFailure {
            plugin: name.to_owned(),
            hook,
            kind,
            denied: refused.clone(),
        };
        let refused = refused.clone();
        match result {
            Err(_elapsed) => Err(failure(FailureKind::Timeout {
                timeout_ms: limits.timeout_ms,
            })),
            Ok(Err(error)) => Err(failure(classify(&error, &state, &limits))),
            Ok(Ok(returned)) => Ok((
                returned,
                CallOutput {
                    cookie: state.cookie,
                    session_values: state.session_values,
                    denied: refused,
                },
            )),
        }
    }
}

/// The most a plugin's cache may hold: its memory limit.
fn cache_limit(limits: &Limits) -> usize {
    usize::try_from(limits.memory_bytes()).unwrap_or(usize::MAX)
}

/// What a loaded plugin was loaded from; a reload keeps a plugin whose source is unchanged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Source {
    component_sha256: String,
    grants: crate::grants::Grants,
    config: toml::Table,
}

impl Source {
    fn of(installed: &InstalledPlugin) -> Self {
        Self {
            component_sha256: installed.component_sha256.clone(),
            grants: installed.grants.clone(),
            config: installed.config.clone(),
        }
    }
}

fn load(
    shared: &Shared,
    installed: &InstalledPlugin,
    source: Source,
    cache: Arc<PluginCache>,
) -> Result<Loaded, String> {
    let (engine, linker, options) = (&shared.engine, &shared.linker, &shared.options);
    let config = installed.valid_config().map_err(|e| e.to_string())?;
    installed
        .grants
        .check(&installed.manifest)
        .map_err(|e| e.to_string())?;
    let limits = installed.grants.limits;
    if limits.memory_mib > options.pool.max_memory_mib {
        return Err(format!(
            "memory limit {} MiB is above the pool's ceiling of {} MiB",
            limits.memory_mib, options.pool.max_memory_mib
        ));
    }
    let component = Component::from_file(engine, installed.component_path())
        .map_err(|e| format!("cannot compile `plugin.wasm`: {e:#}"))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| format!("imports something the host does not provide: {e:#}"))?;
    let kinds = installed.manifest.kinds.clone();
    let aa = if kinds.contains(&PluginKind::Aa) {
        Some(aa::AaPluginPre::new(pre.clone()).map_err(|e| format!("kind `aa`: {e:#}"))?)
    } else {
        None
    };
    let credential_store = if kinds.contains(&PluginKind::CredentialStore) {
        Some(
            credential_store::CredentialStorePluginPre::new(pre.clone())
                .map_err(|e| format!("kind `credential-store`: {e:#}"))?,
        )
    } else {
        None
    };
    let ticketing = if kinds.contains(&PluginKind::Ticketing) {
        Some(
            ticketing::TicketingPluginPre::new(pre)
                .map_err(|e| format!("kind `ticketing`: {e:#}"))?,
        )
    } else {
        None
    };
    let http_allowed = installed
        .grants
        .http
        .iter()
        .map(|host| HttpDestination::parse(host))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Loaded {
        context: Arc::new(PluginContext {
            name: installed.name().to_owned(),
            config,
            grants: installed.grants.clone(),
            secrets: options.secrets.clone(),
            cache,
            clock: options.clock.clone(),
        }),
        source,
        limits,
        http_allowed: http_allowed.into(),
        kinds,
        aa,
        credential_store,
        ticketing,
    })
}
