//! The cluster: session nodes joined to a control node.
//!
//! A control node keeps the cluster CA (its key sealed by the vault; the binary seals it), makes
//! single-use join tokens, and serves the cluster port: mutual TLS (rustls, TLS 1.3), one typed
//! call per frame ([`wire`]). A new node joins with a token and the CA's thumbprint, which it
//! pins; it gets a certificate from the CA, and every later call presents it. A node's identity is
//! its certificate (its thumbprint in the node record), never its address. This crate knows
//! rcgen and the cluster's rustls configuration; the store records are `gatehouse_core::Node`,
//! `JoinToken` and `ManagedNetwork`. docs/cluster.md describes the whole.

pub mod authority;
pub mod control;
pub mod node;
pub mod pki;
pub mod remote;
pub mod shipping;
pub mod tls;
pub mod wire;

pub use authority::SessionAuthority;
pub use control::{Control, NodeAdminError, Peer};
pub use node::{ControlClient, JoinOptions, NodeIdentity};
pub use pki::{ClusterCa, NodeKey, Thumbprint};
pub use remote::{Authorized, LoginAnswer, LoginAttempt, RemotePermit};
pub use wire::{Refusal, RefusalKind};

impl From<Refusal> for ClusterError {
    // Not `#[from]`: that would make the refusal the error's source too, and `{:#}` would print
    // its message twice.
    fn from(refusal: Refusal) -> Self {
        ClusterError::Refused(refusal)
    }
}

/// The cluster port's default.
pub const DEFAULT_PORT: u16 = 8649;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("bad thumbprint: {0}")]
    BadThumbprint(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cluster protocol: {0}")]
    Protocol(String),
    #[error(
        "the peer speaks cluster protocol version {peer}, this build speaks {ours}: run the same \
         Gatehouse version on every node"
    )]
    Version { peer: u32, ours: u32 },
    #[error("cannot reach the control node at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("the control node at {address} is not the one pinned: {reason}")]
    NotTrusted { address: String, reason: String },
    #[error("the control node refused: {0}")]
    Refused(Refusal),
    #[error(
        "`{0}` is not a control node URL (https://HOST[:PORT], port {DEFAULT_PORT} by default)"
    )]
    BadUrl(String),
    #[error("{0}")]
    NotJoined(String),
    #[error("{0}")]
    Files(String),
    #[error(transparent)]
    Store(#[from] gatehouse_store::StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
