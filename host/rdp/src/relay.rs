//! After both handshakes: tell the client it may proceed, fix up the MCS Connect Initial (the
//! client saw the gateway's protocol selection, the target made its own), keep the gateway
//! user's credentials out of the Client Info PDU, and relay PDUs both ways through bounded
//! buffers while a [`Recorder`] sees each one with its time.
//!
//! With [`RelayOptions::steer_for_recording`] the relay also steers capability negotiation so
//! the recorded graphics can be decoded later (`gatehouse-rdp-replay`): no graphics pipeline
//! (EGFX/H.264), no drawing orders, no bitmap codecs, so the target sends bitmap updates.

use crate::accept::{AcceptedClient, write_early_user_auth_result};
use crate::framing::{Expect, FrameError, Framed};
use crate::target::TargetConnection;
use bytes::Bytes;
use ironrdp_pdu::gcc::ClientEarlyCapabilityFlags;
use ironrdp_pdu::mcs::{ConnectInitial, SendDataRequest};
use ironrdp_pdu::nego::SecurityProtocol;
use ironrdp_pdu::rdp::ClientInfoPdu;
use ironrdp_pdu::rdp::capability_sets::{BitmapCodecs, CapabilitySet, Order};
use ironrdp_pdu::rdp::headers::{ShareControlHeader, ShareControlPdu};
use ironrdp_pdu::x224::{X224, X224Data};
use sspi::credssp::EarlyUserAuthResult;
use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Which way a PDU travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToTarget,
    TargetToClient,
}

/// What the relay could tell about a PDU's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduKind {
    /// A slow-path PDU (TPKT, X.224).
    X224,
    /// A fast-path PDU.
    FastPath,
    /// Bytes the relay could not frame; from then on that direction is relayed (and recorded)
    /// in raw chunks.
    Undecodable,
}

/// One relayed PDU, as the recorder sees it. Nothing from the negotiation, TLS or CredSSP phase
/// is ever recorded; the first recorded PDU is the (fixed-up) MCS Connect Initial.
#[derive(Debug, Clone, Copy)]
pub struct RecordedPdu<'a> {
    pub direction: Direction,
    /// Time since the relay started.
    pub at: Duration,
    pub kind: PduKind,
    pub bytes: &'a [u8],
}

/// Why the recorder could not keep a PDU; the session ends (recording is not optional).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// Receives every relayed PDU in order per direction. Called on the data path: it must write
/// through a bounded buffer and not block for long.
pub trait Recorder: Send + Sync {
    fn record(&self, pdu: &RecordedPdu<'_>) -> Result<(), RecordError>;
}

/// Why a relay ended abnormally. `Display` is for the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the client closed the connection before the MCS connect initial")]
    ClientGone,
    #[error("malformed {what} from the client: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("undecodable client traffic before the client info PDU: {0}")]
    UndecodableBeforeClientInfo(String),
    #[error("recording failed: {0}")]
    Recording(#[from] RecordError),
    #[error("i/o with the {side}: {reason}")]
    Io { side: &'static str, reason: String },
    /// The client hung up without closing (a killed client resets its connection): the user
    /// ended the session, which is no error. Only inside the relay.
    #[error("the client hung up")]
    ClientHungUp,
}

/// How the relay treats the session beyond the credential rewrites it always does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOptions {
    /// Steer capability negotiation so the recording can be decoded to frames: the client's
    /// early capability flag for the graphics pipeline is cleared in the MCS Connect Initial
    /// (no EGFX, no H.264), and every Client Confirm Active PDU is rewritten with drawing-order
    /// support all off and no bitmap codecs, so the target falls back to planar/interleaved
    /// bitmap updates. Costs bandwidth (bitmaps instead of orders and codecs). Default: on.
    pub steer_for_recording: bool,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            steer_for_recording: true,
        }
    }
}

