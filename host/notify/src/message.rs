//! The notifications the access-request workflow sends, and the one place that words them.
//!
//! A notification carries names, ids and free text the requester typed, never a credential:
//! no type here has a field that could hold one. Free text is flattened to one line and
//! shortened, so a reason cannot forge extra paragraphs or headers in the message.

use gatehouse_core::time::Timestamp;
use std::fmt::Write as _;

/// What was asked for: the workflow's own kind.
pub use gatehouse_core::AccessKind;

/// "session access to", "the password of", "the private key of".
fn phrase(access: AccessKind) -> &'static str {
    match access {
        AccessKind::Session => "session access to",
        AccessKind::Password => "the password of",
        AccessKind::PrivateKey => "the private key of",
    }
}

/// The request a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    /// The request id, as the API knows it.
    pub id: String,
    /// The gateway user who asked.
    pub requester: String,
    /// `account@asset`.
    pub target: String,
    pub access: AccessKind,
}

/// What happened to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The request waits for approvers.
    AwaitingApproval {
        reason: Option<String>,
        ticket: Option<String>,
        approvals_given: u32,
        approvals_needed: u32,
    },
    /// The request was approved; access is open until `window_end` (when known).
    Approved {
        approved_by: String,
        window_end: Option<Timestamp>,
    },
    /// The request was denied.
    Denied {
        denied_by: String,
        comment: Option<String>,
    },
    /// The request expired (not decided in time, or its window ended): it grants nothing
    /// any more. `why` says which, when the workflow knows.
    Expired { why: Option<String> },
    /// An approved request was revoked before its window ended.
    Revoked { revoked_by: String },
}

/// The kind of an [`Event`], for delivery reports and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    AwaitingApproval,
    Approved,
    Denied,
    Expired,
    Revoked,
}

impl EventKind {
    /// `awaiting-approval`, `approved`, `denied`, `expired`, `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AwaitingApproval => "awaiting-approval",
            EventKind::Approved => "approved",
            EventKind::Denied => "denied",
            EventKind::Expired => "expired",
            EventKind::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::AwaitingApproval { .. } => EventKind::AwaitingApproval,
            Event::Approved { .. } => EventKind::Approved,
            Event::Denied { .. } => EventKind::Denied,
            Event::Expired { .. } => EventKind::Expired,
            Event::Revoked { .. } => EventKind::Revoked,
        }
    }
}

/// One event about one request, for a list of recipients. Each recipient gets their own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub request: RequestSummary,
    pub event: Event,
    /// Email addresses (`bob@example.com` or `Bob <bob@example.com>`).
    pub recipients: Vec<String>,
}

/// A message's subject and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// Longest free text (reason, comment, ticket) kept in a message, in characters.
const MAX_TEXT_CHARS: usize = 500;
/// Longest name (user, target, id) kept in a message, in characters.
const MAX_NAME_CHARS: usize = 200;

const FOOTER: &str = "--\nSent by Gatehouse. Gatehouse never sends passwords or keys by email.\n";

