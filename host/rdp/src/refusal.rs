//! Telling an authenticated client why its session is refused. Only a HYBRID_EX client can be
//! told anything right after NLA (the Early User Authorization Result, and that only says
//! "access denied"); every other client would just see the connection drop. So the gateway plays
//! the server side of the RDP connection sequence just far enough for a standard Set Error Info
//! PDU (MS-RDPBCGR 2.2.5.1.1) to mean something: MCS Connect Response (no RDP security, TLS),
//! Attach User and Channel Join confirms, the Client Info PDU read and dropped; then, in the
//! licensing phase, the Set Error Info PDU, a License Error PDU with STATUS_VALID_CLIENT (which
//! ends licensing) and the MCS Disconnect Provider Ultimatum.
//!
//! Why the error comes before the License Error: FreeRDP 2.11 takes a data PDU in the
//! licensing phase as an out-of-sequence PDU and records its error info once; after licensing
//! it would parse the same PDU twice (as a would-be Demand Active, then out of sequence) and
//! log the error twice with a complaint. Either way it prints the error info
//! (`ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES (0x00000009):The user cannot connect ...`) and fails
//! the connection; xfreerdp's exit code is then its "connection failed" (131), since it maps
//! error info codes to exit codes only for sessions that became active.
//!
//! Everything the client sends is read through the bounded framing (one message of at most
//! 64 KiB at a time), 37 PDUs at most (Connect Initial, Erect Domain, Attach User, joins of the
//! user channel, the I/O channel and at most 31 static channels, Client Info), and the caller
//! bounds the whole exchange in time ([`REFUSAL_TIMEOUT`]); anything unexpected ends it, and
//! the connection is simply closed.

use crate::accept::write_early_user_auth_result;
use crate::framing::{Expect, FrameError, Framed};
use crate::target::DialError;
use ironrdp_pdu::gcc::{
    ClientEarlyCapabilityFlags, ConferenceCreateResponse, RdpVersion, ServerCoreData,
    ServerCoreOptionalData, ServerEarlyCapabilityFlags, ServerGccBlocks, ServerNetworkData,
    ServerSecurityData,
};
use ironrdp_pdu::mcs::{
    AttachUserConfirm, ChannelJoinConfirm, ConnectInitial, ConnectResponse,
    DisconnectProviderUltimatum, DisconnectReason, DomainParameters, McsMessage,
    SendDataIndication,
};
use ironrdp_pdu::nego::SecurityProtocol;
use ironrdp_pdu::rdp::client_info::CompressionType;
use ironrdp_pdu::rdp::headers::{
    CompressionFlags, ShareControlHeader, ShareControlPdu, ShareDataHeader, ShareDataPdu,
    StreamPriority,
};
use ironrdp_pdu::rdp::server_error_info::{
    ErrorInfo, ProtocolIndependentCode, ProtocolIndependentConnectionBrokerCode,
    ServerSetErrorInfoPdu,
};
use ironrdp_pdu::rdp::server_license::{LicensePdu, LicensingErrorMessage};
use ironrdp_pdu::x224::{X224, X224Data};
use sspi::credssp::EarlyUserAuthResult;
use std::borrow::Cow;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// How long a refused client gets to go through the connection sequence up to the error.
pub(crate) const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The most static virtual channels a client may ask for (MS-RDPBCGR 2.2.1.3.4).
const MAX_CHANNELS: usize = 31;

/// The MCS I/O channel; static channels are numbered after it, then the user channel.
const IO_CHANNEL_ID: u16 = 1003;
/// The server's own MCS channel, the initiator of what it sends (MS-RDPBCGR's examples).
const SERVER_CHANNEL_ID: u16 = 1002;
/// The GCC node id of the conference create response (as in MS-RDPBCGR's example, 4.1.4).
const GCC_NODE_ID: u16 = 0x79f3;
/// The share id of the Set Error Info PDU: no share was ever created; MS-RDPBCGR's examples' id.
const SHARE_ID: u32 = 0x0001_03ea;
/// MCS `rt-successful`.
const RT_SUCCESSFUL: u8 = 0;
/// Basic security header flag of the Client Info PDU.
const SEC_INFO_PKT: u16 = 0x0040;

