//! The command line: every `gatehouse` subcommand and its flags.

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about = "Privileged-access gateway for SSH and RDP: vaulted credentials, Cedar policies, access requests, recorded sessions", long_about = None)]
pub struct Cli {
    /// The data directory (store, keys, recordings).
    #[arg(
        long,
        env = "GATEHOUSE_DATA_DIR",
        default_value = "gatehouse-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Read the master key from this file instead of the one `init` recorded.
    #[arg(
        long,
        env = "GATEHOUSE_MASTER_KEY_FILE",
        global = true,
        conflicts_with = "master_key_env"
    )]
    pub master_key_file: Option<PathBuf>,
    /// Read the master key (64 hex characters) from this environment variable.
    #[arg(long, env = "GATEHOUSE_MASTER_KEY_ENV", global = true)]
    pub master_key_env: Option<String>,
    /// Where the store is: `postgres://USER:PASSWORD@HOST/DB` (several control nodes on one
    /// database) or `redb:PATH` (default: settings.json `store`, else the redb file of the data
    /// directory). `init --store` records it in settings.json.
    #[arg(long, env = "GATEHOUSE_STORE", global = true, hide_env_values = true)]
    pub store: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory: store, SSH host key, TLS key pair and master key.
    Init,
    /// Run the gateway.
    Serve(ServeArgs),
    /// Set up a working demo (a local OpenSSH target, a user, a grant) and run the gateway.
    Demo(DemoArgs),
    #[command(flatten)]
    Admin(AdminCommand),
    /// Recorded sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Cedar policies: validate, test, explain, who-can, reload.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// WebAssembly plugins (docs/plugins.md).
    #[command(subcommand)]
    Plugin(crate::plugin_cmd::PluginCommand),
    /// Log in to the gateway's API (keeps a short-lived token for `gatehouse request`).
    Login(crate::request_cmd::LoginArgs),
    /// Access requests over the API: file, review, check out, check in, access strings.
    #[command(subcommand)]
    Request(crate::request_cmd::RequestCommand),
    /// Make this data directory a session node of a cluster (docs/cluster.md).
    Join(crate::node_cmd::JoinArgs),
    /// The store: status, and migration between redb and PostgreSQL (docs/cluster.md).
    #[command(subcommand)]
    Store(crate::store_cmd::StoreCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for SSH clients.
    #[arg(long, default_value = "0.0.0.0:2222")]
    pub ssh_listen: SocketAddr,
    /// Also accept SSH connections a router redirected here (transparent mode, docs/transparent.md):
    /// the target is the server the client connected to (its original destination), and users
    /// log in as `USER@ACCOUNT`.
    #[arg(long)]
    pub ssh_transparent_listen: Option<SocketAddr>,
    /// Address of the HTTPS API (default: settings.json `api.listen`, 127.0.0.1:8443).
    #[arg(long)]
    pub api_listen: Option<SocketAddr>,
    /// Address for RDP clients (default: settings.json `rdp.listen`, 0.0.0.0:3389). Unlike the
    /// default, an address given here that cannot be bound stops `serve`.
    #[arg(long)]
    pub rdp_listen: Option<SocketAddr>,
    /// Address for VNC viewers (default: settings.json `vnc`, off). Viewers log in with
    /// VeNCrypt (TLS with the gateway's certificate, then user name and password).
    #[arg(long)]
    pub vnc_listen: Option<SocketAddr>,
    /// Also accept Telnet connections a router redirected here (transparent mode,
    /// docs/transparent.md): the target is the server the client connected to.
    #[arg(long)]
    pub telnet_transparent_listen: Option<SocketAddr>,
    /// Also accept RDP connections a router redirected here (transparent mode): users log in
    /// as `USER@ACCOUNT`.
    #[arg(long)]
    pub rdp_transparent_listen: Option<SocketAddr>,
    /// Also accept VNC connections a router redirected here (transparent mode): users log in
    /// as `USER@ACCOUNT`.
    #[arg(long)]
    pub vnc_transparent_listen: Option<SocketAddr>,
    /// Where transparent mode's connections to targets come from: the gateway's address
    /// (`gateway`), or the client's own (`client`: targets see the user's address; needs
    /// CAP_NET_ADMIN or CAP_NET_RAW, and a router that sends the targets' replies back to the
    /// gateway).
    #[arg(long, value_enum, default_value_t = TransparentSource::Gateway)]
    pub transparent_source: TransparentSource,
    /// Address for Telnet clients (default: settings.json `telnet`, off; Telnet is cleartext).
    /// An address given here turns it on and must bind.
    #[arg(long)]
    pub telnet_listen: Option<SocketAddr>,
    /// Seconds a SIGTERM lets running sessions finish before they are closed (users are told
    /// when it starts; a second SIGTERM stops at once).
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
    /// What this process runs: everything (`all`), a control node, or a session node joined
    /// with `gatehouse join` (docs/cluster.md).
    #[arg(long, value_enum, default_value_t = crate::serve::Role::All)]
    pub role: crate::serve::Role,
    /// The cluster port session nodes join (`control`: 0.0.0.0:8649 by default; `all` opens it
    /// only when given).
    #[arg(long)]
    pub cluster_listen: Option<SocketAddr>,
    /// A name (host name or IP address) the cluster port's certificate carries, besides this
    /// host's name, `localhost` and the loopback addresses. Repeatable.
    #[arg(long = "cluster-name")]
    pub cluster_names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address for SSH clients.
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub ssh_listen: SocketAddr,
    /// Port for the demo's own OpenSSH target on 127.0.0.1.
    #[arg(long, default_value_t = 2200)]
    pub target_port: u16,
    /// Address of the HTTPS API.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub api_listen: SocketAddr,
    /// Address for RDP clients (default: 127.0.0.1:3389, skipped with a warning when taken;
    /// an address given here must bind).
    #[arg(long)]
    pub rdp_listen: Option<SocketAddr>,
    /// Also open the cluster port here, so session nodes can join the demo (docs/cluster.md).
    #[arg(long)]
    pub cluster_listen: Option<SocketAddr>,
}

