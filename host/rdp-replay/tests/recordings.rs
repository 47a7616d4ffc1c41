//! The crate on a real recording: `fixtures/checkerboard-typing.pdus` is a session through the
//! gateway's relay (steering on) between real FreeRDP programs, the target's screen painted
//! with a 32-pixel checkerboard of #ff00ff and #00c000, while `xdotool` typed "Hello, World!"
//! and Return into the client window. Regenerate it with
//! `GATEHOUSE_RDP_FIXTURES=$PWD/host/rdp-replay/tests/fixtures cargo test -p gatehouse-rdp
//! --test proxy a_steered_recording` (docs/rdp.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_rdp_replay::pdus::{self, Pdu, PduError, PduReader, PduWriter};
use gatehouse_rdp_replay::{
    Direction, EventKind, ExportError, ExportOptions, Framing, InputTracker, Replayer, Verdict,
    export,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SQUARE: usize = 32;
const FG: [u8; 3] = [0xff, 0x00, 0xff];
const BG: [u8; 3] = [0x00, 0xc0, 0x00];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkerboard-typing.pdus")
}

/// ffmpeg, or a failure naming the package (scripts/install-test-deps.sh installs it).
fn require_ffmpeg() {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok();
    assert!(
        found,
        "`ffmpeg` is not installed: install the Debian package `ffmpeg` \
         (scripts/install-test-deps.sh installs every test dependency)"
    );
}

fn board(x: usize, y: usize) -> [u8; 3] {
    if (x / SQUARE + y / SQUARE).is_multiple_of(2) {
        FG
    } else {
        BG
    }
}