/// Why a session is refused, as the client is told. Deliberately coarse: the audit trail keeps
/// the detail, and [`Refusal::Denied`] covers an unknown target as well as a forbidden one so
/// that the answer never tells whether a target exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not permitted: no policy or grant allows it, the target is unknown, the login is
    /// malformed or does not check out, a plugin said no, an access request was not granted.
    /// `ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES`; a HYBRID_EX client gets the Early User
    /// Authorization Result "access denied" instead.
    Denied,
    /// The gateway could not reach the target (connection refused or timed out).
    /// `ERRINFO_CB_DESTINATION_NOT_FOUND`.
    TargetUnreachable,
    /// The gateway reached the target but could not log in to it: the target refused the
    /// vault's credential, its certificate does not match the pin, TLS or NLA with it failed,
    /// the account has no credential, the asset has no RDP endpoint.
    /// `ERRINFO_CB_REDIRECTING_TO_DESTINATION`.
    TargetFailed,
    /// The gateway cannot hold the session to its rules (it cannot be recorded).
    /// `ERRINFO_SERVER_DENIED_CONNECTION`.
    Unavailable,
    /// The gateway is shutting down and takes no new sessions. `ERRINFO_SERVER_SHUTDOWN`
    /// (0x19; FreeRDP's table does not have it and prints `ERRINFO_UNKNOWN`).
    ShuttingDown,
}

impl Refusal {
    /// The Set Error Info code the client is sent.
    pub fn error_info(self) -> ErrorInfo {
        use ProtocolIndependentCode as Code;
        use ProtocolIndependentConnectionBrokerCode as Broker;
        match self {
            Refusal::Denied => {
                ErrorInfo::ProtocolIndependentCode(Code::ServerInsufficientPrivileges)
            }
            Refusal::TargetUnreachable => {
                ErrorInfo::ProtocolIndependentConnectionBrokerCode(Broker::DestinationNotFound)
            }
            Refusal::TargetFailed => {
                ErrorInfo::ProtocolIndependentConnectionBrokerCode(Broker::RedirectingToDestination)
            }
            Refusal::Unavailable => {
                ErrorInfo::ProtocolIndependentCode(Code::ServerDeniedConnection)
            }
            Refusal::ShuttingDown => ErrorInfo::ProtocolIndependentCode(Code::ServerShutdown),
        }
    }

    /// The numeric error info code (MS-RDPBCGR 2.2.5.1.1), as clients print it.
    pub fn code(self) -> u32 {
        match self {
            Refusal::Denied => 0x0000_0009,
            Refusal::TargetUnreachable => 0x0000_0400,
            Refusal::TargetFailed => 0x0000_0404,
            Refusal::Unavailable => 0x0000_0007,
            Refusal::ShuttingDown => 0x0000_0019,
        }
    }
}

impl From<&DialError> for Refusal {
    fn from(e: &DialError) -> Self {
        match e {
            DialError::Unreachable { .. } | DialError::Timeout { .. } => Refusal::TargetUnreachable,
            DialError::PinStore(_) => Refusal::Unavailable,
            DialError::NegotiationRefused(_)
            | DialError::NoNla(_)
            | DialError::CertificateMismatch { .. }
            | DialError::BadCertificate(_)
            | DialError::Tls(_)
            | DialError::CredentialRejected(_)
            | DialError::Protocol(_) => Refusal::TargetFailed,
        }
    }
}

/// Why the client could not be told (it is then just disconnected). For the debug log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TellError {
    #[error("reading from the client: {0}")]
    Frame(#[from] FrameError),
    #[error("the client sent {got} where the connection sequence has {expected}")]
    Unexpected { expected: &'static str, got: String },
    #[error("the client does not take Set Error Info PDUs")]
    NoErrorInfo,
    #[error("the client asks for {0} static channels (at most {MAX_CHANNELS})")]
    TooManyChannels(usize),
    #[error("encoding the {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("writing to the client: {0}")]
    Io(#[from] std::io::Error),
}

/// What became of telling a refused client why.
#[derive(Debug)]
pub(crate) enum Told {
    /// A HYBRID_EX client refused as [`Refusal::Denied`]: the Early User Authorization Result.
    AccessDenied,
    /// The Set Error Info PDU and the disconnect were sent.
    ErrorInfo,
    /// The client did not follow the connection sequence (or the write failed).
    Failed(TellError),
    /// The client did not get to the error in time.
    TimedOut(Duration),
}

impl std::fmt::Display for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Told::AccessDenied => f.write_str("told access denied (early user authorization)"),
            Told::ErrorInfo => f.write_str("told by set error info"),
            Told::Failed(e) => write!(f, "not told: {e}"),
            Told::TimedOut(limit) => write!(f, "not told: no error info within {limit:?}"),
        }
    }
}

