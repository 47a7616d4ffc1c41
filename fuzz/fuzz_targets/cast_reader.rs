//! The asciicast v2 reader (gatehouse-recording `read_cast`, `text`, `play`, `export`), which
//! `gatehouse recordings play|text|export` and the web API run on files on disk.
//!
//! Properties: reading never panics; the header and every event come from the file (event data is
//! no longer than the file, there are fewer events than lines); time never goes backwards and is
//! finite; `text` leaves no control characters but newline and tab; `play` writes exactly the
//! output events; `export` rewrites a file that reads back to the same recording.
#![no_main]

use gatehouse_recording::{
    CastRecording, EventKind, channel_file_name, export, play, read_cast, text,
};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

fn scratch() -> &'static (tempfile::TempDir, PathBuf) {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-fuzz-cast")
            .tempdir_in(base)
            .expect("a scratch directory");
        let path = dir.path().join(channel_file_name(0));
        (dir, path)
    })
}

fn close(a: f64, b: f64) -> bool {
    // Exported times have microsecond precision; large times lose it to f64 itself.
    (a - b).abs() <= 1e-6 + a.abs() * 1e-12
}

fn same_option(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b || (a - b).abs() <= a.abs() * 1e-15,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let (dir, path) = scratch();
    std::fs::write(path, data).expect("write the cast file");
    let read = read_cast(path);
    let texted = text(path);
    assert_eq!(
        read.is_ok(),
        texted.is_ok(),
        "read_cast and text disagree: {read:?} {texted:?}"
    );
    let Ok(CastRecording { header, events }) = read else {
        return;
    };
    let lines = data.split(|&b| b == b'\n').count();
    assert!(
        events.len() < lines.max(1),
        "{} events from {lines} lines",
        events.len()
    );
    let data_bytes: usize = events.iter().map(|event| event.data.len()).sum();
    assert!(
        data_bytes <= data.len(),
        "{data_bytes} bytes of event data from a {}-byte file",
        data.len()
    );
    let mut previous = 0.0_f64;
    for event in &events {
        assert!(
            event.time.is_finite() && event.time >= 0.0,
            "time {}",
            event.time
        );
        assert!(
            event.time >= previous,
            "time goes backwards: {previous} then {}",
            event.time
        );
        assert!(Duration::try_from_secs_f64(event.time).is_ok());
        previous = event.time;
    }

    let plain = texted.expect("checked above");
    assert!(
        plain
            .chars()
            .all(|c| !c.is_control() || c == '\n' || c == '\t'),
        "control characters left in {plain:?}"
    );

    // Played from the start, and from a moment in the middle: the same output either way (what
    // came before the moment is written at once).
    let mut played = Vec::new();
    play(path, 1e12, Some(Duration::from_micros(1)), 0.0, &mut played).expect("play what reads");
    let middle = events.get(events.len() / 2).map_or(0.0, |e| e.time);
    let mut from_middle = Vec::new();
    play(path, 1e12, Some(Duration::from_micros(1)), middle, &mut from_middle)
        .expect("play from a moment what reads");
    assert_eq!(played, from_middle, "playing from {middle} wrote other output");
    let output: String = events
        .iter()
        .filter(|event| event.kind == EventKind::Output)
        .map(|event| event.data.as_str())
        .collect();
    assert_eq!(played, output.as_bytes());

    let dest = dir.path().join("exported.cast");
    export(dir.path(), 0, &dest).expect("export what reads");
    let again = read_cast(&dest).expect("the export reads back");
    assert_eq!(again.events.len(), events.len());
    for (a, b) in events.iter().zip(&again.events) {
        assert_eq!((a.kind, &a.data), (b.kind, &b.data));
        assert!(
            close(a.time, b.time),
            "time {} exported as {}",
            a.time,
            b.time
        );
    }
    let h = &again.header;
    assert_eq!(
        (h.width, h.height, h.timestamp, &h.command, &h.title, &h.env),
        (
            header.width,
            header.height,
            header.timestamp,
            &header.command,
            &header.title,
            &header.env
        )
    );
    assert!(
        same_option(h.duration, header.duration)
            && same_option(h.idle_time_limit, header.idle_time_limit)
    );
});
