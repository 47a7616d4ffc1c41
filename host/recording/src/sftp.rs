//! Watches both byte streams of an sftp subsystem channel and reports file operations, in bounded
//! memory and without ever failing the relay.
//!
//! SFTP version 3 (draft-ietf-secsh-filexfer-02), the version OpenSSH speaks. Every packet is
//! `uint32 length, byte type, payload`; all but INIT and VERSION start the payload with a request id.

use std::collections::HashMap;

use crate::transfer::{Direction, FileEvent, MAX_PATH_BYTES, path_from_bytes};

/// Most requests and handles tracked at once; further ones are not followed.
pub const MAX_TRACKED: usize = 1024;

/// Most events held until [`SftpInspector::take_events`]; further ones are dropped.
pub const MAX_PENDING_EVENTS: usize = 4096;

/// Longest packet accepted; OpenSSH refuses anything over 256 KiB, so this is generous.
const MAX_PACKET_LEN: u32 = 1024 * 1024;

/// Handles longer than this break the protocol (the draft says 256 bytes at most).
const MAX_HANDLE_LEN: usize = 256;

/// Payload prefix kept of packets whose interesting part is a request id and a handle (READ, WRITE,
/// CLOSE, HANDLE, DATA, ...): id, handle, offset, data length.
const HANDLE_PREFIX: usize = 4 + 4 + MAX_HANDLE_LEN + 8 + 4;

/// Payload prefix kept of packets that name paths (OPEN, RENAME, posix-rename, ...).
const PATH_PREFIX: usize = 4 + (4 + 64) + 2 * (4 + MAX_PATH_BYTES);

mod kind {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// `pflags` bits of OPEN that mean the file is written.
const OPEN_FOR_WRITING: u32 = 0x02 | 0x04;

/// The stream is not SFTP v3 as understood here; inspection stops.
#[derive(Debug)]
struct Garbage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// How many payload bytes to keep of a packet of this type, or `None` if the type is unknown.
fn prefix_len(side: Side, packet_kind: u8) -> Option<usize> {
    use kind::*;
    match (side, packet_kind) {
        (Side::Client, INIT) => Some(4),
        (Side::Client, OPEN | REMOVE | RENAME | MKDIR | RMDIR | SETSTAT | EXTENDED) => {
            Some(PATH_PREFIX)
        }
        (Side::Client, CLOSE | READ | WRITE | FSETSTAT) => Some(HANDLE_PREFIX),
        (
            Side::Client,
            LSTAT | FSTAT | OPENDIR | READDIR | REALPATH | STAT | READLINK | SYMLINK,
        ) => Some(0),
        (Side::Server, VERSION | STATUS | NAME | ATTRS | EXTENDED_REPLY) => Some(4),
        (Side::Server, HANDLE | DATA) => Some(HANDLE_PREFIX),
        _ => None,
    }
}

/// A packet whose payload may have been cut to its prefix.
struct Packet<'a> {
    kind: u8,
    payload: &'a [u8],
    /// Length of the whole payload on the wire.
    payload_len: usize,
}

impl Packet<'_> {
    fn is_whole(&self) -> bool {
        self.payload.len() == self.payload_len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Prefix,
    Skip,
}

/// Splits one direction's byte stream into packets, keeping only each payload's prefix.
#[derive(Debug)]
struct PacketReader {
    side: Side,
    stage: Stage,
    head: [u8; 5],
    head_len: usize,
    kind: u8,
    prefix: Vec<u8>,
    want: usize,
    payload_len: usize,
    skip: usize,
}

impl PacketReader {
    fn new(side: Side) -> Self {
        Self {
            side,
            stage: Stage::Head,
            head: [0; 5],
            head_len: 0,
            kind: 0,
            prefix: Vec::new(),
            want: 0,
            payload_len: 0,
            skip: 0,
        }
    }

