//! The plugin runtime: WebAssembly components written against `wit/` (`gatehouse:plugin`),
//! sandboxed in wasmtime. This is the only crate that knows wasmtime; its API speaks plain
//! Rust types (`ConnectionInfo`, `AaVerdict`, `PluginFailure`, ...).
//!
//! - [`Registry`]: the installed plugins on disk (install, list, show, enable, disable, grant,
//!   configure, remove).
//! - [`PluginHost`]: loads the enabled plugins (again on [`PluginHost::reload`]) and runs hooks,
//!   each in a fresh pooled instance with a memory cap, a CPU budget and a wall-clock timeout,
//!   failing closed.
//! - [`fixture`]: run one hook against a fixture file (`gatehouse plugin test`).

mod bindings;
mod cache;
mod call;
mod convert;
mod engine;
pub mod error;
pub mod fixture;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
mod host;
mod http;
pub mod limits;
pub mod login;
pub mod manifest;
pub mod registry;
pub mod secrets;
mod state;
pub mod stats;
pub mod types;

pub use error::{FailureKind, Hook, HostError, PluginFailure, RegistryError};
pub use grants::Grants;
pub use host::{AuditSink, HostOptions, LoadedPluginInfo, PluginHost};
pub use limits::{Limits, PoolLimits};
pub use manifest::{Manifest, PluginKind};
pub use registry::{InstalledPlugin, Registry};
pub use secrets::{Clock, NoSecrets, SecretProvider, StaticSecrets};
pub use types::*;
