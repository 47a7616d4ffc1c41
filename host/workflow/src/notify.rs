//! What the workflow tells people about (by email, through the notify crate's glue).

use gatehouse_core::AccessRequest;

/// A request event worth telling someone about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    /// Sent to everyone who may approve it.
    AwaitingApproval {
        given: u32,
        needed: u32,
    },
    /// Sent to the requester.
    Approved {
        by: String,
    },
    Denied {
        by: String,
        comment: String,
    },
    Expired {
        why: String,
    },
    Revoked {
        by: String,
    },
}

/// Receives request events with the addresses to tell. Must not block: implementations queue.
pub trait Notify: Send + Sync {
    fn request_event(&self, request: &AccessRequest, event: RequestEvent, recipients: Vec<String>);
}
