//! Running sessions for the API's live view (`GET /api/v1/sessions/{id}/live`): SSH terminals
//! through `gatehouse_ssh::LiveSessions::watch_terminal`, RDP and VNC screens decoded from the
//! session's `rdp.pdus` or `vnc.rec` as the relay writes it (one decoder per watcher, on
//! threads of its own, from the start of the recording: the screen state needs every update).

use crate::video::ScreenRecording;
use gatehouse_api::{LiveChunk, LiveFeed, LiveView};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::AuditKind;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often a watcher gets the screen when it changed.
const FRAME_EVERY: Duration = Duration::from_millis(500);
/// How often an unchanged screen is sent again.
const RESEND_EVERY: Duration = Duration::from_secs(10);

struct Screen {
    recording: ScreenRecording,
    ended: Arc<AtomicBool>,
    user: String,
    target: String,
}

/// The RDP and VNC sessions of this process whose screens can be watched.
#[derive(Clone, Default)]
pub struct LiveScreens {
    screens: Arc<Mutex<HashMap<String, Arc<Screen>>>>,
}

/// Keeps a session's screen watchable; dropping it (the session ended) lets watchers finish.
pub struct ScreenGuard {
    screens: LiveScreens,
    id: String,
    ended: Arc<AtomicBool>,
}

impl Drop for ScreenGuard {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::Relaxed);
        if let Ok(mut screens) = self.screens.screens.lock() {
            screens.remove(&self.id);
        }
    }
}

impl LiveScreens {
    /// RDP session `id` of `user` on `target` records its PDUs to `path`.
    pub fn add(&self, id: &str, path: PathBuf, user: &str, target: &str) -> ScreenGuard {
        self.add_recording(id, ScreenRecording::Rdp(path), user, target)
    }

    /// Session `id` of `user` on `target` records its screen to `recording`.
    pub fn add_recording(
        &self,
        id: &str,
        recording: ScreenRecording,
        user: &str,
        target: &str,
    ) -> ScreenGuard {
        let ended = Arc::new(AtomicBool::new(false));
        if let Ok(mut screens) = self.screens.lock() {
            screens.insert(
                id.to_string(),
                Arc::new(Screen {
                    recording,
                    ended: ended.clone(),
                    user: user.to_string(),
                    target: target.to_string(),
                }),
            );
        }
        ScreenGuard {
            screens: self.clone(),
            id: id.to_string(),
            ended,
        }
    }

    fn get(&self, id: &str) -> Option<Arc<Screen>> {
        self.screens.lock().ok().and_then(|s| s.get(id).cloned())
    }
}

/// A recording file read as it grows: at its end, waits for more until the session ended or
/// the watcher left.
struct Following {
    file: std::fs::File,
    ended: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Read for Following {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.file.read(buf)?;
            if n > 0 || self.stop.load(Ordering::Relaxed) {
                return Ok(n);
            }
            if self.ended.load(Ordering::Relaxed) {
                // One last look: the relay flushes as it closes.
                return self.file.read(buf);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A screen decoder the watcher reads frames from.
trait LiveScreen: Send + 'static {
    fn frame(&self) -> Option<gatehouse_rdp_replay::Frame<'_>>;
}

impl LiveScreen for gatehouse_rdp_replay::Replayer {
    fn frame(&self) -> Option<gatehouse_rdp_replay::Frame<'_>> {
        gatehouse_rdp_replay::Replayer::frame(self)
    }
}

impl LiveScreen for gatehouse_vnc::Replayer {
    fn frame(&self) -> Option<gatehouse_rdp_replay::Frame<'_>> {
        gatehouse_vnc::Replayer::frame(self).map(crate::video::vnc_frame)
    }
}

/// Feeds `following`, an RDP recording, to `replayer` as it is written. Each PDU is read
/// outside the lock: the reader waits there for the relay's next write.
fn decode_rdp(following: Following, replayer: &Mutex<gatehouse_rdp_replay::Replayer>) {
    let reader = gatehouse_rdp_replay::pdus::PduReader::new(std::io::BufReader::new(following));
    if let Ok(mut reader) = reader {
        while let Ok(Some(pdu)) = reader.next_pdu() {
            if let Ok(mut replayer) = replayer.lock() {
                replayer.feed(&pdu);
            }
        }
    }
}

/// Feeds `following`, a VNC recording, to `replayer` as it is written; a record that does
/// not draw is skipped, as the export does.
fn decode_vnc(following: Following, replayer: &Mutex<gatehouse_vnc::Replayer>) {
    let reader = gatehouse_vnc::RecordingReader::new(std::io::BufReader::new(following));
    if let Ok(mut reader) = reader {
        while let Ok(Some(record)) = reader.next_record() {
            if let Ok(mut replayer) = replayer.lock() {
                let _ = replayer.feed(&record);
            }
        }
    }
}

/// Decodes `screen`'s recording as it is written and sends the screen as PNG when it changed,
/// at most every [`FRAME_EVERY`], until the session ends or the receiver goes.
fn watch_screen(screen: Arc<Screen>, frames: mpsc::Sender<Vec<u8>>) {
    match screen.recording {
        ScreenRecording::Rdp(_) => watch_with(
            screen,
            frames,
            gatehouse_rdp_replay::Replayer::new(),
            decode_rdp,
        ),
        ScreenRecording::Vnc(_) => {
            watch_with(screen, frames, gatehouse_vnc::Replayer::new(), decode_vnc)
        }
    }
}

