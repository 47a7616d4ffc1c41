//! The sessions running in this process, by id, so that one can be ended from outside (an
//! administrator on this gateway, or the control node for a session node).

use crate::session::SessionShared;
use gatehouse_core::AuditKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Running SSH sessions of this process. Cheap to clone; entries go when their session ends.
#[derive(Clone, Default)]
pub struct LiveSessions {
    sessions: Arc<Mutex<HashMap<String, Weak<SessionShared>>>>,
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

    /// Notified each time a session's books are closed.
    pub fn closed_signal(&self) -> Arc<tokio::sync::Notify> {
        self.closed.clone()
    }

    /// The ids of the sessions running now.
    pub fn ids(&self) -> Vec<String> {
        self.sessions
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Ends session `id`: the user reads who ended it and why, the audit trail gets it, the
    /// channels close and the connection goes. `false` when no such session runs here.
    pub fn terminate(&self, id: &str, by: &str, reason: &str) -> bool {
        let shared = self
            .sessions
            .lock()
            .ok()
            .and_then(|m| m.get(id).and_then(Weak::upgrade));
        let Some(shared) = shared else {
            return false;
        };
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        shared.audit(
            AuditKind::SessionEnded,
            format!("session terminated by {by}: {reason}"),
            &[
                ("terminated_by", by.into()),
                ("reason", reason.clone().into()),
            ],
        );
        let line = format!("gatehouse: an administrator ({by}) ended this session: {reason}");
        tokio::spawn(async move { shared.disconnect(&line).await });
        true
    }
}
