//! One hook invocation: the `Call` with its arguments, running it in a fresh instance, and
//! turning what wasmtime reports into the failure the audit trail gets.

use crate::bindings::v0_1_0::{aa, credential_store, ticketing};
use crate::convert;
use crate::error::{FailureKind, Hook, PluginFailure};
use crate::host::Loaded;
use crate::limits::{Limits, PoolLimits, caps};
use crate::manifest::PluginKind;
use crate::state::CallState;
use crate::types::{CredentialEvent, CredentialKind};
use std::collections::BTreeMap;
use wasmtime::Store;

/// A hook invocation with its arguments.
pub(crate) enum Call {
    Authenticate(aa::gatehouse::plugin::types::Connection),
    Authorize(aa::gatehouse::plugin::types::Connection),
    AaSessionEnded(
        aa::gatehouse::plugin::types::Connection,
        aa::gatehouse::plugin::types::SessionEnd,
    ),
    Credential(
        CredentialKind,
        credential_store::exports::gatehouse::plugin::credential_store::CredentialRequest,
    ),
    CredentialEvent(
        credential_store::exports::gatehouse::plugin::credential_store::CredentialRequest,
        CredentialEvent,
    ),
    Validate(ticketing::exports::gatehouse::plugin::ticketing::TicketRequest),
    Close(
        ticketing::exports::gatehouse::plugin::ticketing::TicketRequest,
        aa::gatehouse::plugin::types::SessionEnd,
    ),
}

impl Call {
    pub(crate) fn hook(&self) -> Hook {
        match self {
            Call::Authenticate(_) => Hook::Authenticate,
            Call::Authorize(_) => Hook::Authorize,
            Call::AaSessionEnded(..) => Hook::AaSessionEnded,
            Call::Credential(CredentialKind::Password, _) => Hook::GetPassword,
            Call::Credential(CredentialKind::PrivateKey, _) => Hook::GetPrivateKey,
            Call::CredentialEvent(_, CredentialEvent::AuthenticationCompleted { .. }) => {
                Hook::AuthenticationCompleted
            }
            Call::CredentialEvent(_, CredentialEvent::CheckIn) => Hook::CheckIn,
            Call::CredentialEvent(_, CredentialEvent::SessionEnded(_)) => {
                Hook::CredentialSessionEnded
            }
            Call::Validate(_) => Hook::ValidateTicket,
            Call::Close(..) => Hook::CloseTicket,
        }
    }

    pub(crate) fn kind(&self) -> PluginKind {
        match self {
            Call::Authenticate(_) | Call::Authorize(_) | Call::AaSessionEnded(..) => PluginKind::Aa,
            Call::Credential(..) | Call::CredentialEvent(..) => PluginKind::CredentialStore,
            Call::Validate(_) | Call::Close(..) => PluginKind::Ticketing,
        }
    }
}

/// What a hook returned, before checking.
pub(crate) enum Returned {
    Verdict(aa::exports::gatehouse::plugin::aa::Verdict),
    Unit,
    Secret(Result<Option<String>, String>),
    Ticket(Result<ticketing::exports::gatehouse::plugin::ticketing::TicketVerdict, String>),
    Closed(Result<(), String>),
}

/// State a call hands back to the session.
pub(crate) struct CallOutput {
    pub(crate) cookie: String,
    pub(crate) session_values: BTreeMap<String, String>,
    /// Capabilities refused during the call.
    pub(crate) denied: Vec<String>,
}

impl CallOutput {
    pub(crate) fn failure(&self, plugin: &str, hook: Hook, kind: FailureKind) -> PluginFailure {
        PluginFailure {
            plugin: plugin.to_owned(),
            hook,
            kind,
            denied: self.denied.clone(),
        }
    }
}

pub(crate) fn missing(kind: PluginKind) -> FailureKind {
    FailureKind::WrongKind(kind.as_str())
}

/// The loaded component for a call of `kind`, or the error that the plugin is not one.
fn component<P>(pre: &Option<P>, kind: PluginKind) -> wasmtime::Result<&P> {
    pre.as_ref()
        .ok_or_else(|| wasmtime::Error::msg(missing(kind).to_string()))
}

