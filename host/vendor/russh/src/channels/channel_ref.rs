use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::Notify;

use super::WindowSizeRef;
use crate::ChannelMsg;

/// Data held for a channel whose queue is full is joined into chunks of at most this size.
const HELD_CHUNK: usize = 64 * 1024;
/// Requests (not data) held for one channel before the session loop waits for the application.
const MAX_HELD_REQUESTS: usize = 1024;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
///
/// Gatehouse patch: the session loop never waits for the application. What the channel's queue
/// has no room for is held here, in order, and moves up as the application takes messages. Data
/// held is bounded by the window the loop grants, which only grows back as the application
/// consumes (see `Encrypted::return_window`).
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    held: std::sync::Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    queue: VecDeque<HeldMsg>,
    data_bytes: usize,
    requests: usize,
    /// The peer or we closed the channel: drop the reference once everything held moved up.
    retired: bool,
}

#[derive(Debug)]
enum HeldMsg {
    Data(BytesMut),
    ExtendedData(u32, BytesMut),
    Other(ChannelMsg),
}

impl HeldMsg {
    fn into_msg(self) -> ChannelMsg {
        match self {
            HeldMsg::Data(data) => ChannelMsg::Data {
                data: data.freeze(),
            },
            HeldMsg::ExtendedData(ext, data) => ChannelMsg::ExtendedData {
                data: data.freeze(),
                ext,
            },
            HeldMsg::Other(msg) => msg,
        }
    }
}

fn data_len(msg: &ChannelMsg) -> usize {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
        _ => 0,
    }
}

impl Held {
    fn push(&mut self, msg: ChannelMsg) {
        match msg {
            ChannelMsg::Data { data } => {
                self.data_bytes += data.len();
                if let Some(HeldMsg::Data(last)) = self.queue.back_mut()
                    && last.len() + data.len() <= HELD_CHUNK
                {
                    last.extend_from_slice(&data);
                } else {
                    self.queue.push_back(HeldMsg::Data(BytesMut::from(&data[..])));
                }
            }
            ChannelMsg::ExtendedData { data, ext } => {
                self.data_bytes += data.len();
                if let Some(HeldMsg::ExtendedData(last_ext, last)) = self.queue.back_mut()
                    && *last_ext == ext
                    && last.len() + data.len() <= HELD_CHUNK
                {
                    last.extend_from_slice(&data);
                } else {
                    self.queue
                        .push_back(HeldMsg::ExtendedData(ext, BytesMut::from(&data[..])));
                }
            }
            ChannelMsg::WindowAdjusted { new_size } => {
                // Only the latest size matters.
                if let Some(HeldMsg::Other(ChannelMsg::WindowAdjusted { new_size: last })) =
                    self.queue.back_mut()
                {
                    *last = new_size;
                } else {
                    self.requests += 1;
                    self.queue
                        .push_back(HeldMsg::Other(ChannelMsg::WindowAdjusted { new_size }));
                }
            }
            other => {
                self.requests += 1;
                self.queue.push_back(HeldMsg::Other(other));
            }
        }
    }

    fn pop(&mut self) -> Option<ChannelMsg> {
        let msg = self.queue.pop_front()?.into_msg();
        let len = data_len(&msg);
        if len == 0 {
            self.requests = self.requests.saturating_sub(1);
        }
        self.data_bytes = self.data_bytes.saturating_sub(len);
        Some(msg)
    }

    fn unpop(&mut self, msg: ChannelMsg) {
        let len = data_len(&msg);
        if len == 0 {
            self.requests += 1;
        }
        self.data_bytes += len;
        let held = match msg {
            ChannelMsg::Data { data } => HeldMsg::Data(BytesMut::from(&data[..])),
            ChannelMsg::ExtendedData { data, ext } => {
                HeldMsg::ExtendedData(ext, BytesMut::from(&data[..]))
            }
            other => HeldMsg::Other(other),
        };
        self.queue.push_front(held);
    }

    /// Moves what the queue has room for; returns the data bytes dropped because the
    /// application dropped its end.
    fn flush(&mut self, sender: &Sender<ChannelMsg>) -> usize {
        while let Some(msg) = self.pop() {
            match sender.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    self.unpop(msg);
                    return 0;
                }
                Err(TrySendError::Closed(msg)) => {
                    let dropped = data_len(&msg) + self.data_bytes;
                    self.queue.clear();
                    self.data_bytes = 0;
                    self.requests = 0;
                    return dropped;
                }
            }
        }
        0
    }
}

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self::with_window(sender, WindowSizeRef::new(0))
    }

    pub(crate) fn with_window(sender: Sender<ChannelMsg>, window_size: WindowSizeRef) -> Self {
        Self {
            sender,
            window_size,
            held: std::sync::Mutex::new(Held::default()),
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands `msg` to the application without waiting for it, keeping order with what is
    /// held. Data dropped because the application dropped its end counts as consumed.
    ///
    /// Waits only when a peer piles up more than [`MAX_HELD_REQUESTS`] requests the
    /// application does not read.
    pub(crate) async fn deliver(&self, msg: ChannelMsg, wake: &Arc<Notify>) {
        self.window_size.attach(wake);
        let dropped = self.deliver_inner(msg).await;
        if dropped > 0 {
            self.window_size.consumed(dropped);
        }
    }

    async fn deliver_inner(&self, msg: ChannelMsg) -> usize {
        let mut dropped = 0;
        {
            let mut held = self.held();
            dropped += held.flush(&self.sender);
            if held.queue.is_empty() {
                match self.sender.try_send(msg) {
                    Ok(()) => return dropped,
                    Err(TrySendError::Full(msg)) => held.push(msg),
                    Err(TrySendError::Closed(msg)) => return dropped + data_len(&msg),
                }
            } else {
                held.push(msg);
            }
            if held.requests <= MAX_HELD_REQUESTS {
                return dropped;
            }
        }
        loop {
            let Ok(permit) = self.sender.reserve().await else {
                let mut held = self.held();
                return dropped + held.flush(&self.sender);
            };
            let mut held = self.held();
            if let Some(msg) = held.pop() {
                permit.send(msg);
            }
            dropped += held.flush(&self.sender);
            if held.requests <= MAX_HELD_REQUESTS {
                return dropped;
            }
        }
    }

    /// Passes on a message the application may miss (a window change), unless messages are
    /// held or the queue is full.
    pub(crate) fn inform(&self, msg: ChannelMsg) {
        if !self.is_holding() {
            let _ = self.sender.try_send(msg);
        }
    }

    /// Moves held messages up as far as the queue has room. Data dropped because the
    /// application dropped its end counts as consumed.
    pub(crate) fn flush_held(&self) {
        let dropped = self.held().flush(&self.sender);
        if dropped > 0 {
            self.window_size.consumed(dropped);
        }
    }

    /// The application dropped its end of the channel.
    pub(crate) fn application_gone(&self) -> bool {
        self.sender.is_closed()
    }

    /// Marks the channel as finished; [`Self::is_done`] says when it can be dropped.
    pub(crate) fn retire(&self) {
        self.held().retired = true;
    }

    /// Retired and nothing held any more.
    pub(crate) fn is_done(&self) -> bool {
        let held = self.held();
        held.retired && held.queue.is_empty()
    }

    /// Whether anything is still held.
    pub(crate) fn is_holding(&self) -> bool {
        !self.held().queue.is_empty()
    }
}

impl Drop for ChannelRef {
    fn drop(&mut self) {
        self.window_size.close();
    }
}
