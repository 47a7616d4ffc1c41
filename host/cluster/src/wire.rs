//! The calls between nodes: one typed request enum from session node to control node, one
//! answer enum back, in a versioned envelope, each a length-prefixed JSON frame on a TLS stream.

use crate::ClusterError;
use gatehouse_core::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// The protocol version this build speaks. A peer with another version is refused with a
/// message naming both.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts (a call or an answer).
pub const MAX_FRAME: usize = 4 << 20;

/// What a session node asks the control node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum NodeCall {
    /// Join with a token (no client certificate yet), or rejoin with the node's own certificate.
    Join(JoinRequest),
    /// "I am alive": the node's listeners, version and load.
    Heartbeat(Heartbeat),
    /// A user logging in at the node: their gateway password or public key.
    Authenticate(Authenticate),
    /// The user's answer to a login plugin's question.
    AnswerQuestion(AnswerQuestion),
    /// May the logged-in user open this session? On a permit: the grant and the credential.
    Authorize(Authorize),
    /// A channel or channel request inside a granted session.
    Channel(ChannelCall),
    /// A target presented its host key for the first time (trust on first use).
    PinHostKey(PinHostKey),
    /// An RDP client named a user in its NLA exchange: that user's NT hash, for this exchange.
    RdpSecret(RdpSecret),
    /// An RDP target presented its certificate key for the first time (trust on first use).
    PinCertificate(PinCertificate),
    /// A granted session ended; the control node forgets the grant.
    SessionEnded(SessionEnded),
    /// How the target login with a credential-store plugin's credential went (the plugin is
    /// told).
    TargetLogin(TargetLogin),
    /// Waits (a slice at most) for the access request of a held session to be decided.
    AwaitDecision(AwaitDecision),
    /// The node's audit events and session records since the last delivery.
    Ship(Ship),
    /// A piece of a finished session's recording file.
    RecordingPart(RecordingPart),
    /// Every file of a finished session's recording has been delivered whole.
    RecordingDelivered(RecordingDelivered),
}

/// Audit events (with the node's own sequence numbers) and session records, at least once: the
/// control node keeps the last node sequence number it took and skips what it has.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ship {
    pub audit: Vec<gatehouse_core::AuditEvent>,
    pub sessions: Vec<gatehouse_core::SessionRecord>,
}

/// What the control node holds after a [`Ship`]: the node's audit events up to this sequence
/// number.
#[derive(Debug, Serialize, Deserialize)]
pub struct Shipped {
    pub audit_through: u64,
}

/// `data` goes at `offset` of `recordings/<session>/<file>` on the control node.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordingPart {
    pub session: String,
    pub file: String,
    pub offset: u64,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordingDelivered {
    pub session: String,
}

/// How much of the file the control node has.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordingHeld {
    pub size: u64,
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// A login at a session node. Answered with [`ControlAnswer::Authenticated`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Authenticate {
    /// The session id the node gave the connection.
    pub session: String,
    /// The user's address (`ip:port`).
    pub client: String,
    /// The gateway user name (the part of the login before the target).
    pub user: String,
    pub proof: LoginProof,
    /// The whole in-band login (`[key=value@]...USER@ACCOUNT@ASSET`), for login plugins.
    #[serde(default)]
    pub login: String,
    /// "ssh" or "rdp", for login plugins.
    #[serde(default)]
    pub protocol: String,
}

/// A login plugin asks the user something: the node asks (SSH keyboard-interactive) or answers
/// from the login's `key=value@` options (RDP), then calls [`AnswerQuestion`].
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginQuestion {
    /// Names the login in progress in [`AnswerQuestion`].
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub login: SecretString,
    pub key: String,
    pub prompt: String,
    pub echo: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AnswerQuestion {
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub login: SecretString,
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub answer: SecretString,
}

/// What the user proved themselves with.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum LoginProof {
    Password {
        #[serde(serialize_with = "expose", deserialize_with = "conceal")]
        password: SecretString,
    },
    /// The public key the client signed with (the node checked the signature), as an OpenSSH
    /// line.
    PublicKey { key: String },
}

/// A user authenticated by the control node: their name and groups (never a hash or a key),
/// and a single-use ticket that [`Authorize`] must present, so a node can only ask for
/// sessions of users who logged in through it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Authenticated {
    pub user: String,
    pub groups: Vec<String>,
    /// The login plugins that accepted, in order (empty without plugins).
    #[serde(default)]
    pub plugins: Vec<String>,
    /// What the plugins noted for the audit trail, as JSON objects.
    #[serde(default)]
    pub plugin_notes: Vec<serde_json::Value>,
    /// A plugin verified a ticket for the login.
    #[serde(default)]
    pub ticket_verified: bool,
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub ticket: SecretString,
}

/// A session decision asked by a node.
#[derive(Debug, Serialize, Deserialize)]
pub struct Authorize {
    pub session: String,
    pub client: String,
    /// "ssh" or "rdp".
    pub protocol: String,
    /// The in-band login as the user typed it (`[key=value@]...USER@ACCOUNT@ASSET`).
    pub login: String,
    /// From [`Authenticated`].
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub ticket: SecretString,
    /// "password" or "publickey".
    pub method: String,
}

