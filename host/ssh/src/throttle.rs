//! Failed logins per client address: past a limit in a window, that address's next attempts are
//! refused without checking the password, with a line saying why.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed password attempts one address may make in [`WINDOW`].
pub(crate) const MAX_FAILURES: usize = 10;
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it, the ones without recent failures are forgotten first.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// `Some(wait)` when `ip` is over the limit: how long until it may try again.
    pub(crate) fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let times = failures.get_mut(&ip)?;
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            return None;
        }
        times
            .front()
            .map(|oldest| WINDOW.saturating_sub(now.duration_since(*oldest)))
    }

    pub(crate) fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&ip) {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) <= WINDOW)
            });
            if failures.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let times = failures.entry(ip).or_default();
        times.push_back(now);
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_the_limit_is_blocked_and_others_are_not() {
        let throttle = LoginThrottle::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.failed(a);
        }
        assert!(throttle.blocked(a).is_none());
        throttle.failed(a);
        let wait = throttle.blocked(a).expect("blocked");
        assert!(wait <= WINDOW && wait > Duration::from_secs(50));
        assert!(throttle.blocked(b).is_none());
    }
}
