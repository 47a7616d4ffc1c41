//! Tests of scp command recognition and of the scp protocol inspector.

use super::*;

fn mode(direction: Direction, paths: &[&str], recursive: bool, target_is_dir: bool) -> ScpMode {
    ScpMode {
        direction,
        paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        recursive,
        target_is_dir,
    }
}

#[test]
fn scp_commands_are_recognised() {
    use Direction::{Download, Upload};
    let cases = [
        (
            "scp -t /tmp/x",
            Some(mode(Upload, &["/tmp/x"], false, false)),
        ),
        (
            "scp -t -- /tmp/x",
            Some(mode(Upload, &["/tmp/x"], false, false)),
        ),
        (
            "scp -v -r -p -d -t -- /srv/dir",
            Some(mode(Upload, &["/srv/dir"], true, true)),
        ),
        ("scp -prt .", Some(mode(Upload, &["."], true, false))),
        (
            "scp -f /etc/hosts",
            Some(mode(Download, &["/etc/hosts"], false, false)),
        ),
        (
            "/usr/bin/scp -pf '/tmp/a b' \"/tmp/c\\\"d\"",
            Some(mode(Download, &["/tmp/a b", "/tmp/c\"d"], false, false)),
        ),
        (
            "scp -f /tmp/a\\ b",
            Some(mode(Download, &["/tmp/a b"], false, false)),
        ),
        (
            "scp -o ControlMaster=no -t /x",
            Some(mode(Upload, &["/x"], false, false)),
        ),
        (
            "scp -oFoo=bar -l 100 -t /x",
            Some(mode(Upload, &["/x"], false, false)),
        ),
        (
            "scp -t -- -odd",
            Some(mode(Upload, &["-odd"], false, false)),
        ),
        (
            "scp -f -- /a /b",
            Some(mode(Download, &["/a", "/b"], false, false)),
        ),
        ("scp -t", None),
        ("scp -t /a /b", None),
        ("scp -f", None),
        ("scp -t -f /x", None),
        ("scp /a host:/b", None),
        ("scp -o", None),
        ("ls -l", None),
        ("sftp-server", None),
        ("notscp -t /x", None),
        ("sh -c 'scp -t /x'", None),
        ("scp -t /x; rm -rf /", None),
        ("scp -t /x && id", None),
        ("scp -t $(id)", None),
        ("scp -t \"$HOME\"", None),
        ("scp -t 'unterminated", None),
        ("", None),
    ];
    for (command, expected) in cases {
        assert_eq!(is_scp_command(command), expected, "{command}");
    }
}

fn upload(target: &str) -> ScpMode {
    is_scp_command(&format!("scp -t {target}")).unwrap()
}

fn transfer(direction: Direction, path: &str, bytes: u64, complete: bool) -> FileEvent {
    FileEvent::Transfer {
        direction,
        path: path.to_owned(),
        bytes,
        complete,
    }
}

struct Case {
    name: &'static str,
    command: &'static str,
    /// What the sending side writes.
    stream: Vec<u8>,
    expected: Vec<FileEvent>,
}

fn cases() -> Vec<Case> {
    use Direction::{Download, Upload};
    let big = vec![0x5a; 3000];
    vec![
        Case {
            name: "single upload to a file name",
            command: "scp -t /tmp/x",
            stream: b"C0644 5 a.txt\nhello\0".to_vec(),
            expected: vec![transfer(Upload, "/tmp/x", 5, true)],
        },
        Case {
            name: "single upload to a directory",
            command: "scp -t /tmp/",
            stream: b"T1700000000 0 1700000000 0\nC0600 0 empty\n\0".to_vec(),
            expected: vec![transfer(Upload, "/tmp/empty", 0, true)],
        },
        Case {
            name: "several uploads into a directory",
            command: "scp -d -t /srv",
            stream: [b"C0644 3 a\nabc\0C0644 3000 b\n".as_slice(), &big, b"\0"].concat(),
            expected: vec![transfer(Upload, "/srv/a", 3, true), transfer(Upload, "/srv/b", 3000, true)],
        },
        Case {
            name: "recursive upload",
            command: "scp -r -d -t /srv",
            stream: b"D0755 0 dir\nT1 0 2 0\nC0600 3 f\nabc\0D0700 0 sub\nC0600 1 g\nz\0E\nE\nC0644 1 top\nt\0".to_vec(),
            expected: vec![
                transfer(Upload, "/srv/dir/f", 3, true),
                transfer(Upload, "/srv/dir/sub/g", 1, true),
                transfer(Upload, "/srv/top", 1, true),
            ],
        },
        Case {
            name: "single download",
            command: "scp -f /etc/hosts",
            stream: b"C0644 10 hosts\n0123456789\0".to_vec(),
            expected: vec![transfer(Download, "/etc/hosts", 10, true)],
        },
        Case {
            name: "download of a glob",
            command: "scp -f /var/log/*.log",
            stream: b"C0640 2 a.log\nab\0C0640 2 b.log\ncd\0".to_vec(),
            expected: vec![transfer(Download, "/var/log/a.log", 2, true), transfer(Download, "/var/log/b.log", 2, true)],
        },
        Case {
            name: "recursive download",
            command: "scp -r -f /home/alice/",
            stream: b"D0755 0 alice\nC0600 4 .bashrc\nxxxx\0E\n".to_vec(),
            expected: vec![transfer(Download, "/home/alice/.bashrc", 4, true)],
        },
        Case {
            name: "missing source",
            command: "scp -f /nope",
            stream: b"\x01scp: /nope: No such file or directory\n".to_vec(),
            expected: vec![],
        },
        Case {
            name: "read error after the content",
            command: "scp -f /dev/flaky",
            stream: b"C0644 4 flaky\nabcd\x01scp: /dev/flaky: Input/output error\nC0644 1 next\nn\0".to_vec(),
            expected: vec![transfer(Download, "/dev/flaky", 4, false), transfer(Download, "/dev/next", 1, true)],
        },
        Case {
            name: "cut off in the middle of the content",
            command: "scp -t /tmp/x",
            stream: b"C0644 10 a\n12345".to_vec(),
            expected: vec![transfer(Upload, "/tmp/x", 5, false)],
        },
    ]
}

