//! The RFB codec against valid and hostile input: every message round-trips, every prefix of
//! a message asks for more bytes, absurd sizes and unknown types are typed errors, and random
//! bytes never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_vnc::codec::{encoding, limits};
use gatehouse_vnc::{
    ClientMessage, Framebuffer, FramebufferUpdate, Parsed, PixelFormat, ProtocolError,
    ProtocolVersion, RecordingReader, Rectangle, RectanglePayload, Replayer, ServerContext,
    ServerInit, ServerMessage,
};
use std::time::Duration;

const CONTEXT: ServerContext = ServerContext {
    pixel_format: PixelFormat::TARGET,
    width: 64,
    height: 32,
};

fn rect(x: u16, y: u16, width: u16, height: u16, payload: RectanglePayload) -> Rectangle {
    Rectangle {
        x,
        y,
        width,
        height,
        payload,
    }
}

fn client_messages() -> Vec<ClientMessage> {
    vec![
        ClientMessage::SetPixelFormat(PixelFormat::TARGET),
        ClientMessage::SetEncodings(vec![5, 1, 0, -223, -239, 16]),
        ClientMessage::FramebufferUpdateRequest {
            incremental: true,
            x: 1,
            y: 2,
            width: 3,
            height: 4,
        },
        ClientMessage::KeyEvent {
            down: true,
            keysym: 0xff0d,
        },
        ClientMessage::PointerEvent {
            buttons: 1,
            x: 10,
            y: 20,
        },
        ClientMessage::ClientCutText(b"copied".to_vec()),
    ]
}

fn hextile_one_tile() -> Vec<u8> {
    // A 4x4 tile: background, one coloured 2x1 sub-rectangle.
    let mut data = vec![2 | 8 | 16];
    data.extend_from_slice(&[0, 0, 255, 0]);
    data.push(1);
    data.extend_from_slice(&[255, 0, 0, 0]);
    data.extend_from_slice(&[0x12, 0x10]);
    data
}

fn server_messages() -> Vec<ServerMessage> {
    vec![
        ServerMessage::FramebufferUpdate(FramebufferUpdate {
            rectangles: vec![
                rect(
                    0,
                    0,
                    2,
                    1,
                    RectanglePayload::Raw(vec![1, 2, 3, 0, 4, 5, 6, 0]),
                ),
                rect(
                    10,
                    10,
                    2,
                    1,
                    RectanglePayload::CopyRect { src_x: 0, src_y: 0 },
                ),
                rect(4, 4, 4, 4, RectanglePayload::Hextile(hextile_one_tile())),
                rect(
                    1,
                    1,
                    2,
                    2,
                    RectanglePayload::Cursor {
                        pixels: vec![9; 16],
                        mask: vec![0xc0, 0x40],
                    },
                ),
                rect(0, 0, 100, 50, RectanglePayload::DesktopSize),
                rect(70, 40, 1, 1, RectanglePayload::Raw(vec![7, 7, 7, 0])),
            ],
        }),
        ServerMessage::SetColourMapEntries {
            first_colour: 3,
            colours: vec![[1, 2, 3], [65535, 0, 0]],
        },
        ServerMessage::Bell,
        ServerMessage::ServerCutText(b"from the target".to_vec()),
    ]
}