/// How a relay ended: what flowed (also when it ended with an error), the error if any, and
/// whether the caller's stop signal ended it.
#[derive(Debug)]
pub struct RelayOutcome {
    pub summary: RelaySummary,
    /// `None` for a clean end (either side closed) or a stop.
    pub error: Option<RelayError>,
    /// The stop signal fired and the relay closed both connections.
    pub stopped: bool,
}

/// What flowed, for the session record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelaySummary {
    pub bytes_from_client: u64,
    pub bytes_from_target: u64,
    pub pdus_from_client: u64,
    pub pdus_from_target: u64,
    /// Some traffic could not be framed and was relayed raw (flagged in the recording).
    pub undecodable: bool,
    /// Whether the client info PDU was seen and rewritten.
    pub client_info_rewritten: bool,
    /// Client Confirm Active PDUs rewritten for decodable recordings (one per activation).
    pub confirm_actives_steered: u32,
    /// Client Confirm Active PDUs that could not be decoded and went through unchanged (the
    /// recording of that activation may not decode; the decoder flags it).
    pub confirm_actives_unsteered: u32,
}

#[derive(Default)]
struct Counters {
    bytes_from_client: AtomicU64,
    bytes_from_target: AtomicU64,
    pdus_from_client: AtomicU64,
    pdus_from_target: AtomicU64,
    undecodable: AtomicBool,
    client_info_rewritten: AtomicBool,
    confirm_actives_steered: AtomicU32,
    confirm_actives_unsteered: AtomicU32,
}

impl Counters {
    fn count(&self, direction: Direction, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let (b, p) = match direction {
            Direction::ClientToTarget => (&self.bytes_from_client, &self.pdus_from_client),
            Direction::TargetToClient => (&self.bytes_from_target, &self.pdus_from_target),
        };
        b.fetch_add(bytes, Ordering::Relaxed);
        p.fetch_add(1, Ordering::Relaxed);
    }

    fn summary(&self) -> RelaySummary {
        RelaySummary {
            bytes_from_client: self.bytes_from_client.load(Ordering::Relaxed),
            bytes_from_target: self.bytes_from_target.load(Ordering::Relaxed),
            pdus_from_client: self.pdus_from_client.load(Ordering::Relaxed),
            pdus_from_target: self.pdus_from_target.load(Ordering::Relaxed),
            undecodable: self.undecodable.load(Ordering::Relaxed),
            client_info_rewritten: self.client_info_rewritten.load(Ordering::Relaxed),
            confirm_actives_steered: self.confirm_actives_steered.load(Ordering::Relaxed),
            confirm_actives_unsteered: self.confirm_actives_unsteered.load(Ordering::Relaxed),
        }
    }
}

fn malformed(what: &'static str) -> impl Fn(ironrdp_pdu::DecodeError) -> RelayError {
    move |e| RelayError::Malformed {
        what,
        reason: e.to_string(),
    }
}

fn encode_failed(what: &'static str) -> impl Fn(ironrdp_pdu::EncodeError) -> RelayError {
    move |e| RelayError::Malformed {
        what,
        reason: format!("cannot re-encode: {e}"),
    }
}

/// The client's MCS Connect Initial with `serverSelectedProtocol` set to what the target chose,
/// and, when steering, without the early capability flag that lets the target use the graphics
/// pipeline (RNS_UD_CS_SUPPORT_DYNVC_GFX_PROTOCOL).
pub(crate) fn fix_connect_initial(
    pdu: &[u8],
    selected: SecurityProtocol,
    steer: bool,
) -> Result<Vec<u8>, RelayError> {
    const WHAT: &str = "MCS connect initial";
    let data: X224<X224Data<'_>> = ironrdp_pdu::decode(pdu).map_err(malformed(WHAT))?;
    let mut initial: ConnectInitial =
        ironrdp_pdu::decode(data.0.data.as_ref()).map_err(malformed(WHAT))?;
    let mut blocks = initial.conference_create_request.into_gcc_blocks();
    blocks.core.optional_data.server_selected_protocol = Some(selected);
    if steer && let Some(flags) = blocks.core.optional_data.early_capability_flags.as_mut() {
        flags.remove(ClientEarlyCapabilityFlags::SUPPORT_DYN_VC_GFX_PROTOCOL);
    }
    initial.conference_create_request =
        ironrdp_pdu::gcc::ConferenceCreateRequest::new(blocks).map_err(malformed(WHAT))?;
    let inner = ironrdp_pdu::encode_vec(&initial).map_err(encode_failed(WHAT))?;
    ironrdp_pdu::encode_vec(&X224(X224Data {
        data: Cow::Owned(inner),
    }))
    .map_err(encode_failed(WHAT))
}

