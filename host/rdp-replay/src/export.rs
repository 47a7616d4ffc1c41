//! Renders a recording to a video or a still through the `ffmpeg` program (Debian package
//! `ffmpeg`): raw RGBA frames are piped to `ffmpeg -f rawvideo -i -` at a fixed frame rate,
//! the current screen repeated between updates so that the video keeps the session's timing.
//! Memory stays bounded: one PDU, the decoded screen and one frame buffer at a time.
//!
//! Idle stretches longer than [`ExportOptions::max_idle`] are cut to that length (the
//! summary says how much was cut), so an hour of a still screen does not cost an hour of
//! encoding; `max_idle: None` keeps the real timing throughout. The summary's [`VideoClock`]
//! records where the cuts are: it maps a moment of the recording (an event's time) to the
//! moment of the video that shows it, so that whoever seeks in the video uses the same cuts
//! the export made.
//!
//! The exporter reads a recording through a [`FrameSource`]: timed moments of activity and the
//! screen they leave. [`export`] reads an RDP recording (`rdp.pdus`, [`PduSource`]);
//! [`export_from`] takes any other source (the daemon's adapter reads VNC recordings), so
//! every protocol's video has the same timing, idle cuts and [`VideoClock`].

use crate::decode::{DecodeStats, Frame, Replayer, Verdict};
use crate::pdus::{self, FileSource, PduError, PduReader};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Frames per second of a video (1 to 60). Default 5.
    pub fps: u32,
    /// For a `.png`: the moment to show (time since the relay started). Default: the end.
    pub at: Option<Duration>,
    /// The longest still stretch written in full. Default 10 s.
    pub max_idle: Option<Duration>,
    /// The ffmpeg program. Default `ffmpeg` (looked up on `PATH`).
    pub ffmpeg: PathBuf,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            fps: 5,
            at: None,
            max_idle: Some(Duration::from_secs(10)),
            ffmpeg: PathBuf::from("ffmpeg"),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    /// Frames written (1 for a PNG).
    pub frames: u64,
    pub width: u16,
    pub height: u16,
    /// Idle time cut out of the video ([`ExportOptions::max_idle`]).
    pub idle_cut: Duration,
    /// The verdict on the recording's graphics; `Partially` exports are written and flagged.
    pub verdict: Verdict,
    /// The RDP decoder's counts; `None` for a source that keeps none.
    pub stats: Option<DecodeStats>,
    /// A video's clock (`None` for a PNG): recording time to video time, idle cuts included.
    pub clock: Option<VideoClock>,
}

/// How a video's clock relates to the recording's. The export writes a frame every
/// `interval` of recording time from the first activation on; each idle cut starts a new
/// [`Segment`] of frames further on in the recording. One segment per cut: a few thousand for
/// a day-long session at most.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VideoClock {
    /// Video time between two frames (one over the frame rate).
    pub interval: Duration,
    /// Frames in the video, the final second included.
    pub frames: u64,
    /// The runs of frames, in order; the first is frame 0 at the first activation.
    pub segments: Vec<Segment>,
}

/// A run of frames shown at regular recording times: frame `frame + k` shows the screen as it
/// was at recording time `at + k * interval`, until the next segment's first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// Recording time (since the relay started) of the segment's first frame.
    pub at: Duration,
    /// The index of that frame in the video.
    pub frame: u64,
}

impl VideoClock {
    /// The index of the first frame that shows the screen as it was at recording time `at`
    /// (every update up to `at` drawn): the segment's frame at or after `at`, the first frame
    /// after a cut for a moment inside the cut, frame 0 before the first activation and the
    /// last frame after the end.
    pub fn frame_at(&self, at: Duration) -> u64 {
        let interval = self.interval.as_nanos().max(1);
        for (n, segment) in self.segments.iter().enumerate() {
            let end = self
                .segments
                .get(n + 1)
                .map_or(self.frames, |next| next.frame);
            if at <= segment.at {
                return segment.frame;
            }
            let since = (at - segment.at).as_nanos();
            let steps = u64::try_from(since.div_ceil(interval)).unwrap_or(u64::MAX);
            if steps < end.saturating_sub(segment.frame) {
                return segment.frame + steps;
            }
        }
        self.frames.saturating_sub(1)
    }