fn watch_with<D: LiveScreen>(
    screen: Arc<Screen>,
    frames: mpsc::Sender<Vec<u8>>,
    replayer: D,
    decode: fn(Following, &Mutex<D>),
) {
    let replayer = Arc::new(Mutex::new(replayer));
    let stop = Arc::new(AtomicBool::new(false));
    let decoded = Arc::new(AtomicBool::new(false));
    let decoder = {
        let (replayer, stop, decoded, screen) = (
            replayer.clone(),
            stop.clone(),
            decoded.clone(),
            screen.clone(),
        );
        std::thread::spawn(move || {
            let opened = std::fs::File::open(screen.recording.path()).map(|file| Following {
                file,
                ended: screen.ended.clone(),
                stop: stop.clone(),
            });
            if let Ok(following) = opened {
                decode(following, &replayer);
            }
            decoded.store(true, Ordering::Relaxed);
        })
    };
    let mut sent_at = None;
    let mut sent = Instant::now();
    loop {
        let done = decoded.load(Ordering::Relaxed);
        // A changed screen, or the same one again after a while: a watcher that went away is
        // noticed, and one that missed a frame gets it.
        let again = sent.elapsed() >= RESEND_EVERY;
        let png = replayer.lock().ok().and_then(|replayer| {
            let frame = replayer.frame()?;
            (again || sent_at != Some(frame.at)).then(|| (frame.at, frame.png()))
        });
        if let Some((at, Ok(png))) = png {
            if frames.blocking_send(png).is_err() {
                break;
            }
            sent_at = Some(at);
            sent = Instant::now();
        }
        if done {
            break;
        }
        std::thread::sleep(FRAME_EVERY);
        if frames.is_closed() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = decoder.join();
}

/// The API's view of this process's running sessions.
pub struct ApiLiveView {
    pub live: gatehouse_ssh::LiveSessions,
    pub screens: LiveScreens,
    pub auditor: Auditor,
    /// For the names a Telnet session's watch is audited with.
    pub store: Arc<gatehouse_store::Store>,
}

/// An audit entry about `who` watching session `id` of `user` on `target` through the API.
fn watcher_entry(
    kind: AuditKind,
    detail: String,
    (id, user, target): (&str, &str, &str),
    who: &str,
    protocol: &str,
) -> Entry {
    Entry::new(kind, detail)
        .session(id.to_string())
        .user(user.to_string())
        .target(target.to_string())
        .field("joined_by", who.to_string())
        .field("mode", "read-only")
        .field("via", "api")
        .field("protocol", protocol.to_string())
}

/// A terminal's watch as the API's feed: its recent screen, then its output until it ends or
/// the watcher goes; `left` is audited then (the SSH crate audits its own sessions' watchers).
fn terminal_feed(
    mut watch: gatehouse_ssh::TerminalWatch,
    left: Option<(Auditor, Entry)>,
) -> LiveFeed {
    let recent = std::mem::take(&mut watch.recent);
    let (width, height) = watch.size;
    let (tx, chunks) = mpsc::channel(64);
    let started = Instant::now();
    tokio::runtime::Handle::current().spawn(async move {
        use gatehouse_ssh::WatchEvent;
        loop {
            let event = tokio::select! {
                event = watch.next() => event,
                () = tx.closed() => break,
            };
            let chunk = match event {
                WatchEvent::Output(bytes) => LiveChunk::Output(bytes.to_vec()),
                WatchEvent::Skipped(0) => continue,
                WatchEvent::Skipped(n) => LiveChunk::Skipped(n),
                WatchEvent::Ended => break,
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
        if let Some((auditor, left)) = left {
            auditor.record_best_effort(left.field("watched_secs", started.elapsed().as_secs()));
        }
    });
    LiveFeed::Terminal {
        width,
        height,
        recent,
        chunks,
    }
}

impl LiveView for ApiLiveView {
    fn watch(&self, id: &str, protocol: &str, who: &str) -> Option<LiveFeed> {
        match protocol {
            "ssh" => Some(terminal_feed(
                self.live.watch_terminal(id, who, "api")?,
                None,
            )),
            "telnet" => {
                let watch = self.live.watch_registered_terminal(id)?;
                let record: Option<gatehouse_core::SessionRecord> = self
                    .store
                    .get(&gatehouse_store::SESSIONS, id)
                    .ok()
                    .flatten();
                let (user, target) = record
                    .map(|r| (r.user, format!("{}@{}", r.account, r.asset)))
                    .unwrap_or_default();
                let names = (id, user.as_str(), target.as_str());
                self.auditor.record_best_effort(watcher_entry(
                    AuditKind::SessionJoined,
                    format!("{who} is watching the session (read-only, api)"),
                    names,
                    who,
                    protocol,
                ));
                let left = watcher_entry(
                    AuditKind::SessionLeft,
                    format!("{who} stopped watching the session (api)"),
                    names,
                    who,
                    protocol,
                );
                Some(terminal_feed(watch, Some((self.auditor.clone(), left))))
            }
            "rdp" | "vnc" => {
                let screen = self.screens.get(id)?;
                let (tx, frames) = mpsc::channel(2);
                let auditor = self.auditor.clone();
                let names = (id, screen.user.as_str(), screen.target.as_str());
                auditor.record_best_effort(watcher_entry(
                    AuditKind::SessionJoined,
                    format!("{who} is watching the session (read-only, api)"),
                    names,
                    who,
                    protocol,
                ));
                let left = watcher_entry(
                    AuditKind::SessionLeft,
                    format!("{who} stopped watching the session (api)"),
                    names,
                    who,
                    protocol,
                );
                let started = Instant::now();
                std::thread::spawn(move || {
                    watch_screen(screen, tx);
                    auditor.record_best_effort(
                        left.field("watched_secs", started.elapsed().as_secs()),
                    );
                });
                Some(LiveFeed::Screen { frames })
            }
            _ => None,
        }
    }
}
