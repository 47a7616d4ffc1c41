//! Wall-clock timestamps as Unix milliseconds, the one time format the store keeps.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        Self(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// The moment `at`, to the millisecond (before 1970: the epoch).
    pub fn from_system_time(at: SystemTime) -> Self {
        let millis = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        Self(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    /// A moment as people type it on a command line or in a query: a date (`2026-12-01`,
    /// midnight UTC), a time (`2026-12-01T08:00:00Z`) or an age (`7d`, `12h`: that long ago).
    pub fn parse_moment(text: &str) -> Result<Self, MomentError> {
        if let Ok(ago) = humantime::parse_duration(text) {
            let at = SystemTime::now()
                .checked_sub(ago)
                .ok_or_else(|| MomentError::TooLongAgo(text.to_string()))?;
            return Ok(Self::from_system_time(at));
        }
        let full = if text.len() == 10 {
            format!("{text}T00:00:00Z")
        } else {
            text.to_string()
        };
        humantime::parse_rfc3339_weak(&full)
            .map(Self::from_system_time)
            .map_err(|_| MomentError::Unreadable(text.to_string()))
    }
}

/// Why [`Timestamp::parse_moment`] refused a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MomentError {
    #[error("`{0}` is too long ago")]
    TooLongAgo(String),
    #[error("`{0}`: expected a date (2026-12-01), a time (2026-12-01T08:00:00Z) or an age (7d)")]
    Unreadable(String),
}
