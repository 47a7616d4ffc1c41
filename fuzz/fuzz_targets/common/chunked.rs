//! An `AsyncRead` over a byte slice that returns at most `piece` bytes per read, to check that a
//! framing gives the same messages whatever the TCP segmentation.
#![allow(dead_code)]

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

pub struct Chunked<'a> {
    data: &'a [u8],
    piece: usize,
}

impl<'a> Chunked<'a> {
    pub fn new(data: &'a [u8], piece: usize) -> Self {
        Self {
            data,
            piece: piece.max(1),
        }
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.data.len().min(self.piece).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits on anything but ready reads.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(future)
}