    /// Where a player seeks to show recording time `at`: the middle of [`frame_at`]'s frame,
    /// so that a player rounding the time either way shows that frame.
    ///
    /// [`frame_at`]: VideoClock::frame_at
    pub fn video_time(&self, at: Duration) -> Duration {
        let interval = u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX);
        let start = interval.saturating_mul(self.frame_at(at));
        Duration::from_nanos(start.saturating_add(interval / 2))
    }

    /// Recording time left out of the video.
    pub fn idle_cut(&self) -> Duration {
        self.segments
            .windows(2)
            .map(|pair| {
                let shown = self.interval
                    * u32::try_from(pair[1].frame - pair[0].frame).unwrap_or(u32::MAX);
                pair[1].at.saturating_sub(pair[0].at).saturating_sub(shown)
            })
            .sum()
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "`{}` is not installed or cannot run ({reason}): install the Debian package `ffmpeg`",
        program.display()
    )]
    FfmpegMissing { program: PathBuf, reason: String },
    #[error("ffmpeg has no `{encoder}` encoder, needed for `.{extension}` (try `.webm`)")]
    EncoderMissing {
        encoder: &'static str,
        extension: &'static str,
    },
    #[error("cannot export to `{}`: use a `.webm`, `.mp4` or `.png` file name", path.display())]
    UnsupportedFormat { path: PathBuf },
    #[error("the frame rate must be 1 to 60, not {0}")]
    BadFrameRate(u32),
    #[error("the recording's graphics cannot be decoded: {reason}")]
    NotDecodable { reason: String },
    #[error(transparent)]
    Recording(#[from] PduError),
    /// A [`FrameSource`] other than [`PduSource`] could not read its recording (truncated,
    /// corrupt, i/o).
    #[error("the recording cannot be read: {0}")]
    Unreadable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("ffmpeg failed ({status}): {stderr}")]
    Ffmpeg { status: String, stderr: String },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// A recording as the exporter reads it: moments of activity in recording order, each with its
/// time, and the screen they leave. The exporter writes the frames due before a moment, then
/// has the source apply it; a long gap between two moments is an idle stretch, cut to
/// [`ExportOptions::max_idle`]. What counts as a moment is the source's call: everything
/// relayed for RDP, what the target drew and what the user did for VNC.
pub trait FrameSource {
    /// Reads the next moment and returns its time (since the relay started), `None` at the end
    /// of the recording. Its effect is not shown until [`FrameSource::apply`].
    fn next_moment(&mut self) -> Result<Option<Duration>, ExportError>;

    /// Applies the moment [`FrameSource::next_moment`] returned (nothing when there is none).
    fn apply(&mut self);

    /// The screen as the moments applied so far left it; `None` until there is one (the
    /// video starts at the first moment after which there is).
    fn frame(&self) -> Option<Frame<'_>>;

    /// Whether the recording's graphics decode, so far.
    fn verdict(&self) -> Verdict;

    /// The RDP decoder's counts, for the summary; `None` for other sources.
    fn stats(&self) -> Option<DecodeStats> {
        None
    }
}

/// An RDP recording (`rdp.pdus`) as a [`FrameSource`]: every PDU, either way, is a moment,
/// decoded by the [`Replayer`]. Holds the PDU read ahead in a buffer of its own.
pub struct PduSource<R = FileSource> {
    reader: PduReader<R>,
    replayer: Replayer,
    /// The PDU read ahead, its bytes in `pending_bytes` (reused: one copy per PDU, no
    /// allocation once it is large enough).
    pending: Option<(pdus::Direction, pdus::Framing, Duration)>,
    pending_bytes: Vec<u8>,
}

impl PduSource {
    /// Opens an RDP recording file (decrypted as it is read when it is encrypted).
    pub fn open(recording: &Path) -> Result<PduSource, ExportError> {
        Ok(PduSource::new(pdus::open(recording)?))
    }
}

impl<R: Read> PduSource<R> {
    pub fn new(reader: PduReader<R>) -> PduSource<R> {
        PduSource {
            reader,
            replayer: Replayer::new(),
            pending: None,
            pending_bytes: Vec::new(),
        }
    }
}

