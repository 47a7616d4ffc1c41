//! The recorder's legacy-scp support (gatehouse-recording `scp`): the exec command recogniser
//! `is_scp_command` and the protocol follower `ScpInspector`.
//!
//! Input: the exec command up to the first newline, then records `[direction][length u16 BE]
//! [bytes]` in relay order (`common/stream.rs`). A command that is not scp gets a default mode.
//!
//! Properties: no panic; a recognised command, re-quoted, is recognised the same; the inspector's
//! events and stop are the same whatever the chunking; paths at most `MAX_PATH_BYTES`; at most
//! `MAX_PENDING_EVENTS` events; bounded memory (one feed allocates at most `FEED_PEAK`, the
//! inspector holds at most `STATE_BOUND` between feeds over a stream fed four times over).
#![no_main]

#[path = "common/alloc.rs"]
mod alloc;
#[path = "common/stream.rs"]
mod stream;

use gatehouse_recording::scp::{self, ScpInspector, ScpMode};
use gatehouse_recording::{Direction, FileEvent, MAX_PATH_BYTES};
use libfuzzer_sys::fuzz_target;
use stream::Way;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// One feed: a control line, the directory stack, and the events it completes. An event's path
/// is the directory's path joined with a name, so a 10-byte `C` line deep in a directory tree
/// logs a path of up to `MAX_PATH_BYTES`: the bound is the event cap, not the chunk's size.
const FEED_PEAK: usize =
    scp::MAX_PENDING_EVENTS * (MAX_PATH_BYTES + 128) + 2 * MAX_DEPTH * MAX_PATH_BYTES + 1024 * 1024;
/// The inspector between feeds: a control line, 64 directory paths, the current file.
const STATE_BOUND: usize = (MAX_DEPTH + 16) * (MAX_PATH_BYTES + 256) + 1024 * 1024;
/// `scp`'s directory depth limit (`MAX_DEPTH` in `host/recording/src/scp.rs`).
const MAX_DEPTH: usize = 64;

fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

fn requote(mode: &ScpMode) -> String {
    let mut command = String::from("/usr/bin/scp");
    if mode.recursive {
        command.push_str(" -r");
    }
    if mode.target_is_dir {
        command.push_str(" -d");
    }
    command.push_str(match mode.direction {
        Direction::Upload => " -t",
        Direction::Download => " -f",
    });
    command.push_str(" --");
    for path in &mode.paths {
        command.push(' ');
        command.push_str(&quote(path));
    }
    command
}

fn feed(inspector: &mut ScpInspector, way: Way, bytes: &[u8]) {
    match way {
        Way::ClientToServer => inspector.client_to_server(bytes),
        Way::ServerToClient => inspector.server_to_client(bytes),
    }
}

fn check_event(event: &FileEvent) {
    let FileEvent::Transfer { path, .. } = event else {
        panic!("scp reports transfers only: {event:?}");
    };
    assert!(
        path.len() <= MAX_PATH_BYTES,
        "a path of {} bytes",
        path.len()
    );
}

fn run(mode: &ScpMode, records: &[(Way, &[u8])], piece: usize) -> (Vec<FileEvent>, bool) {
    let mut inspector = ScpInspector::new(mode.clone());
    let mut events = Vec::new();
    for (way, chunk) in records {
        for bytes in chunk.chunks(piece) {
            feed(&mut inspector, *way, bytes);
        }
        let taken = inspector.take_events();
        assert!(taken.len() <= scp::MAX_PENDING_EVENTS);
        events.extend(taken);
    }
    events.extend(inspector.finish());
    events.iter().for_each(check_event);
    (events, inspector.is_stopped())
}

fn bounded(mode: &ScpMode, records: &[(Way, &[u8])]) {
    let base = alloc::live();
    let mut inspector = ScpInspector::new(mode.clone());
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
    let (command, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    let command = String::from_utf8_lossy(command);
    let mode = match scp::is_scp_command(&command) {
        Some(mode) => {
            let again = requote(&mode);
            assert_eq!(
                scp::is_scp_command(&again).as_ref(),
                Some(&mode),
                "{again:?}"
            );
            mode
        }
        None => ScpMode {
            direction: if command.len() % 2 == 0 {
                Direction::Upload
            } else {
                Direction::Download
            },
            paths: vec!["dest".into()],
            recursive: command.contains('r'),
            target_is_dir: false,
        },
    };
    let Some((&split, rest)) = rest.split_first() else {
        return;
    };
    let records = stream::records(rest);
    let whole = run(&mode, &records, usize::MAX);
    let piece = usize::from(split % 16) + 1;
    assert_eq!(
        run(&mode, &records, piece),
        whole,
        "chunks of {piece} bytes"
    );
    if rest.len() <= 4096 {
        assert_eq!(run(&mode, &records, 1), whole, "byte by byte");
    }
    bounded(&mode, &records);
});
