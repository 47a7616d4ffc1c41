//! Typed errors: `PluginFailure` for a hook that failed (audited in detail, generic to the
//! user), `RegistryError` for the on-disk registry, `HostError` for starting the host.

use std::fmt;
use std::path::PathBuf;

/// The hook a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Authenticate,
    Authorize,
    AaSessionEnded,
    GetPassword,
    GetPrivateKey,
    AuthenticationCompleted,
    CheckIn,
    CredentialSessionEnded,
    ValidateTicket,
    CloseTicket,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Authenticate => "aa.authenticate",
            Hook::Authorize => "aa.authorize",
            Hook::AaSessionEnded => "aa.session-ended",
            Hook::GetPassword => "credential-store.get-password",
            Hook::GetPrivateKey => "credential-store.get-private-key",
            Hook::AuthenticationCompleted => "credential-store.authentication-completed",
            Hook::CheckIn => "credential-store.check-in",
            Hook::CredentialSessionEnded => "credential-store.session-ended",
            Hook::ValidateTicket => "ticketing.validate",
            Hook::CloseTicket => "ticketing.close",
        })
    }
}

/// A hook that did not produce a usable answer. The caller denies, shows the user
/// [`PluginFailure::USER_MESSAGE`], and writes `Display` of this value to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}` in {hook}: {kind}")]
pub struct PluginFailure {
    pub plugin: String,
    pub hook: Hook,
    pub kind: FailureKind,
    /// Capabilities the plugin tried to use without a grant during the call (for the audit).
    pub denied: Vec<String>,
}

impl PluginFailure {
    /// What the user is told, whatever went wrong.
    pub const USER_MESSAGE: &'static str = "access denied: a plugin could not approve this session";

    pub(crate) fn new(plugin: &str, hook: Hook, kind: FailureKind) -> Self {
        Self {
            plugin: plugin.to_owned(),
            hook,
            kind,
            denied: Vec::new(),
        }
    }
}

/// Why a hook failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureKind {
    #[error("the plugin is not installed or not enabled")]
    Missing,
    #[error("the plugin does not implement `{0}`")]
    WrongKind(&'static str),
    #[error("the plugin could not be instantiated: {0}")]
    Instantiate(String),
    #[error("too many plugin calls at once (instance pool exhausted)")]
    Busy,
    #[error("the plugin used more than its CPU budget of {budget_ms} ms")]
    CpuLimit { budget_ms: u64 },
    #[error("the plugin hit its memory limit of {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: u64 },
    #[error("the plugin did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin returned a malformed answer: {0}")]
    Malformed(String),
    #[error("the plugin reported an error: {0}")]
    Reported(String),
}

/// An error of the installed-plugins registry, or of a manifest, grant or configuration.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("invalid grants for plugin `{plugin}`: {message}")]
    Grants { plugin: String, message: String },
    #[error("invalid config for plugin `{plugin}`: {message}")]
    Config { plugin: String, message: String },
    #[error("plugin `{0}` is not installed")]
    NotInstalled(String),
    #[error("plugin `{0}` is already installed (remove it first)")]
    AlreadyInstalled(String),
}

impl RegistryError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// An error starting the plugin host or loading a plugin into it.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("could not set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("plugin `{plugin}`: {message}")]
    Load { plugin: String, message: String },
    #[error(
        "unknown hook `{0}` (expected authenticate, authorize, get-password, get-private-key, validate-ticket)"
    )]
    UnknownHook(String),
}
