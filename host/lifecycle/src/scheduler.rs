//! The scheduler inside `gatehouse serve`: at start-up it reconciles interrupted changes; then,
//! every tick, it runs the checks and changes that are due (profile schedules, and changes
//! marked due at check-in), a bounded number at a time, honouring the service toggles.

use crate::schedule::is_due;
use crate::{
    Lifecycle, LifecycleError, check_account, effective_profile, outcome, reconcile_all,
    record_outcome,
};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{Account, AccountLifecycle};
use gatehouse_store::{ACCOUNT_LIFECYCLE, ACCOUNTS, CREDENTIAL_CHANGES, account_key};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The actor the audit trail names for scheduled runs.
pub const ACTOR: &str = "scheduler";

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// How often due work is looked for.
    pub tick: Duration,
    /// At most this many checks and changes run at once.
    pub concurrency: usize,
    /// After a failed change that was due at check-in, wait this long before trying again.
    pub retry_after: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(2),
            concurrency: 4,
            retry_after: Duration::from_secs(300),
        }
    }
}

/// One piece of due work.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    Check { account: Account },
    Change { account: Account, reason: String },
}

impl Job {
    fn account(&self) -> &Account {
        match self {
            Job::Check { account } | Job::Change { account, .. } => account,
        }
    }
}

/// The work due at `now`: for each account at most one job (a change before a check).
pub fn due_jobs(
    lc: &Lifecycle,
    config: &SchedulerConfig,
    now: Timestamp,
) -> Result<Vec<Job>, LifecycleError> {
    let services = lc.store.services()?;
    let accounts: Vec<Account> = lc.store.list(&ACCOUNTS)?;
    let mut jobs = Vec::new();
    for account in accounts {
        if account.credential_plugin.is_some() {
            continue;
        }
        let key = account_key(account.asset.as_str(), account.name.as_str());
        if lc.store.get(&CREDENTIAL_CHANGES, &key)?.is_some() {
            continue;
        }
        let status: AccountLifecycle = lc.store.get(&ACCOUNT_LIFECYCLE, &key)?.unwrap_or_default();
        let profile = match effective_profile(&lc.store, &account) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(account = %key, error = %e, "lifecycle: no profile for the account");
                None
            }
        };
        let last_change = status.last_change.as_ref().map(|o| o.time);
        if services.change {
            if let Some(due) = account.change_due {
                let retry_ms = u64::try_from(config.retry_after.as_millis()).unwrap_or(u64::MAX);
                let waiting = status
                    .last_change
                    .as_ref()
                    .is_some_and(|o| !o.ok && o.time >= due && now.0 < o.time.0 + retry_ms);
                if !waiting {
                    jobs.push(Job::Change {
                        account,
                        reason: "check-in".into(),
                    });
                    continue;
                }
            } else if let Some(schedule) = profile.as_ref().and_then(|p| p.change) {
                let last = last_change
                    .unwrap_or(account.secret_updated)
                    .max(account.secret_updated);
                if is_due(&schedule, last, now) {
                    jobs.push(Job::Change {
                        account,
                        reason: "schedule".into(),
                    });
                    continue;
                }
            }
        }
        if services.check
            && let Some(schedule) = profile.as_ref().and_then(|p| p.check)
        {
            let last = status
                .last_check
                .as_ref()
                .map(|o| o.time)
                .unwrap_or(account.created);
            if is_due(&schedule, last, now) {
                jobs.push(Job::Check { account });
            }
        }
    }
    Ok(jobs)
}

async fn run_job(lc: &Lifecycle, job: Job) {
    let account = job.account().clone();
    let key = account_key(account.asset.as_str(), account.name.as_str());
    match job {
        Job::Check { .. } => {
            if let Err(e) = check_account(lc, &account.asset, &account.name, ACTOR).await {
                tracing::warn!(account = %key, error = %e, "scheduled check did not run");
                let _ = record_outcome(lc, &key, Some(outcome(false, e.to_string())), None);
            }
        }
        Job::Change { reason, .. } => {
            match crate::change_account(lc, &account.asset, &account.name, None, &reason, ACTOR)
                .await
            {
                Ok(report) => {
                    tracing::info!(account = %key, detail = %report.detail, "scheduled change done")
                }
                Err(e) => {
                    tracing::warn!(account = %key, error = %e, "scheduled change failed");
                    let _ = record_outcome(lc, &key, None, Some(outcome(false, e.to_string())));
                }
            }
        }
    }
}

/// Reconciles interrupted changes, then runs due work forever (until the task is dropped).
pub async fn run(lc: Lifecycle, config: SchedulerConfig) {
    match reconcile_all(&lc, ACTOR).await {
        Ok(results) => {
            for (target, result) in results {
                match result {
                    Ok(outcome) => tracing::info!(%target, %outcome, "reconciled at start-up"),
                    Err(error) => {
                        tracing::warn!(%target, %error, "could not reconcile at start-up")
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "reconcile at start-up failed"),
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let jobs = match due_jobs(&lc, &config, Timestamp::now()) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "lifecycle scheduler: cannot read the store");
                continue;
            }
        };
        for job in jobs {
            let key = account_key(job.account().asset.as_str(), job.account().name.as_str());
            let fresh = running
                .lock()
                .map(|mut r| r.insert(key.clone()))
                .unwrap_or(false);
            if !fresh {
                continue;
            }
            let Ok(permit) = semaphore.clone().acquire_owned().await else {
                return;
            };
            let lc = lc.clone();
            let running = running.clone();
            tokio::spawn(async move {
                run_job(&lc, job).await;
                if let Ok(mut r) = running.lock() {
                    r.remove(&key);
                }
                drop(permit);
            });
        }
    }
}
