//! `gatehouse directory sync|show`, and the scheduled sync `serve` runs: directory users are
//! looked up again, their mirrored groups brought up to date, users gone from the directory
//! lose their groups; every change is audited.

use crate::admin::AdminContext;
use anyhow::{Context, Result, anyhow};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_auth::directory::{self, SyncReport};
use gatehouse_core::AuditKind;
use gatehouse_directory::Directory;
use gatehouse_store::Store;
use std::sync::Arc;

#[derive(Debug, Clone, clap::Subcommand, serde::Serialize, serde::Deserialize)]
pub enum DirectoryCommand {
    /// Look every directory user up again now: groups brought up to date, users gone from the
    /// directory lose their groups (the gateway also does this every `sync_every`).
    Sync,
    /// What the directory says of a user now (entry, groups with nesting), and the gateway's
    /// copy.
    Show {
        /// The login name.
        name: String,
    },
}

fn directory(ctx: &AdminContext) -> Result<Directory> {
    let settings = ctx
        .directory
        .as_ref()
        .ok_or_else(|| anyhow!("no directory is configured (settings.json `directory`)"))?;
    Directory::new(settings).context("settings.json `directory`")
}

/// Runs `future` to completion on a thread of its own (the admin commands are synchronous and
/// may run inside the server's runtime or without one).
fn block_on<T: Send>(future: impl std::future::Future<Output = T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(future))
            })
            .join()
            .map_err(|_| anyhow!("the directory task failed"))?
            .map_err(anyhow::Error::from)
    })
}

pub fn run(ctx: &AdminContext, command: &DirectoryCommand) -> Result<String> {
    let directory = directory(ctx)?;
    match command {
        DirectoryCommand::Sync => {
            let report = block_on(directory::sync(&ctx.store, &directory))??;
            audit(&Auditor::new(ctx.store.clone()), &report, "by command");
            if let (true, Some(error)) = (report.unavailable, &report.error) {
                anyhow::bail!("the directory sync did not finish: {error}");
            }
            Ok(report_text(&report))
        }
        DirectoryCommand::Show { name } => {
            let found = block_on(directory.lookup(name))??;
            let Some(user) = found else {
                return Ok(format!(
                    "`{name}` is not in the directory at {}\n",
                    directory.url()
                ));
            };
            let mut out = format!("{}\n  dn      {}\n", user.name, user.dn);
            if let Some(mail) = &user.email {
                out.push_str(&format!("  mail    {mail}\n"));
            }
            out.push_str(&format!("  groups  {}\n", user.groups.join(", ")));
            let all = user.all_groups();
            if all.len() > user.groups.len() {
                out.push_str(&format!("  nested  {}\n", all.join(", ")));
            }
            let book = directory::book(&ctx.store)?;
            match book.users.get(name) {
                Some(link) => out.push_str(&format!(
                    "  gateway copy: groups checked {}{}\n",
                    humantime::format_rfc3339_seconds(link.groups_checked.to_system_time()),
                    if link.missing {
                        " (marked missing)"
                    } else {
                        ""
                    }
                )),
                None => out.push_str("  gateway copy: none yet (made at the first login)\n"),
            }
            Ok(out)
        }
    }
}

fn report_text(report: &SyncReport) -> String {
    let mut out = format!(
        "synced {} directory user{}",
        report.users,
        if report.users == 1 { "" } else { "s" }
    );
    if report.changes.is_empty() {
        out.push_str(": nothing changed\n");
    } else {
        out.push_str(":\n");
        for change in &report.changes {
            out.push_str(&format!("  {}\n", change_text(change)));
        }
    }
    if let Some(error) = &report.error {
        out.push_str(&format!(
            "  not synced ({}): {error}\n",
            report.failed.join(", ")
        ));
    }
    out
}

fn change_text(change: &directory::Change) -> String {
    let mut parts = Vec::new();
    if change.missing {
        parts.push("is no longer in the directory".to_string());
    }
    if !change.added.is_empty() {
        parts.push(format!("joined {}", change.added.join(", ")));
    }
    if !change.removed.is_empty() {
        parts.push(format!("left {}", change.removed.join(", ")));
    }
    format!("{} {}", change.user, parts.join("; "))
}

/// Audits what a sync changed (one event per changed user) and a failure.
fn audit(auditor: &Auditor, report: &SyncReport, how: &str) {
    for change in &report.changes {
        auditor.record_best_effort(
            Entry::new(
                AuditKind::AdminChange,
                format!("directory sync ({how}): {}", change_text(change)),
            )
            .user(change.user.clone())
            .field("directory_sync", true)
            .field("added", serde_json::json!(change.added))
            .field("removed", serde_json::json!(change.removed))
            .field("missing", change.missing),
        );
    }
    if let Some(error) = &report.error {
        tracing::warn!(error = %error, users = ?report.failed, "directory sync incomplete");
    }
}

/// Syncs every `sync_every` until the process stops.
pub async fn sync_loop(store: Arc<Store>, directory: Arc<Directory>) {
    let auditor = Auditor::new(store.clone());
    loop {
        tokio::time::sleep(directory.sync_every()).await;
        match directory::sync(&store, &directory).await {
            Ok(report) => audit(&auditor, &report, "scheduled"),
            Err(e) => tracing::warn!(error = %e, "directory sync"),
        }
    }
}