fn inspect(command: &str, pieces: &[&[u8]]) -> (Vec<FileEvent>, bool) {
    let mode = is_scp_command(command).unwrap();
    let direction = mode.direction;
    let mut inspector = ScpInspector::new(mode);
    let mut events = Vec::new();
    for piece in pieces {
        match direction {
            Direction::Upload => {
                inspector.client_to_server(piece);
                inspector.server_to_client(b"\0");
            }
            Direction::Download => {
                inspector.server_to_client(piece);
                inspector.client_to_server(b"\0");
            }
        }
        events.extend(inspector.take_events());
    }
    events.extend(inspector.finish());
    (events, inspector.is_stopped())
}

#[test]
fn streams_fed_whole_give_their_transfers() {
    for case in cases() {
        let (events, stopped) = inspect(case.command, &[&case.stream]);
        assert!(!stopped, "{}", case.name);
        assert_eq!(events, case.expected, "{}", case.name);
    }
}

#[test]
fn streams_split_at_any_byte_give_the_same_transfers() {
    for case in cases() {
        for split in 0..=case.stream.len() {
            let (left, right) = case.stream.split_at(split);
            let (events, stopped) = inspect(case.command, &[left, right]);
            assert!(!stopped, "{} split at {split}", case.name);
            assert_eq!(events, case.expected, "{} split at {split}", case.name);
        }
        let bytes: Vec<&[u8]> = case.stream.chunks(1).collect();
        assert_eq!(
            inspect(case.command, &bytes).0,
            case.expected,
            "{} byte by byte",
            case.name
        );
    }
}

#[test]
fn a_large_file_is_skipped_by_count() {
    let mut inspector = ScpInspector::new(upload("/tmp/big"));
    let size: u64 = 64 * 1024 * 1024;
    inspector.client_to_server(format!("C0644 {size} big\n").as_bytes());
    let chunk = vec![0u8; 32 * 1024];
    for _ in 0..size / chunk.len() as u64 {
        inspector.client_to_server(&chunk);
        assert!(inspector.buffered_bytes() <= MAX_LINE + 1);
    }
    inspector.client_to_server(b"\0");
    assert_eq!(
        inspector.take_events(),
        [transfer(Direction::Upload, "/tmp/big", size, true)]
    );
}

#[test]
fn garbage_stops_inspection_quietly() {
    let long_line = [b"C0644 1 ".as_slice(), &vec![b'a'; MAX_LINE + 10]].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown control", b"X what\n".to_vec()),
        ("nul before a line", b"\0C0644 1 a\nz\0".to_vec()),
        ("bad mode", b"C06x4 1 a\n".to_vec()),
        ("negative size", b"C0644 -1 a\n".to_vec()),
        ("name with a slash", b"C0644 1 ../../etc/passwd\n".to_vec()),
        ("dot dot directory", b"D0755 0 ..\n".to_vec()),
        ("end without a directory", b"E\n".to_vec()),
        ("bad times", b"T1 0 x 0\n".to_vec()),
        ("bad status byte", b"C0644 1 a\nz\x07".to_vec()),
        ("line without an end", long_line),
    ];
    for (name, garbage) in cases {
        let mut inspector = ScpInspector::new(upload("/tmp/"));
        inspector.client_to_server(&garbage);
        assert!(inspector.is_stopped(), "{name}");
        assert!(inspector.buffered_bytes() <= MAX_LINE + 1, "{name}");
        inspector.client_to_server(b"C0644 1 ok\nz\0");
        assert_eq!(inspector.finish(), [], "{name}");
    }
}

#[test]
fn acknowledgements_from_the_receiver_are_ignored() {
    let mut inspector = ScpInspector::new(upload("/tmp/x"));
    inspector.server_to_client(b"\x01scp: /tmp/x: Permission denied\n\0\0garbage");
    assert!(!inspector.is_stopped());
    inspector.client_to_server(b"C0644 1 a\nz\0");
    assert_eq!(
        inspector.finish(),
        [transfer(Direction::Upload, "/tmp/x", 1, true)]
    );
}

#[test]
fn path_helpers() {
    let cases = [
        ("/tmp/x", "/tmp", "x"),
        ("/tmp/dir/", "/tmp", "dir"),
        ("x", "", "x"),
        ("/x", "/", "x"),
        ("/", "/", ""),
        ("a/b", "a", "b"),
    ];
    for (path, expected_parent, expected_base) in cases {
        assert_eq!(
            (parent(path), base_name(path)),
            (expected_parent, expected_base),
            "{path}"
        );
    }
    assert_eq!(join("", "a"), "a");
    assert_eq!(join("/", "a"), "/a");
    assert_eq!(join("/srv", "a"), "/srv/a");
}
