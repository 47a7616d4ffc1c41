//! The relay after the handshakes: the viewer gets the target's ServerInit (the desktop name
//! prefixed, the pixel format the gateway set on the target), then messages flow both ways,
//! each parsed whole, shown to the [`Recorder`], and written on. Memory is bounded by the
//! parser's limits (one message per direction at a time); a slow side slows the other down
//! (a write completes before the next read), nothing queues.
//!
//! Steering, so that recordings decode:
//! - SetEncodings is rewritten to the client's encodings that are in
//!   [`encoding::RELAYED`] (Hextile, CopyRect, Raw, DesktopSize, Cursor), in its order. The
//!   target can then only send what this crate frames and decodes; anything else from the
//!   target ends the session with a typed error.
//! - The target's pixel format is fixed ([`PixelFormat::TARGET`], set by
//!   [`crate::target_side::connect`]). A viewer's SetPixelFormat is not forwarded: the relay
//!   converts each update to the viewer's format (true colour, 8/16/32 bits) and sends Hextile
//!   rectangles as Raw when converting. Viewers that keep the default format (most do) get
//!   the target's bytes unchanged. Colour-mapped formats are refused.
//!
//! The recorder sees what the target was sent and what it sent, in the target's format: the
//! ServerInit first ([`RecordedKind::Start`]), then every forwarded message. A viewer's
//! SetPixelFormat is not recorded (it never reaches the target).

use crate::client_side::AcceptedClient;
use crate::codec::{
    ClientMessage, FramebufferUpdate, PixelFormat, Rectangle, RectanglePayload, ServerInit,
    ServerMessage, encoding,
};
use crate::error::{ProtocolError, RecordError, RelayError};
use crate::framing::{ReadError, read_message};
use crate::hextile;
use crate::target_side::TargetConnection;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// One relayed event as the recorder sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordedEvent<'a> {
    /// Time since the relay started.
    pub at: Duration,
    pub kind: RecordedKind<'a>,
    /// A message from the target as its bytes came (what `kind` was parsed from): a recorder
    /// may keep these rather than encode the message again (a reference count, no copy).
    pub raw: Option<&'a bytes::Bytes>,
}

#[derive(Debug, Clone, Copy)]
pub enum RecordedKind<'a> {
    /// The session's ServerInit as the target sent it, with the pixel format the target was
    /// set to (every later update is in it). Always first.
    Start(&'a ServerInit),
    /// A message from the target, as forwarded (before any conversion for the viewer).
    FromTarget(&'a ServerMessage),
    /// A message from the viewer, as forwarded to the target (SetEncodings after steering).
    /// Key events, pointer events and cut text are here.
    FromClient(&'a ClientMessage),
    /// The desktop size changed (a DesktopSize rectangle in the update just recorded).
    DesktopResized { width: u16, height: u16 },
}

/// Receives every relayed event in order per direction. Called on the data path: it must
/// write through a bounded buffer and not block for long. An error ends the session.
pub trait Recorder: Send + Sync {
    fn record(&self, event: &RecordedEvent<'_>) -> Result<(), RecordError>;
}

/// How the relay treats the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOptions {
    /// Put before the target's desktop name in the viewer's ServerInit (e.g. `gatehouse: `).
    pub name_prefix: String,
    /// Forward the viewer's clipboard to the target. Default: true.
    pub clipboard_to_target: bool,
    /// Forward the target's clipboard to the viewer. Default: true.
    pub clipboard_to_client: bool,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            name_prefix: String::new(),
            clipboard_to_target: true,
            clipboard_to_client: true,
        }
    }
}

/// Counts of one relay, however it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelaySummary {
    pub bytes_from_client: u64,
    pub bytes_from_target: u64,
    pub messages_from_client: u64,
    pub messages_from_target: u64,
    pub framebuffer_updates: u64,
    /// Updates converted to the viewer's pixel format.
    pub converted_updates: u64,
    pub key_events: u64,
    /// Encodings removed from the viewer's SetEncodings by the steering.
    pub encodings_removed: u64,
    /// Cut texts not forwarded because of [`RelayOptions`].
    pub cut_texts_dropped: u64,
}

/// How a relay ended.
#[derive(Debug)]
pub struct RelayOutcome {
    pub summary: RelaySummary,
    /// `None` when a side closed its connection cleanly (or `stop` fired).
    pub error: Option<RelayError>,
    /// The `stop` future completed and the relay dropped both connections.
    pub stopped: bool,
}

#[derive(Default)]
struct Upstream {
    bytes: u64,
    messages: u64,
    key_events: u64,
    encodings_removed: u64,
    cut_texts_dropped: u64,
}

