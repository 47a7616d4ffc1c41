//! The RDP recording reader and decoders (gatehouse-rdp-replay `PduReader`, `Replayer`,
//! `InputTracker`), which `gatehouse recordings` and the web API run on `rdp.pdus` files.
//!
//! Properties: no panic; the reader never reads past the end (the PDUs' headers and bytes add up
//! to at most the input) and holds no PDU over `MAX_PDU`; what it reads, written back with
//! `PduWriter`, is byte for byte the part of the input it consumed; the replayer's frame is at
//! most `MAX_DESKTOP` square with a buffer of exactly width × height × 4 bytes, and its position
//! is the last PDU's time.
#![no_main]

use gatehouse_rdp_replay::decode::MAX_DESKTOP;
use gatehouse_rdp_replay::pdus::MAX_PDU;
use gatehouse_rdp_replay::{InputTracker, MAGIC, PduReader, PduWriter, Replayer};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 14;

fuzz_target!(|data: &[u8]| {
    // Most inputs start with the magic: the fuzzer need not find it.
    let mut input = MAGIC.to_vec();
    input.extend_from_slice(data);
    for bytes in [&input[..], data] {
        check(bytes);
    }
});

fn check(bytes: &[u8]) {
    let Ok(mut reader) = PduReader::new(bytes) else {
        assert!(!bytes.starts_with(MAGIC));
        return;
    };
    let mut writer = PduWriter::new(Vec::new()).expect("write to memory");
    let mut replayer = Replayer::new();
    let mut tracker = InputTracker::new();
    let mut events = Vec::new();
    let mut consumed = MAGIC.len();
    loop {
        let pdu = match reader.next_pdu() {
            Ok(Some(pdu)) => pdu,
            Ok(None) => {
                assert_eq!(consumed, bytes.len(), "a clean end is the end of the input");
                break;
            }
            Err(_) => break,
        };
        assert!(pdu.bytes.len() <= MAX_PDU);
        consumed += HEADER + pdu.bytes.len();
        assert!(
            consumed <= bytes.len(),
            "read {consumed} bytes of {}",
            bytes.len()
        );
        writer.write(&pdu).expect("write what was read");
        replayer.feed(&pdu);
        assert_eq!(replayer.position(), pdu.at);
        tracker.observe(&pdu, &mut events);
    }
    tracker.finish(&mut events);
    let written = writer.finish().expect("flush to memory");
    assert_eq!(
        written,
        &bytes[..consumed],
        "the rewritten recording differs"
    );
    if let Some(frame) = replayer.frame() {
        assert!(frame.width <= MAX_DESKTOP && frame.height <= MAX_DESKTOP);
        assert_eq!(
            frame.rgba.len(),
            usize::from(frame.width) * usize::from(frame.height) * 4
        );
    }
    let _ = replayer.verdict();
    let _ = tracker.malformed();
}