    fn feed(
        &mut self,
        mut data: &[u8],
        on_packet: &mut impl FnMut(Packet<'_>) -> Result<(), Garbage>,
    ) -> Result<(), Garbage> {
        while !data.is_empty() {
            match self.stage {
                Stage::Head => {
                    let taken = data.len().min(self.head.len() - self.head_len);
                    self.head[self.head_len..self.head_len + taken].copy_from_slice(&data[..taken]);
                    self.head_len += taken;
                    data = &data[taken..];
                    if self.head_len == self.head.len() {
                        self.start_packet()?;
                        if self.want == 0 {
                            self.end_prefix(on_packet)?;
                        }
                    }
                }
                Stage::Prefix => {
                    let taken = data.len().min(self.want - self.prefix.len());
                    self.prefix.extend_from_slice(&data[..taken]);
                    data = &data[taken..];
                    if self.prefix.len() == self.want {
                        self.end_prefix(on_packet)?;
                    }
                }
                Stage::Skip => {
                    let taken = data.len().min(self.skip);
                    self.skip -= taken;
                    data = &data[taken..];
                    if self.skip == 0 {
                        self.stage = Stage::Head;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_packet(&mut self) -> Result<(), Garbage> {
        let [a, b, c, d, packet_kind] = self.head;
        let length = u32::from_be_bytes([a, b, c, d]);
        if length == 0 || length > MAX_PACKET_LEN {
            return Err(Garbage);
        }
        let keep = prefix_len(self.side, packet_kind).ok_or(Garbage)?;
        self.head_len = 0;
        self.kind = packet_kind;
        self.payload_len = length as usize - 1;
        self.want = keep.min(self.payload_len);
        self.prefix.clear();
        self.stage = Stage::Prefix;
        Ok(())
    }

    fn end_prefix(
        &mut self,
        on_packet: &mut impl FnMut(Packet<'_>) -> Result<(), Garbage>,
    ) -> Result<(), Garbage> {
        on_packet(Packet {
            kind: self.kind,
            payload: &self.prefix,
            payload_len: self.payload_len,
        })?;
        self.skip = self.payload_len - self.want;
        self.stage = if self.skip == 0 {
            Stage::Head
        } else {
            Stage::Skip
        };
        Ok(())
    }
}

/// Reads SFTP wire types from a payload prefix.
struct Wire<'a> {
    bytes: &'a [u8],
    consumed: usize,
}

impl<'a> Wire<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, consumed: 0 }
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let bytes = self
            .bytes
            .get(self.consumed..self.consumed.checked_add(len)?)?;
        self.consumed += len;
        Some(bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        let bytes = self.take(4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let high = self.u32()?;
        let low = self.u32()?;
        Some((u64::from(high) << 32) | u64::from(low))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()?;
        self.take(usize::try_from(len).ok()?)
    }
}

#[derive(Debug)]
struct OpenFile {
    path: String,
    direction: Direction,
    bytes: u64,
}

/// What the two directions tell about requests and handles.
#[derive(Debug, Default)]
struct Tracker {
    client_started: bool,
    server_started: bool,
    /// OPEN requests waiting for their HANDLE, by request id.
    opens: HashMap<u32, (String, Direction)>,
    /// Open files, by handle.
    handles: HashMap<Vec<u8>, OpenFile>,
    /// READ requests waiting for their DATA, by request id: the handle read.
    reads: HashMap<u32, Vec<u8>>,
    events: Vec<FileEvent>,
    dropped_events: u64,
}

impl Tracker {
    fn emit(&mut self, event: FileEvent) {
        if self.events.len() < MAX_PENDING_EVENTS {
            self.events.push(event);
        } else {
            self.dropped_events += 1;
            if self.dropped_events == 1 {
                tracing::warn!("sftp inspector event queue full; dropping events until taken");
            }
        }
    }

    fn on_client(&mut self, packet: Packet<'_>) -> Result<(), Garbage> {
        let whole = packet.is_whole();
        let mut wire = Wire::new(packet.payload);
        if !self.client_started {
            self.client_started = true;
            return if packet.kind == kind::INIT {
                Ok(())
            } else {
                Err(Garbage)
            };
        }
        let parsed = match packet.kind {
            kind::INIT => return Err(Garbage),
            kind::OPEN => self.on_open(&mut wire),
            kind::CLOSE => self.on_close(&mut wire),
            kind::READ => self.on_read(&mut wire),
            kind::WRITE => self.on_write(&mut wire, packet.payload_len),
            kind::FSETSTAT => self.on_fsetstat(&mut wire),
            kind::REMOVE | kind::MKDIR | kind::RMDIR | kind::SETSTAT => {
                self.on_path(packet.kind, &mut wire)
            }
            kind::RENAME => self.on_rename(&mut wire),
            kind::EXTENDED => self.on_extended(&mut wire),
            _ => Some(()),
        };
        match parsed {
            Some(()) => Ok(()),
            // A prefix too short to parse is a path or handle longer than followed: ignore it.
            None if !whole => Ok(()),
            None => Err(Garbage),
        }
    }

    fn on_server(&mut self, packet: Packet<'_>) -> Result<(), Garbage> {
        let whole = packet.is_whole();
        let mut wire = Wire::new(packet.payload);
        if !self.server_started {
            self.server_started = true;
            return match (packet.kind, wire.u32()) {
                (kind::VERSION, Some(3)) => Ok(()),
                _ => Err(Garbage),
            };
        }
        let parsed = match packet.kind {
            kind::VERSION => return Err(Garbage),
            kind::HANDLE => self.on_handle(&mut wire),
            kind::DATA => self.on_data(&mut wire, packet.payload_len),
            _ => wire.u32().map(|id| self.forget_request(id)),
        };
        match parsed {
            Some(()) => Ok(()),
            None if !whole => Ok(()),
            None => Err(Garbage),
        }
    }

    fn forget_request(&mut self, id: u32) {
        self.opens.remove(&id);
        self.reads.remove(&id);
    }

    fn on_open(&mut self, wire: &mut Wire<'_>) -> Option<()> {
        let id = wire.u32()?;
        let path = wire.string()?;
        let pflags = wire.u32()?;
        let direction = if pflags & OPEN_FOR_WRITING != 0 {
            Direction::Upload
        } else {
            Direction::Download
        };
        if self.opens.len() < MAX_TRACKED || self.opens.contains_key(&id) {
            self.opens.insert(id, (path_from_bytes(path), direction));
        }
        Some(())
    }

    fn on_handle(&mut self, wire: &mut Wire<'_>) -> Option<()> {
        let id = wire.u32()?;
        let handle = wire.string()?;
        self.reads.remove(&id);
        if let Some((path, direction)) = self.opens.remove(&id)
            && handle.len() <= MAX_HANDLE_LEN
            && (self.handles.len() < MAX_TRACKED || self.handles.contains_key(handle))
        {
            let file = OpenFile {
                path,
                direction,
                bytes: 0,
            };
            if let Some(replaced) = self.handles.insert(handle.to_vec(), file) {
                // The server reused a handle we never saw closed.
                self.emit_transfer(replaced, false);
            }
        }
        Some(())
    }

    fn on_close(&mut self, wire: &mut Wire<'_>) -> Option<()> {
        let _id = wire.u32()?;
        let handle = wire.string()?;
        if let Some(file) = self.handles.remove(handle) {
            self.emit_transfer(file, true);
        }
        Some(())
    }

    fn on_read(&mut self, wire: &mut Wire<'_>) -> Option<()> {
        let id = wire.u32()?;
        let handle = wire.string()?;
        let _offset = wire.u64()?;
        let _len = wire.u32()?;
        if self.handles.contains_key(handle)
            && (self.reads.len() < MAX_TRACKED || self.reads.contains_key(&id))
        {
            self.reads.insert(id, handle.to_vec());
        }
        Some(())
    }

    /// Counts a WRITE's data from its length field; the data itself is never buffered.
    fn on_write(&mut self, wire: &mut Wire<'_>, payload_len: usize) -> Option<()> {
        let _id = wire.u32()?;
        let handle = wire.string()?;
        let _offset = wire.u64()?;
        let data_len = wire.u32()?;
        if usize::try_from(data_len).ok()? > payload_len.saturating_sub(wire.consumed) {
            return None;
        }
        if let Some(file) = self.handles.get_mut(handle)
            && file.direction == Direction::Upload
        {
            file.bytes = file.bytes.saturating_add(u64::from(data_len));
        }
        Some(())
    }

    fn on_data(&mut self, wire: &mut Wire<'_>, payload_len: usize) -> Option<()> {
        let id = wire.u32()?;
        let data_len = wire.u32()?;
        if usize::try_from(data_len).ok()? > payload_len.saturating_sub(wire.consumed) {
            return None;
        }
        self.opens.remove(&id);
        if let Some(handle) = self.reads.remove(&id)
            && let Some(file) = self.handles.get_mut(&handle)
            && file.direction == Direction::Download
        {
            file.bytes = file.bytes.saturating_add(u64::from(data_len));
        }
        Some(())
    }

    fn on_fsetstat(&mut self, wire: &mut Wire<'_>) -> Option<()> {
        let _id = wire.u32()?;
        let handle = wire.string()?;
        if let Some(file) = self.handles.get(handle) {
            let path = file.path.clone();
            self.emit(FileEvent::SetStat { path });
        }
        Some(())
    }

    fn on_path(&mut self, packet_kind: u8, wire: &mut Wire<'_>) -> Option<()> {
        let _id = wire.u32()?;
        let path = path_from_bytes(wire.string()?);
        self.emit(match packet_kind {
            kind::REMOVE => FileEvent::Remove { path },
            kind::MKDIR => FileEvent::Mkdir { path },
            kind::RMDIR => FileEvent::Rmdir { path },
            _ => FileEvent::SetStat { path },
        });
        Some(())
    }

    fn on_rename(&mut self, wire: &mut Wire<'_>) -> Option<()> {
        let _id = wire.u32()?;
        let from = path_from_bytes(wire.string()?);
        let to = path_from_bytes(wire.string()?);
        self.emit(FileEvent::Rename { from, to });
        Some(())
    }

    fn on_extended(&mut self, wire: &mut Wire<'_>) -> Option<()> {
        let _id = wire.u32()?;
        let name = wire.string()?;
        if name == b"posix-rename@openssh.com" {
            let from = path_from_bytes(wire.string()?);
            let to = path_from_bytes(wire.string()?);
            self.emit(FileEvent::Rename { from, to });
        }
        Some(())
    }

    fn emit_transfer(&mut self, file: OpenFile, complete: bool) {
        self.emit(FileEvent::Transfer {
            direction: file.direction,
            path: file.path,
            bytes: file.bytes,
            complete,
        });
    }
}

/// Follows an sftp subsystem channel and reports [`FileEvent`]s.
///
/// Feed every chunk of each direction in the order it is relayed (a request before its reply), then
/// drain [`take_events`](Self::take_events). Memory is bounded whatever the peers send: payloads are
/// skipped by count, at most a few KiB of each packet are kept, and at most [`MAX_TRACKED`] requests
/// and handles are followed. A stream that is not SFTP v3 stops the inspection quietly.
#[derive(Debug)]
pub struct SftpInspector {
    client: PacketReader,
    server: PacketReader,
    tracker: Tracker,
    stopped: bool,
}

impl Default for SftpInspector {
    fn default() -> Self {
        Self::new()
    }
}

impl SftpInspector {
    /// An inspector for a channel whose subsystem was just started.
    pub fn new() -> Self {
        Self {
            client: PacketReader::new(Side::Client),
            server: PacketReader::new(Side::Server),
            tracker: Tracker::default(),
            stopped: false,
        }
    }

    /// Bytes the client sent to the server.
    pub fn client_to_server(&mut self, bytes: &[u8]) {
        if self.stopped {
            return;
        }
        let tracker = &mut self.tracker;
        let fed = self
            .client
            .feed(bytes, &mut |packet| tracker.on_client(packet));
        if fed.is_err() {
            self.stop("client");
        }
    }

    /// Bytes the server sent to the client.
    pub fn server_to_client(&mut self, bytes: &[u8]) {
        if self.stopped {
            return;
        }
        let tracker = &mut self.tracker;
        let fed = self
            .server
            .feed(bytes, &mut |packet| tracker.on_server(packet));
        if fed.is_err() {
            self.stop("server");
        }
    }

    /// Events seen since the last call.
    pub fn take_events(&mut self) -> Vec<FileEvent> {
        self.tracker.dropped_events = 0;
        std::mem::take(&mut self.tracker.events)
    }

    /// The channel closed: events not taken yet, then a transfer with `complete: false` for each file
    /// still open, by path (files open under the same path by handle, so the order never depends
    /// on the hash table's).
    pub fn finish(&mut self) -> Vec<FileEvent> {
        let mut open: Vec<(Vec<u8>, OpenFile)> = self.tracker.handles.drain().collect();
        open.sort_by(|(left_handle, left), (right_handle, right)| {
            left.path
                .cmp(&right.path)
                .then_with(|| left_handle.cmp(right_handle))
        });
        for (_, file) in open {
            self.tracker.emit_transfer(file, false);
        }
        self.tracker.opens.clear();
        self.tracker.reads.clear();
        self.take_events()
    }

    /// Whether inspection stopped because a stream was not SFTP v3.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn stop(&mut self, side: &'static str) {
        tracing::warn!(
            side,
            "sftp stream not understood; file operations are no longer inspected"
        );
        self.stopped = true;
        let events = std::mem::take(&mut self.tracker.events);
        self.tracker = Tracker {
            events,
            ..Tracker::default()
        };
        self.client = PacketReader::new(Side::Client);
        self.server = PacketReader::new(Side::Server);
    }

    #[cfg(test)]
    fn buffered_bytes(&self) -> usize {
        self.client.prefix.capacity() + self.server.prefix.capacity()
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tracker.opens.len() + self.tracker.handles.len() + self.tracker.reads.len()
    }
}

#[cfg(test)]
#[path = "sftp_tests.rs"]
mod tests;