#[test]
fn messages_round_trip_and_every_prefix_asks_for_more() {
    for message in client_messages() {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        assert_eq!(
            ClientMessage::parse(&bytes).unwrap(),
            Parsed::Complete {
                message: message.clone(),
                length: bytes.len()
            }
        );
        for cut in 0..bytes.len() {
            match ClientMessage::parse(&bytes[..cut]).unwrap() {
                Parsed::Incomplete { needed } => assert!(needed > cut, "{message:?} at {cut}"),
                other => panic!("{message:?} cut at {cut}: {other:?}"),
            }
        }
    }
    for message in server_messages() {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        assert_eq!(
            ServerMessage::parse(&bytes, &CONTEXT).unwrap(),
            Parsed::Complete {
                message: message.clone(),
                length: bytes.len()
            }
        );
        for cut in 0..bytes.len() {
            match ServerMessage::parse(&bytes[..cut], &CONTEXT).unwrap() {
                Parsed::Incomplete { needed } => assert!(needed > cut, "{message:?} at {cut}"),
                other => panic!("{message:?} cut at {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn versions() {
    let cases: &[(&[u8; 12], Result<ProtocolVersion, ProtocolError>)] = &[
        (b"RFB 003.008\n", Ok(ProtocolVersion::V3_8)),
        (b"RFB 003.007\n", Ok(ProtocolVersion::V3_7)),
        (b"RFB 003.003\n", Ok(ProtocolVersion::V3_3)),
        (b"RFB 003.005\n", Ok(ProtocolVersion::V3_3)),
        (b"RFB 003.889\n", Ok(ProtocolVersion::V3_8)),
        (
            b"RFB 004.001\n",
            Err(ProtocolError::UnsupportedVersion { major: 4, minor: 1 }),
        ),
        (
            b"RFB 003.002\n",
            Err(ProtocolError::UnsupportedVersion { major: 3, minor: 2 }),
        ),
        (
            b"SSH-2.0-Open",
            Err(ProtocolError::BadVersion("SSH-2.0-Open".to_string())),
        ),
        (
            b"RFB 0x3.008\n",
            Err(ProtocolError::BadVersion("RFB 0x3.008\\n".to_string())),
        ),
        (
            b"RFB +03.008\n",
            Err(ProtocolError::BadVersion("RFB +03.008\\n".to_string())),
        ),
        (
            b"RFB 003.008\r",
            Err(ProtocolError::BadVersion("RFB 003.008\\r".to_string())),
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(&ProtocolVersion::parse(bytes), expected, "{bytes:?}");
    }
}

fn update_bytes(rectangles: &[(u16, u16, u16, u16, i32)], payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0];
    bytes.extend_from_slice(&(rectangles.len() as u16).to_be_bytes());
    for (x, y, w, h, encoding) in rectangles {
        for v in [x, y, w, h] {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        bytes.extend_from_slice(&encoding.to_be_bytes());
        bytes.extend_from_slice(payload);
    }
    bytes
}

fn server_error(bytes: &[u8]) -> ProtocolError {
    match ServerMessage::parse(bytes, &CONTEXT) {
        Err(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn client_error(bytes: &[u8]) -> ProtocolError {
    match ClientMessage::parse(bytes) {
        Err(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn hostile_server_messages_are_typed_errors() {
    // A raw rectangle past the desktop's edge: refused from its header, before its pixels.
    assert_eq!(
        server_error(&update_bytes(&[(60, 0, 10, 10, encoding::RAW)], &[])),
        ProtocolError::RectangleOutOfBounds {
            x: 60,
            y: 0,
            width: 10,
            height: 10,
            fb_width: 64,
            fb_height: 32
        }
    );
    // An absurd rectangle (65535x65535) is out of bounds, not a 16 GiB read.
    assert!(matches!(
        server_error(&update_bytes(&[(0, 0, 65535, 65535, encoding::RAW)], &[])),
        ProtocolError::RectangleOutOfBounds { .. }
    ));
    // A CopyRect whose source is outside.
    assert!(matches!(
        server_error(&update_bytes(
            &[(0, 0, 10, 10, encoding::COPY_RECT)],
            &[0, 60, 0, 0]
        )),
        ProtocolError::RectangleOutOfBounds { x: 60, .. }
    ));
    // Thousands of full-screen CopyRects: the area budget stops them.
    let many = vec![(0, 0, 64, 32, encoding::COPY_RECT); 40];
    assert!(matches!(
        server_error(&update_bytes(&many, &[0, 0, 0, 0])),
        ProtocolError::UpdateTooLarge { .. }
    ));
    // A desktop resize beyond the limits.
    assert!(matches!(
        server_error(&update_bytes(
            &[(0, 0, 65535, 65535, encoding::DESKTOP_SIZE)],
            &[]
        )),
        ProtocolError::DesktopTooLarge { .. }
    ));
    // A huge cursor.
    assert!(matches!(
        server_error(&update_bytes(&[(0, 0, 4000, 4000, encoding::CURSOR)], &[])),
        ProtocolError::TooLong {
            what: "cursor shape",
            ..
        }
    ));
    // An encoding that was never negotiated (ZRLE, Tight).
    for unknown in [16, 7, -1] {
        assert_eq!(
            server_error(&update_bytes(&[(0, 0, 1, 1, unknown)], &[])),
            ProtocolError::UnsupportedEncoding {
                from: "server",
                encoding: unknown
            }
        );
    }
    // Hextile: a sub-rectangle outside its tile, unknown sub-encoding bits.
    assert_eq!(
        server_error(&update_bytes(
            &[(0, 0, 4, 4, encoding::HEXTILE)],
            &[2 | 8, 0, 0, 0, 0, 1, 0x33, 0x11]
        )),
        ProtocolError::BadHextile("sub-rectangle outside its tile")
    );
    assert_eq!(
        server_error(&update_bytes(&[(0, 0, 4, 4, encoding::HEXTILE)], &[0x40])),
        ProtocolError::BadHextile("unknown sub-encoding bits")
    );
    // Cut text longer than the limit: refused from its length.
    let mut cut = vec![3, 0, 0, 0];
    cut.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        server_error(&cut),
        ProtocolError::TooLong {
            what: "cut text",
            ..
        }
    ));
    assert_eq!(
        server_error(&[150]),
        ProtocolError::UnknownMessageType {
            from: "server",
            kind: 150
        }
    );
}

#[test]
fn hostile_client_messages_are_typed_errors() {
    assert_eq!(
        client_error(&[255, 0, 0]),
        ProtocolError::UnknownMessageType {
            from: "client",
            kind: 255
        }
    );
    assert!(matches!(
        client_error(&[2, 0, 0xff, 0xff]),
        ProtocolError::TooLong {
            what: "encoding list",
            ..
        }
    ));
    // The extended clipboard's negative length.
    assert!(matches!(
        client_error(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 0xf0]),
        ProtocolError::TooLong {
            what: "cut text",
            ..
        }
    ));
    let mut long = vec![6, 0, 0, 0];
    long.extend_from_slice(&(limits::MAX_CUT_TEXT + 1).to_be_bytes());
    assert!(matches!(client_error(&long), ProtocolError::TooLong { .. }));
}

#[test]
fn pixel_formats_are_validated() {
    let colour_mapped = PixelFormat {
        true_colour: false,
        ..PixelFormat::TARGET
    };
    let cases = [
        (PixelFormat::TARGET, true),
        (colour_mapped, false),
        (
            PixelFormat {
                bits_per_pixel: 24,
                ..PixelFormat::TARGET
            },
            false,
        ),
        (
            PixelFormat {
                red_shift: 30,
                ..PixelFormat::TARGET
            },
            false,
        ),
        (
            PixelFormat {
                green_max: 0,
                ..PixelFormat::TARGET
            },
            false,
        ),
        (
            PixelFormat {
                bits_per_pixel: 8,
                depth: 8,
                red_max: 7,
                green_max: 7,
                blue_max: 3,
                red_shift: 0,
                green_shift: 3,
                blue_shift: 6,
                ..PixelFormat::TARGET
            },
            true,
        ),
    ];
    for (format, valid) in cases {
        assert_eq!(format.validate().is_ok(), valid, "{format:?}");
    }
    // A server parse in an unusable format is refused up front.
    assert!(matches!(
        ServerMessage::parse(
            &[2],
            &ServerContext {
                pixel_format: colour_mapped,
                ..CONTEXT
            }
        ),
        Err(ProtocolError::BadPixelFormat(_))
    ));
}

/// A small deterministic generator (xorshift), so that failures reproduce.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let length = (self.next() as usize) % max;
        (0..length).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut valid = Vec::new();
    for message in server_messages() {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        valid.push(bytes);
    }
    let formats = [
        PixelFormat::TARGET,
        PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
            ..PixelFormat::TARGET
        },
    ];
    for round in 0..20_000 {
        let mut bytes = random.bytes(300);
        if round % 2 == 0 {
            // Mutate a valid message: keeps the parser past the first byte more often.
            let base = &valid[round % valid.len()];
            bytes = base.clone();
            for _ in 0..1 + random.next() % 4 {
                let at = (random.next() as usize) % bytes.len();
                bytes[at] = random.next() as u8;
            }
        }
        let context = ServerContext {
            pixel_format: formats[round % 2],
            ..CONTEXT
        };
        if let Ok(Parsed::Complete { message, .. }) = ServerMessage::parse(&bytes, &context)
            && let ServerMessage::FramebufferUpdate(update) = &message
        {
            let mut fb = Framebuffer::new(context.width, context.height).unwrap();
            let _ = fb.apply(update, &context.pixel_format, Duration::ZERO);
        }
        let _ = ClientMessage::parse(&bytes);
        let _ = ServerInit::parse(&bytes);
        if let Some(version) = bytes.get(..12) {
            let _ = ProtocolVersion::parse(version.try_into().unwrap());
        }
        // As a recording: a reader and a replayer must fail cleanly too.
        let mut file = b"GHVNCREC\0\x01\0\0".to_vec();
        file.extend_from_slice(&bytes);
        if let Ok(mut reader) = RecordingReader::new(file.as_slice()) {
            let mut replayer = Replayer::new();
            while let Ok(Some(record)) = reader.next_record() {
                let _ = replayer.feed(&record);
            }
        }
    }
}
