//! The cluster from the command line: `gatehouse node ...` and `gatehouse network ...` on the
//! control node (admin commands, so they work through the admin socket while `serve` runs), and
//! `gatehouse join` on a new session node. The cluster CA is made on first use, its key sealed
//! by the vault in the store.

use crate::admin::{AdminContext, Inputs, json, table, time_text};
use crate::cli::JsonFlag;
use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use gatehouse_cluster::control::{self, Deleted, NodeEdit};
use gatehouse_cluster::node::{self, ControlAddress, JoinOptions};
use gatehouse_cluster::{ClusterCa, Thumbprint};
use gatehouse_core::{ManagedNetwork, SealedSecret, SecretString};
use gatehouse_store::{NETWORKS, SETTINGS, Store};
use gatehouse_vault::{SecretKind, Vault};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Session nodes joined to this control node.
#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum NodeCommand {
    /// Make a single-use join token (shown once) and print the cluster's thumbprint to pin.
    Token {
        /// How long the token stays valid (`15m`, `2h`; at most 7 days).
        #[arg(long, default_value = "15m")]
        expires: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The session nodes, their networks and status.
    List {
        /// Also list removed (soft-deleted) nodes.
        #[arg(long)]
        include_disconnected: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change a node's description, address or launch name.
    Edit {
        id: String,
        #[arg(long)]
        description: Option<String>,
        /// The address users reach the node at (launch strings name it).
        #[arg(long)]
        address: Option<String>,
        /// Launch strings name the node by its host name (`true`) or its address (`false`).
        #[arg(long)]
        use_hostname: Option<bool>,
    },
    /// Remove a node: soft delete (kept for a relink) the first time, for good the second time
    /// or with --hard.
    Delete {
        id: String,
        #[arg(long)]
        hard: bool,
    },
}

/// Networks managed by session nodes.
#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum NetworkCommand {
    /// Assets whose address is in NETWORK are reached through NODE.
    Add {
        /// CIDR (`10.0.0.0/24`) or one address.
        network: String,
        #[arg(long)]
        node: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// The managed networks.
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Stop managing a network.
    Delete { network: String },
}

/// `gatehouse join`: make this data directory a session node of a cluster.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The control node's cluster port: `https://HOST[:PORT]` (port 8649 by default). HOST must
    /// be a name the control node's certificate carries.
    pub control: String,
    /// Another control node on the same store (PostgreSQL), which this node fails over to when
    /// the first cannot be reached; repeat for more. Rejoining with a new list replaces it.
    #[arg(long = "also-control", value_name = "URL")]
    pub also_control: Vec<String>,
    /// The join token `gatehouse node token` printed (single use, short-lived).
    #[arg(long, conflicts_with = "token_stdin")]
    pub token: Option<String>,
    /// Read the join token from standard input instead.
    #[arg(long)]
    pub token_stdin: bool,
    /// The cluster's thumbprint `gatehouse node token` printed (`SHA256:...`).
    #[arg(long)]
    pub thumbprint: String,
    /// This node's id in the cluster (1-64 letters, digits, `.`, `_`, `-`).
    #[arg(long, default_value = "")]
    pub node_id: String,
    /// The address users reach this node at (default: the address the control node sees).
    #[arg(long, default_value = "")]
    pub address: String,
    /// This node's host name (default: the machine's).
    #[arg(long)]
    pub hostname: Option<String>,
    #[arg(long, default_value = "")]
    pub description: String,
}

/// The CA record in the store's settings table.
#[derive(Serialize, Deserialize)]
struct StoredCa {
    cert_pem: String,
    sealed_key: SealedSecret,
}

const CA_KEY: &str = "cluster_ca";
const CA_BINDING: &str = "cluster:ca";