/// Tells a client that completed NLA (having negotiated `selected`, after offering
/// `requested`) why its session is refused, within `limit`: a HYBRID_EX client refused as
/// [`Refusal::Denied`] gets the Early User Authorization Result "access denied"; otherwise a
/// HYBRID_EX client gets "success" and, like any other, the connection sequence up to the Set
/// Error Info PDU ([`tell`]). The caller closes the connection afterwards, whatever happened.
pub(crate) async fn tell_within<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S>,
    selected: SecurityProtocol,
    requested: SecurityProtocol,
    refusal: Refusal,
    limit: Duration,
) -> Told {
    let hybrid_ex = selected == SecurityProtocol::HYBRID_EX;
    let told = tokio::time::timeout(limit, async {
        if hybrid_ex {
            let result = if refusal == Refusal::Denied {
                EarlyUserAuthResult::AccessDenied
            } else {
                EarlyUserAuthResult::Success
            };
            write_early_user_auth_result(framed.get_mut(), result).await?;
            if refusal == Refusal::Denied {
                return Ok(Told::AccessDenied);
            }
        }
        tell(framed, requested, refusal)
            .await
            .map(|()| Told::ErrorInfo)
    })
    .await;
    match told {
        Ok(Ok(told)) => told,
        Ok(Err(e)) => Told::Failed(e),
        Err(_) => Told::TimedOut(limit),
    }
}

/// Goes through the connection sequence with a client that completed NLA (and, for HYBRID_EX,
/// was sent the Early User Authorization Result "success") up to the Set Error Info PDU with
/// `refusal`'s code, the License Error PDU and the Disconnect Provider Ultimatum, sent in one
/// write. `requested` is what the client
/// offered in its connection request (echoed in the server core data). The caller bounds the
/// time; the connection is closed by the caller whatever the result.
pub(crate) async fn tell<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S>,
    requested: SecurityProtocol,
    refusal: Refusal,
) -> Result<(), TellError> {
    let initial = framed.read_message(Expect::Rdp).await?;
    let channels = static_channel_count(&initial)?;
    let channel_ids: Vec<u16> = (0..channels).map(|i| IO_CHANNEL_ID + 1 + i).collect();
    let user_id = IO_CHANNEL_ID + 1 + channels;
    write(framed, &connect_response(requested, channel_ids.clone())?).await?;

    expect_mcs(framed, "an MCS Erect Domain Request", |m| {
        matches!(m, McsMessage::ErectDomainRequest(_))
    })
    .await?;
    expect_mcs(framed, "an MCS Attach User Request", |m| {
        matches!(m, McsMessage::AttachUserRequest(_))
    })
    .await?;
    write(
        framed,
        &encode_x224(
            "attach user confirm",
            McsMessage::AttachUserConfirm(AttachUserConfirm {
                result: RT_SUCCESSFUL,
                initiator_id: user_id,
            }),
        )?,
    )
    .await?;

    let mut unjoined: Vec<u16> = [user_id, IO_CHANNEL_ID]
        .into_iter()
        .chain(channel_ids)
        .collect();
    while !unjoined.is_empty() {
        let pdu = framed.read_message(Expect::Rdp).await?;
        let channel_id = match decode_mcs(&pdu) {
            Some(McsMessage::ChannelJoinRequest(join)) => join.channel_id,
            other => return Err(unexpected("an MCS Channel Join Request", other.as_ref())),
        };
        let Some(at) = unjoined.iter().position(|id| *id == channel_id) else {
            return Err(TellError::Unexpected {
                expected: "a join of one of its channels",
                got: format!("a join of channel {channel_id}"),
            });
        };
        unjoined.swap_remove(at);
        let confirm = McsMessage::ChannelJoinConfirm(ChannelJoinConfirm {
            result: RT_SUCCESSFUL,
            initiator_id: user_id,
            requested_channel_id: channel_id,
            channel_id,
        });
        write(framed, &encode_x224("channel join confirm", confirm)?).await?;
    }

    // The Client Info PDU carries the client's auto-logon credentials: checked, never kept.
    let info = framed.read_message(Expect::Rdp).await?;
    let is_client_info = match decode_mcs(&info) {
        Some(McsMessage::SendDataRequest(request)) => {
            request.channel_id == IO_CHANNEL_ID
                && matches!(request.user_data.get(..2), Some(&[low, high])
                    if u16::from_le_bytes([low, high]) & SEC_INFO_PKT != 0)
        }
        _ => false,
    };
    drop(info);
    if !is_client_info {
        return Err(TellError::Unexpected {
            expected: "the Client Info PDU",
            got: "another PDU".into(),
        });
    }

    // Still licensing: the error first, then the end of licensing (see the module docs).
    let mut refusal_pdus = set_error_info(refusal)?;
    refusal_pdus.extend(license_valid_client()?);
    refusal_pdus.extend(encode_x224(
        "disconnect provider ultimatum",
        McsMessage::DisconnectProviderUltimatum(DisconnectProviderUltimatum::from_reason(
            DisconnectReason::ProviderInitiated,
        )),
    )?);
    write(framed, &refusal_pdus).await
}

