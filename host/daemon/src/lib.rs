//! The Gatehouse process, as a library the `gatehouse` binary drives: the roles a process runs
//! (`serve --role all|control|session`), each composed here from the service crates under
//! `host/` (SSH and RDP gateways, API, admin socket, cluster port, schedulers); the admin
//! commands, whose arguments the CLI parses and which run here or in the running server
//! through its admin socket; the data directory's layout; `join`, `demo` and the API clients
//! (`login`, `request`, `a2a`). The binary (host/cli) parses arguments, sets up tracing and
//! dispatches; a control node and a session node are the same code with another role.

pub mod a2a_cmd;
mod access_gate;
pub mod admin;
pub mod admin_groups;
pub mod api_client;
pub mod cli;
pub mod datadir;
pub mod demo;
pub mod directory_cmd;
pub mod leader;
pub mod lifecycle_cmd;
mod listener;
pub mod live_view;
pub mod metrics;
pub mod node_cmd;
pub mod notify_glue;
pub mod plugin_cmd;
pub mod plugin_glue;
pub mod policy_cmd;
pub mod rdp_glue;
pub mod recording_key;
pub mod report;
pub mod request_cmd;
pub mod seal;
pub mod search;
pub mod serve;
pub mod session_cmd;
pub mod socket;
pub mod store_cmd;
pub mod telnet_glue;
pub mod timestamp;
pub mod video;
pub mod vnc_glue;
pub mod watch;

use admin::{AdminContext, AdminRequest, gather_inputs};
use anyhow::Result;
use cli::AdminCommand;
use datadir::DataDir;
use gatehouse_policy::PolicyEngine;
use gatehouse_store::StoreError;
use gatehouse_vault::{KeySource, Vault};
use std::sync::Arc;

/// Runs an admin command here, or in the running server when it holds the store.
pub fn run_admin(
    dir: &DataDir,
    overrides: Option<KeySource>,
    command: AdminCommand,
) -> Result<String> {
    dir.require_initialised()?;
    gatehouse_core::gateway::set_gateway_id(dir.gateway_id()?);
    let inputs = gather_inputs(&command)?;
    let request = AdminRequest { command, inputs };
    // On PostgreSQL the store is never "in use": a server running here still gets the command
    // (it knows its live sessions and reloads its policies); without one it runs here.
    if dir.store_location()?.is_postgres()
        && dir.admin_socket().exists()
        && let Ok(response) = socket::send(&dir.admin_socket(), &request)
    {
        return if response.ok {
            Ok(response.output)
        } else {
            anyhow::bail!("{}", response.output)
        };
    }
    match dir.open_store() {
        Ok(store) => {
            let dir_for_key = dir.clone();
            let store = Arc::new(store);
            let policy_settings = dir.policy_settings()?;
            let settings_for_engine = policy_settings.clone();
            let store_for_engine = store.clone();
            let ctx = AdminContext {
                store,
                vault: Box::new(move || {
                    Ok(Arc::new(Vault::new(
                        dir_for_key.load_master_key(overrides.clone())?,
                    )))
                }),
                policy: Box::new(move || {
                    Ok(Arc::new(PolicyEngine::open(
                        settings_for_engine.clone(),
                        store_for_engine.clone(),
                    )?))
                }),
                policy_settings,
                in_server: false,
                live: None,
                cluster_port: None,
                recordings: Some(dir.recordings()),
                search: None,
                search_dir: Some(dir.search_index()),
                directory: dir.load_settings()?.directory,
            };
            admin::execute(&ctx, &request)
        }
        Err(StoreError::InUse(_)) => {
            let response = socket::send(&dir.admin_socket(), &request)?;
            if response.ok {
                Ok(response.output)
            } else {
                anyhow::bail!("{}", response.output)
            }
        }
        Err(e) => Err(e.into()),
    }
}
