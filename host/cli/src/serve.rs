//! `gatehouse serve`: load the data directory and run the SSH gateway and the admin socket.

use crate::admin::AdminContext;
use crate::datadir::DataDir;
use anyhow::{Context, Result};
use gatehouse_audit::Auditor;
use gatehouse_auth::Authenticator;
use gatehouse_policy::Authorizer;
use gatehouse_ssh::{GatewayConfig, Services};
use gatehouse_store::Store;
use gatehouse_vault::{KeySource, Vault};
use std::net::SocketAddr;
use std::sync::Arc;

/// Runs the gateway until interrupted. `ready` is told the bound SSH address.
pub fn run(
    dir: &DataDir,
    overrides: Option<KeySource>,
    ssh_listen: SocketAddr,
    ready: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
) -> Result<()> {
    dir.require_initialised()?;
    let vault = Arc::new(Vault::new(dir.load_master_key(overrides)?));
    let host_keys = dir.load_host_keys()?;
    let store = Arc::new(Store::open(&dir.store())?);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let services = Arc::new(Services {
            store: store.clone(),
            vault: vault.clone(),
            authenticator: Arc::new(Authenticator::new(store.clone())?),
            authorizer: Authorizer::new(store.clone()),
            auditor: Auditor::new(store.clone()),
        });
        let config = Arc::new(GatewayConfig::new(host_keys, dir.recordings()));
        let listener = tokio::net::TcpListener::bind(ssh_listen)
            .await
            .with_context(|| format!("listening on {ssh_listen}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(address = %bound, "SSH gateway listening");
        let admin = Arc::new(AdminContext {
            store: store.clone(),
            vault: Box::new(move || Ok(vault.clone())),
        });
        let socket_path = dir.admin_socket();
        if let Some(ready) = ready {
            ready(bound);
        }
        tokio::select! {
            result = gatehouse_ssh::serve(listener, config, services) => result.context("SSH gateway")?,
            result = crate::socket::serve(&socket_path, admin) => result?,
            _ = shutdown_signal() => tracing::info!("shutting down"),
        }
        let _ = std::fs::remove_file(&socket_path);
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
