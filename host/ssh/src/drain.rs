//! Graceful shutdown: stop accepting, tell the users, let sessions finish for a grace period,
//! then end what is left properly (the target's command gets SIGHUP and its channel a CLOSE, the
//! user a line saying why).

use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where the gateway is in its shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    Serving,
    /// No new connections; running sessions may go on until the deadline.
    Draining {
        deadline: Instant,
    },
    /// The grace period is over: sessions are being ended.
    Closing,
}

/// A handle the caller keeps to shut the gateway down; clones share it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    state: watch::Sender<DrainState>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            state: watch::channel(DrainState::Serving).0,
        }
    }

    /// Starts the drain: new connections are refused and sessions get `grace` to finish.
    pub fn begin(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.state.send_if_modified(|state| {
            if *state == DrainState::Serving {
                *state = DrainState::Draining { deadline };
                true
            } else {
                false
            }
        });
        let closer = self.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            closer.send_replace(DrainState::Closing);
        });
    }

    pub fn state(&self) -> DrainState {
        *self.state.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<DrainState> {
        self.state.subscribe()
    }

    /// Resolves when the drain starts.
    pub async fn draining(&self) {
        let mut state = self.subscribe();
        let _ = state.wait_for(|s| *s != DrainState::Serving).await;
    }

    /// Resolves when the grace period is over and running sessions are to be ended.
    pub async fn closing(&self) {
        let mut state = self.subscribe();
        let _ = state.wait_for(|s| *s == DrainState::Closing).await;
    }

    /// Whether new sessions are still taken.
    pub fn is_serving(&self) -> bool {
        self.state() == DrainState::Serving
    }
}

/// The line a user sees when the drain starts.
pub(crate) fn draining_line(remaining: Duration) -> String {
    let seconds = remaining.as_secs_f64().ceil() as u64;
    format!(
        "gatehouse: the gateway is shutting down; this session will be closed in {seconds} s\r\n"
    )
}

/// The line a user sees when the grace period is over.
pub(crate) const CLOSING_LINE: &str =
    "gatehouse: the gateway shut down; the session was closed\r\n";