/// Checks the centres of many squares, within `tolerance` per channel.
fn assert_checkerboard(rgba: &[u8], width: usize, height: usize, tolerance: u8) {
    assert_eq!(rgba.len(), width * height * 4);
    let mut checked = 0;
    for y in (SQUARE / 2..height).step_by(SQUARE * 3) {
        for x in (SQUARE / 2..width).step_by(SQUARE * 5) {
            let at = (y * width + x) * 4;
            let pixel = &rgba[at..at + 3];
            let expected = board(x, y);
            let close = pixel
                .iter()
                .zip(expected)
                .all(|(p, e)| p.abs_diff(e) <= tolerance);
            assert!(
                close,
                "pixel at ({x}, {y}) is {pixel:?}, expected {expected:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20);
}

/// Reads an image or the last frame of a video back as raw RGBA with ffmpeg.
fn read_back(path: &Path, width: usize, height: usize) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-sseof", "-0.5", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgba", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frame = width * height * 4;
    assert!(out.stdout.len() >= frame, "{} bytes", out.stdout.len());
    out.stdout[out.stdout.len() - frame..].to_vec()
}

fn all_pdus(path: &Path) -> Vec<(Direction, Framing, Duration, Vec<u8>)> {
    let mut reader = pdus::open(path).unwrap();
    let mut all = Vec::new();
    while let Some(pdu) = reader.next_pdu().unwrap() {
        all.push((pdu.direction, pdu.framing, pdu.at, pdu.bytes.to_vec()));
    }
    all
}

fn write_pdus(path: &Path, pdus: &[(Direction, Framing, Duration, Vec<u8>)]) {
    let mut writer = PduWriter::new(Vec::new()).unwrap();
    for (direction, framing, at, bytes) in pdus {
        writer
            .write(&Pdu {
                direction: *direction,
                framing: *framing,
                at: *at,
                bytes,
            })
            .unwrap();
    }
    std::fs::write(path, writer.finish().unwrap()).unwrap();
}

#[test]
fn the_recording_decodes_to_the_checkerboard() {
    let mut reader = pdus::open(&fixture()).unwrap();
    let replayer = Replayer::replay(&mut reader).unwrap();
    assert_eq!(
        replayer.verdict(),
        Verdict::Decodable,
        "{:?}",
        replayer.stats()
    );
    let stats = replayer.stats();
    assert_eq!(stats.activations, 1);
    assert_eq!(stats.failed_pdus, 0);
    assert_eq!(stats.skipped_orders, 0);
    assert!(stats.decoded_pdus >= 1, "{stats:?}");
    let frame = replayer.frame().unwrap();
    assert_eq!((frame.width, frame.height), (1024, 768));
    assert!(frame.rgba.iter().any(|&b| b != 0), "a blank frame");
    assert_checkerboard(frame.rgba, 1024, 768, 0);
}

#[test]
fn frames_are_yielded_with_their_time() {
    let mut reader = pdus::open(&fixture()).unwrap();
    let mut replayer = Replayer::new();
    let mut changes = Vec::new();
    while let Some(pdu) = reader.next_pdu().unwrap() {
        if replayer.feed(&pdu) {
            let frame = replayer.frame().unwrap();
            assert_eq!(frame.at, pdu.at);
            changes.push(frame.at);
        }
    }
    assert!(!changes.is_empty());
    assert!(changes.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn typing_in_the_recording_is_one_searchable_run() {
    let mut reader = pdus::open(&fixture()).unwrap();
    let mut tracker = InputTracker::new();
    let mut events = Vec::new();
    while let Some(pdu) = reader.next_pdu().unwrap() {
        tracker.observe(&pdu, &mut events);
    }
    tracker.finish(&mut events);
    let runs: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Keys { text, .. } => Some((e.at_micros, text.clone())),
            _ => None,
        })
        .collect();
    assert!(
        runs.iter().any(|(_, t)| t == "Hello, World!<Enter>"),
        "{runs:?}"
    );
    let json = serde_json::to_string(&events[0]).unwrap();
    assert!(json.contains("\"type\":\"keys\""), "{json}");
    assert!(json.contains("\"at_micros\":"), "{json}");
}

#[test]
fn png_export_shows_the_checkerboard_at_the_end_and_at_a_time() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("last.png");
    let summary = export(&fixture(), &png, &ExportOptions::default()).unwrap();
    assert_eq!(summary.frames, 1);
    assert_eq!((summary.width, summary.height), (1024, 768));
    assert_eq!(summary.verdict, Verdict::Decodable);
    assert_checkerboard(&read_back(&png, 1024, 768), 1024, 768, 0);

    // Before the first activation there is nothing to show.
    let early = dir.path().join("early.png");
    let result = export(
        &fixture(),
        &early,
        &ExportOptions {
            at: Some(Duration::ZERO),
            ..ExportOptions::default()
        },
    );
    assert!(
        matches!(result, Err(ExportError::NotDecodable { .. })),
        "{result:?}"
    );
    assert!(!early.exists());
}

#[test]
fn webm_export_plays_the_session_at_the_frame_rate() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let webm = dir.path().join("session.webm");
    let started = std::time::Instant::now();
    let summary = export(&fixture(), &webm, &ExportOptions::default()).unwrap();
    let took = started.elapsed();
    let pdus = all_pdus(&fixture());
    let span = pdus.last().unwrap().2;
    // Frames from the first activation to the end at 5 fps, plus one second of the last one.
    assert!(summary.frames >= 5, "{summary:?}");
    assert!(
        summary.frames <= (span.as_secs_f64() * 5.0) as u64 + 10,
        "{summary:?} for {span:?}"
    );
    assert!(took < Duration::from_secs(60), "export took {took:?}");
    assert_checkerboard(&read_back(&webm, 1024, 768), 1024, 768, 48);
}

