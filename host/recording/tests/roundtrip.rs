//! Records sessions through the public API and reads them back the way the CLI and auditors will.

use gatehouse_recording::{
    CastHeader, EventKind, RecordedSession, RecordingEvent, SessionRecording, export, read_cast,
    text,
};

const SCREEN: &str = "\x1b]0;root@db1: ~\x07\x1b[01;32mroot@db1\x1b[00m:~# ls /var/lib\r\ncaf\u{e9} \u{2500}\u{2500} \u{1f600}\r\n";
const PLAIN: &str = "root@db1:~# ls /var/lib\ncaf\u{e9} \u{2500}\u{2500} \u{1f600}\n";

#[test]
fn output_split_at_every_byte_reads_back_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let session = SessionRecording::create(root.path(), "split").unwrap();
    let bytes = SCREEN.as_bytes();
    for split in 0..=bytes.len() {
        let channel = u32::try_from(split).unwrap();
        let mut recorder = session.channel(channel, CastHeader::new(80, 24)).unwrap();
        recorder.output(&bytes[..split]).unwrap();
        recorder.output(&bytes[split..]).unwrap();
        let totals = recorder.finish().unwrap();
        assert_eq!(totals.bytes_out, bytes.len() as u64);

        let path = session.dir().join(format!("channel-{channel}.cast"));
        let recording = read_cast(&path).unwrap();
        let output: String = recording
            .events
            .iter()
            .map(|event| event.data.as_str())
            .collect();
        assert_eq!(output, SCREEN, "split at {split}");
        assert!(recording.events.iter().all(|event| !event.data.is_empty()));
        assert_eq!(text(&path).unwrap(), PLAIN, "split at {split}");
    }
    let recorded = RecordedSession::open(root.path(), "split").unwrap();
    assert_eq!(recorded.channels().unwrap().len(), bytes.len() + 1);
}

#[test]
fn a_recorded_channel_exports_to_an_equivalent_standalone_file() {
    let root = tempfile::tempdir().unwrap();
    let session = SessionRecording::create(root.path(), "s").unwrap();
    let header = CastHeader::new(80, 24)
        .with_term("xterm-256color")
        .with_shell("/bin/bash")
        .with_title("alice@root@db1");
    let mut recorder = session.channel(3, header.clone()).unwrap();
    recorder.output(b"$ ").unwrap();
    recorder.input(b"echo \"hi\"\r").unwrap();
    recorder.output(b"echo \"hi\"\r\nhi\r\n$ ").unwrap();
    recorder.resize(132, 43).unwrap();
    recorder.marker("policy warning shown").unwrap();
    recorder.input(b"\x04").unwrap();
    recorder.finish().unwrap();
    session
        .log(
            Some(3),
            RecordingEvent::ChannelClosed {
                exit_status: Some(0),
                exit_signal: None,
            },
        )
        .unwrap();
    session.finish().unwrap();

    let recorded = RecordedSession::open(root.path(), "s").unwrap();
    let original = recorded.read_channel(3).unwrap();
    assert_eq!(original.header.width, header.width);
    assert_eq!(original.header.env, header.env);
    assert_eq!(original.header.title, header.title);
    let kinds: Vec<(EventKind, &str)> = original
        .events
        .iter()
        .map(|event| (event.kind, event.data.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Output, "$ "),
            (EventKind::Input, "echo \"hi\"\r"),
            (EventKind::Output, "echo \"hi\"\r\nhi\r\n$ "),
            (EventKind::Resize, "132x43"),
            (EventKind::Marker, "policy warning shown"),
            (EventKind::Input, "\u{4}"),
        ]
    );

    let dest = root.path().join("exported.cast");
    export(recorded.dir(), 3, &dest).unwrap();
    assert_eq!(read_cast(&dest).unwrap(), original);
    assert_eq!(text(&dest).unwrap(), "$ echo \"hi\"\nhi\n$ ");

    let missing = export(recorded.dir(), 9, &dest).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "channel 9 is not recorded in this session"
    );
}
