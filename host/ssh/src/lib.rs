//! The SSH gateway: russh server towards users, russh client towards targets, and the relay
//! between them with recording.
//!
//! Entry point: [`serve`]. One client connection is one gateway session with one tracing span
//! (session id, user, target, client address). The connection to the target is opened once per
//! session, after authentication and authorization, and every client channel is relayed over it.

mod aa;
mod access;
mod drain;
mod forward;
mod join;
mod live;
mod messages;
mod permit;
mod record;
mod relay;
mod remote;
mod server;
mod session;
pub mod target;
mod throttle;
pub mod transparent;

use gatehouse_audit::Auditor;
use gatehouse_auth::Authenticator;
use gatehouse_policy::PolicyEngine;
use gatehouse_store::Store;
use gatehouse_vault::Vault;
use russh::keys::PrivateKey;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use drain::{DrainState, Shutdown};
pub use join::{TerminalFeed, TerminalWatch, WatchEvent};
pub use live::{EndSession, LiveGuard, LiveSessions};
pub use server::serve;

/// Read buffer on each SSH socket (client side and target side).
pub(crate) const SOCKET_READ_BUFFER: usize = 64 * 1024;

/// Everything a session needs from the rest of Gatehouse.
pub struct Services {
    /// Where sessions are recorded and audited: the gateway's store (on a session node, its own
    /// local store, which holds no user, policy or secret).
    pub store: Arc<Store>,
    pub auditor: Auditor,
    /// Who authenticates users, decides sessions and channels, and gives out credentials.
    pub authority: Authority,
    /// The sessions running now, to end one from outside.
    pub live: LiveSessions,
}

/// Who decides.
pub enum Authority {
    /// This process holds the users, the policies and the vault (`serve --role all|control`).
    Local(LocalAuthority),
    /// A session node: the control node authenticates the users, decides every session and
    /// channel with Cedar, and hands out the target credential with the permit.
    Remote(gatehouse_cluster::ControlClient),
}

/// The deciding services of a gateway that holds them.
pub struct LocalAuthority {
    pub vault: Arc<Vault>,
    pub authenticator: Arc<Authenticator>,
    /// Every access decision: session open and each channel.
    pub policy: Arc<PolicyEngine>,
    /// The enabled plugins (AA hooks in the login, credential stores, ticketing).
    pub plugins: Option<gatehouse_plugin_host::PluginHost>,
    /// Access requests: sessions held for approval, access strings, sessions under requests.
    pub workflow: Option<Arc<gatehouse_workflow::Workflow>>,
}

impl Services {
    /// The local deciding services, unless this is a session node.
    pub fn local(&self) -> Option<&LocalAuthority> {
        match &self.authority {
            Authority::Local(local) => Some(local),
            Authority::Remote(_) => None,
        }
    }

    /// The enabled plugins (none on a session node).
    pub fn plugins(&self) -> Option<&gatehouse_plugin_host::PluginHost> {
        self.local().and_then(|l| l.plugins.as_ref())
    }
}

/// Settings of the SSH gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The gateway's own host keys.
    pub host_keys: Vec<PrivateKey>,
    /// Where session recordings are written (`<dir>/<session-id>/`).
    pub recordings_dir: PathBuf,
    /// Environment variables a client may pass to the target (`LANG`, `LC_*` style patterns).
    pub env_allow: Vec<String>,
    /// Limit for connecting and logging in to a target.
    pub connect_timeout: Duration,
    /// Keep-alive interval towards clients and targets.
    pub keepalive_interval: Duration,
    /// For exec channels without a terminal, how many bytes per direction are kept in the
    /// asciicast recording before it notes the truncation and only counts (0: no limit). Terminal
    /// sessions are always recorded whole.
    pub exec_record_limit: u64,
    /// Messages queued per channel before backpressure reaches the TCP socket.
    pub channel_buffer_size: usize,
    /// SSH channel window.
    pub window_size: u32,
    /// Transparent mode: connections arrive redirected to a server's address; the asset is
    /// the one at the original destination (`alice@root` logs in there).
    pub transparent: bool,
    /// Transparent mode: dial the target from the client's own address (`IP_TRANSPARENT`), so
    /// the server sees the user's address; the router must send its replies to the gateway.
    pub source_from_client: bool,
}

impl GatewayConfig {
    pub fn new(host_keys: Vec<PrivateKey>, recordings_dir: PathBuf) -> Self {
        Self {
            host_keys,
            recordings_dir,
            env_allow: vec!["LANG".into(), "LC_*".into(), "TZ".into()],
            connect_timeout: target::DEFAULT_CONNECT_TIMEOUT,
            keepalive_interval: Duration::from_secs(30),
            exec_record_limit: 8 * 1024 * 1024,
            channel_buffer_size: 32,
            window_size: 2 * 1024 * 1024,
            transparent: false,
            source_from_client: false,
        }
    }

    /// Whether a client may set environment variable `name` on the target.
    pub fn env_allowed(&self, name: &str) -> bool {
        self.env_allow
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }
}

/// Algorithm preferences for both sides: AES-GCM first (hardware accelerated), no compression.
pub(crate) fn preferred_algorithms() -> russh::Preferred {
    russh::Preferred {
        cipher: Cow::Borrowed(&[
            russh::cipher::AES_256_GCM,
            russh::cipher::AES_128_GCM,
            russh::cipher::CHACHA20_POLY1305,
            russh::cipher::AES_256_CTR,
        ]),
        compression: Cow::Borrowed(&[russh::compression::NONE]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_allow_list() {
        let config = GatewayConfig::new(vec![], PathBuf::new());
        for (name, allowed) in [
            ("LANG", true),
            ("LC_ALL", true),
            ("TZ", true),
            ("LD_PRELOAD", false),
            ("PATH", false),
            ("LANGUAGE", false),
        ] {
            assert_eq!(config.env_allowed(name), allowed, "{name}");
        }
    }
}