#[test]
fn long_idle_stretches_are_cut_to_the_cap() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    // The fixture with its last PDU moved a minute later: a minute of still screen.
    let mut pdus = all_pdus(&fixture());
    let last = pdus.last_mut().unwrap();
    last.2 += Duration::from_secs(60);
    let idle = dir.path().join("idle.pdus");
    write_pdus(&idle, &pdus);
    let webm = dir.path().join("idle.webm");
    let summary = export(
        &idle,
        &webm,
        &ExportOptions {
            fps: 2,
            max_idle: Some(Duration::from_secs(5)),
            ..ExportOptions::default()
        },
    )
    .unwrap();
    assert!(summary.idle_cut >= Duration::from_secs(50), "{summary:?}");
    assert!(summary.frames < 2 * 30, "{summary:?}");
}

/// The fixture made into a session with a minute of idle screen: the screen stays black after
/// the activation, then the checkerboard is painted at the moment the typing starts, a minute
/// later than in the fixture (everything from the painting on moves a minute later). Returns
/// the PDUs; the typing is the recording's only event.
fn idle_then_painted_at_the_typing() -> Vec<(Direction, Framing, Duration, Vec<u8>)> {
    let all = all_pdus(&fixture());
    let mut replayer = Replayer::new();
    let painting = all
        .iter()
        .position(|(direction, framing, at, bytes)| {
            replayer.feed(&Pdu {
                direction: *direction,
                framing: *framing,
                at: *at,
                bytes,
            })
        })
        .expect("the fixture paints the screen");
    let mut tracker = InputTracker::new();
    let mut events = Vec::new();
    for (direction, framing, at, bytes) in &all {
        tracker.observe(
            &Pdu {
                direction: *direction,
                framing: *framing,
                at: *at,
                bytes,
            },
            &mut events,
        );
    }
    tracker.finish(&mut events);
    let typed = Duration::from_micros(events[0].at_micros);
    let painted_at = all[painting].2;
    assert!(typed > painted_at, "the fixture types after the painting");
    let idle = Duration::from_secs(60);
    let mut moved: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != painting)
        .map(|(_, (d, f, at, bytes))| {
            let at = if *at >= painted_at { *at + idle } else { *at };
            (*d, *f, at, bytes.clone())
        })
        .collect();
    let (d, f, _, bytes) = all[painting].clone();
    let before = moved
        .iter()
        .position(|(_, _, at, _)| *at >= typed + idle)
        .unwrap();
    moved.insert(before, (d, f, typed + idle, bytes));
    moved
}

/// Mean brightness of each frame of a video, decoded at its own frames (no resampling).
fn frame_brightness(video: &Path) -> Vec<u32> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(video)
        .args(["-fps_mode", "passthrough", "-vf", "scale=32:24"])
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(32 * 24)
        .map(|frame| frame.iter().map(|&b| u32::from(b)).sum::<u32>() / (32 * 24))
        .collect()
}

