//! Cutting a byte stream into whole protocol messages with a bounded buffer: X.224/TPKT and
//! fast-path PDUs, CredSSP `TSRequest`s (DER), and fixed-size messages.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest message accepted. A TPKT length is 16 bits and a fast-path length 15; CredSSP
/// messages for NTLM are a few KiB.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// What kind of message is expected next.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// A slow-path (TPKT) or fast-path RDP PDU.
    Rdp,
    /// A CredSSP `TSRequest`.
    TsRequest,
    /// Exactly this many bytes (the Early User Authorization Result is 4).
    Fixed(usize),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error("message of {0} bytes is larger than the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("undecodable message header: {0}")]
    Undecodable(String),
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A stream with a read buffer that never holds more than one message and one read chunk.
pub(crate) struct Framed<S> {
    stream: S,
    buffer: BytesMut,
}

impl<S> Framed<S> {
    pub fn new(stream: S) -> Self {
        Framed {
            stream,
            buffer: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    pub fn with_buffer(stream: S, buffer: BytesMut) -> Self {
        Framed { stream, buffer }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream and whatever was read past the last message.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.buffer)
    }

    /// Bytes read but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The length of the first message in the buffer, if it is complete.
    fn complete(&self, expect: Expect) -> Result<Option<usize>, FrameError> {
        let length = match expect {
            Expect::Fixed(n) => Some(n),
            Expect::Rdp => match ironrdp_pdu::find_size(&self.buffer) {
                Ok(Some(info)) => Some(info.length),
                Ok(None) => None,
                Err(e) => return Err(FrameError::Undecodable(e.to_string())),
            },
            Expect::TsRequest => {
                match sspi::credssp::TsRequest::read_length(self.buffer.as_ref()) {
                    Ok(length) => Some(length),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
                    Err(e) => return Err(FrameError::Undecodable(e.to_string())),
                }
            }
        };
        match length {
            Some(0) => Err(FrameError::Undecodable("zero-length message".into())),
            Some(n) if n > MAX_MESSAGE => Err(FrameError::TooLarge(n)),
            Some(n) if n <= self.buffer.len() => Ok(Some(n)),
            _ => Ok(None),
        }
    }

    /// Whether a whole message is already buffered (so the next read will not wait).
    pub fn has_message(&self, expect: Expect) -> bool {
        matches!(self.complete(expect), Ok(Some(_)))
    }
}

impl<S: AsyncRead + Unpin> Framed<S> {
    /// Reads the next whole message. `Closed` means the peer closed between messages.
    pub async fn read_message(&mut self, expect: Expect) -> Result<Bytes, FrameError> {
        loop {
            if let Some(length) = self.complete(expect)? {
                return Ok(self.buffer.split_to(length).freeze());
            }
            if self.buffer.len() > MAX_MESSAGE {
                return Err(FrameError::TooLarge(self.buffer.len()));
            }
            self.buffer.reserve(READ_CHUNK);
            let read = read_or_eof(&mut self.stream, &mut self.buffer).await?;
            if read == 0 {
                return Err(if self.buffer.is_empty() {
                    FrameError::Closed
                } else {
                    FrameError::Truncated
                });
            }
        }
    }

    /// Reads whatever is available (at least one byte), for relaying undecodable traffic raw.
    pub async fn read_raw(&mut self) -> Result<Bytes, FrameError> {
        if self.buffer.is_empty() {
            self.buffer.reserve(READ_CHUNK);
            if read_or_eof(&mut self.stream, &mut self.buffer).await? == 0 {
                return Err(FrameError::Closed);
            }
        }
        Ok(self.buffer.split().freeze())
    }
}

/// A read where a peer that closed without TLS `close_notify` (RDP clients usually just close the
/// socket) counts as an end of stream.
async fn read_or_eof<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> std::io::Result<usize> {
    match stream.read_buf(buffer).await {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_tpkt_and_fast_path_messages_across_reads() {
        // A TPKT header announcing 7 bytes, then a fast-path PDU of 3 bytes, delivered in pieces.
        let (mut writer, reader) = tokio::io::duplex(4);
        let sender = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            writer
                .write_all(&[3, 0, 0, 7, 0xaa, 0xbb, 0xcc, 0x00, 0x03, 0x01])
                .await
                .unwrap();
        });
        let mut framed = Framed::new(reader);
        let first = framed.read_message(Expect::Rdp).await.unwrap();
        assert_eq!(first.as_ref(), &[3, 0, 0, 7, 0xaa, 0xbb, 0xcc]);
        let second = framed.read_message(Expect::Rdp).await.unwrap();
        assert_eq!(second.as_ref(), &[0x00, 0x03, 0x01]);
        sender.await.unwrap();
        assert!(matches!(
            framed.read_message(Expect::Rdp).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn refuses_garbage_and_truncation() {
        let mut framed = Framed::new(&[0x01u8, 0x02][..]);
        assert!(matches!(
            framed.read_message(Expect::Rdp).await,
            Err(FrameError::Undecodable(_))
        ));
        let mut framed = Framed::new(&[3u8, 0, 0, 9, 1][..]);
        assert!(matches!(
            framed.read_message(Expect::Rdp).await,
            Err(FrameError::Truncated)
        ));
    }
}