impl Notification {
    /// The subject and body of the message about this notification. `gateway_url` (without a
    /// trailing slash or with one) adds a link to the request.
    pub fn render(&self, gateway_url: Option<&str>) -> Rendered {
        let request = &self.request;
        let requester = one_line(&request.requester, MAX_NAME_CHARS);
        let target = one_line(&request.target, MAX_NAME_CHARS);
        let id = one_line(&request.id, MAX_NAME_CHARS);
        let what = format!("{} {}", phrase(request.access), target);

        let (subject, opening) = match &self.event {
            Event::AwaitingApproval { .. } => (
                format!("Approval needed: {requester} requests {what}"),
                format!("{requester} requests {what}. The request awaits approval."),
            ),
            Event::Approved { approved_by, .. } => (
                format!("Approved: {what} for {requester}"),
                format!(
                    "The request of {requester} for {what} was approved by {}.",
                    one_line(approved_by, MAX_NAME_CHARS)
                ),
            ),
            Event::Denied { denied_by, .. } => (
                format!("Denied: {what} for {requester}"),
                format!(
                    "The request of {requester} for {what} was denied by {}.",
                    one_line(denied_by, MAX_NAME_CHARS)
                ),
            ),
            Event::Expired { .. } => (
                format!("Expired: {what} for {requester}"),
                format!("The request of {requester} for {what} has expired; it grants no access."),
            ),
            Event::Revoked { revoked_by } => (
                format!("Revoked: {what} for {requester}"),
                format!(
                    "The request of {requester} for {what} was revoked by {}; it grants no access.",
                    one_line(revoked_by, MAX_NAME_CHARS)
                ),
            ),
        };

        let mut body = String::new();
        body.push_str(&opening);
        body.push_str("\n\n");
        field(&mut body, "Request", &id);
        field(&mut body, "Requester", &requester);
        field(&mut body, "Target", &target);
        field(&mut body, "Access", request.access.as_str());
        match &self.event {
            Event::AwaitingApproval {
                reason,
                ticket,
                approvals_given,
                approvals_needed,
            } => {
                field(&mut body, "Reason", &optional_text(reason.as_deref()));
                field(&mut body, "Ticket", &optional_text(ticket.as_deref()));
                field(
                    &mut body,
                    "Approvals",
                    &format!("{approvals_given} of {approvals_needed} given"),
                );
            }
            Event::Approved {
                approved_by,
                window_end,
            } => {
                field(
                    &mut body,
                    "Approved by",
                    &one_line(approved_by, MAX_NAME_CHARS),
                );
                if let Some(window_end) = window_end {
                    field(&mut body, "Access until", &format_time(*window_end));
                }
            }
            Event::Denied { denied_by, comment } => {
                field(&mut body, "Denied by", &one_line(denied_by, MAX_NAME_CHARS));
                field(&mut body, "Comment", &optional_text(comment.as_deref()));
            }
            Event::Expired { why } => {
                if let Some(why) = why.as_deref().filter(|why| !why.trim().is_empty()) {
                    field(&mut body, "Expired", &one_line(why.trim(), MAX_TEXT_CHARS));
                }
            }
            Event::Revoked { revoked_by } => {
                field(
                    &mut body,
                    "Revoked by",
                    &one_line(revoked_by, MAX_NAME_CHARS),
                );
            }
        }
        if let Some(url) = gateway_url {
            let link = request_link(url, &request.id);
            let label = match self.event {
                Event::AwaitingApproval { .. } => "Review the request",
                _ => "The request",
            };
            let _ = write!(body, "\n{label}: {link}\n");
        }
        body.push('\n');
        body.push_str(FOOTER);

        Rendered {
            subject: format!("[Gatehouse] {subject}"),
            body,
        }
    }
}

/// `<gateway_url>/api/v1/requests/<id>`, the id percent-encoded.
pub fn request_link(gateway_url: &str, request_id: &str) -> String {
    let mut link = gateway_url.trim_end_matches('/').to_owned();
    link.push_str("/api/v1/requests/");
    for byte in request_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            link.push(char::from(byte));
        } else {
            let _ = write!(link, "%{byte:02X}");
        }
    }
    link
}

fn field(body: &mut String, label: &str, value: &str) {
    let _ = writeln!(body, "{:<14}{value}", format!("{label}:"));
}

fn optional_text(text: Option<&str>) -> String {
    match text.map(str::trim) {
        Some(text) if !text.is_empty() => one_line(text, MAX_TEXT_CHARS),
        _ => "(none)".to_owned(),
    }
}

/// Control characters (line breaks included) become spaces; text longer than `max` characters
/// is cut and ends with an ellipsis.
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (count, c) in text.chars().enumerate() {
        if count == max {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// RFC 3339 in UTC, to the second.
fn format_time(time: Timestamp) -> String {
    let seconds = i64::try_from(time.0 / 1000).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_second(seconds) {
        Ok(timestamp) => timestamp.to_string(),
        Err(_) => format!("{} ms after the Unix epoch", time.0),
    }
}
