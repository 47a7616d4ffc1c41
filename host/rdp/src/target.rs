//! The target-facing leg: TCP, the X.224 negotiation on the client's behalf, TLS with the
//! target's public key pinned (or trusted on first use and then pinned), and CredSSP as the
//! client with the vault's credential. Requires a [`TargetAuthorization`].

use crate::accept::AcceptedClient;
use crate::framing::{Expect, FrameError, Framed};
use crate::nego::{self, NegoError};
use crate::secret::TargetLogin;
use crate::tls::{self, CertificatePin, CertificatePolicy, FirstUse, PinRecorder, PinningVerifier};
use gatehouse_core::Asset;
use gatehouse_policy::TargetAuthorization;
use ironrdp_pdu::nego::{ConnectionConfirm, ConnectionRequest, NegoRequestData, SecurityProtocol};
use ironrdp_pdu::x224::X224;
use rustls::pki_types::ServerName;
use sspi::credssp::{
    ClientMode, ClientState, CredSspClient, CredSspMode, EarlyUserAuthResult, TsRequest,
};
use sspi::{AuthIdentity, Username};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub(crate) type TargetStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Why the target could not be reached or logged in to. `Display` is for the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("timed out after {timeout:?} connecting to and logging in to {address}")]
    Timeout { address: String, timeout: Duration },
    #[error("the target refused the security negotiation: {0}")]
    NegotiationRefused(String),
    #[error("the target selected {0} instead of NLA; the gateway logs in over NLA only")]
    NoNla(String),
    #[error("certificate mismatch: pinned {pinned}, presented {presented}")]
    CertificateMismatch {
        pinned: CertificatePin,
        presented: CertificatePin,
    },
    #[error("the target's certificate cannot be used: {0}")]
    BadCertificate(String),
    #[error("recording the target's certificate on first use failed: {0}")]
    PinStore(String),
    #[error("tls with the target failed: {0}")]
    Tls(String),
    #[error("the target refused the vault credential: {0}")]
    CredentialRejected(String),
    #[error("rdp protocol error with the target: {0}")]
    Protocol(String),
}

impl From<NegoError> for DialError {
    fn from(e: NegoError) -> Self {
        DialError::Protocol(e.to_string())
    }
}

/// How to reach and verify the target.
pub struct DialOptions<'a> {
    /// The RDP port of the asset (3389 by default).
    pub port: u16,
    /// Bound for connecting, negotiating and logging in.
    pub timeout: Duration,
    pub certificate: CertificatePolicy,
    /// Where a trusted-on-first-use pin is recorded.
    pub pins: &'a dyn PinRecorder,
    /// Dial from this address instead of the gateway's (transparent mode's client address,
    /// `IP_TRANSPARENT`).
    pub source: Option<std::net::IpAddr>,
}

/// How the target's certificate was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// It matched the pin.
    Matched(CertificatePin),
    /// It was trusted on first use and is now pinned (the caller audits this).
    Recorded(CertificatePin),
}

/// A target that accepted the vault's credential over NLA; ready for [`crate::relay`].
pub struct TargetConnection {
    pub(crate) framed: Framed<TargetStream>,
    pub(crate) selected: SecurityProtocol,
    pub(crate) account: crate::relay::TargetAccount,
    pin: PinOutcome,
    address: String,
}

impl fmt::Debug for TargetConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetConnection")
            .field("address", &self.address)
            .field("selected", &self.selected)
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

impl TargetConnection {
    pub fn pin(&self) -> &PinOutcome {
        &self.pin
    }

