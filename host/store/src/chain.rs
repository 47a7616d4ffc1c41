//! The audit trail's hash chain. Each event carries `chain`: hex SHA-256 over the previous
//! event's `chain` (or [`GENESIS`] for the first) and the event's own JSON without it. The store
//! sets it when it appends; [`Verifier`] walks the trail and names every event that was edited,
//! removed, moved or added out of line. A cut-off tail or an older copy of the whole trail keeps a
//! valid chain: against those, an auditor records the head (`SEQ:CHAIN`) and checks it later.

use gatehouse_core::AuditEvent;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What the first event's link starts from.
pub const GENESIS: &str = "gatehouse-audit-chain-v1";

/// The link of `event` (whose `chain` is `None`) after the link `previous`.
pub fn link(previous: &str, event: &AuditEvent) -> Result<String, serde_json::Error> {
    let body = serde_json::to_vec(event)?;
    let mut hash = Sha256::new();
    hash.update(previous.as_bytes());
    hash.update(b"\n");
    hash.update(&body);
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Something wrong in the trail, in words an auditor can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Events `from..=to` are not in the trail.
    Removed { from: u64, to: u64 },
    /// The event stored under `key` says it is event `claims`.
    Moved { key: u64, claims: u64 },
    /// The event's content does not match its link: it was edited (or its link was).
    Changed { seq: u64 },
    /// The event's link does not follow from the event before it, though the event itself is
    /// intact: something was removed, inserted or reordered just before it.
    Unlinked { seq: u64 },
    /// An event without a link after linked ones.
    NoLink { seq: u64 },
    /// The stored bytes are not an event.
    Unreadable { key: u64, reason: String },
    /// The head recorded earlier is not in the trail: cut short, or an older copy.
    HeadMissing { seq: u64, chain: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Removed { from, to } if from == to => write!(f, "event {from} was removed"),
            Problem::Removed { from, to } => write!(f, "events {from} to {to} were removed"),
            Problem::Moved { key, claims } => {
                write!(
                    f,
                    "the event in place {key} is event {claims}: moved or reordered"
                )
            }
            Problem::Changed { seq } => {
                write!(
                    f,
                    "event {seq} was changed (its content does not match its hash)"
                )
            }
            Problem::Unlinked { seq } => write!(
                f,
                "event {seq} does not follow from the event before it: something before it was \
                 removed, inserted or reordered"
            ),
            Problem::NoLink { seq } => {
                write!(
                    f,
                    "event {seq} has no hash link, after events that have one"
                )
            }
            Problem::Unreadable { key, reason } => write!(f, "event {key} is unreadable: {reason}"),
            Problem::HeadMissing { seq, chain } => write!(
                f,
                "the recorded head {seq}:{chain} is not in the trail: it was cut short or \
                 replaced by another copy"
            ),
        }
    }
}

/// The outcome of a walk over the trail.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// Events in the trail.
    pub events: u64,
    /// Events from before the chain existed (the first ones, without a link); not checked.
    pub unlinked_before_chain: u64,
    /// The last event and its link: record it to check later that the trail still holds it.
    pub head: Option<(u64, String)>,
    pub problems: Vec<Problem>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Walks the events in key order.
pub struct Verifier {
    out: Verification,
    /// The key the next event should have.
    next_key: u64,
    /// The stored link of the event before (`None` before the chain starts).
    previous: Option<String>,
    /// When the event before did not match its link: the link its content makes (had its
    /// link been edited instead of its content, the next event follows from this one).
    recomputed: Option<String>,
    expect_head: Option<(u64, String)>,
    head_seen: bool,
}

impl Verifier {
    pub fn new(expect_head: Option<(u64, &str)>) -> Self {
        Self {
            out: Verification::default(),
            next_key: 1,
            previous: None,
            recomputed: None,
            expect_head: expect_head.map(|(seq, chain)| (seq, chain.to_ascii_lowercase())),
            head_seen: false,
        }
    }

    fn gap_to(&mut self, key: u64) {
        if key > self.next_key {
            self.out.problems.push(Problem::Removed {
                from: self.next_key,
                to: key - 1,
            });
        }
        self.next_key = key.saturating_add(1);
    }

    pub fn unreadable(&mut self, key: u64, reason: String) {
        self.out.events += 1;
        self.gap_to(key);
        self.out.problems.push(Problem::Unreadable { key, reason });
        // The next event cannot be linked to this one.
        self.previous = Some(String::new());
    }

    pub fn event(&mut self, key: u64, event: AuditEvent) {
        self.out.events += 1;
        self.gap_to(key);
        if event.seq != key {
            self.out.problems.push(Problem::Moved {
                key,
                claims: event.seq,
            });
        }
        if let Some((seq, chain)) = &self.expect_head
            && *seq == key
            && event.chain.as_deref() == Some(chain.as_str())
        {
            self.head_seen = true;
        }
        let Some(stored) = event.chain.clone() else {
            if self.previous.is_some() {
                self.out.problems.push(Problem::NoLink { seq: key });
                // The next event cannot be linked to this one.
                self.previous = Some(String::new());
                self.out.head = None;
                return;
            } else {
                self.out.unlinked_before_chain += 1;
            }
            self.out.head = None;
            return;
        };
        let mut body = event;
        body.chain = None;
        // The event against its own link, from the link stored before it; then whether that
        // link is the one the previous event carries.
        let previous = self.previous.clone().unwrap_or_else(|| GENESIS.to_string());
        let from_recomputed = self
            .recomputed
            .take()
            .and_then(|r| link(&r, &body).ok())
            .is_some_and(|l| l == stored);
        match link(&previous, &body) {
            Ok(expected) if expected == stored || from_recomputed => {}
            Ok(expected) => {
                self.recomputed = Some(expected);
                // Right after a removal or a move, the event's own predecessor is gone from
                // its place: the break is explained there. Otherwise the event itself (or its
                // link) was edited.
                let explained = match self.out.problems.last() {
                    Some(Problem::Removed { to, .. }) => to.saturating_add(1) == key,
                    Some(Problem::Moved { key: moved, .. }) => {
                        *moved == key || moved.saturating_add(1) == key
                    }
                    Some(Problem::NoLink { seq: k } | Problem::Unreadable { key: k, .. }) => {
                        k.saturating_add(1) == key
                    }
                    _ => false,
                };
                self.out.problems.push(if explained {
                    Problem::Unlinked { seq: key }
                } else {
                    Problem::Changed { seq: key }
                });
            }
            Err(e) => self.out.problems.push(Problem::Unreadable {
                key,
                reason: e.to_string(),
            }),
        }
        self.out.head = Some((key, stored.clone()));
        self.previous = Some(stored);
    }

    pub fn finish(mut self) -> Verification {
        if let Some((seq, chain)) = self.expect_head.take()
            && !self.head_seen
        {
            self.out.problems.push(Problem::HeadMissing { seq, chain });
        }
        self.out
    }
}