/// The account the target session belongs to, written into the Client Info PDU.
#[derive(Debug, Clone)]
pub(crate) struct TargetAccount {
    pub username: String,
    pub domain: Option<String>,
}

const SEC_INFO_PKT: u16 = 0x0040;

/// If `pdu` is the Client Info PDU, the same PDU naming the target account with no password:
/// the gateway user's name and password (clients send them for auto-logon) must reach neither
/// the target nor the recording. `None` for any other PDU.
pub(crate) fn rewrite_client_info(
    pdu: &[u8],
    account: &TargetAccount,
) -> Result<Option<Vec<u8>>, RelayError> {
    const WHAT: &str = "client info PDU";
    let Ok(request) = ironrdp_pdu::decode::<X224<SendDataRequest<'_>>>(pdu) else {
        return Ok(None);
    };
    let request = request.0;
    let flags = match request.user_data.get(..2) {
        Some(&[low, high]) => u16::from_le_bytes([low, high]),
        _ => return Ok(None),
    };
    if flags & SEC_INFO_PKT == 0 {
        return Ok(None);
    }
    let mut info: ClientInfoPdu =
        ironrdp_pdu::decode(request.user_data.as_ref()).map_err(malformed(WHAT))?;
    let credentials = &mut info.client_info.credentials;
    zeroize::Zeroize::zeroize(&mut credentials.password);
    credentials.username = account.username.clone();
    credentials.domain = account.domain.clone();
    info.client_info.password_cookie = None;
    let user_data = ironrdp_pdu::encode_vec(&info).map_err(encode_failed(WHAT))?;
    let rewritten = SendDataRequest {
        initiator_id: request.initiator_id,
        channel_id: request.channel_id,
        user_data: Cow::Owned(user_data),
    };
    ironrdp_pdu::encode_vec(&X224(rewritten))
        .map(Some)
        .map_err(encode_failed(WHAT))
}

/// Share Control `pduType` of a Confirm Active PDU (low 4 bits of the field).
const PDUTYPE_CONFIRMACTIVEPDU: u16 = 0x3;
/// Where `orderSupport` starts in an encoded Order capability set body (after
/// terminalDescriptor, padding, desktopSave granularities, padding, maximumOrderLevel,
/// numberFonts and orderFlags).
const ORDER_SUPPORT: std::ops::Range<usize> = 32..64;

/// What [`steer_confirm_active`] did.
#[derive(Debug)]
pub(crate) enum Steered {
    /// Not a Client Confirm Active PDU.
    NotConfirmActive,
    Rewritten(Vec<u8>),
    /// A Confirm Active that could not be decoded or re-encoded: forwarded unchanged.
    Failed(String),
}