impl<R: Read> FrameSource for PduSource<R> {
    fn next_moment(&mut self) -> Result<Option<Duration>, ExportError> {
        self.pending = None;
        let Some(pdu) = self.reader.next_pdu()? else {
            return Ok(None);
        };
        self.pending_bytes.clear();
        self.pending_bytes.extend_from_slice(pdu.bytes);
        self.pending = Some((pdu.direction, pdu.framing, pdu.at));
        Ok(Some(pdu.at))
    }

    fn apply(&mut self) {
        if let Some((direction, framing, at)) = self.pending.take() {
            self.replayer.feed(&pdus::Pdu {
                direction,
                framing,
                at,
                bytes: &self.pending_bytes,
            });
        }
    }

    fn frame(&self) -> Option<Frame<'_>> {
        self.replayer.frame()
    }

    fn verdict(&self) -> Verdict {
        self.replayer.verdict()
    }

    fn stats(&self) -> Option<DecodeStats> {
        Some(self.replayer.stats().clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    WebM,
    Mp4,
    Png,
}

fn format_of(path: &Path) -> Result<Format, ExportError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("webm") => Ok(Format::WebM),
        Some("mp4") => Ok(Format::Mp4),
        Some("png") => Ok(Format::Png),
        _ => Err(ExportError::UnsupportedFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Renders `recording` to `output`, the format chosen by its extension: `.webm` (VP8, fast
/// realtime settings), `.mp4` (H.264, if this ffmpeg has libx264), `.png` (one frame at
/// [`ExportOptions::at`], default the last). A recording whose graphics do not decode at all
/// is refused ([`ExportError::NotDecodable`]) and nothing is left at `output`.
pub fn export(
    recording: &Path,
    output: &Path,
    options: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    export_from(|| PduSource::open(recording), output, options)
}

/// [`export`] from the recording that `open` opens (called once the output's format, the
/// frame rate and ffmpeg are found good).
pub fn export_from<S: FrameSource>(
    open: impl FnOnce() -> Result<S, ExportError>,
    output: &Path,
    options: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    let format = format_of(output)?;
    if !(1..=60).contains(&options.fps) {
        return Err(ExportError::BadFrameRate(options.fps));
    }
    check_ffmpeg(&options.ffmpeg, format)?;
    let mut source = open()?;
    let result = match format {
        Format::Png => still(&mut source, output, options),
        Format::WebM | Format::Mp4 => video(&mut source, output, options, format),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(output);
    }
    result
}

/// Fails with the package to install when ffmpeg is missing, or the encoder when it lacks one.
fn check_ffmpeg(program: &Path, format: Format) -> Result<(), ExportError> {
    let missing = |reason: String| ExportError::FfmpegMissing {
        program: program.to_path_buf(),
        reason,
    };
    let out = Command::new(program)
        .args(["-hide_banner", "-encoders"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| missing(e.to_string()))?;
    if !out.status.success() {
        return Err(missing(format!("`-encoders` exited with {}", out.status)));
    }
    let encoders = String::from_utf8_lossy(&out.stdout);
    let has = |name: &str| encoders.split_whitespace().any(|w| w == name);
    match format {
        Format::WebM if !has("libvpx") => Err(ExportError::EncoderMissing {
            encoder: "libvpx",
            extension: "webm",
        }),
        Format::Mp4 if !has("libx264") => Err(ExportError::EncoderMissing {
            encoder: "libx264",
            extension: "mp4",
        }),
        Format::Png if !has("png") => Err(ExportError::EncoderMissing {
            encoder: "png",
            extension: "png",
        }),
        _ => Ok(()),
    }
}

/// ffmpeg reading raw RGBA frames of one size from its standard input.
struct Encoder {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<std::thread::JoinHandle<String>>,
    width: u16,
    height: u16,
    /// Holds a frame of another size, fitted into this one.
    scratch: Vec<u8>,
    frames: u64,
}

impl Encoder {
    fn start(
        program: &Path,
        output: &Path,
        format: Format,
        width: u16,
        height: u16,
        fps: u32,
    ) -> Result<Encoder, ExportError> {
        let mut command = Command::new(program);
        command
            .args(["-hide_banner", "-loglevel", "error", "-f", "rawvideo"])
            .args(["-pixel_format", "rgba", "-video_size"])
            .arg(format!("{width}x{height}"))
            .arg("-framerate")
            .arg(fps.to_string())
            .args(["-i", "-", "-an", "-threads", "2"]);
        // 4:2:0 video wants even sizes: pad by one black line or column where needed.
        let even = "pad=ceil(iw/2)*2:ceil(ih/2)*2";
        match format {
            Format::WebM => command.args([
                "-vf",
                even,
                "-c:v",
                "libvpx",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-b:v",
                "2M",
                "-qmin",
                "4",
                "-qmax",
                "42",
                "-pix_fmt",
                "yuv420p",
            ]),
            Format::Mp4 => command.args([
                "-vf",
                even,
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-movflags",
                "+faststart",
            ]),
            Format::Png => command.args(["-frames:v", "1", "-pix_fmt", "rgb24"]),
        };
        command
            .arg("-y")
            .arg(output)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| ExportError::FfmpegMissing {
            program: program.to_path_buf(),
            reason: e.to_string(),
        })?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                // Keep the last 8 KiB: ffmpeg's error is at the end.
                let mut kept = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    if kept.len() > 8192 {
                        kept.drain(..kept.len() - 8192);
                    }
                }
                String::from_utf8_lossy(&kept).trim().to_owned()
            })
        });
        Ok(Encoder {
            child,
            stdin,
            stderr,
            width,
            height,
            scratch: Vec::new(),
            frames: 0,
        })
    }

    fn write(&mut self, frame: &Frame<'_>) -> Result<(), ExportError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Ok(());
        };
        let written = if frame.width == self.width && frame.height == self.height {
            stdin.write_all(frame.rgba)
        } else {
            fit(frame, self.width, self.height, &mut self.scratch);
            stdin.write_all(&self.scratch)
        };
        match written {
            Ok(()) => {
                self.frames += 1;
                Ok(())
            }
            // ffmpeg quit: its own message says why.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.stdin = None;
                self.finish().and(Err(ExportError::Io(e)))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(ExportError::Ffmpeg {
                status: status.to_string(),
                stderr,
            })
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `frame` drawn at the top left of a black `width`×`height` canvas (a desktop resized in the
/// middle of a session keeps the video's first size).
fn fit(frame: &Frame<'_>, width: u16, height: u16, canvas: &mut Vec<u8>) {
    let stride = usize::from(width) * 4;
    canvas.clear();
    canvas.resize(stride * usize::from(height), 0);
    let source_stride = usize::from(frame.width) * 4;
    let copy = source_stride.min(stride);
    for (to, from) in canvas
        .chunks_exact_mut(stride)
        .zip(frame.rgba.chunks_exact(source_stride.max(1)))
    {
        if let (Some(to), Some(from)) = (to.get_mut(..copy), from.get(..copy)) {
            to.copy_from_slice(from);
        }
    }
}

fn not_decodable(source: &impl FrameSource) -> ExportError {
    let reason = match source.verdict() {
        Verdict::NotDecodable(reason) | Verdict::Partially(reason) => reason,
        Verdict::Decodable => "no frame".into(),
    };
    ExportError::NotDecodable { reason }
}

fn summary(
    source: &impl FrameSource,
    frames: u64,
    idle_cut: Duration,
    clock: Option<VideoClock>,
) -> Result<ExportSummary, ExportError> {
    let verdict = source.verdict();
    if let Verdict::NotDecodable(reason) = verdict {
        return Err(ExportError::NotDecodable { reason });
    }
    let (width, height) = source
        .frame()
        .map(|f| (f.width, f.height))
        .unwrap_or_default();
    Ok(ExportSummary {
        frames,
        width,
        height,
        idle_cut,
        verdict,
        stats: source.stats(),
        clock,
    })
}

fn still(
    source: &mut impl FrameSource,
    output: &Path,
    options: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    while let Some(at) = source.next_moment()? {
        if options.at.is_some_and(|wanted| at > wanted) {
            break;
        }
        source.apply();
    }
    if let Verdict::NotDecodable(reason) = source.verdict() {
        return Err(ExportError::NotDecodable { reason });
    }
    let Some(frame) = source.frame() else {
        return Err(not_decodable(source));
    };
    let mut encoder = Encoder::start(
        &options.ffmpeg,
        output,
        Format::Png,
        frame.width,
        frame.height,
        1,
    )?;
    encoder.write(&frame)?;
    encoder.finish()?;
    summary(source, 1, Duration::ZERO, None)
}

fn video(
    source: &mut impl FrameSource,
    output: &Path,
    options: &ExportOptions,
    format: Format,
) -> Result<ExportSummary, ExportError> {
    let interval = Duration::from_secs(1) / options.fps;
    let mut encoder: Option<Encoder> = None;
    // The recording time of the next frame to write.
    let mut next = Duration::ZERO;
    let mut idle_cut = Duration::ZERO;
    let mut segments = Vec::new();
    while let Some(at) = source.next_moment()? {
        if let (Some(enc), Some(frame)) = (encoder.as_mut(), source.frame()) {
            // Frames due before this moment show the screen as it is now.
            let mut written_in_gap = Duration::ZERO;
            while next < at {
                if options.max_idle.is_some_and(|max| written_in_gap >= max) {
                    // Skip to the last frame slot before this moment.
                    let behind = at.saturating_sub(next);
                    let slots = (behind.as_micros() / interval.as_micros().max(1)) as u32;
                    let skip = interval * slots.saturating_sub(1);
                    idle_cut += skip;
                    next += skip;
                    written_in_gap = Duration::ZERO;
                    if !skip.is_zero() {
                        segments.push(Segment {
                            at: next,
                            frame: enc.frames,
                        });
                    }
                    if skip.is_zero() {
                        enc.write(&frame)?;
                        next += interval;
                    }
                    continue;
                }
                enc.write(&frame)?;
                next += interval;
                written_in_gap += interval;
            }
        }
        source.apply();
        if encoder.is_none()
            && let Some(frame) = source.frame()
        {
            // The video starts at the first moment that leaves a screen (for RDP, the first
            // activation).
            encoder = Some(Encoder::start(
                &options.ffmpeg,
                output,
                format,
                frame.width,
                frame.height,
                options.fps,
            )?);
            next = at;
            segments.push(Segment { at: next, frame: 0 });
        }
    }
    let Some(mut encoder) = encoder else {
        return Err(not_decodable(source));
    };
    if let Verdict::NotDecodable(reason) = source.verdict() {
        return Err(ExportError::NotDecodable { reason });
    }
    // The final screen, shown for one more second.
    if let Some(frame) = source.frame() {
        for _ in 0..options.fps {
            encoder.write(&frame)?;
        }
    }
    encoder.finish()?;
    let clock = VideoClock {
        interval,
        frames: encoder.frames,
        segments,
    };
    summary(source, encoder.frames, idle_cut, Some(clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// 5 fps from an activation at 1 s: frames 0..50 show 1 s to 10.8 s, then a cut, frames
    /// 50..60 show 70 s to 71.8 s.
    fn clock() -> VideoClock {
        VideoClock {
            interval: ms(200),
            frames: 60,
            segments: vec![
                Segment {
                    at: ms(1000),
                    frame: 0,
                },
                Segment {
                    at: ms(70_000),
                    frame: 50,
                },
            ],
        }
    }

    #[test]
    fn recording_times_map_to_the_first_frame_that_shows_them() {
        let clock = clock();
        let cases = [
            (0, 0),        // before the first activation
            (1000, 0),     // the activation itself
            (1001, 1),     // just after: the next frame is the first to show it
            (1200, 1),     // exactly on a frame
            (10_800, 49),  // the last frame before the cut
            (10_801, 50),  // inside the cut: the first frame after it
            (40_000, 50),  // deep inside the cut
            (70_000, 50),  // the first frame after the cut
            (70_300, 52),  // after the cut, between two frames
            (71_800, 59),  // the last frame
            (500_000, 59), // after the end
        ];
        for (at, frame) in cases {
            assert_eq!(clock.frame_at(ms(at)), frame, "recording time {at} ms");
        }
        // The middle of the frame: frame 52 starts at 10.4 s of video.
        assert_eq!(clock.video_time(ms(70_300)), ms(10_500));
        assert_eq!(clock.video_time(ms(0)), ms(100));
        assert_eq!(clock.idle_cut(), ms(70_000 - 1000 - 50 * 200));
    }

    /// A screen of one colour, repainted at given moments: the seam without any protocol.
    struct Painted {
        moments: Vec<(Duration, [u8; 4])>,
        read: usize,
        pending: Option<[u8; 4]>,
        screen: Option<(Vec<u8>, Duration)>,
    }

    const SIDE: u16 = 8;

    impl Painted {
        fn new(moments: &[(u64, [u8; 4])]) -> Painted {
            Painted {
                moments: moments.iter().map(|&(at, c)| (ms(at), c)).collect(),
                read: 0,
                pending: None,
                screen: None,
            }
        }
    }

    impl FrameSource for Painted {
        fn next_moment(&mut self) -> Result<Option<Duration>, ExportError> {
            let Some(&(at, colour)) = self.moments.get(self.read) else {
                return Ok(None);
            };
            self.read += 1;
            self.pending = Some(colour);
            Ok(Some(at))
        }

        fn apply(&mut self) {
            if let (Some(colour), Some(&(at, _))) =
                (self.pending.take(), self.moments.get(self.read - 1))
            {
                let pixels = usize::from(SIDE) * usize::from(SIDE);
                self.screen = Some((colour.repeat(pixels), at));
            }
        }

        fn frame(&self) -> Option<Frame<'_>> {
            self.screen.as_ref().map(|(rgba, at)| Frame {
                rgba,
                width: SIDE,
                height: SIDE,
                at: *at,
            })
        }

        fn verdict(&self) -> Verdict {
            Verdict::Decodable
        }
    }

    const RED: [u8; 4] = [255, 0, 0, 255];
    const BLUE: [u8; 4] = [0, 0, 255, 255];

    fn first_pixel_of_png(path: &Path) -> [u8; 3] {
        let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut pixels).unwrap();
        [pixels[0], pixels[1], pixels[2]]
    }

    #[test]
    fn any_frame_source_gets_the_timing_and_idle_cuts_of_the_export() {
        let dir = tempfile::tempdir().unwrap();
        // Red from 0 s, blue at 1 s, then nothing until a repaint at 60 s.
        let moments = [(0, RED), (1000, BLUE), (60_000, BLUE)];
        let summary = export_from(
            || Ok(Painted::new(&moments)),
            &dir.path().join("painted.webm"),
            &ExportOptions::default(),
        )
        .unwrap();
        // 5 frames to 1 s, 10 s of the idle stretch (50), the frame before 60 s after the
        // cut, and the final second (5).
        assert_eq!(summary.frames, 61, "{summary:?}");
        assert_eq!(summary.idle_cut, ms(48_800), "{summary:?}");
        assert_eq!((summary.width, summary.height), (SIDE, SIDE));
        assert_eq!(summary.stats, None);
        let clock = summary.clock.unwrap();
        assert_eq!(
            clock.segments,
            vec![
                Segment {
                    at: ms(0),
                    frame: 0
                },
                Segment {
                    at: ms(59_800),
                    frame: 55
                }
            ]
        );
        assert_eq!(clock.idle_cut(), summary.idle_cut);
        assert_eq!(clock.frame_at(ms(60_000)), 56);

        // A still at a moment shows the screen as it was then.
        let still = dir.path().join("at.png");
        let options = ExportOptions {
            at: Some(ms(500)),
            ..ExportOptions::default()
        };
        let summary = export_from(|| Ok(Painted::new(&moments)), &still, &options).unwrap();
        assert_eq!(summary.frames, 1);
        assert_eq!(first_pixel_of_png(&still), [255, 0, 0]);
        let last = dir.path().join("last.png");
        export_from(
            || Ok(Painted::new(&moments)),
            &last,
            &ExportOptions::default(),
        )
        .unwrap();
        assert_eq!(first_pixel_of_png(&last), [0, 0, 255]);
    }

    #[test]
    fn a_source_without_a_screen_is_not_decodable_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("none.webm");
        let error =
            export_from(|| Ok(Painted::new(&[])), &output, &ExportOptions::default()).unwrap_err();
        assert!(
            matches!(error, ExportError::NotDecodable { .. }),
            "{error:?}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn an_empty_clock_maps_everything_to_the_start() {
        let clock = VideoClock {
            interval: ms(200),
            frames: 0,
            segments: Vec::new(),
        };
        assert_eq!(clock.frame_at(ms(5000)), 0);
        assert_eq!(clock.idle_cut(), Duration::ZERO);
    }
}
