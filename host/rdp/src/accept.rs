//! The user-facing leg: negotiate NLA, TLS with the gateway's certificate, and CredSSP as the
//! server, checking the gateway user's NTLM response against the NT hash the caller supplies.

use crate::framing::{Expect, FrameError, Framed};
use crate::nego::{self, NegoError};
use crate::refusal::{self, REFUSAL_TIMEOUT, Refusal};
use crate::secret::NtHash;
use crate::tls::GatewayTls;
use gatehouse_core::SecretString;
use ironrdp_pdu::nego::{NegoRequestData, RequestFlags, SecurityProtocol};
use sspi::credssp::{
    CredSspServer, CredentialsProxy, EarlyUserAuthResult, NStatusCode, ServerError, ServerMode,
    ServerState, TsRequest,
};
use sspi::{AuthIdentity, Username, UsernameParts};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) type ClientStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The name a client authenticated with, as it sent it: a UPN-style `alice@root@db1` (kept
/// whole, `domain` empty) or a down-level `DOMAIN\alice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLogin {
    pub user: String,
    pub domain: Option<String>,
}

impl ClientLogin {
    fn from_username(username: &Username) -> Self {
        match username.parts() {
            UsernameParts::UserPrincipalName(parts) => ClientLogin {
                user: parts.upn().to_string(),
                domain: None,
            },
            UsernameParts::DownLevelLogonName(parts) => ClientLogin {
                user: parts.account_name().to_string(),
                domain: parts
                    .netbios_domain()
                    .filter(|d| !d.is_empty())
                    .map(str::to_string),
            },
        }
    }
}

impl fmt::Display for ClientLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(domain) => write!(f, "{domain}\\{}", self.user),
            None => f.write_str(&self.user),
        }
    }
}

/// Why the directory refuses a login. The text goes to the audit trail, never to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// Where gateway users' NT hashes come from (the caller: a per-user RDP secret sealed by the
/// vault, or a single-use token). Called once per connection from inside the CredSSP exchange,
/// so it must not block for long.
pub trait UserDirectory: Send + Sync {
    /// The NT hash for the user the client names, or why that login cannot authenticate
    /// (unknown user, no RDP secret, used or expired token).
    fn nt_hash(&self, login: &ClientLogin) -> Result<NtHash, Refused>;
}

/// Why a client was not accepted. `Display` is for the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the client took longer than {0:?} to negotiate and authenticate")]
    Timeout(Duration),
    #[error("the client closed the connection during the handshake")]
    Closed,
    #[error("client sent a malformed handshake: {0}")]
    Protocol(String),
    #[error(
        "the client does not offer NLA (offered {offered}); refused with HYBRID_REQUIRED_BY_SERVER"
    )]
    NlaRequired { offered: String },
    #[error("tls with the client failed: {0}")]
    Tls(String),
    #[error("authentication of `{login}` failed: {reason}")]
    AuthenticationFailed { login: String, reason: String },
    #[error("the client delegated no password (restricted admin or remote credential guard)")]
    NoDelegatedPassword,
    #[error("i/o with the client: {0}")]
    Io(String),
}

impl From<NegoError> for AcceptError {
    fn from(e: NegoError) -> Self {
        match e {
            NegoError::Frame(f) => f.into(),
            NegoError::Malformed { .. } => AcceptError::Protocol(e.to_string()),
            NegoError::Io(io) => AcceptError::Io(io.to_string()),
        }
    }
}

impl From<FrameError> for AcceptError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed | FrameError::Truncated => AcceptError::Closed,
            FrameError::Io(io) => AcceptError::Io(io.to_string()),
            other => AcceptError::Protocol(other.to_string()),
        }
    }
}

/// A client that negotiated NLA and authenticated as a gateway user. Holds its TLS stream until
/// [`crate::relay`] or [`AcceptedClient::refuse`].
pub struct AcceptedClient {
    pub(crate) framed: Framed<ClientStream>,
    pub(crate) peer: SocketAddr,
    login: ClientLogin,
    delegated_password: SecretString,
    /// What the client offered in its connection request (forwarded to the target as is).
    pub(crate) requested: SecurityProtocol,
    pub(crate) request_flags: RequestFlags,
    /// What the gateway selected towards the client.
    pub(crate) selected: SecurityProtocol,
    routing: Option<NegoRequestData>,
}

impl fmt::Debug for AcceptedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcceptedClient")
            .field("peer", &self.peer)
            .field("login", &self.login)
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

impl AcceptedClient {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Who authenticated (the NTLM identity, which the delegated credentials matched).
    pub fn login(&self) -> &ClientLogin {
        &self.login
    }

