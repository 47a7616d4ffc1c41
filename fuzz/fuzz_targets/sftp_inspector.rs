//! The recorder's SFTP inspector (gatehouse-recording `sftp::SftpInspector`), fed what a user and a
//! target send over an sftp subsystem channel.
//!
//! Input: records `[direction][length u16 BE][bytes]` in relay order (`common/stream.rs`).
//!
//! Properties: no panic; the same events and the same stop whatever the chunking of each record
//! (byte by byte, or in pieces); paths at most `MAX_PATH_BYTES`; at most `MAX_PENDING_EVENTS`
//! events held; bounded memory: one feed never allocates more than `FEED_PEAK` (a packet is never
//! buffered whole) and the inspector never holds more than `STATE_BOUND` whatever the stream's
//! length (the stream is fed four times over).
#![no_main]

#[path = "common/alloc.rs"]
mod alloc;
#[path = "common/stream.rs"]
mod stream;

use gatehouse_recording::{FileEvent, MAX_PATH_BYTES, sftp};
use libfuzzer_sys::fuzz_target;
use stream::Way;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// What one feed may allocate: two payload prefixes (about 8 KiB each), the events of one 64 KiB
/// chunk (a lossily decoded path is at most three times its bytes) and a table resize.
const FEED_PEAK: usize = 512 * 1024;
/// What the inspector may hold: `MAX_TRACKED` opens, handles and reads with their paths and
/// handles, the two prefix buffers and hash-table slack.
const STATE_BOUND: usize = 3 * sftp::MAX_TRACKED * (MAX_PATH_BYTES + 256 + 128) + 1024 * 1024;

fn path_ok(path: &str) -> bool {
    path.len() <= MAX_PATH_BYTES
}

fn check_event(event: &FileEvent) {
    let ok = match event {
        FileEvent::Transfer { path, .. }
        | FileEvent::Remove { path }
        | FileEvent::Mkdir { path }
        | FileEvent::Rmdir { path }
        | FileEvent::SetStat { path } => path_ok(path),
        FileEvent::Rename { from, to } => path_ok(from) && path_ok(to),
    };
    assert!(ok, "a path over {MAX_PATH_BYTES} bytes in {event:?}");
}

fn feed(inspector: &mut sftp::SftpInspector, way: Way, bytes: &[u8]) {
    match way {
        Way::ClientToServer => inspector.client_to_server(bytes),
        Way::ServerToClient => inspector.server_to_client(bytes),
    }
}

fn run(records: &[(Way, &[u8])], piece: usize) -> (Vec<FileEvent>, bool) {
    let mut inspector = sftp::SftpInspector::new();
    let mut events = Vec::new();
    for (way, chunk) in records {
        for bytes in chunk.chunks(piece) {
            feed(&mut inspector, *way, bytes);
        }
        let taken = inspector.take_events();
        assert!(taken.len() <= sftp::MAX_PENDING_EVENTS);
        events.extend(taken);
    }
    events.extend(inspector.finish());
    events.iter().for_each(check_event);
    (events, inspector.is_stopped())
}

fn bounded(records: &[(Way, &[u8])]) {
    let base = alloc::live();
    let mut inspector = sftp::SftpInspector::new();
    for _ in 0..4 {
        for (way, chunk) in records {
            let before = alloc::live();
            alloc::reset_peak();
            feed(&mut inspector, *way, chunk);
            let grew = alloc::peak().saturating_sub(before);
            assert!(
                grew <= FEED_PEAK,
                "one feed of {} bytes allocated {grew} bytes",
                chunk.len()
            );
            drop(inspector.take_events());
            let held = alloc::live().saturating_sub(base);
            assert!(held <= STATE_BOUND, "the inspector holds {held} bytes");
        }
    }
    drop(inspector.finish());
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let records = stream::records(data);
    let whole = run(&records, usize::MAX);
    let piece = usize::from(split % 16) + 1;
    assert_eq!(run(&records, piece), whole, "chunks of {piece} bytes");
    if data.len() <= 4096 {
        assert_eq!(run(&records, 1), whole, "byte by byte");
    }
    bounded(&records);
});
