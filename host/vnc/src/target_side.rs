//! The gateway as a VNC client of the target: [`connect`] runs the RFB handshake on a
//! connected stream (RFB 3.8, or 3.7/3.3 if that is what the target speaks), authenticates
//! with security type None or VNC Authentication (the vault's password), reads the
//! ServerInit, and sets the target's pixel format to [`PixelFormat::TARGET`] before anything
//! else is asked, so that every update the target sends (and so every recording) is in that
//! one format with no update in flight in another.
//!
//! Dialing (TCP, timeouts) is the caller's: wrap `connect` in `tokio::time::timeout`.
//! [`TargetConnection`] is also a small VNC client on its own (send requests, read parsed
//! messages), which the tests use against a real server.

use crate::auth::{Password, vnc_auth_response};
use crate::codec::{
    ClientMessage, PixelFormat, ProtocolVersion, ServerContext, ServerInit, ServerMessage, limits,
    security,
};
use crate::error::{ProtocolError, TargetError};
use crate::framing::{ReadError, read_message};
use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How to open the session on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetOptions {
    /// ClientInit's shared flag: leave other viewers of the target connected. Default: true
    /// (the gateway does not know the user's ClientInit yet when it dials).
    pub shared: bool,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions { shared: true }
    }
}

/// An open VNC session on the target, after ServerInit.
pub struct TargetConnection<S> {
    pub(crate) stream: S,
    pub(crate) buffer: BytesMut,
    pub(crate) context: ServerContext,
    server_init: ServerInit,
    version: ProtocolVersion,
    security_type: u8,
}

impl<S> std::fmt::Debug for TargetConnection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetConnection")
            .field("server_init", &self.server_init)
            .field("version", &self.version)
            .field("security_type", &self.security_type)
            .finish_non_exhaustive()
    }
}

/// Runs the client side of the RFB handshake on `stream`. `password` is used when the target
/// asks for VNC Authentication (and preferred when it offers both that and None).
pub async fn connect<S>(
    mut stream: S,
    password: Option<&Password>,
    options: &TargetOptions,
) -> Result<TargetConnection<S>, TargetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut version = [0u8; 12];
    stream.read_exact(&mut version).await?;
    let version = ProtocolVersion::parse(&version)?;
    stream.write_all(version.message()).await?;
    stream.flush().await?;

    let security_type = match version {
        ProtocolVersion::V3_3 => {
            let chosen = stream.read_u32().await?;
            if chosen == u32::from(security::INVALID) {
                return Err(TargetError::Refused {
                    reason: read_reason(&mut stream).await?,
                });
            }
            let chosen = u8::try_from(chosen).unwrap_or(u8::MAX);
            if chosen != security::NONE && chosen != security::VNC_AUTH {
                return Err(TargetError::NoSupportedSecurity {
                    offered: vec![chosen],
                });
            }
            chosen
        }
        ProtocolVersion::V3_7 | ProtocolVersion::V3_8 => {
            let count = stream.read_u8().await?;
            if count == 0 {
                return Err(TargetError::Refused {
                    reason: read_reason(&mut stream).await?,
                });
            }
            let mut offered = vec![0u8; usize::from(count)];
            stream.read_exact(&mut offered).await?;
            let chosen = if password.is_some() && offered.contains(&security::VNC_AUTH) {
                security::VNC_AUTH
            } else if offered.contains(&security::NONE) {
                security::NONE
            } else if offered.contains(&security::VNC_AUTH) {
                return Err(TargetError::PasswordRequired);
            } else {
                return Err(TargetError::NoSupportedSecurity { offered });
            };
            stream.write_u8(chosen).await?;
            stream.flush().await?;
            chosen
        }
    };

    if security_type == security::VNC_AUTH {
        let password = password.ok_or(TargetError::PasswordRequired)?;
        let mut challenge = [0u8; 16];
        stream.read_exact(&mut challenge).await?;
        stream
            .write_all(&vnc_auth_response(password, &challenge))
            .await?;
        stream.flush().await?;
    }
    // RFB 3.8 sends a SecurityResult for every type; 3.3 and 3.7 not for None.
    if security_type == security::VNC_AUTH || version == ProtocolVersion::V3_8 {
        let status = stream.read_u32().await?;
        if status != 0 {
            let reason = if version == ProtocolVersion::V3_8 {
                Some(read_reason(&mut stream).await?)
            } else {
                None
            };
            return Err(TargetError::AuthenticationFailed { reason });
        }
    }

    stream.write_u8(u8::from(options.shared)).await?;
    stream.flush().await?;
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let server_init = match read_message(&mut stream, &mut buffer, ServerInit::parse).await {
        Ok(Some((init, length))) => {
            let _ = buffer.split_to(length);
            init
        }
        Ok(None) => {
            return Err(TargetError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the target closed the connection before its server init",
            )));
        }
        Err(error) => return Err(read_error(error)),
    };

    let mut out = Vec::new();
    ClientMessage::SetPixelFormat(PixelFormat::TARGET).encode(&mut out);
    ClientMessage::SetEncodings(vec![crate::codec::encoding::RAW]).encode(&mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    tracing::debug!(
        width = server_init.width,
        height = server_init.height,
        ?version,
        security_type,
        "vnc target session open"
    );
    Ok(TargetConnection {
        stream,
        buffer,
        context: ServerContext {
            pixel_format: PixelFormat::TARGET,
            width: server_init.width,
            height: server_init.height,
        },
        server_init,
        version,
        security_type,
    })
}