/// If `pdu` is a Client Confirm Active PDU: the same PDU with every drawing order off (the
/// Order capability set's `orderSupport` all zero) and an empty Bitmap Codecs capability set,
/// so the target sends plain bitmap updates.
pub(crate) fn steer_confirm_active(pdu: &[u8]) -> Steered {
    let Ok(request) = ironrdp_pdu::decode::<X224<SendDataRequest<'_>>>(pdu) else {
        return Steered::NotConfirmActive;
    };
    let request = request.0;
    let pdu_type = match request.user_data.get(2..4) {
        Some(&[low, high]) => u16::from_le_bytes([low, high]),
        _ => return Steered::NotConfirmActive,
    };
    if pdu_type & 0x0f != PDUTYPE_CONFIRMACTIVEPDU {
        return Steered::NotConfirmActive;
    }
    match rewrite_confirm_active(&request) {
        Ok(bytes) => Steered::Rewritten(bytes),
        Err(reason) => Steered::Failed(reason),
    }
}

fn rewrite_confirm_active(request: &SendDataRequest<'_>) -> Result<Vec<u8>, String> {
    let mut header: ShareControlHeader =
        ironrdp_pdu::decode(request.user_data.as_ref()).map_err(|e| e.to_string())?;
    let ShareControlPdu::ClientConfirmActive(confirm) = &mut header.share_control_pdu else {
        return Err("a Confirm Active PDU type that does not decode as one".into());
    };
    let mut has_codecs = false;
    for set in &mut confirm.pdu.capability_sets {
        match set {
            CapabilitySet::Order(order) => *order = without_orders(order)?,
            CapabilitySet::BitmapCodecs(codecs) => {
                *codecs = BitmapCodecs(Vec::new());
                has_codecs = true;
            }
            _ => {}
        }
    }
    if !has_codecs {
        // Nothing to reduce: a client without the set offers no codecs.
        tracing::debug!("the confirm active has no bitmap codecs capability set");
    }
    let user_data = ironrdp_pdu::encode_vec(&header).map_err(|e| e.to_string())?;
    ironrdp_pdu::encode_vec(&X224(SendDataRequest {
        initiator_id: request.initiator_id,
        channel_id: request.channel_id,
        user_data: Cow::Owned(user_data),
    }))
    .map_err(|e| e.to_string())
}

/// The Order capability set with `orderSupport` zeroed. ironrdp-pdu keeps the array private,
/// so it goes through its own wire form.
fn without_orders(order: &Order) -> Result<Order, String> {
    let mut body = ironrdp_pdu::encode_vec(order).map_err(|e| e.to_string())?;
    body.get_mut(ORDER_SUPPORT)
        .ok_or("an Order capability set shorter than its orderSupport")?
        .fill(0);
    ironrdp_pdu::decode(&body).map_err(|e| e.to_string())
}

fn kind_of(pdu: &[u8]) -> PduKind {
    match pdu.first() {
        Some(0x03) => PduKind::X224,
        _ => PduKind::FastPath,
    }
}

struct Pump<'a, R, W> {
    reader: Framed<R>,
    writer: W,
    direction: Direction,
    started: Instant,
    recorder: &'a dyn Recorder,
    counters: &'a Counters,
    /// Client to target only: the account to write into the Client Info PDU, until it is seen.
    client_info: Option<TargetAccount>,
    /// Client to target only: rewrite Confirm Active PDUs for decodable recordings.
    steer: bool,
}