    /// The password the client delegated at the end of CredSSP: the caller may verify it
    /// against the user's argon2id hash, so that the NT hash alone does not log anyone in.
    pub fn delegated_password(&self) -> &SecretString {
        &self.delegated_password
    }

    /// The routing token or cookie of the connection request (`.rdp` files can carry a
    /// `loadbalanceinfo` routing token), for passwords-initiated sessions.
    pub fn routing_token(&self) -> Option<&str> {
        match &self.routing {
            Some(NegoRequestData::RoutingToken(t)) => Some(t.0.as_str()),
            Some(NegoRequestData::Cookie(c)) => Some(c.0.as_str()),
            None => None,
        }
    }

    /// Whether the client negotiated HYBRID_EX, so that a [`Refusal::Denied`] is answered
    /// right away with the Early User Authorization Result "access denied".
    pub fn can_be_told_access_denied(&self) -> bool {
        self.selected == SecurityProtocol::HYBRID_EX
    }

    /// Refuses the session after authentication, telling the client why as far as RDP can
    /// (the detail is for the audit trail): a HYBRID_EX client refused as
    /// [`Refusal::Denied`] gets the Early User Authorization Result "access denied"; any other
    /// refusal, and any other client, gets the connection sequence up to a Set Error Info PDU
    /// with the refusal's code and a disconnect, within [`REFUSAL_TIMEOUT`]. A client that
    /// does not follow the sequence is just disconnected. The connection is closed either way.
    pub async fn refuse(mut self, refusal: Refusal) {
        let told = refusal::tell_within(
            &mut self.framed,
            self.selected,
            self.requested,
            refusal,
            REFUSAL_TIMEOUT,
        )
        .await;
        tracing::debug!(code = refusal.code(), outcome = %told, "session refused");
        let _ = self.framed.get_mut().shutdown().await;
    }
}

pub(crate) async fn write_early_user_auth_result<S: AsyncWrite + Unpin>(
    stream: &mut S,
    result: EarlyUserAuthResult,
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(result.buffer_len());
    result.to_buffer(&mut bytes)?;
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// Negotiates with and authenticates one client, within `timeout`.
pub async fn accept(
    tls: &GatewayTls,
    users: &dyn UserDirectory,
    stream: TcpStream,
    timeout: Duration,
) -> Result<AcceptedClient, AcceptError> {
    tokio::time::timeout(timeout, accept_inner(tls, users, stream))
        .await
        .map_err(|_| AcceptError::Timeout(timeout))?
}

async fn accept_inner(
    tls: &GatewayTls,
    users: &dyn UserDirectory,
    stream: TcpStream,
) -> Result<AcceptedClient, AcceptError> {
    let peer = stream
        .peer_addr()
        .map_err(|e| AcceptError::Io(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream);
    let request = nego::read_connection_request(&mut framed).await?;
    if framed.buffered() > 0 {
        return Err(AcceptError::Protocol(
            "data after the connection request, before the TLS handshake".into(),
        ));
    }
    let Some(selected) = nego::select(request.protocol) else {
        let _ = nego::refuse_without_nla(framed.get_mut()).await;
        return Err(AcceptError::NlaRequired {
            offered: nego::describe(request.protocol),
        });
    };
    nego::confirm(framed.get_mut(), selected).await?;
    let (stream, _) = framed.into_parts();
    let tls_stream = tls
        .acceptor
        .accept(stream)
        .await
        .map_err(|e| AcceptError::Tls(e.to_string()))?;
    let mut framed = Framed::new(tls_stream);
    let (login, delegated_password) = credssp_as_server(&mut framed, tls, users, peer).await?;
    tracing::debug!(login = %login, "client authenticated over NLA");
    Ok(AcceptedClient {
        framed,
        peer,
        login,
        delegated_password,
        requested: request.protocol,
        request_flags: request.flags,
        selected,
        routing: request.nego_data,
    })
}

/// sspi's view of the directory: looks the user up once; an unknown user gets a random hash so
/// that the exchange fails exactly like a wrong password does.
struct DirectoryProxy<'a> {
    users: &'a dyn UserDirectory,
    lookup: &'a Mutex<Lookup>,
}

/// What the directory was asked and answered, read after the exchange.
#[derive(Default)]
struct Lookup {
    login: Option<ClientLogin>,
    refusal: Option<String>,
}

impl CredentialsProxy for DirectoryProxy<'_> {
    type AuthenticationData = AuthIdentity;

    fn auth_data_by_user(&mut self, username: &Username) -> std::io::Result<AuthIdentity> {
        let login = ClientLogin::from_username(username);
        let (hash, refusal) = match self.users.nt_hash(&login) {
            Ok(hash) => (hash, None),
            Err(Refused(reason)) => (NtHash::from_bytes(rand::random()), Some(reason)),
        };
        if let Ok(mut lookup) = self.lookup.lock() {
            lookup.login = Some(login);
            lookup.refusal = refusal;
        }
        Ok(AuthIdentity {
            username: username.clone(),
            password: String::from(hash.sspi_password().as_str()).into(),
        })
    }

    fn auth_data(&mut self) -> std::io::Result<Vec<AuthIdentity>> {
        // Only the Negotiate (Kerberos) server mode asks for every credential; NTLM never does.
        Ok(Vec::new())
    }
}

