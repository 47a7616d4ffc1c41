//! Reading whole messages off a stream into a bounded buffer: read, try the parser, and when
//! it says how many bytes it needs, read at least that many before trying again. The buffer
//! never grows past what the parser's limits allow for one message.

use crate::codec::Parsed;
use crate::error::ProtocolError;
use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The smallest read.
const READ_CHUNK: usize = 16 * 1024;

pub(crate) enum ReadError {
    Io(io::Error),
    Protocol(ProtocolError),
}

/// The next message and its length (its bytes are still at the start of `buffer`), or `None`
/// when the peer closed the stream between messages.
pub(crate) async fn read_message<R, T>(
    reader: &mut R,
    buffer: &mut BytesMut,
    mut parse: impl FnMut(&[u8]) -> Result<Parsed<T>, ProtocolError>,
) -> Result<Option<(T, usize)>, ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut needed = 1;
    loop {
        if buffer.len() >= needed {
            match parse(buffer).map_err(ReadError::Protocol)? {
                Parsed::Complete { message, length } => return Ok(Some((message, length))),
                Parsed::Incomplete { needed: more } => needed = more.max(buffer.len() + 1),
            }
        }
        buffer.reserve((needed - buffer.len()).max(READ_CHUNK));
        let read = match reader.read_buf(buffer).await {
            Ok(read) => read,
            // Viewers close the socket without a TLS close_notify; between messages that is an
            // ordinary end of the session (nothing is lost: every message is whole).
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(error) => return Err(ReadError::Io(error)),
        };
        if read == 0 {
            if buffer.is_empty() {
                return Ok(None);
            }
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream ended inside a message",
            )));
        }
    }
}