/// A connection the peer reset or aborted (what a killed client leaves behind).
fn hung_up(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Pump<'_, R, W> {
    fn side(&self) -> &'static str {
        match self.direction {
            Direction::ClientToTarget => "target",
            Direction::TargetToClient => "client",
        }
    }

    async fn forward(
        &mut self,
        bytes: &[u8],
        kind: PduKind,
        flush: bool,
    ) -> Result<(), RelayError> {
        self.recorder.record(&RecordedPdu {
            direction: self.direction,
            at: self.started.elapsed(),
            kind,
            bytes,
        })?;
        let side = self.side();
        let to_client = self.direction == Direction::TargetToClient;
        let io = |e: std::io::Error| {
            if to_client && hung_up(&e) {
                RelayError::ClientHungUp
            } else {
                RelayError::Io {
                    side,
                    reason: e.to_string(),
                }
            }
        };
        self.writer.write_all(bytes).await.map_err(io)?;
        if flush {
            self.writer.flush().await.map_err(io)?;
        }
        self.counters.count(self.direction, bytes.len());
        Ok(())
    }

    async fn run(mut self) -> Result<(), RelayError> {
        loop {
            let pdu = match self.reader.read_message(Expect::Rdp).await {
                Ok(pdu) => pdu,
                Err(FrameError::Closed | FrameError::Truncated) => break,
                Err(FrameError::Io(e))
                    if self.direction == Direction::ClientToTarget && hung_up(&e) =>
                {
                    tracing::debug!(error = %e, "the client hung up");
                    break;
                }
                Err(FrameError::Io(e)) => {
                    let side = match self.direction {
                        Direction::ClientToTarget => "client",
                        Direction::TargetToClient => "target",
                    };
                    return Err(RelayError::Io {
                        side,
                        reason: e.to_string(),
                    });
                }
                Err(e @ (FrameError::Undecodable(_) | FrameError::TooLarge(_))) => {
                    if self.client_info.is_some() {
                        return Err(RelayError::UndecodableBeforeClientInfo(e.to_string()));
                    }
                    tracing::warn!(direction = ?self.direction, error = %e, "relaying undecodable traffic raw");
                    self.counters.undecodable.store(true, Ordering::Relaxed);
                    return self.run_raw().await;
                }
            };
            let pdu = match &self.client_info {
                Some(account) if kind_of(&pdu) == PduKind::X224 => {
                    match rewrite_client_info(&pdu, account)? {
                        Some(rewritten) => {
                            self.client_info = None;
                            self.counters
                                .client_info_rewritten
                                .store(true, Ordering::Relaxed);
                            Bytes::from(rewritten)
                        }
                        None => pdu,
                    }
                }
                _ => pdu,
            };
            let pdu = if self.steer && kind_of(&pdu) == PduKind::X224 {
                self.steer(pdu)
            } else {
                pdu
            };
            let flush = !self.reader.has_message(Expect::Rdp);
            match self.forward(&pdu, kind_of(&pdu), flush).await {
                Err(RelayError::ClientHungUp) => break,
                other => other?,
            }
        }
        let _ = self.writer.shutdown().await;
        Ok(())
    }

    fn steer(&self, pdu: Bytes) -> Bytes {
        match steer_confirm_active(&pdu) {
            Steered::NotConfirmActive => pdu,
            Steered::Rewritten(bytes) => {
                self.counters
                    .confirm_actives_steered
                    .fetch_add(1, Ordering::Relaxed);
                Bytes::from(bytes)
            }
            Steered::Failed(reason) => {
                tracing::warn!(%reason, "cannot steer the client's confirm active; forwarded unchanged");
                self.counters
                    .confirm_actives_unsteered
                    .fetch_add(1, Ordering::Relaxed);
                pdu
            }
        }
    }

    async fn run_raw(mut self) -> Result<(), RelayError> {
        loop {
            match self.reader.read_raw().await {
                Ok(chunk) => match self.forward(&chunk, PduKind::Undecodable, true).await {
                    Err(RelayError::ClientHungUp) => break,
                    other => other?,
                },
                Err(FrameError::Io(e)) => {
                    return Err(RelayError::Io {
                        side: "peer",
                        reason: e.to_string(),
                    });
                }
                Err(_) => break,
            }
        }
        let _ = self.writer.shutdown().await;
        Ok(())
    }
}

/// Lets the client proceed and relays until either side closes or `stop` completes (for a
/// session whose access was revoked; both connections are then closed). Returns what flowed in
/// every case, with the error if the relay ended abnormally: a recording failure or an
/// undecodable client stream before the Client Info ends the session.
pub async fn relay(
    client: AcceptedClient,
    target: TargetConnection,
    recorder: &dyn Recorder,
    options: RelayOptions,
    stop: impl Future<Output = ()>,
) -> RelayOutcome {
    let counters = Counters::default();
    let (result, stopped) = tokio::select! {
        r = run(client, target, recorder, options, &counters) => (r, false),
        () = stop => (Ok(()), true),
    };
    RelayOutcome {
        summary: counters.summary(),
        error: result.err(),
        stopped,
    }
}

