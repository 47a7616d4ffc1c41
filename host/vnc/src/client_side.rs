//! The gateway as a VNC server towards the user's viewer: [`accept`] speaks RFB 3.8 (or 3.7)
//! and offers VeNCrypt (security type 19) with the sub-types X509Plain (262) and TLSPlain
//! (259): TLS with the `rustls::ServerConfig` the caller provides, then the user's gateway
//! user name and password in the clear inside TLS. Security type None is offered only when
//! the caller sets [`ClientSideOptions::allow_none`] (tests); it is off by default.
//!
//! The crate does not judge the login: `accept` returns a [`PendingClient`] holding the
//! credentials (the user name may carry the target in-band, `alice@root@server1`; the crate
//! just returns the text), the caller authenticates and authorizes, dials the target, and
//! then calls [`PendingClient::allow`] (SecurityResult OK, ClientInit) or
//! [`PendingClient::refuse`] (SecurityResult failed with a reason the viewer shows).
//!
//! Nothing here times out: a viewer that stops talking stalls `accept` and `allow`, so the
//! caller wraps them in `tokio::time::timeout` (as it does the target's dial).
//!
//! rustls cannot do anonymous TLS, so TLSPlain here is TLS with the gateway's certificate;
//! viewers that insist on anonymous cipher suites for TLSPlain (TigerVNC does) must choose
//! X509Plain, which is offered first.

use crate::auth::Password;
use crate::codec::{ProtocolVersion, security};
use crate::error::{ClientError, ProtocolError};
use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The longest user name or password accepted from VeNCrypt Plain.
pub const MAX_CREDENTIAL: u32 = 1024;

/// What the gateway offers the user's viewer.
#[derive(Debug, Clone)]
pub struct ClientSideOptions {
    /// TLS for VeNCrypt; `None` means VeNCrypt is not offered.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// VeNCrypt sub-types offered, in order of preference. Default: X509Plain, TLSPlain.
    pub vencrypt_subtypes: Vec<u32>,
    /// Offer security type None (no login at all). Only for tests. Default: false.
    pub allow_none: bool,
}

impl Default for ClientSideOptions {
    fn default() -> Self {
        ClientSideOptions {
            tls: None,
            vencrypt_subtypes: vec![security::X509_PLAIN, security::TLS_PLAIN],
            allow_none: false,
        }
    }
}

impl ClientSideOptions {
    /// VeNCrypt with `tls`, the default sub-types, no None.
    pub fn vencrypt(tls: Arc<rustls::ServerConfig>) -> ClientSideOptions {
        ClientSideOptions {
            tls: Some(tls),
            ..ClientSideOptions::default()
        }
    }

    fn offered(&self) -> Vec<u8> {
        let mut offered = Vec::new();
        if self.tls.is_some() && !self.vencrypt_subtypes.is_empty() {
            offered.push(security::VENCRYPT);
        }
        if self.allow_none {
            offered.push(security::NONE);
        }
        offered
    }
}

/// The user's plain login from VeNCrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// As typed; may carry the target (`alice@root@server1`).
    pub username: String,
    pub password: Password,
}

/// How the viewer secured its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSecurity {
    /// Security type None (only when allowed).
    None,
    /// VeNCrypt with this sub-type.
    VeNCrypt(u32),
}

/// The viewer's stream: plain TCP (security None) or TLS (VeNCrypt).
pub enum ClientStream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A viewer that has presented its login and waits for the SecurityResult.
pub struct PendingClient<S> {
    stream: ClientStream<S>,
    version: ProtocolVersion,
    security: ClientSecurity,
    credentials: Option<PlainCredentials>,
}

impl<S> std::fmt::Debug for PendingClient<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingClient")
            .field("version", &self.version)
            .field("security", &self.security)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// A viewer past the security handshake and ClientInit, ready for the relay.
pub struct AcceptedClient<S> {
    pub(crate) stream: ClientStream<S>,
    pub(crate) buffer: BytesMut,
    shared: bool,
    version: ProtocolVersion,
}

impl<S> std::fmt::Debug for AcceptedClient<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptedClient")
            .field("shared", &self.shared)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl<S> AcceptedClient<S> {
    /// The viewer's ClientInit shared flag.
    pub fn shared(&self) -> bool {
        self.shared
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }
}

async fn write_reason<W: AsyncWrite + Unpin>(stream: &mut W, reason: &str) -> io::Result<()> {
    let reason = &reason.as_bytes()[..reason.len().min(crate::codec::limits::MAX_REASON as usize)];
    stream.write_u32(reason.len() as u32).await?;
    stream.write_all(reason).await
}

/// Sends a failed SecurityResult (with the reason from RFB 3.8 on) and flushes.
async fn security_failed<W: AsyncWrite + Unpin>(
    stream: &mut W,
    version: ProtocolVersion,
    reason: &str,
) -> io::Result<()> {
    stream.write_u32(1).await?;
    if version >= ProtocolVersion::V3_8 {
        write_reason(stream, reason).await?;
    }
    stream.flush().await
}