/// The number of static channels the client asks for in its MCS Connect Initial; an error if it
/// is not one, or if the client does not take Set Error Info PDUs (MS-RDPBCGR 2.2.5.1 forbids
/// sending it then: such a client is just disconnected).
fn static_channel_count(pdu: &[u8]) -> Result<u16, TellError> {
    let unexpected_initial = |e: ironrdp_pdu::DecodeError| TellError::Unexpected {
        expected: "an MCS Connect Initial",
        got: format!("an undecodable PDU ({e})"),
    };
    let data: X224<X224Data<'_>> = ironrdp_pdu::decode(pdu).map_err(unexpected_initial)?;
    let initial: ConnectInitial =
        ironrdp_pdu::decode(data.0.data.as_ref()).map_err(unexpected_initial)?;
    let blocks = initial.conference_create_request.gcc_blocks();
    let takes_error_info = blocks
        .core
        .optional_data
        .early_capability_flags
        .is_some_and(|flags| flags.contains(ClientEarlyCapabilityFlags::SUPPORT_ERR_INFO_PDU));
    if !takes_error_info {
        return Err(TellError::NoErrorInfo);
    }
    let count = blocks.channel_names().map_or(0, |channels| channels.len());
    if count > MAX_CHANNELS {
        return Err(TellError::TooManyChannels(count));
    }
    u16::try_from(count).map_err(|_| TellError::TooManyChannels(count))
}

fn connect_response(
    requested: SecurityProtocol,
    channel_ids: Vec<u16>,
) -> Result<Vec<u8>, TellError> {
    const WHAT: &str = "MCS connect response";
    let blocks = ServerGccBlocks {
        core: ServerCoreData {
            version: RdpVersion::V10_12,
            optional_data: ServerCoreOptionalData {
                client_requested_protocols: Some(requested),
                early_capability_flags: Some(ServerEarlyCapabilityFlags::empty()),
            },
        },
        network: ServerNetworkData {
            channel_ids,
            io_channel: IO_CHANNEL_ID,
        },
        security: ServerSecurityData::no_security(),
        message_channel: None,
        multi_transport_channel: None,
    };
    let response = ConnectResponse {
        conference_create_response: ConferenceCreateResponse::new(GCC_NODE_ID, blocks)
            .map_err(|e| encode_error(WHAT, e))?,
        called_connect_id: 0,
        domain_parameters: DomainParameters::target(),
    };
    let inner = ironrdp_pdu::encode_vec(&response).map_err(|e| encode_error(WHAT, e))?;
    ironrdp_pdu::encode_vec(&X224(X224Data {
        data: Cow::Owned(inner),
    }))
    .map_err(|e| encode_error(WHAT, e))
}

/// A PDU the server sends on the I/O channel.
fn indication(what: &'static str, user_data: Vec<u8>) -> Result<Vec<u8>, TellError> {
    encode_x224(
        what,
        McsMessage::SendDataIndication(SendDataIndication {
            initiator_id: SERVER_CHANNEL_ID,
            channel_id: IO_CHANNEL_ID,
            user_data: Cow::Owned(user_data),
        }),
    )
}

/// The License Error PDU that ends licensing without a license (MS-RDPBCGR 2.2.1.12.1.3).
fn license_valid_client() -> Result<Vec<u8>, TellError> {
    const WHAT: &str = "license error PDU";
    let message = LicensingErrorMessage::new_valid_client().map_err(|e| encode_error(WHAT, e))?;
    let body = ironrdp_pdu::encode_vec(&LicensePdu::LicensingErrorMessage(message))
        .map_err(|e| encode_error(WHAT, e))?;
    indication(WHAT, body)
}

fn set_error_info(refusal: Refusal) -> Result<Vec<u8>, TellError> {
    const WHAT: &str = "set error info PDU";
    let header = ShareControlHeader {
        share_control_pdu: ShareControlPdu::Data(ShareDataHeader {
            share_data_pdu: ShareDataPdu::ServerSetErrorInfo(ServerSetErrorInfoPdu(
                refusal.error_info(),
            )),
            stream_priority: StreamPriority::Low,
            compression_flags: CompressionFlags::empty(),
            compression_type: CompressionType::K8,
        }),
        // "MUST be set to zero" for this PDU (MS-RDPBCGR 2.2.5.1.1).
        pdu_source: 0,
        share_id: SHARE_ID,
    };
    let body = ironrdp_pdu::encode_vec(&header).map_err(|e| encode_error(WHAT, e))?;
    indication(WHAT, body)
}

fn encode_x224(what: &'static str, message: McsMessage<'_>) -> Result<Vec<u8>, TellError> {
    ironrdp_pdu::encode_vec(&X224(message)).map_err(|e| encode_error(what, e))
}

