//! The credential-injecting RDP proxy core: it terminates the user's RDP security (NLA: TLS with
//! the gateway's certificate, then CredSSP as the server), logs in to the target over NLA with
//! the vault's credential (TLS with the target's key pinned, CredSSP as the client), and relays
//! the session while a recorder sees every PDU after the handshakes.
//!
//! The caller supplies policy and secrets: the NT hashes of gateway users ([`UserDirectory`]),
//! the [`Permit`] that [`dial`] demands (a [`gatehouse_policy::TargetAuthorization`], or a
//! control node's [`gatehouse_cluster::RemotePermit`] on a session node), the vault's
//! [`TargetLogin`], the target's [`CertificatePolicy`] with a [`PinRecorder`] for trust on first
//! use, and a [`Recorder`]. One connection goes [`accept`] → (authorize) → [`dial`] → [`relay`],
//! or [`AcceptedClient::refuse`] with a [`Refusal`] the client is told. See docs/rdp.md.

mod accept;
mod framing;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod nego;
mod refusal;
mod relay;
mod secret;
mod target;
mod tls;

pub use accept::{AcceptError, AcceptedClient, ClientLogin, Refused, UserDirectory, accept};
pub use refusal::Refusal;
pub use relay::{
    Direction, PduKind, RecordError, RecordedPdu, Recorder, RelayError, RelayOptions, RelayOutcome,
    RelaySummary, relay,
};
pub use secret::{NtHash, TargetLogin};
pub use target::{DialError, DialOptions, Permit, PinOutcome, TargetConnection, dial};
pub use tls::{
    CertificatePin, CertificatePolicy, FirstUse, GatewayTls, PinFuture, PinRecorder, TlsSetupError,
};

/// The default RDP port, for listening and for targets.
pub const DEFAULT_PORT: u16 = 3389;
