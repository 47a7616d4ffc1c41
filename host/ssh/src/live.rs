//! The sessions running in this process, by id, so that one can be ended from outside (an
//! administrator on this gateway, or the control node for a session node).

use crate::session::SessionShared;
use gatehouse_core::AuditKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// How a session of another protocol (RDP) is ended: called with who ends it and why.
pub type EndSession = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Running sessions of this process: SSH sessions, and those of other protocols (RDP) that
/// register how they are ended. Cheap to clone; entries go when their session ends.
#[derive(Clone, Default)]
pub struct LiveSessions {
    sessions: Arc<Mutex<HashMap<String, Weak<SessionShared>>>>,
    others: Arc<Mutex<HashMap<String, EndSession>>>,
    /// The terminals of other protocols' sessions (Telnet), for watchers.
    terminals: Arc<Mutex<HashMap<String, Arc<crate::join::TerminalFeed>>>>,
    /// Told when a session's books are closed (a session node delivers them then).
    closed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for LiveSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSessions")
            .field("running", &self.ids().len())
            .finish()
    }
}

impl LiveSessions {
    pub(crate) fn add(&self, shared: &Arc<SessionShared>) {
        if let Ok(mut map) = self.sessions.lock() {
            map.insert(shared.id.clone(), Arc::downgrade(shared));
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        if let Ok(mut map) = self.sessions.lock() {
            map.remove(id);
        }
        self.closed.notify_one();
    }

    /// The running SSH session `id`.
    pub(crate) fn session(&self, id: &str) -> Option<Arc<SessionShared>> {
        self.sessions
            .lock()
            .ok()
            .and_then(|m| m.get(id).and_then(Weak::upgrade))
    }

    /// Registers a running session of another protocol (RDP); it stays listed, and `end` is
    /// what [`Self::terminate`] calls, until the guard is dropped (once the session's books are
    /// closed).
    pub fn register(&self, id: &str, end: EndSession) -> LiveGuard {
        if let Ok(mut map) = self.others.lock() {
            map.insert(id.to_string(), end);
        }
        LiveGuard {
            live: self.clone(),
            id: id.to_string(),
        }
    }

    /// Makes session `id`'s terminal watchable ([`Self::watch_registered_terminal`]) until
    /// the guard of its [`Self::register`] is dropped.
    pub fn register_terminal(&self, id: &str, feed: Arc<crate::join::TerminalFeed>) {
        if let Ok(mut map) = self.terminals.lock() {
            map.insert(id.to_string(), feed);
        }
    }

    pub(crate) fn registered_terminal(&self, id: &str) -> Option<Arc<crate::join::TerminalFeed>> {
        self.terminals.lock().ok()?.get(id).cloned()
    }

    /// Notified each time a session's books are closed.
    pub fn closed_signal(&self) -> Arc<tokio::sync::Notify> {
        self.closed.clone()
    }

    /// The ids of the sessions running now.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .sessions
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if let Ok(others) = self.others.lock() {
            ids.extend(others.keys().cloned());
        }
        ids
    }

    /// Ends session `id`: the user reads who ended it and why, the audit trail gets it, the
    /// channels close and the connection goes. `by` empty: the gateway ends it (its access
    /// request ended). `false` when no such session runs here.
    pub fn terminate(&self, id: &str, by: &str, reason: &str) -> bool {
        let shared = self
            .sessions
            .lock()
            .ok()
            .and_then(|m| m.get(id).and_then(Weak::upgrade));
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        let Some(shared) = shared else {
            return match self.others.lock() {
                Ok(others) => match others.get(id) {
                    Some(end) => {
                        end(by, &reason);
                        true
                    }
                    None => false,
                },
                Err(_) => false,
            };
        };
        // No `by`: the gateway ends it (its access request ended on the control node).
        let (detail, line) = if by.is_empty() {
            (
                format!("session ended: {reason}"),
                format!("gatehouse: {reason}; the session ends"),
            )
        } else {
            (
                format!("session terminated by {by}: {reason}"),
                format!("gatehouse: an administrator ({by}) ended this session: {reason}"),
            )
        };
        shared.audit(
            AuditKind::SessionEnded,
            detail,
            &[
                ("terminated_by", by.into()),
                ("reason", reason.clone().into()),
            ],
        );
        tokio::spawn(async move { shared.disconnect(&line).await });
        true
    }
}

/// Keeps a registered session listed; dropping it removes it and tells
/// [`LiveSessions::closed_signal`].
pub struct LiveGuard {
    live: LiveSessions,
    id: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.live.others.lock() {
            map.remove(&self.id);
        }
        if let Ok(mut map) = self.live.terminals.lock()
            && let Some(feed) = map.remove(&self.id)
        {
            feed.end();
        }
        self.live.closed.notify_one();
    }
}