#[derive(Default)]
struct Downstream {
    bytes: u64,
    messages: u64,
    updates: u64,
    converted: u64,
    cut_texts_dropped: u64,
}

fn io_error(side: &'static str, error: std::io::Error) -> RelayError {
    RelayError::Io {
        side,
        reason: error.to_string(),
    }
}

fn read_failure(side: &'static str, error: ReadError) -> RelayError {
    match error {
        ReadError::Io(error) => io_error(side, error),
        ReadError::Protocol(error) => RelayError::Protocol { side, error },
    }
}

/// Relays between the viewer and the target until one closes, an error, or `stop` completes
/// (then both connections are dropped). See the module documentation.
pub async fn relay<C, T>(
    client: AcceptedClient<C>,
    target: TargetConnection<T>,
    recorder: &dyn Recorder,
    options: &RelayOptions,
    stop: impl Future<Output = ()>,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let server_init = target.server_init().clone();
    let TargetConnection {
        stream: target_stream,
        buffer: mut target_buffer,
        context,
        ..
    } = target;
    let AcceptedClient {
        stream: client_stream,
        buffer: mut client_buffer,
        ..
    } = client;
    let (mut client_read, mut client_write) = tokio::io::split(client_stream);
    let (mut target_read, mut target_write) = tokio::io::split(target_stream);

    let recorded_init = ServerInit {
        pixel_format: context.pixel_format,
        ..server_init.clone()
    };
    let client_init = ServerInit {
        pixel_format: context.pixel_format,
        name: format!("{}{}", options.name_prefix, server_init.name),
        ..server_init
    };
    let client_format = Mutex::new(context.pixel_format);
    let mut up = Upstream::default();
    let mut down = Downstream::default();

    let opening = async {
        recorder.record(&RecordedEvent {
            at: started.elapsed(),
            kind: RecordedKind::Start(&recorded_init),
            raw: None,
        })?;
        let mut out = Vec::new();
        client_init.encode(&mut out);
        client_write
            .write_all(&out)
            .await
            .map_err(|e| io_error("client", e))?;
        client_write
            .flush()
            .await
            .map_err(|e| io_error("client", e))?;
        Ok::<(), RelayError>(())
    };
    if let Err(error) = opening.await {
        return RelayOutcome {
            summary: RelaySummary::default(),
            error: Some(error),
            stopped: false,
        };
    }

    let (error, stopped) = {
        let upstream = async {
            let mut out = Vec::new();
            loop {
                let Some((message, length)) =
                    read_message(&mut client_read, &mut client_buffer, ClientMessage::parse)
                        .await
                        .map_err(|e| read_failure("client", e))?
                else {
                    return Ok(());
                };
                let _ = client_buffer.split_to(length);
                up.bytes += length as u64;
                up.messages += 1;
                let forward = match message {
                    ClientMessage::SetPixelFormat(format) => {
                        format.validate().map_err(|error| RelayError::Protocol {
                            side: "client",
                            error,
                        })?;
                        *client_format.lock().unwrap_or_else(|p| p.into_inner()) = format;
                        continue;
                    }
                    ClientMessage::SetEncodings(list) => {
                        let steered = steer_encodings(&list);
                        up.encodings_removed += (list.len() - steered.len()) as u64;
                        ClientMessage::SetEncodings(steered)
                    }
                    ClientMessage::ClientCutText(_) if !options.clipboard_to_target => {
                        up.cut_texts_dropped += 1;
                        continue;
                    }
                    ClientMessage::KeyEvent { .. } => {
                        up.key_events += 1;
                        message
                    }
                    message => message,
                };
                recorder.record(&RecordedEvent {
                    at: started.elapsed(),
                    kind: RecordedKind::FromClient(&forward),
                    raw: None,
                })?;
                out.clear();
                forward.encode(&mut out);
                target_write
                    .write_all(&out)
                    .await
                    .map_err(|e| io_error("target", e))?;
                target_write
                    .flush()
                    .await
                    .map_err(|e| io_error("target", e))?;
            }
        };
        let downstream = async {
            let mut context = context;
            let mut out = Vec::new();
            loop {
                let current = context;
                let Some((message, length)) =
                    read_message(&mut target_read, &mut target_buffer, |buf| {
                        ServerMessage::parse(buf, &current)
                    })
                    .await
                    .map_err(|e| read_failure("target", e))?
                else {
                    return Ok(());
                };
                let bytes = target_buffer.split_to(length).freeze();
                down.bytes += length as u64;
                down.messages += 1;
                if let ServerMessage::ServerCutText(_) = message
                    && !options.clipboard_to_client
                {
                    down.cut_texts_dropped += 1;
                    continue;
                }
                recorder.record(&RecordedEvent {
                    at: started.elapsed(),
                    kind: RecordedKind::FromTarget(&message),
                    raw: Some(&bytes),
                })?;
                context.apply(&message);
                let mut converted = None;
                if let ServerMessage::FramebufferUpdate(update) = &message {
                    down.updates += 1;
                    if (context.width, context.height) != (current.width, current.height) {
                        recorder.record(&RecordedEvent {
                            at: started.elapsed(),
                            kind: RecordedKind::DesktopResized {
                                width: context.width,
                                height: context.height,
                            },
                            raw: None,
                        })?;
                    }
                    let wanted = *client_format.lock().unwrap_or_else(|p| p.into_inner());
                    if wanted != current.pixel_format {
                        let update = convert_update(update, &current.pixel_format, &wanted)
                            .map_err(|error| RelayError::Protocol {
                                side: "target",
                                error,
                            })?;
                        out.clear();
                        update.encode(&mut out);
                        converted = Some(&out);
                        down.converted += 1;
                    }
                }
                let to_send: &[u8] = match converted {
                    Some(out) => out,
                    None => &bytes,
                };
                client_write
                    .write_all(to_send)
                    .await
                    .map_err(|e| io_error("client", e))?;
                client_write
                    .flush()
                    .await
                    .map_err(|e| io_error("client", e))?;
            }
        };
        tokio::pin!(upstream, downstream, stop);
        tokio::select! {
            result = &mut upstream => (result.err(), false),
            result = &mut downstream => (result.err(), false),
            () = &mut stop => (None, true),
        }
    };
    let _ = client_write.shutdown().await;
    let _ = target_write.shutdown().await;
    let summary = RelaySummary {
        bytes_from_client: up.bytes,
        bytes_from_target: down.bytes,
        messages_from_client: up.messages,
        messages_from_target: down.messages,
        framebuffer_updates: down.updates,
        converted_updates: down.converted,
        key_events: up.key_events,
        encodings_removed: up.encodings_removed,
        cut_texts_dropped: up.cut_texts_dropped + down.cut_texts_dropped,
    };
    if let Some(error) = &error {
        tracing::info!(%error, "vnc relay ended");
    }
    RelayOutcome {
        summary,
        error,
        stopped,
    }
}

