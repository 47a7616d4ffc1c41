//! A session's screen recording as a video or a still, whatever the protocol: RDP's `rdp.pdus`
//! and VNC's `vnc.rec` both go through `gatehouse_rdp_replay::export` (one exporter: the same
//! frame rate, idle cuts and [`VideoClock`]), RDP's through the replay crate's own
//! `PduSource`, VNC's through [`VncSource`] here. The adapter lives in the daemon so that
//! neither protocol crate depends on the other: `gatehouse-vnc` keeps no IronRDP in its graph
//! and `gatehouse-rdp-replay` knows nothing of RFB. Used by `gatehouse session export`, by
//! the API's player (`GET /api/v1/sessions/{id}/video` through [`Renderer`], cached beside
//! the recording) and, for the frame type, by the live view.

use crate::datadir::DataDir;
use gatehouse_rdp_replay::{
    ExportError, ExportOptions, ExportSummary, Frame, FrameSource, PduSource, Verdict, VideoClock,
};
use gatehouse_vnc::{Record, RecordKind, RecordingReader};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The cached rendering of a session, for the player.
pub const VIDEO_FILE: &str = "video.webm";
/// The cached rendering's clock (`gatehouse_rdp_replay::VideoClock` as JSON): where its idle
/// cuts are, to map event times to video times.
pub const CLOCK_FILE: &str = "video.clock.json";

/// A session's recording of a screen, by the file its session directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScreenRecording {
    /// `rdp.pdus` (`gatehouse_rdp_replay::pdus`).
    Rdp(PathBuf),
    /// `vnc.rec` (`gatehouse_vnc::recording`).
    Vnc(PathBuf),
}

impl ScreenRecording {
    /// The screen recording in session directory `dir`, `None` for a terminal session.
    pub fn in_dir(dir: &Path) -> Option<ScreenRecording> {
        let rdp = dir.join(crate::rdp_glue::PDU_FILE);
        if rdp.is_file() {
            return Some(ScreenRecording::Rdp(rdp));
        }
        let vnc = dir.join(crate::vnc_glue::VNC_FILE);
        vnc.is_file().then_some(ScreenRecording::Vnc(vnc))
    }

    pub fn path(&self) -> &Path {
        match self {
            ScreenRecording::Rdp(path) | ScreenRecording::Vnc(path) => path,
        }
    }

    /// The protocol, for messages (`RDP`, `VNC`).
    pub fn protocol(&self) -> &'static str {
        match self {
            ScreenRecording::Rdp(_) => "RDP",
            ScreenRecording::Vnc(_) => "VNC",
        }
    }
}

/// Renders `recording` to `output` (`.webm`, `.mp4` or `.png`, see
/// `gatehouse_rdp_replay::export`).
pub fn export(
    recording: &ScreenRecording,
    output: &Path,
    options: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    match recording {
        ScreenRecording::Rdp(path) => {
            gatehouse_rdp_replay::export_from(|| PduSource::open(path), output, options)
        }
        ScreenRecording::Vnc(path) => {
            gatehouse_rdp_replay::export_from(|| VncSource::open(path), output, options)
        }
    }
}