/// Runs the server side of the RFB handshake up to the login. Nothing is dialed and nothing is
/// decided here; see the module documentation.
pub async fn accept<S>(
    mut stream: S,
    options: &ClientSideOptions,
) -> Result<PendingClient<S>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let offered = options.offered();
    if offered.is_empty() {
        return Err(ClientError::NothingToOffer);
    }
    stream.write_all(ProtocolVersion::V3_8.message()).await?;
    stream.flush().await?;
    let mut version = [0u8; 12];
    stream.read_exact(&mut version).await?;
    let version = ProtocolVersion::parse(&version)?;
    if version == ProtocolVersion::V3_3 {
        stream.write_u32(u32::from(security::INVALID)).await?;
        write_reason(&mut stream, "this gateway requires rfb 3.7 or later").await?;
        stream.flush().await?;
        return Err(ClientError::ClientTooOld);
    }
    stream.write_u8(offered.len() as u8).await?;
    stream.write_all(&offered).await?;
    stream.flush().await?;
    let chosen = stream.read_u8().await?;
    if !offered.contains(&chosen) {
        security_failed(&mut stream, version, "security type not offered").await?;
        return Err(ClientError::SecurityNotOffered(chosen));
    }
    if chosen == security::NONE {
        return Ok(PendingClient {
            stream: ClientStream::Plain(stream),
            version,
            security: ClientSecurity::None,
            credentials: None,
        });
    }
    // VeNCrypt: version 0.2, the sub-types, then TLS.
    let Some(tls) = options.tls.clone() else {
        return Err(ClientError::NothingToOffer);
    };
    stream.write_all(&[0, 2]).await?;
    stream.flush().await?;
    let mut client_version = [0u8; 2];
    stream.read_exact(&mut client_version).await?;
    if client_version != [0, 2] {
        stream.write_u8(1).await?;
        stream.flush().await?;
        return Err(ClientError::VeNCryptVersion {
            major: client_version[0],
            minor: client_version[1],
        });
    }
    let subtypes = &options.vencrypt_subtypes[..options.vencrypt_subtypes.len().min(255)];
    stream.write_u8(0).await?;
    stream.write_u8(subtypes.len() as u8).await?;
    for subtype in subtypes {
        stream.write_u32(*subtype).await?;
    }
    stream.flush().await?;
    let subtype = stream.read_u32().await?;
    let plain = [security::X509_PLAIN, security::TLS_PLAIN];
    if !subtypes.contains(&subtype) || !plain.contains(&subtype) {
        stream.write_u8(0).await?;
        stream.flush().await?;
        return Err(ClientError::SubtypeNotOffered(subtype));
    }
    stream.write_u8(1).await?;
    stream.flush().await?;
    let mut tls = TlsAcceptor::from(tls)
        .accept(stream)
        .await
        .map_err(ClientError::Tls)?;
    let username_length = tls.read_u32().await?;
    let password_length = tls.read_u32().await?;
    for (what, length) in [
        ("user name", username_length),
        ("password", password_length),
    ] {
        crate::codec::check_length(what, length, MAX_CREDENTIAL)?;
    }
    let mut username = vec![0u8; username_length as usize];
    tls.read_exact(&mut username).await?;
    let mut password = zeroize::Zeroizing::new(vec![0u8; password_length as usize]);
    tls.read_exact(&mut password).await?;
    let username = String::from_utf8(username).map_err(|_| ProtocolError::NotUtf8 {
        what: "the user name",
    })?;
    let password = std::str::from_utf8(&password).map_err(|_| ProtocolError::NotUtf8 {
        what: "the password",
    })?;
    Ok(PendingClient {
        stream: ClientStream::Tls(Box::new(tls)),
        version,
        security: ClientSecurity::VeNCrypt(subtype),
        credentials: Some(PlainCredentials {
            username,
            password: Password::new(password),
        }),
    })
}

impl<S> PendingClient<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The login the viewer sent (`None` for security type None).
    pub fn credentials(&self) -> Option<&PlainCredentials> {
        self.credentials.as_ref()
    }

    pub fn security(&self) -> ClientSecurity {
        self.security
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Lets the viewer in: SecurityResult OK, then its ClientInit. The credentials are
    /// dropped (zeroed) here.
    pub async fn allow(self) -> Result<AcceptedClient<S>, ClientError> {
        let PendingClient {
            mut stream,
            version,
            security,
            credentials,
        } = self;
        drop(credentials);
        if version >= ProtocolVersion::V3_8 || security != ClientSecurity::None {
            stream.write_u32(0).await?;
            stream.flush().await?;
        }
        let shared = stream.read_u8().await? != 0;
        Ok(AcceptedClient {
            stream,
            buffer: BytesMut::with_capacity(4096),
            shared,
            version,
        })
    }

    /// Turns the viewer away with `reason` (shown by RFB 3.8 viewers; one line, no secrets)
    /// and closes the connection.
    pub async fn refuse(self, reason: &str) -> Result<(), ClientError> {
        let PendingClient {
            mut stream,
            version,
            security,
            ..
        } = self;
        if version >= ProtocolVersion::V3_8 || security != ClientSecurity::None {
            security_failed(&mut stream, version, reason).await?;
        }
        let _ = stream.shutdown().await;
        Ok(())
    }
}
