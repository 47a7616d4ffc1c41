//! The relay between the two legs once the target login is done: data both ways through
//! bounded buffers, each leg's Telnet handled by its own [`Peer`], every terminal event handed
//! to the [`Recorder`].
//!
//! One task drives four operations with `select!`: read the client, read the target, write the
//! client, write the target. A side is read only while both outgoing buffers are under
//! [`RelayConfig::buffer_limit`] (its data goes to one, its protocol answers to the other), so
//! a slow or hostile peer stalls its own direction instead of growing memory; writes continue
//! meanwhile, so neither direction can block the other (no deadlock with a target that stops
//! reading while it writes). One read adds at most a few times its own size to a buffer.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::codec::{self, AO, AYT, BRK, EC, EL, IP};
use crate::error::{ProtocolError, RecordError, RelayError, Side};
use crate::options::{Change, ECHO, SGA};
use crate::peer::{Incoming, Peer, Wish};
use crate::{ClientSide, TargetSide, WindowSize};

/// Receives the session's terminal events in order. Called on the data path: it must buffer
/// (bounded) and not block for long. An error ends the relay: recording is not optional.
/// Data is NVT data as it crossed the gateway (CR LF and CR NUL line ends kept); timestamps
/// are the recorder's to take.
pub trait Recorder {
    /// Target → client data, Telnet commands removed.
    fn output(&mut self, data: &[u8]) -> Result<(), RecordError>;
    /// Client → target data, Telnet commands removed.
    fn input(&mut self, data: &[u8]) -> Result<(), RecordError>;
    /// The client's window changed (NAWS).
    fn resize(&mut self, size: WindowSize) -> Result<(), RecordError>;
}

/// Bounds of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Bytes waiting for one side above which reading stops.
    pub buffer_limit: usize,
    /// Ends the session after this long without data either way; `None` never.
    pub idle_timeout: Option<Duration>,
    /// After one side closed, how long to try to deliver what is still buffered to the other.
    pub drain_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            buffer_limit: 64 * 1024,
            idle_timeout: None,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySummary {
    /// Data bytes from the client to the target (type-ahead included).
    pub client_to_target: u64,
    /// Data bytes from the target to the client (the post-login banner included).
    pub target_to_client: u64,
    /// The side that closed first.
    pub ended_by: Side,
}

const READ_CHUNK: usize = 8192;

struct Leg<S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    peer: Peer,
    /// Encoded bytes waiting to be written to this side.
    pending: Vec<u8>,
    side: Side,
}

/// Relays between a client whose login conversation is over and a target logged in (or not:
/// a target that was only connected is relayed as is). Ends when either side closes.
pub async fn relay<C, T, R>(
    client: ClientSide<C>,
    target: TargetSide<T>,
    recorder: &mut R,
    config: &RelayConfig,
) -> Result<RelaySummary, RelayError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
    R: Recorder + ?Sized,
{
    let ClientSide {
        stream: client_stream,
        peer: client_peer,
        typeahead,
        after_cr,
        ..
    } = client;
    let TargetSide {
        stream: target_stream,
        peer: target_peer,
        held_output,
    } = target;
    let (reader, writer) = tokio::io::split(client_stream);
    let mut client = Leg {
        reader,
        writer,
        peer: client_peer,
        pending: Vec::new(),
        side: Side::Client,
    };
    let (reader, writer) = tokio::io::split(target_stream);
    let mut target = Leg {
        reader,
        writer,
        peer: target_peer,
        pending: Vec::new(),
        side: Side::Target,
    };
    let mut summary = RelaySummary {
        client_to_target: 0,
        target_to_client: 0,
        ended_by: Side::Client,
    };

    // What the login phases left: the target's banner first, then what the user typed ahead.
    if !held_output.is_empty() {
        recorder.output(&held_output)?;
        summary.target_to_client += held_output.len() as u64;
        codec::escape_data(&held_output, &mut client.pending);
    }
    // The LF or NUL that ends the last answer's CR may come after it: it is not the user's.
    let mut skip_line_end = after_cr;
    let typed = skip_first_line_end(&typeahead, &mut skip_line_end);
    if !typed.is_empty() {
        recorder.input(typed)?;
        summary.client_to_target += typed.len() as u64;
        codec::escape_data(typed, &mut target.pending);
    }
    drop(typeahead);
    for option in [ECHO, SGA] {
        mirror(
            &mut client,
            option,
            target.peer.options.remote_enabled(option),
        );
    }
    if let Some(size) = client.peer.window
        && target.peer.window != Some(size)
    {
        target.peer.set_window(size, &mut target.pending);
    }

    let mut client_buffer = vec![0u8; READ_CHUNK];
    let mut target_buffer = vec![0u8; READ_CHUNK];
    let idle = config.idle_timeout;
    let mut idle_deadline = idle.map(|idle| Instant::now() + idle);
    let limit = config.buffer_limit;
    let ended_by = loop {
        let room = client.pending.len() < limit && target.pending.len() < limit;
        let sleep_until =
            idle_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            read = client.reader.read(&mut client_buffer), if room => {
                let count = match read {
                    Ok(count) => count,
                    Err(error) if gone(&error) => break Side::Client,
                    Err(error) => return Err(RelayError::Io { side: Side::Client, error }),
                };
                if count == 0 {
                    finish(&client.peer, Side::Client);
                    break Side::Client;
                }
                from_client(&client_buffer[..count], &mut client, &mut target, recorder, &mut summary, &mut skip_line_end)?;
                idle_deadline = idle.map(|idle| Instant::now() + idle);
            }
            read = target.reader.read(&mut target_buffer), if room => {
                let count = match read {
                    Ok(count) => count,
                    Err(error) if gone(&error) => break Side::Target,
                    Err(error) => return Err(RelayError::Io { side: Side::Target, error }),
                };
                if count == 0 {
                    finish(&target.peer, Side::Target);
                    break Side::Target;
                }
                from_target(&target_buffer[..count], &mut target, &mut client, recorder, &mut summary)?;
                idle_deadline = idle.map(|idle| Instant::now() + idle);
            }
            written = client.writer.write(&client.pending), if !client.pending.is_empty() => {
                match written {
                    Ok(count) => { client.pending.drain(..count); }
                    Err(error) if gone(&error) => break Side::Client,
                    Err(error) => return Err(RelayError::Io { side: Side::Client, error }),
                }
            }
            written = target.writer.write(&target.pending), if !target.pending.is_empty() => {
                match written {
                    Ok(count) => { target.pending.drain(..count); }
                    Err(error) if gone(&error) => break Side::Target,
                    Err(error) => return Err(RelayError::Io { side: Side::Target, error }),
                }
            }
            () = tokio::time::sleep_until(sleep_until), if idle.is_some() => {
                return Err(RelayError::Idle(idle.unwrap_or_default()));
            }
        }
    };
    summary.ended_by = ended_by;
    // Deliver what is still buffered to the side that is still there, then close both.
    match ended_by {
        Side::Client => drain(&mut target, config.drain_timeout).await,
        Side::Target => drain(&mut client, config.drain_timeout).await,
    }
    let _ = client.writer.shutdown().await;
    let _ = target.writer.shutdown().await;
    Ok(summary)
}