/// A permitted session: what the node needs to dial and log in, and the grant id its later
/// calls name. The credential travels only here, over the cluster's mutual TLS; the node keeps
/// it in memory until the target login is done.
#[derive(Debug, Serialize, Deserialize)]
pub struct Granted {
    pub grant: String,
    pub asset: gatehouse_core::Asset,
    pub account: String,
    /// The ids of the policies that permitted the session.
    pub policies: Vec<String>,
    /// The access request the session runs under, if any.
    pub request: Option<String>,
    pub credential: WireCredential,
    /// The credential came from a credential-store plugin: tell the control node how the
    /// target login went ([`TargetLogin`]).
    #[serde(default)]
    pub report_login: bool,
    /// Seconds the session may go without input from the user, and the policy that says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<(u64, String)>,
}

/// A target credential on the wire (redacted in `Debug`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WireCredential {
    #[serde(
        default,
        serialize_with = "expose_option",
        deserialize_with = "conceal_option"
    )]
    pub password: Option<SecretString>,
    #[serde(
        default,
        serialize_with = "expose_option",
        deserialize_with = "conceal_option"
    )]
    pub private_key: Option<SecretString>,
}

/// One SSH channel or channel request to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireChannel {
    Shell,
    Exec { command: String },
    Subsystem { name: String },
    DirectTcpip { host: String, port: u32 },
    ForwardedTcpip { host: String, port: u32 },
    X11,
    Agent,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelCall {
    pub grant: String,
    pub channel: WireChannel,
}

/// A channel decision, with the policies that made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelVerdict {
    pub permitted: bool,
    pub reasons: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PinHostKey {
    pub grant: String,
    /// The key the target presented, as an OpenSSH line.
    pub key: String,
}

/// `None`: the presented key is now pinned; `Some(key)`: another connection pinned this one
/// first (the node compares).
#[derive(Debug, Serialize, Deserialize)]
pub struct HostKeyPinned {
    pub pinned: Option<String>,
}

/// The NT hash of the user an RDP client names, which the node's NLA exchange needs to check
/// the client (NTLM has no other way). Answered with [`ControlAnswer::RdpSecret`].
#[derive(Debug, Serialize, Deserialize)]
pub struct RdpSecret {
    pub session: String,
    pub client: String,
    pub user: String,
}

/// A user's NT hash, hex, for one NLA exchange on the node (held in memory for that exchange
/// only; the delegated password is then checked by [`Authenticate`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct RdpSecretAnswer {
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub nt_hash: SecretString,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PinCertificate {
    pub grant: String,
    /// The pin of the key the target's certificate carries (`SHA256:<base64>`).
    pub pin: String,
}

/// The control node filed an access request for the session, which needs approval: the node
/// holds the connection and asks [`AwaitDecision`] until it is decided or `wait_seconds` pass.
#[derive(Debug, Serialize, Deserialize)]
pub struct Held {
    /// Single-use per decision; names the held session in [`AwaitDecision`].
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub hold: SecretString,
    pub request: String,
    pub approvals_needed: u32,
    pub wait_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AwaitDecision {
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub hold: SecretString,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetLogin {
    pub grant: String,
    pub succeeded: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionEnded {
    pub grant: String,
}

/// A node's request to join.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub token: SecretString,
    /// The id the node asks for, as typed (the control node validates it).
    pub node_id: String,
    pub hostname: String,
    /// The address users reach the node at; the control node uses the connection's source
    /// address when this is empty.
    pub address: String,
    pub description: String,
    /// The node's public key (uncompressed P-256 point) for its certificate.
    pub public_key: Vec<u8>,
    pub version: String,
}

/// A node's periodic report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    pub ssh_port: Option<u16>,
    pub rdp_port: Option<u16>,
    pub version: String,
    pub hostname: String,
}

/// What the control node answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum ControlAnswer {
    Joined(Joined),
    /// With the sessions an administrator ended from the control node since the last call.
    HeartbeatOk {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        terminate: Vec<Termination>,
    },
    Authenticated(Authenticated),
    /// A login plugin's question for the user.
    Question(LoginQuestion),
    RdpSecret(RdpSecretAnswer),
    Granted(Box<Granted>),
    /// The session waits for an access request's approval.
    Held(Held),
    /// [`AwaitDecision`]: not decided yet; ask again.
    Pending,
    ChannelDecided(ChannelVerdict),
    HostKey(HostKeyPinned),
    Done,
    Shipped(Shipped),
    RecordingHeld(RecordingHeld),
    Refused(Refusal),
}

/// A session of the node an administrator ended from the control node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    pub session: String,
    pub by: String,
    pub reason: String,
}

/// A successful join: the node's certificate and the cluster CA.
#[derive(Debug, Serialize, Deserialize)]
pub struct Joined {
    pub node_id: String,
    pub certificate_der: Vec<u8>,
    pub ca_der: Vec<u8>,
    /// The node id had been removed (soft-deleted) and is now a member again, with what
    /// referenced it (managed networks, sessions).
    pub relinked: bool,
}