/// Reads an RFB reason string (u32 length, then text), bounded.
pub(crate) async fn read_reason<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<String, TargetError> {
    let length = stream.read_u32().await?;
    if length > limits::MAX_REASON {
        return Err(ProtocolError::TooLong {
            what: "reason",
            length: u64::from(length),
            limit: u64::from(limits::MAX_REASON),
        }
        .into());
    }
    let mut reason = vec![0u8; length as usize];
    stream.read_exact(&mut reason).await?;
    Ok(String::from_utf8_lossy(&reason).trim_end().to_string())
}

fn read_error(error: ReadError) -> TargetError {
    match error {
        ReadError::Io(error) => TargetError::Io(error),
        ReadError::Protocol(error) => TargetError::Protocol(error),
    }
}

impl<S> TargetConnection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The target's ServerInit (its natural pixel format; the session uses
    /// [`PixelFormat::TARGET`], see [`TargetConnection::context`]).
    pub fn server_init(&self) -> &ServerInit {
        &self.server_init
    }

    /// The pixel format and current desktop size updates are framed with.
    pub fn context(&self) -> &ServerContext {
        &self.context
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The security type used: [`security::NONE`] or [`security::VNC_AUTH`].
    pub fn security_type(&self) -> u8 {
        self.security_type
    }

    /// Sends one message to the target. A SetPixelFormat would desynchronise the framing
    /// and is refused.
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), TargetError> {
        if let ClientMessage::SetPixelFormat(_) = message {
            return Err(ProtocolError::Unexpected(
                "the target's pixel format is fixed by the gateway".to_string(),
            )
            .into());
        }
        let mut out = Vec::new();
        message.encode(&mut out);
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The next message from the target, or `None` when it closed the connection.
    pub async fn next_message(&mut self) -> Result<Option<ServerMessage>, TargetError> {
        let context = self.context;
        match read_message(&mut self.stream, &mut self.buffer, |buf| {
            ServerMessage::parse(buf, &context)
        })
        .await
        {
            Ok(Some((message, length))) => {
                let _ = self.buffer.split_to(length);
                self.context.apply(&message);
                Ok(Some(message))
            }
            Ok(None) => Ok(None),
            Err(error) => Err(read_error(error)),
        }
    }
}
