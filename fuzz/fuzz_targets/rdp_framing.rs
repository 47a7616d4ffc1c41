//! The RDP proxy's framing and negotiation (gatehouse-rdp `framing`, `nego`), what a client's first
//! bytes and every relayed PDU go through: TPKT/X.224 and fast-path lengths, CredSSP `TSRequest`
//! lengths (DER), fixed-size messages, and the X.224 Connection Request `accept` reads.
//!
//! Input: one byte choosing what is expected and how the stream is cut into reads, then the bytes.
//!
//! Properties: no panic; the messages are the input's bytes, in order, each of 1 to `MAX_MESSAGE`
//! bytes; the same messages and end whatever the segmentation; the read buffer stays within one
//! message and one read; a connection request that decodes re-encodes to one that decodes the
//! same, and the gateway selects HYBRID_EX or HYBRID only when offered.
#![no_main]

#[path = "common/chunked.rs"]
mod chunked;

use chunked::{Chunked, block_on};
use gatehouse_rdp::fuzzing::{self, End, Expect, MAX_MESSAGE};
use ironrdp_pdu::nego::{ConnectionRequest, SecurityProtocol};
use ironrdp_pdu::x224::X224;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, data)) = data.split_first() else {
        return;
    };
    let expect = match choice % 4 {
        0 | 1 => Expect::Rdp,
        2 => Expect::TsRequest,
        _ => Expect::Fixed(usize::from(choice >> 2) + 1),
    };
    let piece = [1, 2, 3, 7, 64, 1500, 16 * 1024, usize::MAX][usize::from(choice >> 5)];

    let (whole, end, buffered) = block_on(fuzzing::read_messages(data, expect));
    let mut offset = 0;
    for message in &whole {
        assert!(
            !message.is_empty() && message.len() <= MAX_MESSAGE,
            "{} bytes",
            message.len()
        );
        assert_eq!(&data[offset..offset + message.len()], &message[..]);
        offset += message.len();
    }
    match &end {
        End::Closed => assert_eq!(offset, data.len()),
        End::Truncated => assert!(offset < data.len()),
        End::Refused(_) => {}
    }
    assert!(
        buffered <= MAX_MESSAGE + 64 * 1024,
        "the buffer held {buffered} bytes"
    );

    let (pieces, pieces_end, pieces_buffered) =
        block_on(fuzzing::read_messages(Chunked::new(data, piece), expect));
    assert_eq!(pieces, whole, "reads of {piece} bytes");
    // A refusal for an oversized message may come at a different point of the same message.
    match (&end, &pieces_end) {
        (End::Refused(_), End::Refused(_)) => {}
        _ => assert_eq!(pieces_end, end, "reads of {piece} bytes"),
    }
    assert!(pieces_buffered <= MAX_MESSAGE + 64 * 1024);

    if let Ok((request, selected)) = block_on(fuzzing::read_connection_request(data)) {
        match selected {
            Some(p) if p == SecurityProtocol::HYBRID_EX => {
                assert!(request.protocol.contains(SecurityProtocol::HYBRID_EX))
            }
            Some(p) if p == SecurityProtocol::HYBRID => {
                assert!(request.protocol.contains(SecurityProtocol::HYBRID))
            }
            Some(p) => panic!("selected {p:?}"),
            None => assert!(
                !request
                    .protocol
                    .intersects(SecurityProtocol::HYBRID | SecurityProtocol::HYBRID_EX)
            ),
        }
        if let Ok(encoded) = ironrdp_pdu::encode_vec(&X224(request.clone())) {
            let again: X224<ConnectionRequest> =
                ironrdp_pdu::decode(&encoded).expect("a re-encoded connection request decodes");
            assert_eq!(again.0, request);
        }
    }
});
