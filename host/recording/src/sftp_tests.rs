//! Tests of the SFTP inspector: a scripted conversation fed whole, split anywhere, and corrupted.

use super::*;

fn packet(packet_kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len() + 1)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.push(packet_kind);
    out.extend_from_slice(payload);
    out
}

fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

fn fields(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn id(request: u32) -> [u8; 4] {
    request.to_be_bytes()
}

const NO_ATTRS: &[u8] = &[0, 0, 0, 0];

#[derive(Clone, Copy, Debug, PartialEq)]
enum From {
    Client,
    Server,
}

struct Step {
    from: From,
    bytes: Vec<u8>,
}

fn client(packet_kind: u8, payload: Vec<u8>) -> Step {
    Step {
        from: From::Client,
        bytes: packet(packet_kind, &payload),
    }
}

fn server(packet_kind: u8, payload: Vec<u8>) -> Step {
    Step {
        from: From::Server,
        bytes: packet(packet_kind, &payload),
    }
}

fn status(request: u32, code: u32) -> Step {
    server(
        kind::STATUS,
        fields(&[
            &id(request),
            &code.to_be_bytes(),
            &string(b""),
            &string(b""),
        ]),
    )
}

fn handshake() -> Vec<Step> {
    vec![
        client(kind::INIT, 3u32.to_be_bytes().to_vec()),
        server(
            kind::VERSION,
            fields(&[
                &3u32.to_be_bytes(),
                &string(b"posix-rename@openssh.com"),
                &string(b"1"),
            ]),
        ),
    ]
}

/// An upload, a download, a failed open, directory listing noise and path operations.
fn conversation() -> Vec<Step> {
    let mut steps = handshake();
    let write_data = vec![0xab; 100];
    let more_data = vec![0xcd; 50];
    let read_data = vec![b'r'; 70];
    steps.extend([
        // Upload /up.txt in two writes.
        client(
            kind::OPEN,
            fields(&[
                &id(1),
                &string(b"/up.txt"),
                &0x1au32.to_be_bytes(),
                NO_ATTRS,
            ]),
        ),
        server(kind::HANDLE, fields(&[&id(1), &string(b"h1")])),
        client(
            kind::WRITE,
            fields(&[
                &id(2),
                &string(b"h1"),
                &0u64.to_be_bytes(),
                &string(&write_data),
            ]),
        ),
        client(
            kind::WRITE,
            fields(&[
                &id(3),
                &string(b"h1"),
                &100u64.to_be_bytes(),
                &string(&more_data),
            ]),
        ),
        status(2, 0),
        status(3, 0),
        client(kind::FSETSTAT, fields(&[&id(4), &string(b"h1"), NO_ATTRS])),
        status(4, 0),
        client(kind::CLOSE, fields(&[&id(5), &string(b"h1")])),
        status(5, 0),
        // Download /down.txt: one DATA reply, then EOF.
        client(
            kind::OPEN,
            fields(&[&id(6), &string(b"/down.txt"), &1u32.to_be_bytes(), NO_ATTRS]),
        ),
        server(kind::HANDLE, fields(&[&id(6), &string(b"h2")])),
        client(
            kind::READ,
            fields(&[
                &id(7),
                &string(b"h2"),
                &0u64.to_be_bytes(),
                &32768u32.to_be_bytes(),
            ]),
        ),
        client(
            kind::READ,
            fields(&[
                &id(8),
                &string(b"h2"),
                &32768u64.to_be_bytes(),
                &32768u32.to_be_bytes(),
            ]),
        ),
        server(kind::DATA, fields(&[&id(7), &string(&read_data)])),
        status(8, 1),
        client(kind::CLOSE, fields(&[&id(9), &string(b"h2")])),
        status(9, 0),
        // An open that fails gives no transfer.
        client(
            kind::OPEN,
            fields(&[
                &id(10),
                &string(b"/etc/shadow"),
                &1u32.to_be_bytes(),
                NO_ATTRS,
            ]),
        ),
        status(10, 3),
        // Listing a directory.
        client(kind::OPENDIR, fields(&[&id(11), &string(b"/tmp")])),
        server(kind::HANDLE, fields(&[&id(11), &string(b"d1")])),
        client(kind::READDIR, fields(&[&id(12), &string(b"d1")])),
        server(
            kind::NAME,
            fields(&[
                &id(12),
                &1u32.to_be_bytes(),
                &string(b"a"),
                &string(b"-rw a"),
                NO_ATTRS,
            ]),
        ),
        client(kind::CLOSE, fields(&[&id(13), &string(b"d1")])),
        status(13, 0),
        client(kind::STAT, fields(&[&id(14), &string(b"/tmp")])),
        server(kind::ATTRS, fields(&[&id(14), NO_ATTRS])),
        // Path operations.
        client(kind::REMOVE, fields(&[&id(15), &string(b"/tmp/old")])),
        client(
            kind::RENAME,
            fields(&[&id(16), &string(b"/tmp/a"), &string(b"/tmp/b")]),
        ),
        client(
            kind::EXTENDED,
            fields(&[
                &id(17),
                &string(b"posix-rename@openssh.com"),
                &string(b"/tmp/b"),
                &string(b"/tmp/c"),
            ]),
        ),
        client(
            kind::EXTENDED,
            fields(&[&id(18), &string(b"statvfs@openssh.com"), &string(b"/")]),
        ),
        client(
            kind::MKDIR,
            fields(&[&id(19), &string(b"/tmp/new"), NO_ATTRS]),
        ),
        client(kind::RMDIR, fields(&[&id(20), &string(b"/tmp/gone")])),
        client(
            kind::SETSTAT,
            fields(&[&id(21), &string(b"/tmp/c"), NO_ATTRS]),
        ),
        // Left open when the channel ends.
        client(
            kind::OPEN,
            fields(&[
                &id(22),
                &string(b"/partial"),
                &0x1au32.to_be_bytes(),
                NO_ATTRS,
            ]),
        ),
        server(kind::HANDLE, fields(&[&id(22), &string(b"h3")])),
        client(
            kind::WRITE,
            fields(&[
                &id(23),
                &string(b"h3"),
                &0u64.to_be_bytes(),
                &string(b"12345"),
            ]),
        ),
    ]);
    steps
}

fn expected_events() -> Vec<FileEvent> {
    let path = |text: &str| text.to_owned();
    vec![
        FileEvent::SetStat {
            path: path("/up.txt"),
        },
        FileEvent::Transfer {
            direction: Direction::Upload,
            path: path("/up.txt"),
            bytes: 150,
            complete: true,
        },
        FileEvent::Transfer {
            direction: Direction::Download,
            path: path("/down.txt"),
            bytes: 70,
            complete: true,
        },
        FileEvent::Remove {
            path: path("/tmp/old"),
        },
        FileEvent::Rename {
            from: path("/tmp/a"),
            to: path("/tmp/b"),
        },
        FileEvent::Rename {
            from: path("/tmp/b"),
            to: path("/tmp/c"),
        },
        FileEvent::Mkdir {
            path: path("/tmp/new"),
        },
        FileEvent::Rmdir {
            path: path("/tmp/gone"),
        },
        FileEvent::SetStat {
            path: path("/tmp/c"),
        },
        FileEvent::Transfer {
            direction: Direction::Upload,
            path: path("/partial"),
            bytes: 5,
            complete: false,
        },
    ]
}

/// Consecutive steps from the same side, joined: what the relay would see if the peer pipelined.
fn runs(steps: &[Step]) -> Vec<(From, Vec<u8>)> {
    let mut runs: Vec<(From, Vec<u8>)> = Vec::new();
    for step in steps {
        match runs.last_mut() {
            Some((from, bytes)) if *from == step.from => bytes.extend_from_slice(&step.bytes),
            _ => runs.push((step.from, step.bytes.clone())),
        }
    }
    runs
}

fn feed(inspector: &mut SftpInspector, from: From, bytes: &[u8]) {
    match from {
        From::Client => inspector.client_to_server(bytes),
        From::Server => inspector.server_to_client(bytes),
    }
}

/// Feeds every run cut into pieces by `cut`, then finishes.
fn run_conversation(
    steps: &[Step],
    cut: impl Fn(usize, &[u8]) -> Vec<&[u8]>,
) -> (Vec<FileEvent>, bool) {
    let mut inspector = SftpInspector::new();
    let mut events = Vec::new();
    for (index, (from, bytes)) in runs(steps).iter().enumerate() {
        for piece in cut(index, bytes) {
            feed(&mut inspector, *from, piece);
            events.extend(inspector.take_events());
        }
    }
    events.extend(inspector.finish());
    (events, inspector.is_stopped())
}

#[test]
fn a_conversation_fed_whole_gives_its_events() {
    let (events, stopped) = run_conversation(&conversation(), |_, bytes| vec![bytes]);
    assert!(!stopped);
    assert_eq!(events, expected_events());
}

#[test]
fn a_conversation_fed_byte_by_byte_gives_the_same_events() {
    let (events, stopped) = run_conversation(&conversation(), |_, bytes| bytes.chunks(1).collect());
    assert!(!stopped);
    assert_eq!(events, expected_events());
}

#[test]
fn splitting_any_run_at_any_byte_gives_the_same_events() {
    let steps = conversation();
    for (run_index, (_, run)) in runs(&steps).iter().enumerate() {
        for split in 0..=run.len() {
            let (events, stopped) = run_conversation(&steps, |index, bytes| {
                if index == run_index {
                    let (left, right) = bytes.split_at(split);
                    vec![left, right]
                } else {
                    vec![bytes]
                }
            });
            assert!(!stopped, "run {run_index} split at {split}");
            assert_eq!(
                events,
                expected_events(),
                "run {run_index} split at {split}"
            );
        }
    }
}

#[test]
fn a_large_write_is_counted_without_being_buffered() {
    let mut inspector = SftpInspector::new();
    for step in handshake() {
        feed(&mut inspector, step.from, &step.bytes);
    }
    feed(
        &mut inspector,
        From::Client,
        &packet(
            kind::OPEN,
            &fields(&[&id(1), &string(b"/big"), &0x1au32.to_be_bytes(), NO_ATTRS]),
        ),
    );
    feed(
        &mut inspector,
        From::Server,
        &packet(kind::HANDLE, &fields(&[&id(1), &string(b"h")])),
    );
    let bytes_per_write = 256 * 1024 - 64;
    let header = fields(&[
        &u32::try_from(1 + 4 + 5 + 8 + 4 + bytes_per_write)
            .unwrap()
            .to_be_bytes(),
        &[kind::WRITE],
        &id(2),
        &string(b"h"),
        &0u64.to_be_bytes(),
        &u32::try_from(bytes_per_write).unwrap().to_be_bytes(),
    ]);
    let chunk = vec![0u8; 32 * 1024];
    let writes = 40;
    for _ in 0..writes {
        inspector.client_to_server(&header);
        let mut left = bytes_per_write;
        while left > 0 {
            let piece = left.min(chunk.len());
            inspector.client_to_server(&chunk[..piece]);
            left -= piece;
            assert!(
                inspector.buffered_bytes() <= PATH_PREFIX,
                "{}",
                inspector.buffered_bytes()
            );
        }
    }
    inspector.client_to_server(&packet(kind::CLOSE, &fields(&[&id(3), &string(b"h")])));
    assert!(!inspector.is_stopped());
    assert_eq!(
        inspector.take_events(),
        [FileEvent::Transfer {
            direction: Direction::Upload,
            path: "/big".to_owned(),
            bytes: (writes * bytes_per_write) as u64,
            complete: true,
        }]
    );
}

#[test]
fn requests_without_replies_are_tracked_up_to_the_limit() {
    let mut inspector = SftpInspector::new();
    for step in handshake() {
        feed(&mut inspector, step.from, &step.bytes);
    }
    for request in 0..(MAX_TRACKED as u32 * 3) {
        let open = fields(&[&id(request), &string(b"/f"), &1u32.to_be_bytes(), NO_ATTRS]);
        inspector.client_to_server(&packet(kind::OPEN, &open));
        let handle = format!("h{request}");
        inspector.server_to_client(&packet(
            kind::HANDLE,
            &fields(&[&id(request), &string(handle.as_bytes())]),
        ));
        let read = fields(&[
            &id(request + 1_000_000),
            &string(handle.as_bytes()),
            &0u64.to_be_bytes(),
            &1u32.to_be_bytes(),
        ]);
        inspector.client_to_server(&packet(kind::READ, &read));
        assert!(inspector.tracked() <= 3 * MAX_TRACKED);
    }
    assert_eq!(inspector.finish().len(), MAX_TRACKED);
}

#[test]
fn garbage_stops_inspection_quietly() {
    let mut valid_after = handshake();
    valid_after.extend([client(kind::REMOVE, fields(&[&id(1), &string(b"/x")]))]);
    let huge_length = fields(&[&(MAX_PACKET_LEN + 1).to_be_bytes(), &[kind::WRITE]]);
    let cases: Vec<(&str, From, Vec<u8>)> = vec![
        (
            "http request",
            From::Client,
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        ),
        ("zero length", From::Client, vec![0, 0, 0, 0, 1]),
        ("huge length", From::Client, huge_length),
        ("unknown client type", From::Client, packet(99, &id(5))),
        (
            "reply type from client",
            From::Client,
            packet(kind::DATA, &id(5)),
        ),
        (
            "request type from server",
            From::Server,
            packet(kind::OPEN, &id(5)),
        ),
        (
            "second init",
            From::Client,
            packet(kind::INIT, &3u32.to_be_bytes()),
        ),
        (
            "string longer than packet",
            From::Client,
            packet(
                kind::REMOVE,
                &fields(&[&id(1), &500u32.to_be_bytes(), b"/x"]),
            ),
        ),
        (
            "write data longer than packet",
            From::Client,
            packet(
                kind::WRITE,
                &fields(&[
                    &id(1),
                    &string(b"h"),
                    &0u64.to_be_bytes(),
                    &9u32.to_be_bytes(),
                    b"1",
                ]),
            ),
        ),
    ];
    for (name, from, garbage) in cases {
        let mut inspector = SftpInspector::new();
        for step in handshake() {
            feed(&mut inspector, step.from, &step.bytes);
        }
        feed(&mut inspector, from, &garbage);
        assert!(inspector.is_stopped(), "{name}");
        for step in &valid_after {
            feed(&mut inspector, step.from, &step.bytes);
        }
        assert_eq!(inspector.finish(), [], "{name}");
        assert_eq!(inspector.buffered_bytes(), 0, "{name}");
    }
}

#[test]
fn a_stream_that_does_not_start_with_the_handshake_is_not_inspected() {
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "no init",
            vec![client(kind::REMOVE, fields(&[&id(1), &string(b"/x")]))],
        ),
        (
            "version 6",
            vec![
                client(kind::INIT, 6u32.to_be_bytes().to_vec()),
                server(kind::VERSION, 6u32.to_be_bytes().to_vec()),
                client(kind::REMOVE, fields(&[&id(1), &string(b"/x")])),
            ],
        ),
    ];
    for (name, steps) in cases {
        let (events, stopped) = run_conversation(&steps, |_, bytes| vec![bytes]);
        assert!(stopped, "{name}");
        assert_eq!(events, [], "{name}");
    }
}