/// Writes what is buffered for `leg`, for at most `limit`.
async fn drain<S: AsyncWrite>(leg: &mut Leg<S>, limit: Duration) {
    let drained = tokio::time::timeout(limit, async {
        leg.writer.write_all(&leg.pending).await?;
        leg.writer.flush().await
    })
    .await;
    if !matches!(drained, Ok(Ok(()))) {
        tracing::debug!(side = %leg.side, "buffered data not delivered after the other side closed");
    }
}

fn from_client<C, T, R>(
    input: &[u8],
    client: &mut Leg<C>,
    target: &mut Leg<T>,
    recorder: &mut R,
    summary: &mut RelaySummary,
    skip_line_end: &mut bool,
) -> Result<(), RelayError>
where
    R: Recorder + ?Sized,
{
    let mut incoming = Vec::new();
    client
        .peer
        .receive(input, &mut client.pending, &mut incoming)
        .map_err(|error| protocol(Side::Client, error))?;
    for event in incoming {
        match event {
            Incoming::Data(data) => {
                let data = skip_first_line_end(&data, skip_line_end);
                if data.is_empty() {
                    continue;
                }
                recorder.input(data)?;
                summary.client_to_target += data.len() as u64;
                codec::escape_data(data, &mut target.pending);
            }
            Incoming::Command(command @ (IP | BRK | AO | AYT | EC | EL)) => {
                codec::encode_command(command, &mut target.pending);
            }
            Incoming::Resize(size) => {
                recorder.resize(size)?;
                target.peer.set_window(size, &mut target.pending);
            }
            Incoming::Command(_) | Incoming::TerminalType(_) | Incoming::Changed(_) => {}
        }
    }
    Ok(())
}

fn from_target<T, C, R>(
    input: &[u8],
    target: &mut Leg<T>,
    client: &mut Leg<C>,
    recorder: &mut R,
    summary: &mut RelaySummary,
) -> Result<(), RelayError>
where
    R: Recorder + ?Sized,
{
    let mut incoming = Vec::new();
    target
        .peer
        .receive(input, &mut target.pending, &mut incoming)
        .map_err(|error| protocol(Side::Target, error))?;
    for event in incoming {
        match event {
            Incoming::Data(data) => {
                recorder.output(&data)?;
                summary.target_to_client += data.len() as u64;
                codec::escape_data(&data, &mut client.pending);
            }
            Incoming::Changed(Change::Remote {
                option: option @ (ECHO | SGA),
                enabled,
            }) => {
                mirror(client, option, enabled);
            }
            Incoming::Command(_)
            | Incoming::Changed(_)
            | Incoming::Resize(_)
            | Incoming::TerminalType(_) => {}
        }
    }
    Ok(())
}

/// `data` without its first byte when `skip` is set and that byte is LF or NUL; `skip` is
/// cleared by the first byte seen.
fn skip_first_line_end<'a>(data: &'a [u8], skip: &mut bool) -> &'a [u8] {
    match data.first() {
        Some(first) if std::mem::take(skip) && matches!(first, b'\n' | 0) => &data[1..],
        _ => data,
    }
}

/// Makes the gateway do towards the client what the target does towards the gateway.
fn mirror<C>(client: &mut Leg<C>, option: u8, enabled: bool) {
    let wish = if enabled {
        Wish::EnableLocal
    } else {
        Wish::DisableLocal
    };
    client.peer.request(wish, option, &mut client.pending);
}

fn protocol(side: Side, error: ProtocolError) -> RelayError {
    RelayError::Protocol { side, error }
}

fn finish(peer: &Peer, side: Side) {
    if let Err(error) = peer.finish() {
        tracing::debug!(%side, %error, "closed inside a telnet command");
    }
}

pub(crate) fn gone(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
    )
}