    pub fn address(&self) -> &str {
        &self.address
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for gatehouse_policy::TargetAuthorization {}
    impl Sealed for gatehouse_cluster::RemotePermit {}
}

/// A session decision [`dial`] demands: a [`TargetAuthorization`] (this process's policy
/// engine decided) or a [`gatehouse_cluster::RemotePermit`] (the control node decided, for a
/// session node). Sealed: nothing else can stand in for one.
pub trait Permit: sealed::Sealed + Send + Sync {
    /// The asset the session may reach.
    fn permitted_asset(&self) -> &Asset;
}

impl Permit for TargetAuthorization {
    fn permitted_asset(&self) -> &Asset {
        self.asset()
    }
}

impl Permit for gatehouse_cluster::RemotePermit {
    fn permitted_asset(&self) -> &Asset {
        self.asset()
    }
}

/// Connects to the authorized target on behalf of `client` and logs in with `login`.
pub async fn dial(
    permit: &dyn Permit,
    client: &AcceptedClient,
    login: &TargetLogin,
    options: DialOptions<'_>,
) -> Result<TargetConnection, DialError> {
    let host = permit.permitted_asset().address.clone();
    let address = gatehouse_net::host_port(&host, options.port);
    let timeout = options.timeout;
    tokio::time::timeout(
        timeout,
        dial_inner(&host, &address, client, login, &options),
    )
    .await
    .map_err(|_| DialError::Timeout {
        address: address.clone(),
        timeout,
    })?
}

async fn dial_inner(
    host: &str,
    address: &str,
    client: &AcceptedClient,
    login: &TargetLogin,
    options: &DialOptions<'_>,
) -> Result<TargetConnection, DialError> {
    // The whole dial is bounded by the caller's timeout.
    let socket = gatehouse_net::connect(host, options.port, options.source, options.timeout)
        .await
        .map_err(|e| DialError::Unreachable {
            address: address.to_string(),
            reason: e.reason(),
        })?;
    let mut framed = Framed::new(socket);

    // The client's offer goes to the target unchanged (the server echoes it in its core data and
    // clients check it); the cookie names the target account, never the gateway user, and the
    // client's routing token stays at the gateway.
    let request = ConnectionRequest {
        nego_data: Some(NegoRequestData::cookie(login.username.clone())),
        flags: client.request_flags,
        protocol: client.requested,
        correlation_info: None,
    };
    nego::write_pdu(framed.get_mut(), &X224(request)).await?;
    let selected = match nego::read_connection_confirm(&mut framed).await? {
        ConnectionConfirm::Response { protocol, .. } => protocol,
        ConnectionConfirm::Failure { code } => {
            return Err(DialError::NegotiationRefused(code.to_string()));
        }
    };
    if !nego::offers_nla(selected) {
        return Err(DialError::NoNla(nego::describe(selected)));
    }
    if framed.buffered() > 0 {
        return Err(DialError::Protocol(
            "data after the connection confirm, before the TLS handshake".into(),
        ));
    }
    let (socket, _) = framed.into_parts();

    let expected = match &options.certificate {
        CertificatePolicy::Pinned(pin) => Some(pin.clone()),
        CertificatePolicy::TrustOnFirstUse => None,
    };
    let verifier = Arc::new(PinningVerifier::new(expected.clone()));
    let config = verifier
        .client_config()
        .map_err(|e| DialError::Tls(e.to_string()))?;
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| DialError::Tls(format!("`{host}` is not a valid server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = connector.connect(server_name, socket).await;
    let presented = verifier.presented();
    let stream = match (handshake, presented, expected) {
        (Ok(stream), _, _) => stream,
        (Err(_), Some(Ok(presented)), Some(pinned)) if presented != pinned => {
            return Err(DialError::CertificateMismatch { pinned, presented });
        }
        (Err(_), Some(Err(reason)), _) => return Err(DialError::BadCertificate(reason)),
        (Err(e), _, _) => return Err(DialError::Tls(e.to_string())),
    };
    let presented = match verifier.presented() {
        Some(Ok(pin)) => pin,
        Some(Err(reason)) => return Err(DialError::BadCertificate(reason)),
        None => {
            return Err(DialError::BadCertificate(
                "no certificate was verified".into(),
            ));
        }
    };
    let pin = match &options.certificate {
        CertificatePolicy::Pinned(_) => PinOutcome::Matched(presented),
        CertificatePolicy::TrustOnFirstUse => {
            match options
                .pins
                .record_first_use(&presented)
                .await
                .map_err(DialError::PinStore)?
            {
                FirstUse::Recorded => PinOutcome::Recorded(presented),
                FirstUse::AlreadyPinned(pinned) if pinned == presented => {
                    PinOutcome::Matched(presented)
                }
                FirstUse::AlreadyPinned(pinned) => {
                    return Err(DialError::CertificateMismatch { pinned, presented });
                }
            }
        }
    };
    let public_key = tls::peer_public_key(stream.get_ref().1.peer_certificates())
        .map_err(DialError::BadCertificate)?;

    let mut framed = Framed::new(stream);
    credssp_as_client(&mut framed, host, public_key, login).await?;
    if selected.contains(SecurityProtocol::HYBRID_EX) {
        let message = framed
            .read_message(Expect::Fixed(4))
            .await
            .map_err(|e| rejected_or_protocol(e, true))?;
        match EarlyUserAuthResult::from_buffer(message.as_ref()) {
            Ok(EarlyUserAuthResult::Success) => {}
            Ok(EarlyUserAuthResult::AccessDenied) => {
                return Err(DialError::CredentialRejected(
                    "the target answered access denied".into(),
                ));
            }
            Err(e) => return Err(DialError::Protocol(e.to_string())),
        }
    }
    Ok(TargetConnection {
        framed,
        selected,
        account: crate::relay::TargetAccount {
            username: login.username.clone(),
            domain: login.domain.clone(),
        },
        pin,
        address: address.to_string(),
    })
}

/// After the NTLM response went out, the target closing or failing means it refused it.
fn rejected_or_protocol(error: FrameError, after_response: bool) -> DialError {
    match error {
        FrameError::Closed | FrameError::Truncated if after_response => {
            DialError::CredentialRejected("the target closed the connection".into())
        }
        FrameError::Io(e) if after_response => {
            DialError::CredentialRejected(format!("the target dropped the connection ({e})"))
        }
        other => DialError::Protocol(other.to_string()),
    }
}

async fn write_ts_request(
    framed: &mut Framed<TargetStream>,
    request: &TsRequest,
) -> Result<(), DialError> {
    let length = request
        .buffer_len()
        .map_err(|e| DialError::Protocol(format!("cannot encode TSRequest: {e}")))?;
    let mut bytes = Vec::with_capacity(usize::from(length));
    request
        .encode_ts_request(&mut bytes)
        .map_err(|e| DialError::Protocol(format!("cannot encode TSRequest: {e}")))?;
    let stream = framed.get_mut();
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| DialError::Protocol(e.to_string()))?;
    stream
        .flush()
        .await
        .map_err(|e| DialError::Protocol(e.to_string()))
}

async fn credssp_as_client(
    framed: &mut Framed<TargetStream>,
    host: &str,
    public_key: Vec<u8>,
    login: &TargetLogin,
) -> Result<(), DialError> {
    let username = Username::new(&login.username, login.domain.as_deref())
        .map_err(|e| DialError::Protocol(format!("invalid target account name: {e}")))?;
    let credentials = sspi::Credentials::AuthIdentity(AuthIdentity {
        username,
        password: String::from(login.password.expose()).into(),
    });
    let mut client = CredSspClient::new(
        public_key,
        credentials,
        CredSspMode::WithCredentials,
        ClientMode::Ntlm(sspi::ntlm::NtlmConfig::default()),
        format!("TERMSRV/{host}"),
    )
    .map_err(|e| DialError::Protocol(format!("credssp: {e}")))?;
    let mut request = TsRequest::default();
    // The first message is the NTLM negotiate; from the second on, the target has our response.
    let mut sent = 0usize;
    loop {
        let state = client.process(request).resolve_to_result().map_err(|e| {
            if sent >= 2 {
                DialError::CredentialRejected(e.to_string())
            } else {
                DialError::Protocol(format!("credssp: {e}"))
            }
        })?;
        match state {
            ClientState::ReplyNeeded(reply) => {
                write_ts_request(framed, &reply).await?;
                sent += 1;
                let message = framed
                    .read_message(Expect::TsRequest)
                    .await
                    .map_err(|e| rejected_or_protocol(e, sent >= 2))?;
                request = TsRequest::from_buffer(&message)
                    .map_err(|e| DialError::Protocol(format!("malformed TSRequest: {e}")))?;
                if let Some(code) = request.error_code {
                    return Err(DialError::CredentialRejected(format!(
                        "the target answered {code:?}"
                    )));
                }
            }
            ClientState::FinalMessage(reply) => {
                write_ts_request(framed, &reply).await?;
                return Ok(());
            }
        }
    }
}
