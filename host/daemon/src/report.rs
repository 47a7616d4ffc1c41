//! `gatehouse report`: what happened in a period, from the session records and the audit trail,
//! as JSON or CSV: sessions per user and target, failed logins, denied access, approvals,
//! credential releases and rotations.

use crate::admin::AdminContext;
use anyhow::{Result, anyhow};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditKind, SessionRecord};
use gatehouse_store::SESSIONS;
use serde::Serialize;
use std::collections::BTreeMap;

/// A moment given as RFC 3339 (`2026-12-01T00:00:00Z`, `2026-12-01`) or as a time ago (`7d`).
fn moment(text: &str, what: &str) -> Result<Timestamp> {
    Timestamp::parse_moment(text).map_err(|e| anyhow!("{what} {e}"))
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub from: String,
    pub until: String,
    pub sessions: Vec<SessionRow>,
    pub logins_failed: Vec<CountRow>,
    pub access_denied: Vec<CountRow>,
    pub approvals: Vec<CountRow>,
    pub denials: Vec<CountRow>,
    pub releases: Vec<CountRow>,
    pub rotations: Vec<RotationRow>,
}

#[derive(Debug, Default, Serialize)]
pub struct SessionRow {
    pub user: String,
    pub target: String,
    pub protocol: String,
    pub sessions: u64,
    pub seconds: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// How often `user` (the actor) did or met something about `target`.
#[derive(Debug, Default, Serialize)]
pub struct CountRow {
    pub user: String,
    pub target: String,
    pub count: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct RotationRow {
    pub target: String,
    pub changed: u64,
    pub failed: u64,
}

/// The report for `[since, until)` (until now when absent).
pub fn build(ctx: &AdminContext, since: &str, until: Option<&str>) -> Result<Report> {
    let from = moment(since, "--since")?;
    let until = match until {
        Some(text) => moment(text, "--until")?,
        None => Timestamp::now(),
    };
    if until <= from {
        return Err(anyhow!("--until is not after --since"));
    }
    let within = |t: Timestamp| t >= from && t < until;
    let mut sessions: BTreeMap<(String, String, String), SessionRow> = BTreeMap::new();
    for record in ctx.store.list::<SessionRecord>(&SESSIONS)? {
        if !within(record.started) {
            continue;
        }
        let target = format!("{}@{}", record.account, record.asset);
        let row = sessions
            .entry((record.user.clone(), target.clone(), record.protocol.clone()))
            .or_insert_with(|| SessionRow {
                user: record.user.clone(),
                target,
                protocol: record.protocol.clone(),
                ..Default::default()
            });
        row.sessions += 1;
        row.seconds += record
            .ended
            .map(|e| e.0.saturating_sub(record.started.0) / 1000)
            .unwrap_or(0);
        row.bytes_up += record.bytes_up;
        row.bytes_down += record.bytes_down;
    }
    let mut counts: BTreeMap<(AuditKindKey, String, String), u64> = BTreeMap::new();
    let mut rotations: BTreeMap<String, RotationRow> = BTreeMap::new();
    let mut after = 0;
    loop {
        let batch = ctx.store.audit_after(after, 1000)?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for event in batch.iter().filter(|e| within(e.time)) {
            let mut user = event.user.clone().unwrap_or_default();
            let mut target = event.target.clone().unwrap_or_default();
            // A failed login is audited under the login as typed (`alice@root@db1`): counted
            // for the gateway user and target it names.
            if user.contains('@')
                && let Ok(spec) = gatehouse_core::LoginSpec::parse(&user)
            {
                if let (Ok(named), true) = (&spec.target, target.is_empty()) {
                    target = named.to_string();
                }
                user = spec.user.to_string();
            }
            let key = match event.kind {
                AuditKind::LoginFailed => AuditKindKey::LoginFailed,
                AuditKind::AccessDenied => AuditKindKey::AccessDenied,
                AuditKind::RequestApproved => AuditKindKey::Approved,
                AuditKind::RequestDenied => AuditKindKey::Denied,
                AuditKind::CredentialReleased => AuditKindKey::Released,
                AuditKind::CredentialChanged | AuditKind::CredentialChangeFailed => {
                    let row = rotations
                        .entry(target.clone())
                        .or_insert_with(|| RotationRow {
                            target,
                            ..Default::default()
                        });
                    if event.kind == AuditKind::CredentialChanged {
                        row.changed += 1;
                    } else {
                        row.failed += 1;
                    }
                    continue;
                }
                _ => continue,
            };
            *counts.entry((key, user, target)).or_default() += 1;
        }
    }
    let rows = |which: AuditKindKey| -> Vec<CountRow> {
        counts
            .iter()
            .filter(|((k, _, _), _)| *k == which)
            .map(|((_, user, target), count)| CountRow {
                user: user.clone(),
                target: target.clone(),
                count: *count,
            })
            .collect()
    };
    Ok(Report {
        from: crate::admin::time_text(from),
        until: crate::admin::time_text(until),
        sessions: sessions.into_values().collect(),
        logins_failed: rows(AuditKindKey::LoginFailed),
        access_denied: rows(AuditKindKey::AccessDenied),
        approvals: rows(AuditKindKey::Approved),
        denials: rows(AuditKindKey::Denied),
        releases: rows(AuditKindKey::Released),
        rotations: rotations.into_values().collect(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AuditKindKey {
    LoginFailed,
    AccessDenied,
    Approved,
    Denied,
    Released,
}

/// A CSV field, quoted when it needs to be (RFC 4180).
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// One CSV table: `section,user,target,protocol,count,seconds,bytes_up,bytes_down`.
pub fn to_csv(report: &Report) -> String {
    let mut out = String::from("section,user,target,protocol,count,seconds,bytes_up,bytes_down\n");
    let mut line = |fields: [&str; 8]| {
        let row: Vec<String> = fields.iter().map(|f| csv(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    };
    for s in &report.sessions {
        line([
            "sessions",
            &s.user,
            &s.target,
            &s.protocol,
            &s.sessions.to_string(),
            &s.seconds.to_string(),
            &s.bytes_up.to_string(),
            &s.bytes_down.to_string(),
        ]);
    }
    for (section, rows) in [
        ("logins_failed", &report.logins_failed),
        ("access_denied", &report.access_denied),
        ("approvals", &report.approvals),
        ("denials", &report.denials),
        ("releases", &report.releases),
    ] {
        for r in rows {
            line([
                section,
                &r.user,
                &r.target,
                "",
                &r.count.to_string(),
                "",
                "",
                "",
            ]);
        }
    }
    for r in &report.rotations {
        line([
            "rotations_changed",
            "",
            &r.target,
            "",
            &r.changed.to_string(),
            "",
            "",
            "",
        ]);
        line([
            "rotations_failed",
            "",
            &r.target,
            "",
            &r.failed.to_string(),
            "",
            "",
            "",
        ]);
    }
    out
}