/// The viewer's encodings the relay lets through, in the viewer's order, without repeats.
pub fn steer_encodings(requested: &[i32]) -> Vec<i32> {
    let mut steered = Vec::new();
    for encoding in requested {
        if encoding::RELAYED.contains(encoding) && !steered.contains(encoding) {
            steered.push(*encoding);
        }
    }
    steered
}

fn convert_pixels(bytes: &[u8], from: &PixelFormat, to: &PixelFormat) -> Vec<u8> {
    let bpp = from.bytes_per_pixel();
    let mut out = Vec::with_capacity(bytes.len() / bpp.max(1) * to.bytes_per_pixel());
    for pixel in bytes.chunks_exact(bpp.max(1)) {
        to.write_pixel(to.pixel(from.rgb(from.read_pixel(pixel))), &mut out);
    }
    out
}

/// `update` with its pixels in `to` instead of `from`; Hextile rectangles become Raw.
pub fn convert_update(
    update: &FramebufferUpdate,
    from: &PixelFormat,
    to: &PixelFormat,
) -> Result<FramebufferUpdate, ProtocolError> {
    from.validate()?;
    to.validate()?;
    let mut rectangles = Vec::with_capacity(update.rectangles.len());
    for rectangle in &update.rectangles {
        let payload = match &rectangle.payload {
            RectanglePayload::Raw(bytes) => RectanglePayload::Raw(convert_pixels(bytes, from, to)),
            RectanglePayload::Hextile(data) => {
                let values = hextile::pixels(data, rectangle.width, rectangle.height, from)?;
                let mut out = Vec::with_capacity(values.len() * to.bytes_per_pixel());
                for value in values {
                    to.write_pixel(to.pixel(from.rgb(value)), &mut out);
                }
                RectanglePayload::Raw(out)
            }
            RectanglePayload::Cursor { pixels, mask } => RectanglePayload::Cursor {
                pixels: convert_pixels(pixels, from, to),
                mask: mask.clone(),
            },
            other => other.clone(),
        };
        rectangles.push(Rectangle {
            payload,
            ..*rectangle
        });
    }
    Ok(FramebufferUpdate { rectangles })
}