/// The cluster CA, made (and its key sealed) on first use.
pub fn load_or_create_ca(store: &Store, vault: &Vault) -> Result<ClusterCa> {
    if let Some(value) = store.get(&SETTINGS, CA_KEY)? {
        let stored: StoredCa =
            serde_json::from_value(value).context("the cluster CA record is damaged")?;
        let key = vault
            .open_text(CA_BINDING, SecretKind::PrivateKey, &stored.sealed_key)
            .context("opening the cluster CA key (is this the master key it was sealed with?)")?;
        return Ok(ClusterCa::from_pem(&stored.cert_pem, &key)?);
    }
    let ca = ClusterCa::generate()?;
    let sealed_key = vault.seal(
        CA_BINDING,
        SecretKind::PrivateKey,
        ca.key_pem().expose().as_bytes(),
    )?;
    let record = serde_json::to_value(StoredCa {
        cert_pem: ca.cert_pem().to_string(),
        sealed_key,
    })?;
    store.write(|txn| {
        // Two processes racing: the first CA written wins.
        if txn.get(&SETTINGS, CA_KEY)?.is_none() {
            txn.put(&SETTINGS, CA_KEY, &record)?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let value = store
        .get(&SETTINGS, CA_KEY)?
        .ok_or_else(|| anyhow!("the cluster CA was not saved"))?;
    let stored: StoredCa = serde_json::from_value(value)?;
    if stored.cert_pem == ca.cert_pem() {
        tracing::info!(thumbprint = %ca.thumbprint()?, "cluster CA created");
        Ok(ca)
    } else {
        load_or_create_ca(store, vault)
    }
}

fn auditor(ctx: &AdminContext) -> gatehouse_audit::Auditor {
    gatehouse_audit::Auditor::new(ctx.store.clone())
}

fn status_text(view: &control::NodeView) -> String {
    let status = serde_json::to_value(view.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    match (view.node.deleted, view.node.last_seen) {
        (Some(at), _) => format!("{status} (removed {})", time_text(at)),
        (None, Some(seen)) => format!("{status} (seen {})", time_text(seen)),
        (None, None) => status,
    }
}

pub fn node(ctx: &AdminContext, command: &NodeCommand, inputs: &Inputs) -> Result<String> {
    match command {
        NodeCommand::Token { expires, json: j } => {
            let lifetime = humantime::parse_duration(expires)
                .map_err(|e| anyhow!("--expires `{expires}`: {e} (for example `15m`, `2h`)"))?;
            let vault = (ctx.vault)()?;
            let ca = load_or_create_ca(&ctx.store, &vault)?;
            let issued = control::issue_token(&ctx.store, &auditor(ctx), lifetime, &inputs.actor)?;
            let thumbprint = ca.thumbprint()?;
            if j.json {
                return json(&serde_json::json!({
                    "token": issued.token.expose(),
                    "token_id": issued.record.id,
                    "expires": issued.record.expires,
                    "thumbprint": thumbprint.as_str(),
                }));
            }
            // The running control node's cluster port when it has one (a wildcard address
            // becomes this host's name); else a placeholder to fill in.
            let url = match ctx.cluster_port {
                Some(address) if address.ip().is_unspecified() => {
                    format!("https://{}:{}", hostname(), address.port())
                }
                Some(address) => format!("https://{address}"),
                None => format!("https://CONTROL:{}", gatehouse_cluster::DEFAULT_PORT),
            };
            Ok(format!(
                "join token (single use, valid until {}):\n  {}\ncluster thumbprint:\n  {thumbprint}\n\
                 on the new node:\n  gatehouse --data-dir DIR join {url} --token {} \
                 --thumbprint {thumbprint} --node-id NAME\n",
                time_text(issued.record.expires),
                issued.token.expose(),
                issued.token.expose(),
            ))
        }
        NodeCommand::List {
            include_disconnected,
            json: j,
        } => {
            let views = control::node_views(&ctx.store, *include_disconnected)?;
            if j.json {
                return json(&views);
            }
            let rows = views
                .iter()
                .map(|v| {
                    vec![
                        v.node.id.to_string(),
                        v.node.hostname.clone(),
                        v.node.address.clone(),
                        if v.node.use_hostname {
                            "hostname"
                        } else {
                            "address"
                        }
                        .to_string(),
                        v.networks.join(","),
                        status_text(v),
                        v.node.thumbprint.clone(),
                        v.node.description.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            Ok(table(
                &[
                    "ID",
                    "HOSTNAME",
                    "ADDRESS",
                    "LAUNCH",
                    "NETWORKS",
                    "STATUS",
                    "THUMBPRINT",
                    "DESCRIPTION",
                ],
                &rows,
            ))
        }
        NodeCommand::Edit {
            id,
            description,
            address,
            use_hostname,
        } => {
            if description.is_none() && address.is_none() && use_hostname.is_none() {
                anyhow::bail!("nothing to change: give --description, --address or --use-hostname");
            }
            let node = control::edit_node(
                &ctx.store,
                &auditor(ctx),
                id,
                &NodeEdit {
                    description: description.clone(),
                    address: address.clone(),
                    use_hostname: *use_hostname,
                },
                &inputs.actor,
            )?;
            Ok(format!(
                "node `{}`: address {}, launch name {}\n",
                node.id,
                node.address,
                node.launch_host()
            ))
        }
        NodeCommand::Delete { id, hard } => {
            match control::delete_node(&ctx.store, &auditor(ctx), id, *hard, &inputs.actor)? {
                Deleted::Soft => Ok(format!(
                    "node `{id}` removed: its certificate no longer works; its id, networks and \
                     sessions are kept for a relink (join again with --node-id {id}); delete it \
                     again to remove it for good\n"
                )),
                Deleted::Hard { networks } => Ok(format!(
                    "node `{id}` deleted for good, with {networks} managed network(s)\n"
                )),
            }
        }
    }
}

pub fn network(ctx: &AdminContext, command: &NetworkCommand, inputs: &Inputs) -> Result<String> {
    match command {
        NetworkCommand::Add {
            network,
            node,
            description,
        } => {
            let added = control::add_network(
                &ctx.store,
                &auditor(ctx),
                network,
                node,
                description,
                &inputs.actor,
            )?;
            Ok(format!(
                "network `{}` is managed by node `{}`\n",
                added.network, added.node
            ))
        }
        NetworkCommand::List { json: j } => {
            let networks: Vec<ManagedNetwork> = ctx.store.list(&NETWORKS)?;
            if j.json {
                return json(&networks);
            }
            let rows = networks
                .iter()
                .map(|n| vec![n.network.clone(), n.node.to_string(), n.description.clone()])
                .collect::<Vec<_>>();
            Ok(table(&["NETWORK", "NODE", "DESCRIPTION"], &rows))
        }
        NetworkCommand::Delete { network } => {
            let removed =
                control::remove_network(&ctx.store, &auditor(ctx), network, &inputs.actor)?;
            Ok(format!(
                "network `{}` is no longer managed (was node `{}`)\n",
                removed.network, removed.node
            ))
        }
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// `gatehouse join`.
pub fn join(data_dir: &Path, args: JoinArgs) -> Result<()> {
    let control = ControlAddress::parse(&args.control)?;
    let pin = Thumbprint::parse(&args.thumbprint)?;
    let token = match (args.token, args.token_stdin) {
        (Some(t), _) => Some(SecretString::new(t.trim().to_string())),
        (None, true) => Some(SecretString::new(crate::admin::read_first_line_stdin()?)),
        (None, false) => None,
    };
    let also = args
        .also_control
        .iter()
        .map(|a| ControlAddress::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let options = JoinOptions {
        control,
        also,
        token,
        pin,
        node_id: args.node_id,
        hostname: args.hostname.unwrap_or_else(hostname),
        address: args.address,
        description: args.description,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = node::cluster_dir(data_dir);
    let outcome = runtime.block_on(node::join(&dir, options))?;
    let how = if outcome.rejoined {
        "rejoined"
    } else if outcome.relinked {
        "relinked (the node's earlier id, networks and sessions are back)"
    } else {
        "joined"
    };
    println!(
        "{how} the cluster at {} as node `{}` (certificate {})",
        outcome.identity.control,
        outcome.identity.node_id,
        outcome.identity.thumbprint()
    );
    Ok(())
}
