//! A test hook for fault injection: with `GATEHOUSE_FAULT_PAUSE=<point>` in its environment, the
//! process stops at that point of a credential change (after writing the marker file named by
//! `GATEHOUSE_FAULT_MARKER`, if set) and sleeps, so that a test can kill it there with SIGKILL.
//! Points: `before-target-change`, `after-target-change`, `after-commit`. Not for production.

use std::time::Duration;

/// The environment variable naming the point to pause at.
pub const PAUSE_VAR: &str = "GATEHOUSE_FAULT_PAUSE";
/// The environment variable naming the marker file written on reaching the point.
pub const MARKER_VAR: &str = "GATEHOUSE_FAULT_MARKER";

/// Where a change can be paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    BeforeTargetChange,
    AfterTargetChange,
    AfterCommit,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::BeforeTargetChange => "before-target-change",
            Point::AfterTargetChange => "after-target-change",
            Point::AfterCommit => "after-commit",
        }
    }
}

/// Pauses (for an hour, that is until killed) when the environment asks for `point`.
pub async fn pause_if_asked(point: Point) {
    let Ok(wanted) = std::env::var(PAUSE_VAR) else {
        return;
    };
    if wanted != point.name() {
        return;
    }
    tracing::warn!(
        point = point.name(),
        "fault injection: pausing until killed"
    );
    if let Ok(marker) = std::env::var(MARKER_VAR)
        && let Err(e) = std::fs::write(&marker, point.name())
    {
        tracing::error!(error = %e, "fault injection: cannot write the marker file");
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
}