#[test]
fn a_path_longer_than_kept_is_ignored_not_fatal() {
    let mut steps = handshake();
    let long = vec![b'a'; 3 * MAX_PATH_BYTES];
    steps.push(client(kind::REMOVE, fields(&[&id(1), &string(&long)])));
    steps.push(client(
        kind::OPEN,
        fields(&[&id(2), &string(&long), &1u32.to_be_bytes(), NO_ATTRS]),
    ));
    steps.push(client(
        kind::MKDIR,
        fields(&[&id(3), &string(b"/ok"), NO_ATTRS]),
    ));
    let (events, stopped) = run_conversation(&steps, |_, bytes| vec![bytes]);
    assert!(!stopped);
    assert_eq!(
        events,
        [FileEvent::Mkdir {
            path: "/ok".to_owned()
        }]
    );
}

/// Found by the `sftp_inspector` fuzz target (fuzz/, docs/FUZZING.md): files still open under the
/// same path were reported at the end in the hash table's order, which differs from one inspector
/// to the next, so the same channel could be logged two ways.
#[test]
fn files_open_under_one_path_end_in_handle_order() {
    let mut steps = handshake();
    // Opened for writing under handle "h9", then for reading under "h1"; neither is closed.
    for (request, flags, handle) in [(1, 0x1au32, b"h9"), (2, 0x01, b"h1")] {
        steps.push(client(
            kind::OPEN,
            fields(&[
                &id(request),
                &string(b"/tmp/same"),
                &flags.to_be_bytes(),
                NO_ATTRS,
            ]),
        ));
        steps.push(server(
            kind::HANDLE,
            fields(&[&id(request), &string(handle)]),
        ));
    }
    let transfer = |direction| FileEvent::Transfer {
        direction,
        path: "/tmp/same".into(),
        bytes: 0,
        complete: false,
    };
    let expected = vec![transfer(Direction::Download), transfer(Direction::Upload)];
    // A new inspector, so a new hash seed, each time.
    for _ in 0..32 {
        let (events, stopped) = run_conversation(&steps, |_, bytes| vec![bytes]);
        assert!(!stopped);
        assert_eq!(events, expected);
    }
}
