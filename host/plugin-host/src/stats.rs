//! Counts of plugin hook calls for the metrics endpoint: per plugin and hook, how many ended
//! well, failed or timed out, a latency histogram, and how many calls are running now.
//! Bounded: one entry per installed plugin and hook.

use crate::error::{FailureKind, Hook};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds (the last bucket is +Inf).
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One plugin's hook, as counted since the host started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookStats {
    pub plugin: String,
    /// `aa.authenticate`, `credential-store.get-password`, ...
    pub hook: String,
    pub ok: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub seconds_sum: f64,
    /// Calls that took at most [`LATENCY_BUCKETS`]`[i]` seconds (cumulative, as Prometheus
    /// histograms count them).
    pub buckets: [u64; LATENCY_BUCKETS.len()],
}

impl HookStats {
    /// Every call counted.
    pub fn calls(&self) -> u64 {
        self.ok + self.failed + self.timed_out
    }
}

/// What the host has counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStats {
    pub hooks: Vec<HookStats>,
    /// Hook calls running now (waiting on the plugin, its HTTP requests or its CPU budget).
    pub in_flight: u64,
}

#[derive(Default)]
pub(crate) struct Counter {
    hooks: Mutex<BTreeMap<(String, Hook), HookStats>>,
    in_flight: AtomicU64,
}

/// Decrements the in-flight count when the call ends, however it ends.
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counter {
    pub(crate) fn started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    pub(crate) fn ended(
        &self,
        plugin: &str,
        hook: Hook,
        took: Duration,
        failure: Option<&FailureKind>,
    ) {
        let Ok(mut hooks) = self.hooks.lock() else {
            return;
        };
        let entry = hooks
            .entry((plugin.to_owned(), hook))
            .or_insert_with(|| HookStats {
                plugin: plugin.to_owned(),
                hook: hook.to_string(),
                ..HookStats::default()
            });
        match failure {
            None => entry.ok += 1,
            Some(FailureKind::Timeout { .. }) => entry.timed_out += 1,
            Some(_) => entry.failed += 1,
        }
        let seconds = took.as_secs_f64();
        entry.seconds_sum += seconds;
        for (bucket, bound) in entry.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    pub(crate) fn snapshot(&self) -> CallStats {
        CallStats {
            hooks: self
                .hooks
                .lock()
                .map(|hooks| hooks.values().cloned().collect())
                .unwrap_or_default(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_outcome_and_latency_and_in_flight_goes_back() {
        let counter = Counter::default();
        {
            let _running = counter.started();
            let _also = counter.started();
            assert_eq!(counter.snapshot().in_flight, 2);
        }
        counter.ended("p", Hook::Authenticate, Duration::from_millis(3), None);
        counter.ended(
            "p",
            Hook::Authenticate,
            Duration::from_secs(2),
            Some(&FailureKind::Timeout { timeout_ms: 2000 }),
        );
        counter.ended(
            "p",
            Hook::Authenticate,
            Duration::from_secs(9),
            Some(&FailureKind::Missing),
        );
        let stats = counter.snapshot();
        assert_eq!(stats.in_flight, 0);
        let hook = &stats.hooks[0];
        assert_eq!(
            (hook.ok, hook.timed_out, hook.failed, hook.calls()),
            (1, 1, 1, 3)
        );
        assert_eq!(hook.hook, "aa.authenticate");
        // 3 ms is in every bucket from 5 ms up; 2 s in the last; 9 s in none (+Inf only).
        assert_eq!(hook.buckets, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
        assert!((hook.seconds_sum - 11.003).abs() < 1e-9);
    }
}