/// A VNC screen as the exporter's frame type (the same shape: RGBA rows, size, time of the
/// last change).
pub fn vnc_frame(frame: gatehouse_vnc::Frame<'_>) -> Frame<'_> {
    Frame {
        rgba: frame.rgba,
        width: frame.width,
        height: frame.height,
        at: frame.at,
    }
}

/// A VNC recording (`vnc.rec`) as a frame source. Its moments are what a person sees or does:
/// the start (the target's ServerInit), every message from the target, and the viewer's keys,
/// pointer and clipboard. The viewer's update requests, encodings and pixel format are
/// housekeeping, applied as they are read: a viewer polling a still screen is idle.
pub struct VncSource<R: Read = BufReader<Box<dyn Read + Send>>> {
    reader: RecordingReader<R>,
    replayer: gatehouse_vnc::Replayer,
    pending: Option<Record>,
    started: bool,
    failed: u64,
    first_error: Option<String>,
}

/// RFB client message types that are the user's doing (KeyEvent, PointerEvent,
/// ClientCutText).
const USER_INPUT: [u8; 3] = [4, 5, 6];

impl VncSource {
    /// Opens a VNC recording file (decrypted as it is read when it is encrypted).
    pub fn open(path: &Path) -> Result<VncSource, ExportError> {
        let file = gatehouse_recording::crypt::open(path)
            .map_err(|e| ExportError::Unreadable(Box::new(e)))?;
        VncSource::new(BufReader::with_capacity(64 * 1024, file))
    }
}

impl<R: Read> VncSource<R> {
    /// Checks the recording's header.
    pub fn new(reader: R) -> Result<VncSource<R>, ExportError> {
        let reader =
            RecordingReader::new(reader).map_err(|e| ExportError::Unreadable(Box::new(e)))?;
        Ok(VncSource {
            reader,
            replayer: gatehouse_vnc::Replayer::new(),
            pending: None,
            started: false,
            failed: 0,
            first_error: None,
        })
    }

    fn feed(&mut self, record: &Record) {
        match self.replayer.feed(record) {
            Ok(_) => self.started |= record.kind == RecordKind::Start,
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn is_moment(record: &Record) -> bool {
    match record.kind {
        RecordKind::Start | RecordKind::FromTarget => true,
        RecordKind::FromClient => record
            .payload
            .first()
            .is_some_and(|kind| USER_INPUT.contains(kind)),
    }
}

impl<R: Read> FrameSource for VncSource<R> {
    fn next_moment(&mut self) -> Result<Option<Duration>, ExportError> {
        self.pending = None;
        loop {
            let record = self
                .reader
                .next_record()
                .map_err(|e| ExportError::Unreadable(Box::new(e)))?;
            let Some(record) = record else {
                return Ok(None);
            };
            if is_moment(&record) {
                let at = record.at;
                self.pending = Some(record);
                return Ok(Some(at));
            }
            self.feed(&record);
        }
    }

    fn apply(&mut self) {
        if let Some(record) = self.pending.take() {
            self.feed(&record);
        }
    }

    fn frame(&self) -> Option<Frame<'_>> {
        self.replayer.frame().map(vnc_frame)
    }

    fn verdict(&self) -> Verdict {
        if !self.started {
            return Verdict::NotDecodable(match &self.first_error {
                Some(e) => format!("the recording's start cannot be read: {e}"),
                None => "no start (the target's ServerInit) in the recording".into(),
            });
        }
        match &self.first_error {
            Some(e) => Verdict::Partially(format!(
                "{} record(s) could not be drawn, the first: {e}",
                self.failed
            )),
            None => Verdict::Decodable,
        }
    }
}

/// Renders screen recordings to WebM for the API's player (cached as `video.webm` beside the
/// recording).
pub fn video_renderer(dir: &DataDir) -> Option<Arc<dyn gatehouse_api::VideoRenderer>> {
    Some(Arc::new(Renderer {
        recordings: dir.recordings(),
    }))
}

/// The API's video renderer: RDP and VNC sessions, by the recording their directory holds.
pub struct Renderer {
    recordings: PathBuf,
}

impl Renderer {
    /// Session `id`'s screen recording.
    fn recording(&self, id: &str) -> Result<(PathBuf, ScreenRecording), String> {
        let recorded = gatehouse_recording::RecordedSession::open(&self.recordings, id)
            .map_err(|e| e.to_string())?;
        let dir = recorded.dir().to_path_buf();
        let screen = ScreenRecording::in_dir(&dir)
            .ok_or_else(|| format!("session `{id}` has no screen recording"))?;
        Ok((dir, screen))
    }

    /// The session's cached clock, if its video is rendered from the current recording.
    fn cached(&self, id: &str) -> Result<Option<(PathBuf, VideoClock)>, String> {
        let recorded = gatehouse_recording::RecordedSession::open(&self.recordings, id)
            .map_err(|e| e.to_string())?;
        let Some(screen) = ScreenRecording::in_dir(recorded.dir()) else {
            return Ok(None);
        };
        let video = recorded.dir().join(VIDEO_FILE);
        let clock = recorded.dir().join(CLOCK_FILE);
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let Some(source) = modified(screen.path()) else {
            return Ok(None);
        };
        let fresh = |p: &Path| modified(p).is_some_and(|made| made >= source);
        if !(fresh(&video) && fresh(&clock)) {
            return Ok(None);
        }
        let text = gatehouse_recording::crypt::read_all(&clock).map_err(|e| e.to_string())?;
        match serde_json::from_slice(&text) {
            Ok(parsed) => Ok(Some((video, parsed))),
            // Rendered again on the next request.
            Err(_) => Ok(None),
        }
    }
}

impl gatehouse_api::VideoRenderer for Renderer {
    fn webm(&self, id: &str) -> Result<PathBuf, String> {
        if let Some((video, _)) = self.cached(id)? {
            return Ok(video);
        }
        let (dir, screen) = self.recording(id)?;
        let video = dir.join(VIDEO_FILE);
        // Rendered beside, then renamed: a reader never sees half a video, nor a video with
        // another rendering's clock (the clock lands first, the video last).
        let partial = dir.join(format!("{VIDEO_FILE}.part.webm"));
        let summary =
            export(&screen, &partial, &ExportOptions::default()).map_err(|e| e.to_string())?;
        let clock = summary
            .clock
            .ok_or_else(|| "the rendering has no clock".to_string())?;
        let clock_path = dir.join(CLOCK_FILE);
        let clock_partial = dir.join(format!("{CLOCK_FILE}.part"));
        let json = serde_json::to_vec(&clock).map_err(|e| e.to_string())?;
        std::fs::write(&clock_partial, json).map_err(|e| e.to_string())?;
        std::fs::rename(&clock_partial, &clock_path).map_err(|e| e.to_string())?;
        std::fs::rename(&partial, &video).map_err(|e| e.to_string())?;
        // The video of an encrypted recording is encrypted like it (the API decrypts it as it
        // sends it).
        gatehouse_recording::crypt::encrypt_like(screen.path(), &video)
            .map_err(|e| e.to_string())?;
        Ok(video)
    }

    fn video_times(&self, id: &str, times: &[f64]) -> Result<Option<Vec<f64>>, String> {
        let Some((_, clock)) = self.cached(id)? else {
            return Ok(None);
        };
        Ok(Some(
            times
                .iter()
                .map(|&t| {
                    let at = Duration::try_from_secs_f64(t).unwrap_or_default();
                    clock.video_time(at).as_secs_f64()
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_vnc::{
        ClientMessage, FramebufferUpdate, PixelFormat, RecordingWriter, Rectangle,
        RectanglePayload, ServerInit, ServerMessage,
    };

    const WIDTH: u16 = 16;
    const HEIGHT: u16 = 8;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A full-screen Raw update of one colour, in the relay's pixel format.
    fn paint(rgb: [u8; 3]) -> Vec<u8> {
        let [r, g, b] = rgb;
        let pixels = usize::from(WIDTH) * usize::from(HEIGHT);
        let update = ServerMessage::FramebufferUpdate(FramebufferUpdate {
            rectangles: vec![Rectangle {
                x: 0,
                y: 0,
                width: WIDTH,
                height: HEIGHT,
                payload: RectanglePayload::Raw([b, g, r, 0].repeat(pixels)),
            }],
        });
        let mut out = Vec::new();
        update.encode(&mut out);
        out
    }

    fn message(message: ClientMessage) -> Vec<u8> {
        let mut out = Vec::new();
        message.encode(&mut out);
        out
    }

    /// A session: red at 0.5 s, a key at 1 s, then a still screen polled by the viewer every
    /// 100 ms until it turns green at 60 s.
    fn recording(path: &Path) {
        let writer = RecordingWriter::new(std::fs::File::create(path).unwrap()).unwrap();
        let mut init = Vec::new();
        ServerInit {
            width: WIDTH,
            height: HEIGHT,
            pixel_format: PixelFormat::TARGET,
            name: "synthetic".into(),
        }
        .encode(&mut init);
        let poll = message(ClientMessage::FramebufferUpdateRequest {
            incremental: true,
            x: 0,
            y: 0,
            width: WIDTH,
            height: HEIGHT,
        });
        let key = message(ClientMessage::KeyEvent {
            down: true,
            keysym: 0x61,
        });
        writer
            .write_record(RecordKind::Start, ms(0), &init)
            .unwrap();
        writer
            .write_record(RecordKind::FromTarget, ms(500), &paint([255, 0, 0]))
            .unwrap();
        writer
            .write_record(RecordKind::FromClient, ms(1000), &key)
            .unwrap();
        for tenth in 11..600 {
            writer
                .write_record(RecordKind::FromClient, ms(tenth * 100), &poll)
                .unwrap();
        }
        writer
            .write_record(RecordKind::FromTarget, ms(60_000), &paint([0, 255, 0]))
            .unwrap();
        writer.finish().unwrap();
    }

    /// The first pixel of a PNG, decoded by ffmpeg.
    fn first_pixel_of_png(path: &Path) -> [u8; 3] {
        let out = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        [out.stdout[0], out.stdout[1], out.stdout[2]]
    }

    #[test]
    fn a_vnc_recording_exports_with_the_idle_stretch_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vnc.rec");
        recording(&path);
        let screen = ScreenRecording::Vnc(path);
        let summary = export(
            &screen,
            &dir.path().join("out.webm"),
            &ExportOptions::default(),
        )
        .unwrap();
        // 5 fps from the start at 0 s: 5 frames to the key at 1 s, 10 s of the still screen
        // (50 frames; the polls are not activity), the frame before the green at 60 s after
        // the cut, and the final second.
        assert_eq!(summary.frames, 5 + 50 + 1 + 5, "{summary:?}");
        assert_eq!(summary.idle_cut, ms(48_800), "{summary:?}");
        assert_eq!((summary.width, summary.height), (WIDTH, HEIGHT));
        assert_eq!(summary.verdict, Verdict::Decodable);
        let clock = summary.clock.unwrap();
        assert_eq!(clock.segments.len(), 2, "{clock:?}");
        assert_eq!(clock.idle_cut(), summary.idle_cut);
        let webm = std::fs::read(dir.path().join("out.webm")).unwrap();
        assert_eq!(&webm[..4], &[0x1a, 0x45, 0xdf, 0xa3], "EBML magic");

        // Stills: red before the idle stretch, green at the end.
        let red = dir.path().join("red.png");
        let options = ExportOptions {
            at: Some(ms(30_000)),
            ..ExportOptions::default()
        };
        export(&screen, &red, &options).unwrap();
        assert_eq!(first_pixel_of_png(&red), [255, 0, 0]);
        let green = dir.path().join("green.png");
        export(&screen, &green, &ExportOptions::default()).unwrap();
        assert_eq!(first_pixel_of_png(&green), [0, 255, 0]);
    }

    #[test]
    fn broken_vnc_recordings_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vnc.rec");
        recording(&path);
        let bytes = std::fs::read(&path).unwrap();
        // Cut in the middle of the last update: unreadable, nothing left at the output.
        let cut = dir.path().join("cut.rec");
        std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
        let output = dir.path().join("cut.webm");
        let error = export(
            &ScreenRecording::Vnc(cut),
            &output,
            &ExportOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(error, ExportError::Unreadable(_)), "{error:?}");
        assert!(!output.exists());
        // Only the header: nothing to show.
        let empty = dir.path().join("empty.rec");
        std::fs::write(&empty, &bytes[..12]).unwrap();
        let error = export(
            &ScreenRecording::Vnc(empty),
            &dir.path().join("empty.png"),
            &ExportOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(error, ExportError::NotDecodable { .. }),
            "{error:?}"
        );
        // Not a VNC recording.
        let foreign = dir.path().join("foreign.rec");
        std::fs::write(&foreign, b"GHRDP1\0\0 not vnc").unwrap();
        let error = export(
            &ScreenRecording::Vnc(foreign),
            &dir.path().join("foreign.png"),
            &ExportOptions::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("bad magic"), "{error}");
    }
}