/// Commands that read or change the store. They run in this process, or in the running server
/// through its admin socket when the server holds the store.
#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AdminCommand {
    /// `gatehouse store status`, run where the store is open (`location` as the CLI names it,
    /// password hidden).
    #[command(skip)]
    StoreStatus { location: String },
    /// Gateway users.
    #[command(subcommand)]
    User(UserCommand),
    /// Groups of gateway users.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Target machines.
    #[command(subcommand)]
    Asset(AssetCommand),
    /// Accounts on assets and their vault credentials.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Entitlements: who may open sessions to which account.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Groups of assets, for policies (`resource in AssetGroup::"prod"`).
    #[command(subcommand)]
    AssetGroup(AssetGroupCommand),
    /// Secrets kept for plugins (TOTP seeds, API tokens), sealed by the vault.
    #[command(subcommand)]
    PluginSecret(PluginSecretCommand),
    /// A2A: applications (pinned client certificates), their API keys, and retrieval.
    #[command(subcommand)]
    A2a(crate::a2a_cmd::A2aCommand),
    /// The vault's services (session/password/key requests, a2a, check, change, discovery).
    #[command(subcommand)]
    Service(crate::a2a_cmd::ServiceCommand),
    /// Session records (for `play` and `export` see `gatehouse session`).
    #[command(subcommand, hide = true)]
    SessionRecord(SessionRecordCommand),
    /// Policy commands that need the store or the running server (see `gatehouse policy`).
    #[command(subcommand, hide = true)]
    PolicyAdmin(PolicyAdminCommand),
    /// Credential lifecycle: profiles, partitions, discovery (docs/credentials.md).
    #[command(flatten)]
    Lifecycle(crate::lifecycle_cmd::LifecycleCommand),
    /// Users from LDAP or Active Directory (docs/directory.md): sync, show.
    #[command(subcommand)]
    Directory(crate::directory_cmd::DirectoryCommand),
    /// Cluster: session nodes joined to this control node (docs/cluster.md).
    #[command(subcommand)]
    Node(crate::node_cmd::NodeCommand),
    /// Cluster: networks managed by session nodes.
    #[command(subcommand)]
    Network(crate::node_cmd::NetworkCommand),
    /// What happened in a period: sessions per user and target, failed logins, denied access,
    /// approvals, releases and rotations, as a table, JSON or CSV.
    Report {
        /// From when: a date (2026-12-01), a time (2026-12-01T08:00:00Z) or an age (7d).
        #[arg(long, default_value = "30d")]
        since: String,
        /// Until when (now when absent), in the same forms.
        #[arg(long)]
        until: Option<String>,
        /// CSV (one table, a `section` column) instead of text.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum UserCommand {
    /// Add a user. The password is read from standard input, never from the command line.
    Add {
        name: String,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
        /// An OpenSSH public key file the user may log in with (repeatable).
        #[arg(long = "key-file")]
        key_files: Vec<PathBuf>,
        /// Groups to join (repeatable; they must exist).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Where approval requests and decisions are mailed.
        #[arg(long)]
        email: Option<String>,
    },
    /// List users.
    List(JsonFlag),
    /// Show one user.
    Show {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a user and the user's grants.
    Remove { name: String },
    /// Replace a user's password (read from standard input).
    SetPassword { name: String },
    /// Add a public key to a user.
    AddKey { name: String, key_file: PathBuf },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Add a group.
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// A group this group is a member of (repeatable; it must exist).
        #[arg(long = "parent")]
        parents: Vec<String>,
    },
    /// List groups with their members.
    List(JsonFlag),
    /// Show one group.
    Show {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a group, its memberships and its grants.
    Remove { name: String },
    /// Add a user to a group.
    AddMember { group: String, user: String },
    /// Remove a user from a group.
    RemoveMember { group: String, user: String },
    /// Make a group a member of another group (nesting; cycles are refused).
    Nest { group: String, parent: String },
    /// Undo `nest`.
    Unnest { group: String, parent: String },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum PluginSecretCommand {
    /// Set a secret; the value is read from standard input (first line). A plugin reads it only
    /// if its grants name it (`secrets = ["totp-seed/*"]`).
    Set { name: String },
    /// List secret names (never values).
    List(JsonFlag),
    /// Remove a secret.
    Remove { name: String },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AssetGroupCommand {
    /// Add an asset group.
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// An asset group this group is in (repeatable; it must exist).
        #[arg(long = "parent")]
        parents: Vec<String>,
    },
    /// List asset groups with their assets.
    List(JsonFlag),
    /// Show one asset group.
    Show {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove an asset group (assets stay; they leave the group).
    Remove { name: String },
    /// Put an asset in a group.
    AddAsset { group: String, asset: String },
    /// Take an asset out of a group.
    RemoveAsset { group: String, asset: String },
    /// Make an asset group a member of another (nesting; cycles are refused).
    Nest { group: String, parent: String },
    /// Undo `nest`.
    Unnest { group: String, parent: String },
}

// Parsed once per command; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AssetCommand {
    /// Add an asset. Its SSH host key is pinned (`--host-key`, `--host-key-file`) or trusted on
    /// first use (`--tofu`) and then enforced.
    Add {
        name: String,
        #[arg(long)]
        address: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
        /// The host key as an OpenSSH public key line.
        #[arg(long, conflicts_with_all = ["host_key_file", "tofu"])]
        host_key: Option<String>,
        /// A file holding the host key (for example `ssh_host_ed25519_key.pub`).
        #[arg(long, conflicts_with = "tofu")]
        host_key_file: Option<PathBuf>,
        /// Trust the first host key seen, then enforce it.
        #[arg(long)]
        tofu: bool,
        /// An asset group to put it in (repeatable; it must exist).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The asset accepts RDP on this port (NLA required).
        #[arg(long)]
        #[serde(default)]
        rdp_port: Option<u16>,
        /// The pin of the asset's RDP TLS key (`SHA256:<base64>` of its SubjectPublicKeyInfo);
        /// without it the first key seen is trusted and pinned.
        #[arg(long, requires = "rdp_port")]
        #[serde(default)]
        rdp_cert_pin: Option<String>,
        /// The asset accepts Telnet on this port (cleartext: the gateway logs in with the vault's
        /// password by answering the target's prompts).
        #[arg(long)]
        #[serde(default)]
        telnet_port: Option<u16>,
        /// The target's login prompt: a regular expression, case-insensitive, searched in what
        /// the target wrote since the last answer (anchor it with `$`; default: ends with
        /// `login:`).
        #[arg(long, requires = "telnet_port")]
        #[serde(default)]
        telnet_login_prompt: Option<String>,
        /// The target's password prompt, likewise (default: ends with `password:`).
        #[arg(long, requires = "telnet_port")]
        #[serde(default)]
        telnet_password_prompt: Option<String>,
        /// What the target says when it refuses the login (default: `login incorrect`,
        /// `access denied`, `authentication failed` and the like).
        #[arg(long, requires = "telnet_port")]
        #[serde(default)]
        telnet_failure: Option<String>,
        /// What the target shows once logged in (a shell prompt, like `\$ $`); without it the
        /// login succeeded when the target wrote something and then went quiet for a second.
        #[arg(long, requires = "telnet_port")]
        #[serde(default)]
        telnet_success: Option<String>,
        /// The asset accepts VNC (RFB) on this port; the account's vault password answers its
        /// VNC authentication.
        #[arg(long)]
        #[serde(default)]
        vnc_port: Option<u16>,
    },
    /// List assets.
    List(JsonFlag),
    /// Show one asset.
    Show {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove an asset with its accounts and grants.
    Remove { name: String },
    /// Forget the pinned host key; the next connection trusts what it sees (after a re-key).
    ResetHostKey { name: String },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AccountCommand {
    /// Add an account on an asset (`ACCOUNT@ASSET`) with its credential, or with
    /// `--credential-plugin` to fetch it from a credential-store plugin at each login.
    Add {
        target: String,
        /// A credential-store plugin that supplies the credential (no secret is stored).
        #[arg(long, conflicts_with_all = ["password_stdin", "password_file", "key_file"])]
        credential_plugin: Option<String>,
        /// Read the password from standard input (first line).
        #[arg(long, conflicts_with = "password_file")]
        password_stdin: bool,
        /// Read the password from a file (first line).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// An unencrypted OpenSSH private key file.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// List accounts (never their secrets).
    List {
        #[arg(long)]
        asset: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one account (never its secret).
    Show {
        target: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove an account and its grants.
    Remove { target: String },
    /// Replace an account's credential.
    SetSecret {
        target: String,
        #[arg(long, conflicts_with = "password_file")]
        password_stdin: bool,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Credential lifecycle: check, change, reconcile, set, status, checked-in.
    #[command(flatten)]
    Lifecycle(crate::lifecycle_cmd::AccountLifecycleCommand),
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[group(required = true, multiple = false)]
pub struct PrincipalArgs {
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum GrantCommand {
    /// Let a user or group open sessions to `ACCOUNT@ASSET`.
    Add {
        #[command(flatten)]
        principal: PrincipalArgs,
        target: String,
    },
    /// List grants.
    List(JsonFlag),
    /// Remove a grant.
    Remove {
        #[command(flatten)]
        principal: PrincipalArgs,
        target: String,
    },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AuditCommand {
    /// List audit events, oldest first.
    List {
        /// Only the last N events.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Check the audit trail's hash chain and name every event changed, removed or moved;
    /// prints the head to record and check later.
    Verify {
        /// A head printed by an earlier verify (`SEQ:CHAIN`): it must still be in the trail
        /// (catches a trail cut short, or replaced by an older copy).
        #[arg(long, value_name = "SEQ:CHAIN")]
        head: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum SessionRecordCommand {
    List(JsonFlag),
    Show { id: String },
    Terminate { id: String, reason: String },
    Reindex,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List sessions (on a control node: its session nodes' too, with the node).
    List(JsonFlag),
    /// End a running session; the user reads the reason. A session on a session node ends at
    /// the node's next call to the control node (within 10 s).
    Terminate {
        id: String,
        /// Shown to the user and kept in the audit trail.
        #[arg(long)]
        reason: String,
    },
    /// Show a session: its channels, commands and file transfers.
    Show {
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Follow a running SSH session's terminal here as it happens, until it ends (what it
    /// showed so far first). Typed input is not shown, only what the terminal showed.
    Watch {
        id: String,
        /// Which channel (default: the first terminal).
        #[arg(long)]
        channel: Option<u32>,
    },
    /// Replay a terminal channel in this terminal with its real timing.
    Play {
        id: String,
        /// Which channel (default: the first recorded one).
        #[arg(long)]
        channel: Option<u32>,
        /// Speed factor (2 plays twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Cap pauses at this many seconds.
        #[arg(long)]
        max_idle: Option<f64>,
        /// Start at this many seconds into the channel's recording (what was shown before is
        /// written at once): a search hit's `+SECONDS`.
        #[arg(long, default_value_t = 0.0)]
        from: f64,
    },
    /// Search what sessions showed and had typed (docs/search.md has the query syntax):
    /// `user:alice "rm -rf" after:7d`. Each hit is a moment: `session play ID --channel C
    /// --from SECONDS` plays it.
    Search {
        /// The query (a leading `-word` excludes it; no `--` needed).
        #[arg(allow_hyphen_values = true)]
        query: String,
        /// At most this many hits, best first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Build the search index anew from every recording (after a restore, or to check it).
    Reindex,
    /// SSH: write a channel as an asciicast v2 file that `asciinema play` plays. RDP and VNC:
    /// render the session to a video (`.webm`, `.mp4`) or one frame (`.png`) with ffmpeg.
    Export {
        id: String,
        #[arg(long)]
        channel: Option<u32>,
        /// Output file; for RDP and VNC its extension picks the format.
        #[arg(short, long)]
        output: PathBuf,
        /// RDP and VNC: frames per second of the video.
        #[arg(long, default_value_t = 5)]
        fps: u32,
        /// RDP and VNC, `.png`: the moment to show, in seconds since the session started
        /// (default: the end).
        #[arg(long)]
        at: Option<f64>,
        /// RDP and VNC: write at most this many seconds of an unchanged screen (default 10; 0
        /// keeps real timing throughout).
        #[arg(long)]
        max_idle: Option<f64>,
    },
}

/// What a decision is asked about, for `explain` and `who-can`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct DecisionArgs {
    /// The Cedar action: ssh_session, rdp_session, telnet_session, vnc_session, ssh_shell,
    /// ssh_exec, ssh_subsystem, ssh_direct_tcpip, ssh_forwarded_tcpip, ssh_x11, ssh_agent,
    /// release_password, release_key, request_access.
    #[arg(long, default_value = "ssh_session")]
    pub action: String,
    /// Local time in the gateway's zone (`2026-11-24T10:00`) or an RFC 3339 instant; default now.
    #[arg(long)]
    pub at: Option<String>,
    /// The client's address.
    #[arg(long, default_value = "127.0.0.1:50000")]
    pub client: SocketAddr,
    /// A `key=value` login pair (repeatable).
    #[arg(long = "pair")]
    pub pairs: Vec<String>,
    /// How the user authenticated (repeatable; default password).
    #[arg(long = "authenticated-with")]
    pub authenticated_with: Vec<String>,
    /// A ticket plugin verified the ticket.
    #[arg(long)]
    pub ticket_verified: bool,
    /// For ssh_exec: the command line.
    #[arg(long)]
    pub command: Option<String>,
    /// For ssh_subsystem: its name.
    #[arg(long)]
    pub subsystem: Option<String>,
    /// For port forwarding: `HOST:PORT`.
    #[arg(long)]
    pub forward: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy files against the schema (default: the data directory's policies, with the
    /// store's grants linked). Prints file:line:column for every problem.
    Validate {
        /// A policy directory other than the configured one.
        dir: Option<PathBuf>,
    },
    /// Run scenario files (a file, or every *.toml under a directory).
    Test {
        path: PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Decide one request against the policies in force and say why.
    Explain {
        /// A scenario file: explain its request named by `--request` instead of using the store.
        #[arg(long, requires = "request")]
        scenario: Option<PathBuf>,
        /// The scenario request's name.
        #[arg(long)]
        request: Option<String>,
        /// The gateway user (with the store).
        #[arg(long, required_unless_present = "scenario")]
        user: Option<String>,
        /// `ACCOUNT@ASSET` (with the store).
        #[arg(long, required_unless_present = "scenario")]
        target: Option<String>,
        #[command(flatten)]
        decision: DecisionArgs,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Which users may do an action on `ACCOUNT@ASSET` (each user in the store is decided).
    WhoCan {
        target: String,
        #[command(flatten)]
        decision: DecisionArgs,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Reload the running server's policies now (also done on file change and SIGHUP).
    Reload,
    /// Print the Cedar schema policies are validated against.
    Schema,
}

/// The policy commands that run against the store, here or in the running server.
#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum PolicyAdminCommand {
    Validate {
        dir: Option<PathBuf>,
    },
    Explain {
        user: String,
        target: String,
        #[command(flatten)]
        decision: DecisionArgs,
        #[arg(long)]
        json: bool,
    },
    WhoCan {
        target: String,
        #[command(flatten)]
        decision: DecisionArgs,
        #[arg(long)]
        json: bool,
    },
    Reload,
}

/// Where transparent mode's connections to targets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransparentSource {
    /// The gateway's own address.
    Gateway,
    /// The client's address (`IP_TRANSPARENT`).
    Client,
}
