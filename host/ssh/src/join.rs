//! Four-eyes: a second person joins a running SSH terminal live. `ssh -t watch=<session>@sam@gw`
//! watches it read-only; `ssh -t join=<session>@sam@gw` may also type, where policy allows
//! (Cedar `watch_session` / `join_session` on the session's account, decided and audited by the
//! workflow). The session's user is told who joined and left; both are on the session's record
//! and in its recording, and what a joiner types goes to the target attributed to them.
//!
//! The owner's session never waits for a joiner: output reaches joiners through a bounded
//! broadcast queue, and one who falls behind has output skipped (and is told). What joiners type
//! goes through a small bounded queue into the same relay as the owner's keys.

use crate::record::Start;
use crate::session::SessionShared;
use bytes::Bytes;
use gatehouse_core::{AuditKind, JoinSpec};
use gatehouse_recording::RecordingEvent;
use gatehouse_workflow::Actor;
use russh::server::{Handle, Msg};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch};

/// Recent output a joiner is shown first, so their screen starts with the session's.
const BACKLOG: usize = 16 * 1024;
/// Output chunks a joiner may fall behind before some are skipped for them.
const OUTPUT_QUEUE: usize = 256;
/// Chunks typed by joiners queued towards the target.
const INPUT_QUEUE: usize = 32;
/// Lines for the session's user (who joined, who left) queued.
const NOTICE_QUEUE: usize = 16;
/// Ctrl-]: leaves the session (telnet's escape).
const LEAVE: u8 = 0x1d;

/// Bytes a joiner typed.
pub(crate) struct Typed {
    pub user: String,
    pub data: Bytes,
}

/// What watchers of a terminal see: its output as it comes, the recent screen (the last
/// 16 KiB) to start from, and its end. Fed by SSH's terminal relays (inside a
/// [`TerminalTap`]) and by other protocols' terminals (Telnet, registered with
/// [`crate::LiveSessions::register_terminal`]). Never makes the relay wait.
pub struct TerminalFeed {
    /// The terminal's size when it started (columns, rows).
    pub size: (u32, u32),
    output: broadcast::Sender<Bytes>,
    recent: Mutex<VecDeque<u8>>,
    ended: watch::Sender<bool>,
}

impl TerminalFeed {
    pub fn new(size: (u32, u32)) -> Self {
        TerminalFeed {
            size,
            output: broadcast::channel(OUTPUT_QUEUE).0,
            recent: Mutex::new(VecDeque::with_capacity(BACKLOG)),
            ended: watch::channel(false).0,
        }
    }

    /// The terminal's output: to the watchers, and kept as the recent screen. Never waits.
    pub fn output(&self, data: &Bytes) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.extend(data.iter().copied());
            let excess = recent.len().saturating_sub(BACKLOG);
            recent.drain(..excess);
            // Sent under the lock: a joiner attaching gets each byte once, in the recent
            // screen or from the queue.
            let _ = self.output.send(data.clone());
        }
    }

    /// The recent screen and the output from here on.
    fn attach(&self) -> (Vec<u8>, broadcast::Receiver<Bytes>) {
        match self.recent.lock() {
            Ok(recent) => (recent.iter().copied().collect(), self.output.subscribe()),
            Err(_) => (Vec::new(), self.output.subscribe()),
        }
    }

    /// The terminal ended: watchers are told and let go.
    pub fn end(&self) {
        self.ended.send_replace(true);
    }
}

/// One terminal channel of a running SSH session, as joiners reach it. The relay of the
/// channel feeds it the output and takes what joiners type and the lines for its user.
pub(crate) struct TerminalTap {
    pub number: u32,
    pub feed: TerminalFeed,
    typed: mpsc::Sender<Typed>,
    notices: mpsc::Sender<String>,
}