pub(crate) async fn invoke(
    store: &mut Store<CallState>,
    loaded: &Loaded,
    call: Call,
) -> wasmtime::Result<Returned> {
    match call {
        Call::Authenticate(conn) => {
            let plugin = component(&loaded.aa, PluginKind::Aa)?
                .instantiate_async(&mut *store)
                .await?;
            let verdict = plugin
                .gatehouse_plugin_aa()
                .call_authenticate(&mut *store, &conn)
                .await?;
            Ok(Returned::Verdict(verdict))
        }
        Call::Authorize(conn) => {
            let plugin = component(&loaded.aa, PluginKind::Aa)?
                .instantiate_async(&mut *store)
                .await?;
            let verdict = plugin
                .gatehouse_plugin_aa()
                .call_authorize(&mut *store, &conn)
                .await?;
            Ok(Returned::Verdict(verdict))
        }
        Call::AaSessionEnded(conn, end) => {
            let plugin = component(&loaded.aa, PluginKind::Aa)?
                .instantiate_async(&mut *store)
                .await?;
            plugin
                .gatehouse_plugin_aa()
                .call_session_ended(&mut *store, &conn, &end)
                .await?;
            Ok(Returned::Unit)
        }
        Call::Credential(kind, request) => {
            let plugin = component(&loaded.credential_store, PluginKind::CredentialStore)?
                .instantiate_async(&mut *store)
                .await?;
            let store_api = plugin.gatehouse_plugin_credential_store();
            let secret = match kind {
                CredentialKind::Password => {
                    store_api.call_get_password(&mut *store, &request).await?
                }
                CredentialKind::PrivateKey => {
                    store_api
                        .call_get_private_key(&mut *store, &request)
                        .await?
                }
            };
            Ok(Returned::Secret(secret))
        }
        Call::CredentialEvent(request, event) => {
            let plugin = component(&loaded.credential_store, PluginKind::CredentialStore)?
                .instantiate_async(&mut *store)
                .await?;
            let store_api = plugin.gatehouse_plugin_credential_store();
            match event {
                CredentialEvent::AuthenticationCompleted { succeeded } => {
                    store_api
                        .call_authentication_completed(&mut *store, &request, succeeded)
                        .await?
                }
                CredentialEvent::CheckIn => store_api.call_check_in(&mut *store, &request).await?,
                CredentialEvent::SessionEnded(end) => {
                    store_api
                        .call_session_ended(&mut *store, &request, &convert::session_end(&end))
                        .await?
                }
            }
            Ok(Returned::Unit)
        }
        Call::Validate(request) => {
            let plugin = component(&loaded.ticketing, PluginKind::Ticketing)?
                .instantiate_async(&mut *store)
                .await?;
            let verdict = plugin
                .gatehouse_plugin_ticketing()
                .call_validate(&mut *store, &request)
                .await?;
            Ok(Returned::Ticket(verdict))
        }
        Call::Close(request, end) => {
            let plugin = component(&loaded.ticketing, PluginKind::Ticketing)?
                .instantiate_async(&mut *store)
                .await?;
            let closed = plugin
                .gatehouse_plugin_ticketing()
                .call_close(&mut *store, &request, &end)
                .await?;
            Ok(Returned::Closed(closed))
        }
    }
}

/// Turns an error out of wasmtime into the failure the audit trail gets.
pub(crate) fn classify(error: &wasmtime::Error, state: &CallState, limits: &Limits) -> FailureKind {
    if state.memory.hit {
        return FailureKind::MemoryLimit {
            limit_bytes: limits.memory_bytes(),
        };
    }
    if state.cpu_exceeded() {
        return FailureKind::CpuLimit {
            budget_ms: limits.cpu_ms,
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return FailureKind::Busy;
    }
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return FailureKind::Trap(trap.to_string());
    }
    let message = format!("{error:#}");
    let message = match message.char_indices().nth(caps::REASON) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message,
    };
    FailureKind::Trap(message)
}

pub(crate) fn cpu_ticks(limits: &Limits, pool: &PoolLimits) -> u64 {
    let tick_ms = u64::try_from(pool.epoch_tick.as_millis())
        .unwrap_or(1)
        .max(1);
    limits.cpu_ms.div_ceil(tick_ms).max(1)
}

/// Sends a call's warnings and errors through `sink` to the audit trail (without a sink they
/// went to the gateway's log as they were logged); then, if the call logged past its budget,
/// one line saying how much was dropped, to the sink or else the log. Either way each line
/// reaches the gateway's log once: the audit trail is mirrored there.
pub(crate) fn audit_logs(
    plugin: &str,
    hook: Hook,
    session: &str,
    state: &CallState,
    sink: Option<&dyn crate::AuditSink>,
) {
    if let Some(sink) = sink {
        for line in &state.logs {
            use crate::bindings::v0_1_0::aa::gatehouse::plugin::log::Level;
            if matches!(line.level, Level::Warn | Level::Error) {
                sink.plugin_log(session, plugin, &hook.to_string(), &line.message);
            }
        }
    }
    let budget = &state.log_budget;
    if budget.dropped_lines > 0 {
        let message = format!(
            "plugin `{plugin}` logged more than {} lines or {} bytes in one call: {} more lines \
             ({} bytes) dropped",
            caps::LOG_LINES,
            caps::LOG_BYTES,
            budget.dropped_lines,
            budget.dropped_bytes
        );
        match sink {
            Some(sink) => sink.plugin_log(session, plugin, &hook.to_string(), &message),
            None => tracing::warn!(plugin, %hook, "{message}"),
        }
    }
}

impl Call {
    /// The gateway session the call is about.
    pub(crate) fn session_id(&self) -> String {
        match self {
            Call::Authenticate(conn) | Call::Authorize(conn) | Call::AaSessionEnded(conn, _) => {
                conn.session_id.clone()
            }
            Call::Credential(_, request) | Call::CredentialEvent(request, _) => {
                request.session_id.clone()
            }
            Call::Validate(request) | Call::Close(request, _) => request.session_id.clone(),
        }
    }
}