async fn run(
    client: AcceptedClient,
    target: TargetConnection,
    recorder: &dyn Recorder,
    options: RelayOptions,
    counters: &Counters,
) -> Result<(), RelayError> {
    let started = Instant::now();
    let steer = options.steer_for_recording;
    let selected_towards_client = client.selected;
    let mut client_framed = client.framed;
    let target_framed = target.framed;
    let account = target.account;

    if selected_towards_client == SecurityProtocol::HYBRID_EX {
        write_early_user_auth_result(client_framed.get_mut(), EarlyUserAuthResult::Success)
            .await
            .map_err(|e| RelayError::Io {
                side: "client",
                reason: e.to_string(),
            })?;
    }

    let initial = match client_framed.read_message(Expect::Rdp).await {
        Ok(pdu) => pdu,
        Err(FrameError::Closed | FrameError::Truncated) => return Err(RelayError::ClientGone),
        Err(e) => {
            return Err(RelayError::Malformed {
                what: "MCS connect initial",
                reason: e.to_string(),
            });
        }
    };
    let initial = fix_connect_initial(&initial, target.selected, steer)?;

    let (client_stream, client_leftover) = client_framed.into_parts();
    let (target_stream, target_leftover) = target_framed.into_parts();
    let (client_read, client_write) = tokio::io::split(client_stream);
    let (target_read, target_write) = tokio::io::split(target_stream);

    let mut upstream = Pump {
        reader: Framed::with_buffer(client_read, client_leftover),
        writer: target_write,
        direction: Direction::ClientToTarget,
        started,
        recorder,
        counters,
        client_info: Some(account),
        steer,
    };
    upstream.forward(&initial, PduKind::X224, true).await?;
    let downstream = Pump {
        reader: Framed::with_buffer(target_read, target_leftover),
        writer: client_write,
        direction: Direction::TargetToClient,
        started,
        recorder,
        counters,
        client_info: None,
        steer: false,
    };
    // The first direction to end ends the session; dropping the other closes both sockets.
    tokio::select! {
        r = upstream.run() => r,
        r = downstream.run() => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_first_byte() {
        assert_eq!(kind_of(&[3, 0, 0, 4]), PduKind::X224);
        assert_eq!(kind_of(&[0, 3, 1]), PduKind::FastPath);
    }

    #[test]
    fn non_client_info_pdus_are_left_alone() {
        let account = TargetAccount {
            username: "Administrator".into(),
            domain: None,
        };
        // An MCS erect domain request is not a send data request.
        let erect = [3u8, 0, 0, 12, 2, 0xf0, 0x80, 0x04, 0x01, 0x00, 0x01, 0x00];
        assert!(rewrite_client_info(&erect, &account).unwrap().is_none());
    }

    use ironrdp_pdu::rdp::capability_sets::{
        ClientConfirmActive, Codec, CodecProperty, DemandActive, NsCodec, OrderFlags,
        OrderSupportExFlags, OrderSupportIndex,
    };

    fn confirm_active() -> Vec<u8> {
        let mut order = Order::new(
            OrderFlags::NEGOTIATE_ORDER_SUPPORT,
            OrderSupportExFlags::empty(),
            480 * 480,
            1252,
        );
        for index in [
            OrderSupportIndex::DstBlt,
            OrderSupportIndex::MemBlt,
            OrderSupportIndex::FastGlyph,
        ] {
            order.set_support_flag(index, true);
        }
        let codecs = BitmapCodecs(vec![Codec {
            id: 1,
            property: CodecProperty::NsCodec(NsCodec {
                is_dynamic_fidelity_allowed: true,
                is_subsampling_allowed: true,
                color_loss_level: 3,
            }),
        }]);
        let header = ShareControlHeader {
            share_control_pdu: ShareControlPdu::ClientConfirmActive(ClientConfirmActive {
                originator_id: 0x03ea,
                pdu: DemandActive {
                    source_descriptor: "MSTSC".into(),
                    capability_sets: vec![
                        CapabilitySet::Order(order),
                        CapabilitySet::BitmapCodecs(codecs),
                    ],
                },
            }),
            pdu_source: 1007,
            share_id: 0x1_03ea,
        };
        let user_data = ironrdp_pdu::encode_vec(&header).unwrap();
        ironrdp_pdu::encode_vec(&X224(SendDataRequest {
            initiator_id: 1007,
            channel_id: 1003,
            user_data: Cow::Owned(user_data),
        }))
        .unwrap()
    }

    fn capability_sets(pdu: &[u8]) -> (u32, Vec<CapabilitySet>) {
        let request = ironrdp_pdu::decode::<X224<SendDataRequest<'_>>>(pdu)
            .unwrap()
            .0;
        let header: ShareControlHeader = ironrdp_pdu::decode(request.user_data.as_ref()).unwrap();
        match header.share_control_pdu {
            ShareControlPdu::ClientConfirmActive(confirm) => {
                (header.share_id, confirm.pdu.capability_sets)
            }
            other => panic!("not a confirm active: {other:?}"),
        }
    }

    #[test]
    fn the_confirm_active_is_steered_to_bitmaps_only() {
        let original = confirm_active();
        let Steered::Rewritten(steered) = steer_confirm_active(&original) else {
            panic!("not rewritten");
        };
        let (share_id, sets) = capability_sets(&steered);
        assert_eq!(share_id, 0x1_03ea);
        let mut seen = 0;
        for set in sets {
            match set {
                CapabilitySet::Order(mut order) => {
                    for index in [
                        OrderSupportIndex::DstBlt,
                        OrderSupportIndex::MemBlt,
                        OrderSupportIndex::FastGlyph,
                    ] {
                        assert!(!order.get_support_flag(index));
                    }
                    // The rest of the set is kept.
                    let mut expected = Order::new(
                        OrderFlags::NEGOTIATE_ORDER_SUPPORT,
                        OrderSupportExFlags::empty(),
                        480 * 480,
                        1252,
                    );
                    assert_eq!(order, expected);
                    assert!(!expected.get_support_flag(OrderSupportIndex::Index));
                    seen += 1;
                }
                CapabilitySet::BitmapCodecs(codecs) => {
                    assert!(codecs.0.is_empty());
                    seen += 1;
                }
                other => panic!("unexpected set {other:?}"),
            }
        }
        assert_eq!(seen, 2);
        // The original really had orders and a codec.
        let (_, sets) = capability_sets(&original);
        assert!(matches!(&sets[1], CapabilitySet::BitmapCodecs(c) if c.0.len() == 1));
    }

    #[test]
    fn other_pdus_and_broken_confirm_actives_are_not_steered() {
        let erect = [3u8, 0, 0, 12, 2, 0xf0, 0x80, 0x04, 0x01, 0x00, 0x01, 0x00];
        assert!(matches!(
            steer_confirm_active(&erect),
            Steered::NotConfirmActive
        ));
        // A Confirm Active cut short inside its capability sets: forwarded unchanged.
        let original = confirm_active();
        let request = ironrdp_pdu::decode::<X224<SendDataRequest<'_>>>(&original)
            .unwrap()
            .0;
        let short = request.user_data[..request.user_data.len() - 10].to_vec();
        let broken = ironrdp_pdu::encode_vec(&X224(SendDataRequest {
            initiator_id: 1007,
            channel_id: 1003,
            user_data: Cow::Owned(short),
        }))
        .unwrap();
        assert!(matches!(steer_confirm_active(&broken), Steered::Failed(_)));
    }
}