impl TerminalTap {
    /// A tap for channel `number`; the receivers are the relay's.
    pub fn new(
        number: u32,
        size: (u32, u32),
    ) -> (Arc<Self>, mpsc::Receiver<Typed>, mpsc::Receiver<String>) {
        let (typed, typed_rx) = mpsc::channel(INPUT_QUEUE);
        let (notices, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        let tap = Arc::new(Self {
            number,
            feed: TerminalFeed::new(size),
            typed,
            notices,
        });
        (tap, typed_rx, notices_rx)
    }

    /// The terminal's output: to the joiners, and kept as the recent screen. Never waits.
    pub fn output(&self, data: &Bytes) {
        self.feed.output(data);
    }

    /// A line for the session's user (dropped when too many are queued).
    pub fn notice(&self, line: String) {
        let _ = self.notices.try_send(line);
    }

    /// The channel ended: joiners are told and let go.
    pub fn end(&self) {
        self.feed.end();
    }
}

/// Writes `line` to the user's stderr.
async fn say(client: &ChannelWriteHalf<Msg>, line: &str) {
    let _ = client
        .extended_data_bytes(1, format!("{line}\r\n").into_bytes())
        .await;
}

async fn close(client: &ChannelWriteHalf<Msg>, status: u32) {
    let _ = client.exit_status(status).await;
    let _ = client.eof().await;
    let _ = client.close().await;
}

/// The running session `join` names and its terminal, when policy lets the joiner in. The
/// refusal line says nothing about whether the session exists unless the joiner may join it.
fn find(
    shared: &SessionShared,
    join: &JoinSpec,
) -> Result<(Arc<SessionShared>, Arc<TerminalTap>), String> {
    let id = &join.session;
    let Some(local) = shared.services.local() else {
        return Err("gatehouse: sessions are joined through the control node".into());
    };
    let Some(workflow) = &local.workflow else {
        return Err("gatehouse: joining sessions is not available on this gateway".into());
    };
    let Some(user) = shared.logged_in_user() else {
        return Err(format!(
            "gatehouse: internal error; it was logged as session {}",
            shared.id
        ));
    };
    let actor = Actor {
        user,
        client: shared.client,
        via: "ssh".into(),
        session_id: shared.id.clone(),
        authenticated_with: shared.authenticated_with(),
    };
    let record = workflow.authorize_join(&actor, id, join).map_err(|_| {
        format!(
            "gatehouse: you may not {} session {id} (or it does not exist)",
            if join.keyboard { "join" } else { "watch" }
        )
    })?;
    if record.ended.is_some() {
        return Err(format!(
            "gatehouse: session {id} has ended (its recording plays with `gatehouse session play {id}`)"
        ));
    }
    if record.protocol != "ssh" {
        return Err(format!(
            "gatehouse: session {id} is an {} session: it cannot be joined from a terminal",
            record.protocol.to_uppercase()
        ));
    }
    let owner = shared
        .services
        .live
        .session(id)
        .ok_or_else(|| format!("gatehouse: session {id} is not running on this gateway"))?;
    let tap = owner.first_terminal().ok_or_else(|| {
        format!("gatehouse: session {id} has no terminal to join (it runs commands or transfers)")
    })?;
    Ok((owner, tap))
}

/// Logs `event` in the owner's recording.
async fn log(owner: &SessionShared, channel: u32, event: RecordingEvent) {
    if let Ok(recording) = owner.recording().await
        && let Err(e) = recording.log(Some(channel), event)
    {
        tracing::warn!(error = %e, "cannot log a join in the recording");
    }
}

/// Runs a joiner's session channel: the decision, then the owner's terminal until the joiner
/// leaves (Ctrl-] or closing) or the session ends.
pub(crate) async fn run_joiner(
    shared: Arc<SessionShared>,
    mut client_rx: ChannelReadHalf,
    client_tx: ChannelWriteHalf<Msg>,
    start: &Start,
    server: Handle,
    join: JoinSpec,
) {
    let _ = server.channel_success(client_tx.id()).await;
    if !matches!(start, Start::Shell) {
        say(
            &client_tx,
            "gatehouse: joining a session gives you its terminal: use `ssh -t` and no command",
        )
        .await;
        return close(&client_tx, 1).await;
    }
    let (owner, tap) = match find(&shared, &join) {
        Ok(found) => found,
        Err(line) => {
            say(&client_tx, &line).await;
            return close(&client_tx, 1).await;
        }
    };
    let user = shared.user_name();
    let mode = join.mode();
    let fields = [
        ("joined_by", serde_json::Value::from(user.clone())),
        ("mode", mode.into()),
        ("joiner_session", shared.id.clone().into()),
    ];
    owner.audit(
        AuditKind::SessionJoined,
        format!("{user} joined the session ({mode})"),
        &fields,
    );
    log(
        &owner,
        tap.number,
        RecordingEvent::Joined {
            user: user.clone(),
            mode: mode.into(),
        },
    )
    .await;
    tap.notice(format!("gatehouse: {user} joined this session ({mode})"));
    say(
        &client_tx,
        &format!(
            "gatehouse: you joined session {} of {} on {} ({mode}); Ctrl-] leaves",
            owner.id,
            owner.user_name(),
            owner.target_text()
        ),
    )
    .await;
    let (recent, mut output) = tap.feed.attach();
    let mut ended = tap.feed.ended.subscribe();
    let mut told_read_only = false;
    let gone = !recent.is_empty() && client_tx.data_bytes(recent).await.is_err();
    let session_ended = if gone {
        false
    } else if *ended.borrow() {
        true
    } else {
        loop {
            tokio::select! {
                out = output.recv() => match out {
                    Ok(data) => {
                        if client_tx.data_bytes(data).await.is_err() {
                            break false;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        say(&client_tx, &format!("\r\n[gatehouse: you fell behind; {skipped} pieces of output were skipped]")).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break true,
                },
                msg = client_rx.wait() => match msg {
                    None | Some(ChannelMsg::Close | ChannelMsg::Eof) => break false,
                    Some(ChannelMsg::Data { data }) => {
                        let leave = data.iter().position(|&b| b == LEAVE);
                        let keys = data.slice(..leave.unwrap_or(data.len()));
                        if !keys.is_empty() {
                            if join.keyboard {
                                let typed = Typed { user: user.clone(), data: keys };
                                if tap.typed.send(typed).await.is_err() {
                                    break true;
                                }
                            } else if !told_read_only {
                                told_read_only = true;
                                say(&client_tx, "\r\n[gatehouse: read-only: what you type is not sent; Ctrl-] leaves]").await;
                            }
                        }
                        if leave.is_some() {
                            break false;
                        }
                    }
                    Some(_) => {}
                },
                changed = ended.changed() => {
                    let over = changed.is_err() || *ended.borrow_and_update();
                    if over {
                        break true;
                    }
                }
            }
        }
    };
    owner.audit(
        AuditKind::SessionLeft,
        format!("{user} left the session"),
        &fields,
    );
    log(
        &owner,
        tap.number,
        RecordingEvent::Left { user: user.clone() },
    )
    .await;
    if session_ended {
        say(&client_tx, "\r\ngatehouse: the session ended").await;
    } else {
        tap.notice(format!("gatehouse: {user} left this session"));
        say(&client_tx, "\r\ngatehouse: you left the session").await;
    }
    close(&client_tx, 0).await;
}

/// What a watcher outside SSH (the API) gets next.
pub enum WatchEvent {
    /// Terminal output.
    Output(Bytes),
    /// The watcher fell behind: this many pieces of output were skipped.
    Skipped(u64),
    /// The terminal (or the session) ended.
    Ended,
}

/// A read-only watcher of a running terminal from outside SSH: the session's user is told, the
/// join and the leave are audited and in the recording (the leave when this is dropped).
pub struct TerminalWatch {
    /// The terminal's recent output (up to 16 KiB), to show first.
    pub recent: Vec<u8>,
    /// The terminal's size when it started (columns, rows).
    pub size: (u32, u32),
    output: broadcast::Receiver<Bytes>,
    ended: watch::Receiver<bool>,
    /// An SSH session's terminal: its owner audits the watcher and tells its user.
    ssh: Option<SshWatch>,
}

struct SshWatch {
    owner: Arc<SessionShared>,
    tap: Arc<TerminalTap>,
    who: String,
    via: String,
}

impl TerminalWatch {
    fn of(feed: &TerminalFeed, ssh: Option<SshWatch>) -> Self {
        let (recent, output) = feed.attach();
        TerminalWatch {
            recent,
            size: feed.size,
            output,
            ended: feed.ended.subscribe(),
            ssh,
        }
    }

    /// The next output, a skip, or the end.
    pub async fn next(&mut self) -> WatchEvent {
        if *self.ended.borrow() {
            return WatchEvent::Ended;
        }
        tokio::select! {
            out = self.output.recv() => match out {
                Ok(data) => WatchEvent::Output(data),
                Err(broadcast::error::RecvError::Lagged(n)) => WatchEvent::Skipped(n),
                Err(broadcast::error::RecvError::Closed) => WatchEvent::Ended,
            },
            changed = self.ended.changed() => {
                let over = changed.is_err() || *self.ended.borrow_and_update();
                if over { WatchEvent::Ended } else { WatchEvent::Skipped(0) }
            }
        }
    }
}

impl Drop for TerminalWatch {
    fn drop(&mut self) {
        let Some(ssh) = &self.ssh else {
            return;
        };
        let who = ssh.who.clone();
        ssh.owner.audit(
            AuditKind::SessionLeft,
            format!("{who} stopped watching the session ({})", ssh.via),
            &[
                ("joined_by", who.clone().into()),
                ("mode", "read-only".into()),
                ("via", ssh.via.clone().into()),
            ],
        );
        log_now(
            &ssh.owner,
            ssh.tap.number,
            RecordingEvent::Left { user: who.clone() },
        );
        if !*self.ended.borrow() {
            ssh.tap
                .notice(format!("gatehouse: {who} stopped watching this session"));
        }
    }
}

/// Logs `event` in the owner's recording, if it has one open.
fn log_now(owner: &SessionShared, channel: u32, event: RecordingEvent) {
    if let Some(recording) = owner.opened_recording()
        && let Err(e) = recording.log(Some(channel), event)
    {
        tracing::warn!(error = %e, "cannot log a watcher in the recording");
    }
}

impl crate::LiveSessions {
    /// Starts a read-only watch of running SSH session `id`'s first terminal by `who` (already
    /// authorized by Cedar), coming `via` ("api"); `None` when no such terminal runs here.
    pub fn watch_terminal(&self, id: &str, who: &str, via: &str) -> Option<TerminalWatch> {
        let owner = self.session(id)?;
        let tap = owner.first_terminal()?;
        owner.audit(
            AuditKind::SessionJoined,
            format!("{who} is watching the session (read-only, {via})"),
            &[
                ("joined_by", who.into()),
                ("mode", "read-only".into()),
                ("via", via.into()),
            ],
        );
        log_now(
            &owner,
            tap.number,
            RecordingEvent::Joined {
                user: who.to_string(),
                mode: "read-only".into(),
            },
        );
        tap.notice(format!(
            "gatehouse: {who} is watching this session (read-only, {via})"
        ));
        let ssh = SshWatch {
            owner,
            tap: tap.clone(),
            who: who.to_string(),
            via: via.to_string(),
        };
        Some(TerminalWatch::of(&tap.feed, Some(ssh)))
    }

    /// Starts a read-only watch of the terminal another protocol registered for session `id`
    /// ([`Self::register_terminal`]); the caller audits the watcher. `None` when none runs here.
    pub fn watch_registered_terminal(&self, id: &str) -> Option<TerminalWatch> {
        let feed = self.registered_terminal(id)?;
        Some(TerminalWatch::of(&feed, None))
    }
}