fn encode_ts_request(ts_request: &TsRequest) -> Result<Vec<u8>, AcceptError> {
    let length = ts_request
        .buffer_len()
        .map_err(|e| AcceptError::Protocol(format!("cannot encode TSRequest: {e}")))?;
    let mut bytes = Vec::with_capacity(usize::from(length));
    ts_request
        .encode_ts_request(&mut bytes)
        .map_err(|e| AcceptError::Protocol(format!("cannot encode TSRequest: {e}")))?;
    Ok(bytes)
}

async fn credssp_as_server(
    framed: &mut Framed<ClientStream>,
    tls: &GatewayTls,
    users: &dyn UserDirectory,
    peer: SocketAddr,
) -> Result<(ClientLogin, SecretString), AcceptError> {
    let lookup = Mutex::new(Lookup::default());
    let directory = DirectoryProxy {
        users,
        lookup: &lookup,
    };
    let mode = ServerMode::Ntlm(sspi::ntlm::NtlmConfig::new(peer.ip().to_string()));
    let mut server = CredSspServer::new(tls.public_key.clone(), directory, mode)
        .map_err(|e| AcceptError::Protocol(format!("credssp: {e}")))?;
    let identity = loop {
        let message = framed.read_message(Expect::TsRequest).await?;
        let ts_request = TsRequest::from_buffer(&message)
            .map_err(|e| AcceptError::Protocol(format!("malformed TSRequest: {e}")))?;
        let outcome = server.process(ts_request).resolve_to_result();
        match outcome {
            Ok(ServerState::ReplyNeeded(reply)) => {
                let bytes = encode_ts_request(&reply)?;
                let stream = framed.get_mut();
                stream
                    .write_all(&bytes)
                    .await
                    .map_err(|e| AcceptError::Io(e.to_string()))?;
                stream
                    .flush()
                    .await
                    .map_err(|e| AcceptError::Io(e.to_string()))?;
            }
            Ok(ServerState::Finished(identity)) => break identity,
            Err(ServerError { ts_request, error }) => {
                if let Some(mut reply) = ts_request {
                    if error.error_type == sspi::ErrorKind::LogonDenied
                        || error.error_type == sspi::ErrorKind::MessageAltered
                    {
                        reply.error_code = Some(NStatusCode::LOGON_FAILURE);
                    }
                    if let Ok(bytes) = encode_ts_request(&reply) {
                        let _ = framed.get_mut().write_all(&bytes).await;
                        let _ = framed.get_mut().flush().await;
                    }
                }
                drop(server);
                let (login, refusal) = lookup
                    .into_inner()
                    .map(|l| (l.login, l.refusal))
                    .unwrap_or_default();
                let login = login.as_ref().map(ToString::to_string).unwrap_or_default();
                let reason = refusal
                    .unwrap_or_else(|| format!("wrong password ({})", error.error_type_name()));
                let _ = framed.get_mut().shutdown().await;
                return Err(AcceptError::AuthenticationFailed { login, reason });
            }
        }
    };
    drop(server);
    let Lookup { login, refusal } = lookup.into_inner().unwrap_or_default();
    let Some(login) = login else {
        return Err(AcceptError::Protocol(
            "credssp finished without naming a user".into(),
        ));
    };
    if let Some(reason) = refusal {
        // Cannot happen unless a random hash matched; refuse anyway.
        return Err(AcceptError::AuthenticationFailed {
            login: login.to_string(),
            reason,
        });
    }
    let delegated = ClientLogin::from_username(&identity.username);
    if !delegated.user.eq_ignore_ascii_case(&login.user) {
        return Err(AcceptError::AuthenticationFailed {
            login: login.to_string(),
            reason: format!("the client delegated credentials of another user (`{delegated}`)"),
        });
    }
    let password = identity.password.as_ref();
    if password.is_empty() {
        return Err(AcceptError::NoDelegatedPassword);
    }
    Ok((login, SecretString::new(password.clone())))
}

trait ErrorTypeName {
    fn error_type_name(&self) -> String;
}

impl ErrorTypeName for sspi::Error {
    fn error_type_name(&self) -> String {
        format!("{:?}", self.error_type)
    }
}