fn encode_error(what: &'static str, e: impl std::fmt::Display) -> TellError {
    TellError::Encode {
        what,
        reason: e.to_string(),
    }
}

fn decode_mcs(pdu: &[u8]) -> Option<McsMessage<'_>> {
    ironrdp_pdu::decode::<X224<McsMessage<'_>>>(pdu)
        .ok()
        .map(|m| m.0)
}

fn unexpected(expected: &'static str, got: Option<&McsMessage<'_>>) -> TellError {
    TellError::Unexpected {
        expected,
        got: got.map_or_else(
            || "an undecodable PDU".to_string(),
            |m| format!("an {}", mcs_name(m)),
        ),
    }
}

fn mcs_name(message: &McsMessage<'_>) -> &'static str {
    match message {
        McsMessage::ErectDomainRequest(_) => "MCS Erect Domain Request",
        McsMessage::AttachUserRequest(_) => "MCS Attach User Request",
        McsMessage::AttachUserConfirm(_) => "MCS Attach User Confirm",
        McsMessage::ChannelJoinRequest(_) => "MCS Channel Join Request",
        McsMessage::ChannelJoinConfirm(_) => "MCS Channel Join Confirm",
        McsMessage::SendDataRequest(_) => "MCS Send Data Request",
        McsMessage::SendDataIndication(_) => "MCS Send Data Indication",
        McsMessage::DisconnectProviderUltimatum(_) => "MCS Disconnect Provider Ultimatum",
    }
}

async fn expect_mcs<S: AsyncRead + Unpin>(
    framed: &mut Framed<S>,
    expected: &'static str,
    is: impl Fn(&McsMessage<'_>) -> bool,
) -> Result<(), TellError> {
    let pdu = framed.read_message(Expect::Rdp).await?;
    match decode_mcs(&pdu) {
        Some(message) if is(&message) => Ok(()),
        other => Err(unexpected(expected, other.as_ref())),
    }
}

async fn write<S: AsyncWrite + Unpin>(
    framed: &mut Framed<S>,
    bytes: &[u8],
) -> Result<(), TellError> {
    let stream = framed.get_mut();
    stream.write_all(bytes).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_pdu::gcc::{
        ChannelDef, ChannelName, ChannelOptions, ClientCoreData, ClientCoreOptionalData,
        ClientGccBlocks, ClientNetworkData, ClientSecurityData, ColorDepth, HighColorDepth,
        KeyboardType, SecureAccessSequence, SupportedColorDepths,
    };
    use ironrdp_pdu::mcs::{
        AttachUserRequest, ChannelJoinRequest, ErectDomainPdu, SendDataRequest,
    };
    use ironrdp_pdu::rdp::server_license::{LicenseErrorCode, LicensingStateTransition};
    use tokio::io::{AsyncReadExt, DuplexStream};

    const REQUESTED: SecurityProtocol = SecurityProtocol::HYBRID.union(SecurityProtocol::SSL);

    fn connect_initial(channels: &[&str]) -> Vec<u8> {
        connect_initial_taking(channels, true)
    }

    /// A Connect Initial; `error_info`: the client sets RNS_UD_CS_SUPPORT_ERRINFO_PDU.
    fn connect_initial_taking(channels: &[&str], error_info: bool) -> Vec<u8> {
        let core = ClientCoreData {
            version: RdpVersion::V10_12,
            desktop_width: 1024,
            desktop_height: 768,
            color_depth: ColorDepth::Bpp8,
            sec_access_sequence: SecureAccessSequence::Del,
            keyboard_layout: 0x409,
            client_build: 2600,
            client_name: "client".into(),
            keyboard_type: KeyboardType(4),
            keyboard_subtype: 0,
            keyboard_functional_keys_count: 12,
            ime_file_name: String::new(),
            optional_data: ClientCoreOptionalData {
                post_beta2_color_depth: Some(ColorDepth::Bpp8),
                client_product_id: Some(1),
                serial_number: Some(0),
                high_color_depth: Some(HighColorDepth::Bpp24),
                supported_color_depths: Some(SupportedColorDepths::BPP24),
                early_capability_flags: Some(if error_info {
                    ClientEarlyCapabilityFlags::SUPPORT_ERR_INFO_PDU
                } else {
                    ClientEarlyCapabilityFlags::empty()
                }),
                ..ClientCoreOptionalData::default()
            },
        };
        let network = (!channels.is_empty()).then(|| ClientNetworkData {
            channels: channels
                .iter()
                .map(|name| ChannelDef {
                    name: ChannelName::from_utf8(name).unwrap(),
                    options: ChannelOptions::INITIALIZED,
                })
                .collect(),
        });
        let blocks = ClientGccBlocks {
            core,
            security: ClientSecurityData::no_security(),
            network,
            cluster: None,
            monitor: None,
            message_channel: None,
            multi_transport_channel: None,
            monitor_extended: None,
        };
        let initial = ConnectInitial::with_gcc_blocks(blocks).unwrap();
        let inner = ironrdp_pdu::encode_vec(&initial).unwrap();
        ironrdp_pdu::encode_vec(&X224(X224Data {
            data: Cow::Owned(inner),
        }))
        .unwrap()
    }

    fn mcs(message: McsMessage<'_>) -> Vec<u8> {
        ironrdp_pdu::encode_vec(&X224(message)).unwrap()
    }

    fn client_info(user_id: u16, flags: u16) -> Vec<u8> {
        // A basic security header, then what would be the TS_INFO_PACKET (never parsed).
        let mut user_data = flags.to_le_bytes().to_vec();
        user_data.extend_from_slice(&[0, 0]);
        user_data.extend_from_slice(b"alice@target1@win1 Secret-password-1");
        mcs(McsMessage::SendDataRequest(SendDataRequest {
            initiator_id: user_id,
            channel_id: IO_CHANNEL_ID,
            user_data: Cow::Owned(user_data),
        }))
    }

    struct Client {
        framed: Framed<DuplexStream>,
    }

    impl Client {
        async fn send(&mut self, bytes: &[u8]) {
            self.framed.get_mut().write_all(bytes).await.unwrap();
        }

        async fn read(&mut self) -> bytes::Bytes {
            self.framed.read_message(Expect::Rdp).await.unwrap()
        }

        async fn mcs(&mut self) -> McsMessage<'static> {
            let pdu = self.read().await;
            ironrdp_pdu::IntoOwned::into_owned(decode_mcs(&pdu).unwrap())
        }

        /// Whatever the gateway still sends before it closes.
        async fn rest(self) -> Vec<u8> {
            let (mut stream, buffered) = self.framed.into_parts();
            let mut rest = buffered.to_vec();
            stream.read_to_end(&mut rest).await.unwrap();
            rest
        }

        /// The sequence up to the Client Info PDU, as FreeRDP runs it: returns the user id.
        async fn connect(&mut self, channels: &[&str]) -> u16 {
            self.send(&connect_initial(channels)).await;
            let pdu = self.read().await;
            let data: X224<X224Data<'_>> = ironrdp_pdu::decode(&pdu).unwrap();
            let response: ConnectResponse = ironrdp_pdu::decode(data.0.data.as_ref()).unwrap();
            let blocks = response.conference_create_response.gcc_blocks();
            let ids: Vec<u16> = (0..channels.len()).map(|i| 1004 + i as u16).collect();
            assert_eq!(blocks.channel_ids(), ids);
            assert_eq!(blocks.global_channel_id(), IO_CHANNEL_ID);
            assert_eq!(blocks.security, ServerSecurityData::no_security());
            assert_eq!(
                blocks.core.optional_data.client_requested_protocols,
                Some(REQUESTED)
            );

            self.send(&mcs(McsMessage::ErectDomainRequest(ErectDomainPdu {
                sub_height: 0,
                sub_interval: 0,
            })))
            .await;
            self.send(&mcs(McsMessage::AttachUserRequest(AttachUserRequest)))
                .await;
            let McsMessage::AttachUserConfirm(confirm) = self.mcs().await else {
                panic!("not an attach user confirm");
            };
            assert_eq!(confirm.result, RT_SUCCESSFUL);
            let user_id = confirm.initiator_id;
            assert!(
                !ids.contains(&user_id) && user_id != IO_CHANNEL_ID,
                "user id {user_id} is a channel's"
            );

            let mut joins = vec![user_id, IO_CHANNEL_ID];
            joins.extend(ids.iter().rev());
            for channel_id in joins {
                self.send(&mcs(McsMessage::ChannelJoinRequest(ChannelJoinRequest {
                    initiator_id: user_id,
                    channel_id,
                })))
                .await;
                let McsMessage::ChannelJoinConfirm(joined) = self.mcs().await else {
                    panic!("not a channel join confirm");
                };
                assert_eq!(
                    (
                        joined.result,
                        joined.requested_channel_id,
                        joined.channel_id
                    ),
                    (RT_SUCCESSFUL, channel_id, channel_id)
                );
            }
            user_id
        }

        /// The PDUs after the Client Info PDU: the error info, licensing's end, the disconnect.
        async fn refusal(&mut self) -> ErrorInfo {
            let McsMessage::SendDataIndication(error) = self.mcs().await else {
                panic!("not a send data indication");
            };
            assert_eq!(error.channel_id, IO_CHANNEL_ID);
            let header: ShareControlHeader = ironrdp_pdu::decode(error.user_data.as_ref()).unwrap();
            assert_eq!(header.pdu_source, 0);
            let ShareControlPdu::Data(data) = header.share_control_pdu else {
                panic!("not a data PDU");
            };
            let ShareDataPdu::ServerSetErrorInfo(ServerSetErrorInfoPdu(info)) = data.share_data_pdu
            else {
                panic!("not set error info");
            };

            let McsMessage::SendDataIndication(license) = self.mcs().await else {
                panic!("not a send data indication");
            };
            let LicensePdu::LicensingErrorMessage(message) =
                ironrdp_pdu::decode(license.user_data.as_ref()).unwrap()
            else {
                panic!("not a licensing error message");
            };
            assert_eq!(message.error_code, LicenseErrorCode::StatusValidClient);
            assert_eq!(
                message.state_transition,
                LicensingStateTransition::NoTransition
            );

            assert!(matches!(
                self.mcs().await,
                McsMessage::DisconnectProviderUltimatum(_)
            ));
            info
        }
    }

    /// The gateway side refusing with `refusal` (within `limit`) while `client` plays.
    async fn refuse_with<F: Future<Output = Vec<u8>>>(
        selected: SecurityProtocol,
        refusal: Refusal,
        limit: Duration,
        client: impl FnOnce(Client) -> F,
    ) -> (Told, Vec<u8>) {
        let (gateway_end, client_end) = tokio::io::duplex(64 * 1024);
        let gateway = async move {
            let mut framed = Framed::new(gateway_end);
            let told = tell_within(&mut framed, selected, REQUESTED, refusal, limit).await;
            drop(framed);
            told
        };
        let client = client(Client {
            framed: Framed::new(client_end),
        });
        tokio::join!(gateway, client)
    }

    use std::future::Future;

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn each_refusal_reaches_the_client_as_its_error_info_after_the_connection_sequence() {
        for (refusal, channels) in [
            (
                Refusal::Denied,
                &["rdpdr", "rdpsnd", "cliprdr", "drdynvc"][..],
            ),
            (Refusal::TargetUnreachable, &["cliprdr"][..]),
            (Refusal::TargetFailed, &[][..]),
            (Refusal::Unavailable, &["rdpsnd", "cliprdr"][..]),
            (Refusal::ShuttingDown, &["rdpdr"][..]),
        ] {
            let (told, rest) = refuse_with(
                SecurityProtocol::HYBRID,
                refusal,
                LIMIT,
                |mut client| async move {
                    let user_id = client.connect(channels).await;
                    client.send(&client_info(user_id, SEC_INFO_PKT)).await;
                    let info = client.refusal().await;
                    assert_eq!(info, refusal.error_info(), "{refusal:?}");
                    client.rest().await
                },
            )
            .await;
            assert!(matches!(told, Told::ErrorInfo), "{refusal:?}: {told}");
            assert!(rest.is_empty(), "{refusal:?}: nothing after the disconnect");
        }
    }

    #[test]
    fn the_codes_are_the_specified_ones_and_an_unknown_target_is_not_told_apart() {
        for (refusal, code) in [
            (Refusal::Denied, 0x0009),
            (Refusal::TargetUnreachable, 0x0400),
            (Refusal::TargetFailed, 0x0404),
            (Refusal::Unavailable, 0x0007),
            (Refusal::ShuttingDown, 0x0019),
        ] {
            assert_eq!(refusal.code(), code, "{refusal:?}");
            let encoded =
                ironrdp_pdu::encode_vec(&ServerSetErrorInfoPdu(refusal.error_info())).unwrap();
            assert_eq!(encoded, code.to_le_bytes(), "{refusal:?}");
        }
        let unreachable = DialError::Unreachable {
            address: "10.0.0.1:3389".into(),
            reason: "connection refused".into(),
        };
        let timeout = DialError::Timeout {
            address: "10.0.0.1:3389".into(),
            timeout: Duration::from_secs(5),
        };
        let rejected = DialError::CredentialRejected("logon failure".into());
        assert_eq!(Refusal::from(&unreachable), Refusal::TargetUnreachable);
        assert_eq!(Refusal::from(&timeout), Refusal::TargetUnreachable);
        assert_eq!(Refusal::from(&rejected), Refusal::TargetFailed);
    }

    #[tokio::test]
    async fn a_hybrid_ex_client_denied_gets_access_denied_at_once_and_nothing_else() {
        let (told, rest) = refuse_with(
            SecurityProtocol::HYBRID_EX,
            Refusal::Denied,
            LIMIT,
            |client| client.rest(),
        )
        .await;
        assert!(matches!(told, Told::AccessDenied), "{told}");
        // Early User Authorization Result: ACCESS_DENIED (0x00000005), little-endian.
        assert_eq!(rest, [5, 0, 0, 0]);
    }

    #[tokio::test]
    async fn a_hybrid_ex_client_refused_otherwise_is_let_through_to_the_error_info() {
        let (told, rest) = refuse_with(
            SecurityProtocol::HYBRID_EX,
            Refusal::TargetUnreachable,
            LIMIT,
            |mut client| async move {
                let mut result = [0u8; 4];
                client
                    .framed
                    .get_mut()
                    .read_exact(&mut result)
                    .await
                    .unwrap();
                assert_eq!(result, [0, 0, 0, 0], "early user authorization: success");
                let user_id = client.connect(&["cliprdr"]).await;
                client.send(&client_info(user_id, SEC_INFO_PKT)).await;
                assert_eq!(
                    client.refusal().await,
                    Refusal::TargetUnreachable.error_info()
                );
                client.rest().await
            },
        )
        .await;
        assert!(matches!(told, Told::ErrorInfo), "{told}");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_client_off_the_sequence_is_just_disconnected() {
        // Not a connect initial (a fast-path PDU).
        let (told, rest) = refuse_with(SecurityProtocol::HYBRID, Refusal::Denied, LIMIT, {
            |mut client| async move {
                client.send(&[0x00, 0x05, 0x01, 0x02, 0x03]).await;
                client.rest().await
            }
        })
        .await;
        assert!(
            matches!(told, Told::Failed(TellError::Unexpected { .. })),
            "{told}"
        );
        assert!(
            rest.is_empty(),
            "nothing sent to a client that is off the sequence"
        );

        // A join of a channel it was not given.
        let (told, _) = refuse_with(SecurityProtocol::HYBRID, Refusal::Denied, LIMIT, {
            |mut client| async move {
                client.send(&connect_initial(&["cliprdr"])).await;
                client.read().await;
                client
                    .send(&mcs(McsMessage::ErectDomainRequest(ErectDomainPdu {
                        sub_height: 0,
                        sub_interval: 0,
                    })))
                    .await;
                client
                    .send(&mcs(McsMessage::AttachUserRequest(AttachUserRequest)))
                    .await;
                client.read().await;
                client
                    .send(&mcs(McsMessage::ChannelJoinRequest(ChannelJoinRequest {
                        initiator_id: 1005,
                        channel_id: 1400,
                    })))
                    .await;
                client.rest().await
            }
        })
        .await;
        assert!(
            matches!(told, Told::Failed(TellError::Unexpected { .. })),
            "{told}"
        );

        // Something else where the Client Info PDU belongs: no error info for it.
        let (told, rest) = refuse_with(SecurityProtocol::HYBRID, Refusal::Denied, LIMIT, {
            |mut client| async move {
                let user_id = client.connect(&[]).await;
                client.send(&client_info(user_id, 0)).await;
                client.rest().await
            }
        })
        .await;
        assert!(
            matches!(told, Told::Failed(TellError::Unexpected { .. })),
            "{told}"
        );
        assert!(rest.is_empty(), "no error info before the client info PDU");

        // A client that does not take Set Error Info PDUs is not sent one.
        let (told, rest) = refuse_with(SecurityProtocol::HYBRID, Refusal::Denied, LIMIT, {
            |mut client| async move {
                client
                    .send(&connect_initial_taking(&["cliprdr"], false))
                    .await;
                client.rest().await
            }
        })
        .await;
        assert!(
            matches!(told, Told::Failed(TellError::NoErrorInfo)),
            "{told}"
        );
        assert!(rest.is_empty());

        // The client leaves half way.
        let (told, _) = refuse_with(SecurityProtocol::HYBRID, Refusal::Denied, LIMIT, {
            |mut client| async move {
                client.send(&connect_initial(&[])).await;
                client.read().await;
                Vec::new()
            }
        })
        .await;
        assert!(matches!(told, Told::Failed(TellError::Frame(_))), "{told}");
    }

    #[tokio::test]
    async fn a_client_that_stalls_does_not_hold_the_refusal() {
        let limit = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let (told, _) = refuse_with(SecurityProtocol::HYBRID, Refusal::Denied, limit, {
            |mut client| async move {
                // The connect initial, one byte short, then nothing.
                let initial = connect_initial(&["cliprdr"]);
                client.send(&initial[..initial.len() - 1]).await;
                client.rest().await
            }
        })
        .await;
        assert!(matches!(told, Told::TimedOut(l) if l == limit), "{told}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