#[test]
fn an_event_after_a_cut_idle_stretch_maps_to_the_frame_that_shows_it() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("idle.pdus");
    write_pdus(&recording, &idle_then_painted_at_the_typing());
    // The event as the gateway logs it: the input tracker on the recorded PDUs.
    let mut reader = pdus::open(&recording).unwrap();
    let mut tracker = InputTracker::new();
    let mut events = Vec::new();
    while let Some(pdu) = reader.next_pdu().unwrap() {
        tracker.observe(&pdu, &mut events);
    }
    tracker.finish(&mut events);
    assert_eq!(events.len(), 1, "{events:?}");
    let typed = Duration::from_micros(events[0].at_micros);
    assert!(typed > Duration::from_secs(60), "{typed:?}");

    let webm = dir.path().join("idle.webm");
    let options = ExportOptions {
        fps: 5,
        max_idle: Some(Duration::from_secs(5)),
        ..ExportOptions::default()
    };
    let summary = export(&recording, &webm, &options).unwrap();
    let clock = summary.clock.clone().expect("a video has a clock");
    assert_eq!(clock.idle_cut(), summary.idle_cut, "{clock:?}");
    assert!(summary.idle_cut >= Duration::from_secs(50), "{summary:?}");
    assert_eq!(clock.frames, summary.frames);
    assert!(clock.segments.len() >= 2, "{clock:?}");

    let brightness = frame_brightness(&webm);
    assert_eq!(brightness.len() as u64, summary.frames, "{brightness:?}");
    let at = clock.video_time(typed);
    let frame = (at.as_secs_f64() * 5.0).floor() as usize;
    // Seeking to the mapped time shows the first painted frame: the one before it is the
    // still black screen of the idle stretch.
    assert!(brightness[frame] > 40, "frame {frame}: {brightness:?}");
    assert!(
        brightness[frame - 1] < 10,
        "frame {}: {brightness:?}",
        frame - 1
    );
    assert_eq!(
        brightness.iter().position(|&b| b > 40),
        Some(frame),
        "{brightness:?}"
    );
    // The event's own time is far past the end of the cut video: seeking there was the bug.
    let length = Duration::from_millis(200) * brightness.len() as u32;
    assert!(
        typed > length + Duration::from_secs(40),
        "{typed:?} {length:?}"
    );
    // Without a cap the clock is the recording's, from the first activation.
    let full = export(
        &recording,
        &dir.path().join("full.webm"),
        &ExportOptions {
            max_idle: None,
            ..options
        },
    )
    .unwrap();
    let full_clock = full.clock.unwrap();
    assert_eq!(full_clock.segments.len(), 1);
    let start = full_clock.segments[0].at;
    let expected = typed - start;
    let mapped = full_clock.video_time(typed);
    assert!(
        mapped >= expected && mapped <= expected + Duration::from_millis(300),
        "{mapped:?} for {expected:?}"
    );
}

