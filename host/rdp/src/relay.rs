//! After both handshakes: tell the client it may proceed, fix up the MCS Connect Initial (the
//! client saw the gateway's protocol selection, the target made its own), keep the gateway
//! user's credentials out of the Client Info PDU, and relay PDUs both ways through bounded
//! buffers while a [`Recorder`] sees each one with its time.

use crate::accept::{AcceptedClient, write_early_user_auth_result};
use crate::framing::{Expect, FrameError, Framed};
use crate::target::TargetConnection;
use bytes::Bytes;
use ironrdp_pdu::mcs::{ConnectInitial, SendDataRequest};
use ironrdp_pdu::nego::SecurityProtocol;
use ironrdp_pdu::rdp::ClientInfoPdu;
use ironrdp_pdu::x224::{X224, X224Data};
use sspi::credssp::EarlyUserAuthResult;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
}

#[derive(Default)]
struct Counters {
    bytes_from_client: AtomicU64,
    bytes_from_target: AtomicU64,
    pdus_from_client: AtomicU64,
    pdus_from_target: AtomicU64,
    undecodable: AtomicBool,
    client_info_rewritten: AtomicBool,
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

/// The client's MCS Connect Initial with `serverSelectedProtocol` set to what the target chose.
fn fix_connect_initial(pdu: &[u8], selected: SecurityProtocol) -> Result<Vec<u8>, RelayError> {
    const WHAT: &str = "MCS connect initial";
    let data: X224<X224Data<'_>> = ironrdp_pdu::decode(pdu).map_err(malformed(WHAT))?;
    let mut initial: ConnectInitial =
        ironrdp_pdu::decode(data.0.data.as_ref()).map_err(malformed(WHAT))?;
    let mut blocks = initial.conference_create_request.into_gcc_blocks();
    blocks.core.optional_data.server_selected_protocol = Some(selected);
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
fn rewrite_client_info(pdu: &[u8], account: &TargetAccount) -> Result<Option<Vec<u8>>, RelayError> {
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
        let io = |e: std::io::Error| RelayError::Io {
            side,
            reason: e.to_string(),
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
            let flush = !self.reader.has_message(Expect::Rdp);
            self.forward(&pdu, kind_of(&pdu), flush).await?;
        }
        let _ = self.writer.shutdown().await;
        Ok(())
    }

    async fn run_raw(mut self) -> Result<(), RelayError> {
        loop {
            match self.reader.read_raw().await {
                Ok(chunk) => self.forward(&chunk, PduKind::Undecodable, true).await?,
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

/// Lets the client proceed and relays until either side closes. Returns what flowed; a
/// recording failure or an undecodable client stream before the Client Info ends the session.
pub async fn relay(
    client: AcceptedClient,
    target: TargetConnection,
    recorder: &dyn Recorder,
) -> Result<RelaySummary, RelayError> {
    let started = Instant::now();
    let counters = Counters::default();
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
    let initial = fix_connect_initial(&initial, target.selected)?;

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
        counters: &counters,
        client_info: Some(account),
    };
    upstream.forward(&initial, PduKind::X224, true).await?;
    let downstream = Pump {
        reader: Framed::with_buffer(target_read, target_leftover),
        writer: client_write,
        direction: Direction::TargetToClient,
        started,
        recorder,
        counters: &counters,
        client_info: None,
    };
    // The first direction to end ends the session; dropping the other closes both sockets.
    let result = tokio::select! {
        r = upstream.run() => r,
        r = downstream.run() => r,
    };
    result.map(|()| counters.summary())
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
}