/// Why the control node refused a call, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    TokenUnknown,
    TokenExpired,
    NodeIdMissing,
    NodeIdInvalid,
    NodeIdTaken,
    /// The call needs a node certificate of a current member.
    NotAMember,
    /// Too many refused joins from the caller's address lately.
    Throttled,
    /// A user's password or key was wrong (or the user is unknown: the same answer).
    LoginFailed,
    /// Policy does not permit the session (or the target does not exist: the same answer).
    NotPermitted,
    /// The target is permitted but outside the networks this node manages.
    OutsideNetworks,
    /// The access string's token is unknown, used or expired.
    AccessToken,
    /// The control node does not serve this to session nodes (a credential-store plugin).
    NotServed,
    /// The access request a held session waited for was denied, or not decided in time; the
    /// message says which, as the user should read it.
    RequestNotGranted,
    /// A login plugin refused the login; the message is the line the user may read.
    PluginRefused,
    /// The account's credential-store plugin could not give a credential.
    CredentialStore,
    /// A grant or ticket the control node does not know (it restarted, or the grant ended).
    UnknownGrant,
    Version,
    BadCall,
    Internal,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The envelope of every frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub version: u32,
    pub body: T,
}

fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

fn conceal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    String::deserialize(deserializer).map(SecretString::new)
}

fn expose_option<S: Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => serializer.serialize_some(secret.expose()),
        None => serializer.serialize_none(),
    }
}

fn conceal_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    Option::<String>::deserialize(deserializer).map(|o| o.map(SecretString::new))
}

/// Writes one frame: a 4-byte big-endian length and the JSON envelope.
pub async fn write_frame<W, T>(writer: &mut W, body: T) -> Result<(), ClusterError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        body,
    };
    // Frames may carry a password or a key: the buffers are wiped after use.
    let bytes = Zeroizing::new(
        serde_json::to_vec(&envelope)
            .map_err(|e| ClusterError::Protocol(format!("cannot encode a frame: {e}")))?,
    );
    if bytes.len() > MAX_FRAME {
        return Err(ClusterError::Protocol(format!(
            "a frame of {} bytes is over the {MAX_FRAME}-byte limit",
            bytes.len()
        )));
    }
    let length =
        u32::try_from(bytes.len()).map_err(|_| ClusterError::Protocol("frame too large".into()))?;
    // One write: the length and the body in one TLS record and one segment.
    let mut frame = Zeroizing::new(Vec::with_capacity(bytes.len() + 4));
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&bytes);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame. A peer of another protocol version gets [`ClusterError::Version`].
pub async fn read_frame<R, T>(reader: &mut R) -> Result<T, ClusterError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut length = [0u8; 4];
    reader.read_exact(&mut length).await?;
    let length = usize::try_from(u32::from_be_bytes(length)).unwrap_or(usize::MAX);
    if length > MAX_FRAME {
        return Err(ClusterError::Protocol(format!(
            "the peer sent a frame of {length} bytes, over the {MAX_FRAME}-byte limit"
        )));
    }
    let mut bytes = Zeroizing::new(vec![0u8; length]);
    reader.read_exact(&mut bytes).await?;
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let version: Version = serde_json::from_slice(&bytes)
        .map_err(|e| ClusterError::Protocol(format!("not a Gatehouse cluster frame: {e}")))?;
    if version.version != PROTOCOL_VERSION {
        return Err(ClusterError::Version {
            peer: version.version,
            ours: PROTOCOL_VERSION,
        });
    }
    let envelope: Envelope<T> = serde_json::from_slice(&bytes)
        .map_err(|e| ClusterError::Protocol(format!("malformed frame: {e}")))?;
    Ok(envelope.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_keep_the_token_out_of_debug() {
        let call = NodeCall::Join(JoinRequest {
            token: SecretString::new("tok-secret".into()),
            node_id: "sess-a".into(),
            hostname: "h".into(),
            address: String::new(),
            description: String::new(),
            public_key: vec![4; 65],
            version: "0.1.0".into(),
        });
        assert!(!format!("{call:?}").contains("tok-secret"));
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &call).await.unwrap();
        let read: NodeCall = read_frame(&mut buffer.as_slice()).await.unwrap();
        match read {
            NodeCall::Join(j) => assert_eq!(j.token.expose(), "tok-secret"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn oversized_foreign_and_other_version_frames_are_refused() {
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let err = read_frame::<_, NodeCall>(&mut huge.as_slice())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("over the"), "{err}");

        let mut garbage = 5u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"hello");
        let err = read_frame::<_, NodeCall>(&mut garbage.as_slice())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not a Gatehouse cluster frame"),
            "{err}"
        );

        let body = br#"{"version":99,"body":{"call":"heartbeat"}}"#;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        let err = read_frame::<_, NodeCall>(&mut frame.as_slice())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClusterError::Version { peer: 99, ours: 1 }),
            "{err}"
        );
    }
}