#[test]
fn a_missing_ffmpeg_or_an_unknown_format_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let result = export(
        &fixture(),
        &dir.path().join("x.webm"),
        &ExportOptions {
            ffmpeg: PathBuf::from("/nonexistent/ffmpeg"),
            ..ExportOptions::default()
        },
    );
    let error = result.unwrap_err();
    assert!(
        matches!(error, ExportError::FfmpegMissing { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("Debian package `ffmpeg`"),
        "{error}"
    );
    let error = export(
        &fixture(),
        &dir.path().join("x.gif"),
        &ExportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(error, ExportError::UnsupportedFormat { .. }),
        "{error:?}"
    );
}

#[test]
fn truncated_and_foreign_files_are_typed_errors() {
    let bytes = std::fs::read(fixture()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 20] {
        let path = dir.path().join(format!("cut-{cut}.pdus"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let mut reader = pdus::open(&path).unwrap();
        let result = Replayer::replay(&mut reader);
        assert!(
            matches!(
                result,
                Err(gatehouse_rdp_replay::ReplayError::Recording(
                    PduError::Truncated { .. }
                ))
            ),
            "cut at {cut}: {:?}",
            result.map(|r| r.verdict())
        );
        if cut > 20 {
            let error = export(
                &path,
                &dir.path().join("cut.png"),
                &ExportOptions::default(),
            );
            assert!(
                matches!(
                    error,
                    Err(ExportError::Recording(PduError::Truncated { .. }))
                ),
                "{error:?}"
            );
        }
    }
    let foreign = dir.path().join("cast.pdus");
    std::fs::write(&foreign, b"{\"version\": 2}\n").unwrap();
    assert!(matches!(
        pdus::open(&foreign).map(|_| ()),
        Err(PduError::BadMagic { .. })
    ));
    assert!(matches!(
        PduReader::new(&b""[..]).map(|_| ()),
        Err(PduError::BadMagic { .. })
    ));
}

#[test]
fn corrupted_graphics_are_flagged_never_a_panic() {
    let pdus = all_pdus(&fixture());
    let dir = tempfile::tempdir().unwrap();

    // Every byte of every target PDU after the header scrambled: not decodable, no panic.
    let scrambled: Vec<_> = pdus
        .iter()
        .cloned()
        .map(|(d, f, at, mut bytes)| {
            if d == Direction::TargetToClient && f == Framing::FastPath {
                for (i, b) in bytes.iter_mut().enumerate().skip(3) {
                    *b ^= (i as u8).wrapping_mul(151) | 1;
                }
            }
            (d, f, at, bytes)
        })
        .collect();
    let path = dir.path().join("scrambled.pdus");
    write_pdus(&path, &scrambled);
    let replayer = Replayer::replay(&mut pdus::open(&path).unwrap()).unwrap();
    assert!(
        matches!(
            replayer.verdict(),
            Verdict::NotDecodable(_) | Verdict::Partially(_)
        ),
        "{:?} {:?}",
        replayer.verdict(),
        replayer.stats()
    );
    assert!(replayer.stats().failed_pdus > 0, "{:?}", replayer.stats());

    // Without the target's side there is no activation and nothing to export.
    let client_only: Vec<_> = pdus
        .iter()
        .filter(|(d, ..)| *d == Direction::ClientToTarget)
        .cloned()
        .collect();
    let path = dir.path().join("client-only.pdus");
    write_pdus(&path, &client_only);
    let replayer = Replayer::replay(&mut pdus::open(&path).unwrap()).unwrap();
    assert!(matches!(replayer.verdict(), Verdict::NotDecodable(_)));
    let result = export(
        &path,
        &dir.path().join("none.webm"),
        &ExportOptions::default(),
    );
    assert!(
        matches!(result, Err(ExportError::NotDecodable { .. })),
        "{result:?}"
    );

    // Every single-byte corruption of a graphics PDU: counted, never a panic.
    let mut replayer = Replayer::new();
    for (d, f, at, bytes) in &pdus {
        let mut bytes = bytes.clone();
        if *d == Direction::TargetToClient && bytes.len() > 8 {
            let i = bytes.len() / 2;
            bytes[i] = bytes[i].wrapping_add(0x5a);
        }
        replayer.feed(&Pdu {
            direction: *d,
            framing: *f,
            at: *at,
            bytes: &bytes,
        });
    }
    let _ = replayer.verdict();
}

#[test]
fn mp4_export_uses_h264() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("session.mp4");
    let summary = export(&fixture(), &mp4, &ExportOptions::default()).unwrap();
    assert!(summary.frames >= 5, "{summary:?}");
    let probe = Command::new("ffmpeg")
        .args(["-hide_banner", "-i"])
        .arg(&mp4)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&probe.stderr);
    assert!(info.contains("h264"), "{info}");
    assert_checkerboard(&read_back(&mp4, 1024, 768), 1024, 768, 48);
}

#[test]
fn the_verdict_alone_is_the_full_replays_verdict_at_every_cut() {
    // `Replayer::check` (what the gateway runs after each session) makes the frame buffer only
    // when a PDU needs it; its verdict must be the full replay's, wherever the session ended.
    let dir = tempfile::tempdir().unwrap();
    let all = all_pdus(&fixture());
    let mut verdicts = Vec::new();
    for cut in [
        0,
        3,
        all.len() / 10,
        all.len() / 4,
        all.len() / 2,
        all.len(),
    ] {
        let path = dir.path().join(format!("cut-{cut}.pdus"));
        write_pdus(&path, &all[..cut]);
        let full = Replayer::replay(&mut pdus::open(&path).unwrap())
            .unwrap()
            .verdict();
        let alone = Replayer::check(&mut pdus::open(&path).unwrap()).unwrap();
        assert_eq!(alone, full, "cut after {cut} of {} PDUs", all.len());
        verdicts.push(alone);
    }
    assert_eq!(verdicts.last(), Some(&Verdict::Decodable));
    assert!(
        verdicts.iter().any(|v| *v != Verdict::Decodable),
        "no cut before the activation: {verdicts:?}"
    );
}
