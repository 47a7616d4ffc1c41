//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, which the gateway's build never
//! turns on): the framing, the X.224 negotiation and the relay's PDU inspection, reachable here
//! without the TLS and CredSSP handshakes that come before them on a real connection.

use crate::framing::{self, FrameError, Framed};
use crate::relay::{self, TargetAccount};
use bytes::Bytes;
use ironrdp_pdu::nego::{ConnectionRequest, SecurityProtocol};
use tokio::io::AsyncRead;

/// The largest message the framing accepts.
pub const MAX_MESSAGE: usize = framing::MAX_MESSAGE;

/// What kind of message is expected next.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    Rdp,
    TsRequest,
    Fixed(usize),
}

impl From<Expect> for framing::Expect {
    fn from(expect: Expect) -> Self {
        match expect {
            Expect::Rdp => framing::Expect::Rdp,
            Expect::TsRequest => framing::Expect::TsRequest,
            Expect::Fixed(n) => framing::Expect::Fixed(n),
        }
    }
}

/// How a stream of messages ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Between two messages.
    Closed,
    /// In the middle of one.
    Truncated,
    /// A header that is not one, or a message over [`MAX_MESSAGE`].
    Refused(String),
}

/// Cuts `stream` into messages as the gateway does, until it ends or is refused; also the most
/// bytes the read buffer held at any point.
pub async fn read_messages<S: AsyncRead + Unpin>(
    stream: S,
    expect: Expect,
) -> (Vec<Bytes>, End, usize) {
    let mut framed = Framed::new(stream);
    let mut messages = Vec::new();
    let mut most_buffered = 0;
    loop {
        let read = framed.read_message(expect.into()).await;
        most_buffered = most_buffered.max(framed.buffered());
        match read {
            Ok(message) => messages.push(message),
            Err(FrameError::Closed) => return (messages, End::Closed, most_buffered),
            Err(FrameError::Truncated) => return (messages, End::Truncated, most_buffered),
            Err(e) => return (messages, End::Refused(e.to_string()), most_buffered),
        }
    }
}

/// The client's X.224 connection request as `accept` reads it, and the protocol the gateway would
/// select (`None`: the client is refused for not offering NLA).
pub async fn read_connection_request<S: AsyncRead + Unpin>(
    stream: S,
) -> Result<(ConnectionRequest, Option<SecurityProtocol>), String> {
    let mut framed = Framed::new(stream);
    let request = crate::nego::read_connection_request(&mut framed)
        .await
        .map_err(|e| e.to_string())?;
    let selected = crate::nego::select(request.protocol);
    Ok((request, selected))
}

/// The relay's fix-up of the client's MCS Connect Initial.
pub fn fix_connect_initial(
    pdu: &[u8],
    selected: SecurityProtocol,
    steer: bool,
) -> Result<Vec<u8>, String> {
    relay::fix_connect_initial(pdu, selected, steer).map_err(|e| e.to_string())
}

/// The relay's rewrite of the Client Info PDU for the target account; `Ok(None)` for any other PDU.
pub fn rewrite_client_info(
    pdu: &[u8],
    username: &str,
    domain: Option<&str>,
) -> Result<Option<Vec<u8>>, String> {
    let account = TargetAccount {
        username: username.to_owned(),
        domain: domain.map(str::to_owned),
    };
    relay::rewrite_client_info(pdu, &account).map_err(|e| e.to_string())
}

/// What the relay does to a client PDU when steering for decodable recordings.
#[derive(Debug)]
pub enum Steered {
    NotConfirmActive,
    Rewritten(Vec<u8>),
    Failed(String),
}

pub fn steer_confirm_active(pdu: &[u8]) -> Steered {
    match relay::steer_confirm_active(pdu) {
        relay::Steered::NotConfirmActive => Steered::NotConfirmActive,
        relay::Steered::Rewritten(bytes) => Steered::Rewritten(bytes),
        relay::Steered::Failed(reason) => Steered::Failed(reason),
    }
}
