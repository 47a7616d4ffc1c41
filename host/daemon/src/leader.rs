//! Jobs that must run once for all control nodes sharing one store, and news from the others.
//!
//! On PostgreSQL several control nodes serve at once. The credential scheduler, directory sync and
//! audit streams must run on one of them (two schedulers would change a password twice, two
//! streams send every event twice): each such job runs where the store's lead for it is held
//! (a PostgreSQL session lock, released when its holder dies, so another node takes over within
//! [`CHECK`]). On the embedded store there is one process, which always leads.
//!
//! Request changes made on another node (an approval clicked there) reach this node's waiters
//! (a held SSH login, sessions under a revoked request) through the audit trail, which every
//! request change writes to: [`follow_requests`] reads it as it grows.

use gatehouse_store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often a lead is re-checked or tried for.
pub const CHECK: Duration = Duration::from_secs(3);

async fn leads(store: &Arc<Store>, name: &str) -> bool {
    let store = store.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || store.try_lead(&name))
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(false)
}

/// Runs the job `make()` builds while this process leads `name`; when the lead is lost the job
/// is dropped and started again once the lead is back. Never returns.
pub async fn while_leading<F, Fut>(store: Arc<Store>, name: &'static str, make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let shared = store.engine() != "redb";
    loop {
        if !leads(&store, name).await {
            tokio::time::sleep(CHECK).await;
            continue;
        }
        if shared {
            tracing::info!(job = name, "this control node leads the job");
        }
        let job = make();
        tokio::pin!(job);
        loop {
            tokio::select! {
                () = &mut job => return,
                () = tokio::time::sleep(CHECK) => {
                    if !leads(&store, name).await {
                        tracing::warn!(job = name, "lost the lead; another control node runs the job");
                        break;
                    }
                }
            }
        }
    }
}

/// Publishes to this node's waiters every request change any node makes, read from the audit
/// trail (only on a shared store; on the embedded one every change is made here).
pub async fn follow_requests(store: Arc<Store>, workflow: Arc<gatehouse_workflow::Workflow>) {
    if store.engine() == "redb" {
        return std::future::pending().await;
    }
    let mut cursor = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.list_audit(Some(1)))
            .await
            .ok()
            .and_then(|r| r.ok())
            .and_then(|mut v| v.pop())
            .map_or(0, |e| e.seq)
    };
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tick.tick().await;
        let read = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.audit_after(cursor, 1000)).await
        };
        let Ok(Ok(events)) = read else { continue };
        let mut changed = Vec::new();
        for event in events {
            cursor = event.seq;
            use gatehouse_core::AuditKind as K;
            if matches!(
                event.kind,
                K::RequestCreated
                    | K::RequestApproved
                    | K::RequestGranted
                    | K::RequestDenied
                    | K::RequestCancelled
                    | K::RequestRevoked
                    | K::RequestExpired
                    | K::RequestCheckedIn
            ) && let Some(id) = event.fields.get("request").and_then(|v| v.as_str())
                && !changed.iter().any(|c| c == id)
            {
                changed.push(id.to_string());
            }
        }
        if !changed.is_empty() {
            let workflow = workflow.clone();
            let _ = tokio::task::spawn_blocking(move || workflow.changed_elsewhere(&changed)).await;
        }
    }
}
