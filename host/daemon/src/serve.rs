//! `gatehouse serve`: load the data directory and run the SSH and RDP gateways, the HTTPS API
//! and the admin socket; on SIGTERM, drain the sessions while the API and the socket still serve.

use crate::admin::AdminContext;
use crate::datadir::DataDir;
use anyhow::{Context, Result};
use gatehouse_audit::Auditor;
use gatehouse_auth::Authenticator;
use gatehouse_policy::PolicyEngine;
use gatehouse_ssh::{Authority, GatewayConfig, LocalAuthority, Services};
use gatehouse_store::Store;
use gatehouse_vault::{KeySource, Vault};
use std::net::SocketAddr;
use std::sync::Arc;

/// Which services a process runs (docs/cluster.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything in one process (the default, and the demo).
    #[default]
    All,
    /// The vault, policies, requests, audit and API, and the cluster port session nodes join.
    Control,
    /// A session node joined to a control node (`gatehouse join`).
    Session,
}

/// The cluster side of `serve`.
#[derive(Debug, Clone, Default)]
pub struct ClusterListen {
    pub role: Role,
    /// The cluster port (the control role's default is 0.0.0.0:8649; `all` opens one only when
    /// asked).
    pub listen: Option<SocketAddr>,
    /// Names the control node's cluster certificate carries besides the defaults (this host's
    /// name, `localhost`, the loopback addresses and the listen address).
    pub names: Vec<String>,
}

/// Transparent mode (docs/transparent.md): listeners for connections a router redirected here
/// (iptables `REDIRECT`, or `TPROXY`), whose target is the asset at the original destination.
#[derive(Debug, Clone, Default)]
pub struct TransparentListen {
    pub ssh: Option<SocketAddr>,
    pub rdp: Option<SocketAddr>,
    pub telnet: Option<SocketAddr>,
    pub vnc: Option<SocketAddr>,
    /// Targets are dialed from the client's own address (`IP_TRANSPARENT`, needs
    /// `CAP_NET_ADMIN` or `CAP_NET_RAW`, and a router that sends the targets' replies back to
    /// the gateway).
    pub source_from_client: bool,
}

impl TransparentListen {
    fn any(&self) -> bool {
        self.ssh.is_some() || self.rdp.is_some() || self.telnet.is_some() || self.vnc.is_some()
    }

    /// Refuses settings that would only fail later, session by session.
    fn check(&self) -> Result<()> {
        if !self.source_from_client {
            return Ok(());
        }
        if !self.any() {
            anyhow::bail!(
                "--transparent-source client applies to transparent listeners, and none is given (--ssh-transparent-listen, --rdp-transparent-listen, --vnc-transparent-listen, --telnet-transparent-listen)"
            );
        }
        gatehouse_net::check_foreign_source().map_err(|e| {
            anyhow::anyhow!(
                "--transparent-source client dials from the users' addresses (IP_TRANSPARENT), which needs CAP_NET_ADMIN or CAP_NET_RAW: {e}"
            )
        })
    }

    fn mode(&self) -> crate::listener::Transparent {
        crate::listener::Transparent {
            source_from_client: self.source_from_client,
        }
    }

    /// Binds `protocol`'s transparent listener, when there is one.
    fn bind(
        &self,
        address: Option<SocketAddr>,
        protocol: &str,
    ) -> Result<Option<(tokio::net::TcpListener, crate::listener::Transparent)>> {
        let Some(address) = address else {
            return Ok(None);
        };
        let (listener, tproxy) = gatehouse_net::listen_transparent(address)
            .with_context(|| format!("listening on {address} for transparent {protocol}"))?;
        tracing::info!(
            %address,
            tproxy,
            source_from_client = self.source_from_client,
            "transparent {protocol} listening (the target is the original destination)"
        );
        Ok(Some((listener, self.mode())))
    }
}

/// Where `serve` listens.
#[derive(Debug, Clone)]
pub struct Listen {
    pub ssh: SocketAddr,
    /// Transparent mode's listeners (connections a router redirected here).
    pub transparent: TransparentListen,
    /// Overrides settings.json `api.listen`.
    pub api: Option<SocketAddr>,
    /// Overrides settings.json `rdp.listen` (and must then bind).
    pub rdp: Option<SocketAddr>,
    /// Turns Telnet on at this address (overrides settings.json `telnet`; must bind).
    pub telnet: Option<SocketAddr>,
    /// Turns VNC on at this address (overrides settings.json `vnc`; must bind).
    pub vnc: Option<SocketAddr>,
    /// How long a SIGTERM lets SSH sessions finish.
    pub shutdown_grace: std::time::Duration,
    pub cluster: ClusterListen,
}

/// How often ended access windows and approval deadlines are swept.
const EXPIRY_SWEEP: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the gateway until interrupted. `ready` is told the bound SSH address.
pub fn run(
    dir: &DataDir,
    overrides: Option<KeySource>,
    listen: Listen,
    ready: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
) -> Result<()> {
    if listen.cluster.role == Role::Session {
        return run_session_node(dir, &listen);
    }
    dir.require_initialised()?;
    for (path, mode) in dir.make_private()? {
        tracing::warn!(
            path = %path.display(),
            was = %format!("{mode:04o}"),
            "the data directory must be private to the service user: removed group and other access"
        );
    }
    let settings = dir.load_settings()?;
    let ssh_listen = listen.ssh;
    let vault = Arc::new(Vault::new(dir.load_master_key(overrides)?));
    let vault_for_seal = vault.clone();
    // Encrypted recordings are readable here (API, search, player); with `recordings.encrypt`
    // on, the key that encrypts new ones is made now, so a broken key stops the start rather
    // than leaving recordings in the clear.
    crate::recording_key::install(dir, &vault)?;
    let recording_key = if settings.recordings.as_ref().is_some_and(|r| r.encrypt) {
        let key = crate::recording_key::load_or_create(dir, &vault)?;
        tracing::info!(key = %key.id(), "recordings are encrypted at rest when sealed");
        gatehouse_recording::crypt::install(key.clone());
        Some(key)
    } else {
        None
    };
    let host_keys = dir.load_host_keys()?;
    let location = dir.store_location()?;
    let store = Arc::new(
        Store::open_location(&location)
            .with_context(|| format!("opening the store at `{location}`"))?,
    );
    crate::store_cmd::bind_master_key(&store, vault.key_id())?;
    gatehouse_core::gateway::set_gateway_id(dir.gateway_id()?);
    tracing::info!(store = %location, engine = store.engine(), "store open");
    let policy_settings = dir.policy_settings()?;
    if dir.ensure_policies(&policy_settings.policy_dir)? {
        tracing::warn!(dir = %policy_settings.policy_dir.display(), "no policy directory: created one with the base policy");
    }
    let engine = Arc::new(
        PolicyEngine::open(policy_settings.clone(), store.clone())
            .context("loading the policies (nothing is served with invalid policies)")?,
    );
    let report = engine.bundle();
    tracing::info!(
        dir = %policy_settings.policy_dir.display(),
        policies = report.policy_count(),
        "policies loaded"
    );
    // Sessions a crash or a kill left open are closed as interrupted before anything is served.
    for session in gatehouse_audit::close_interrupted_sessions(
        &Auditor::new(store.clone()),
        &dir.recordings(),
    )? {
        tracing::warn!(
            session = %session.id,
            user = %session.user,
            "a session left open by the last stop was closed as interrupted"
        );
    }
    let plugins = start_plugins(dir, store.clone(), vault.clone())?;
    // `gatehouse plugin enable|disable|...` reloads it through the admin socket.
    let plugins_for_socket = plugins.clone();
    // The admin pages list and switch them (`/api/v1/plugins`).
    let plugins_for_api = plugins.clone();
    // Store calls are synchronous. On redb they take microseconds; on PostgreSQL each waits a
    // network round trip, holding its worker thread: more workers keep the other requests
    // moving meanwhile.
    let runtime = if store.engine() == "postgres" {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads((cores * 4).max(8))
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Runtime::new()?
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(ssh_listen)
            .await
            .with_context(|| format!("listening on {ssh_listen}"))?;
        let bound = listener.local_addr()?;
        listen.transparent.check()?;
        let transparent_listener = listen.transparent.bind(listen.transparent.ssh, "SSH")?;
        let rdp_listener = crate::rdp_glue::bind(&settings.rdp, listen.rdp).await?;
        let telnet_listener = crate::telnet_glue::bind(&settings.telnet, listen.telnet).await?;
        let telnet_transparent =
            listen.transparent.bind(listen.transparent.telnet, "Telnet")?;
        let rdp_transparent = listen.transparent.bind(listen.transparent.rdp, "RDP")?;
        let vnc_transparent = listen.transparent.bind(listen.transparent.vnc, "VNC")?;
        let vnc_listener = crate::vnc_glue::bind(&settings.vnc, listen.vnc).await?;
        // The audit trail to SIEMs: each stream sends from where its receiver stopped.
        let mut names = std::collections::HashSet::new();
        for stream in &settings.audit_streams {
            if stream.name.is_empty() || !names.insert(stream.name.as_str()) {
                anyhow::bail!(
                    "settings.json audit_streams: each stream needs a name of its own (`{}`)",
                    stream.name
                );
            }
            if stream.facility > 23 {
                anyhow::bail!(
                    "settings.json audit_streams `{}`: facility {} is not a syslog facility (0-23)",
                    stream.name,
                    stream.facility
                );
            }
            if let Err(e) = gatehouse_audit::stream::tls_connector(stream) {
                anyhow::bail!("settings.json audit_streams `{}`: {e}", stream.name);
            }
            if let gatehouse_audit::stream::Receiver::Syslog(address) = &stream.receiver
                && address
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
            {
                anyhow::bail!(
                    "settings.json audit_streams `{}`: syslog `{address}` is not HOST:PORT",
                    stream.name,
                );
            }
        }
        for stream in &settings.audit_streams {
            tracing::info!(stream = %stream.name, receiver = %stream.receiver, "streaming the audit trail");
            // One control node sends (from the position kept in the store); the others wait.
            let (store_for_stream, stream) = (store.clone(), stream.clone());
            tokio::spawn(crate::leader::while_leading(
                store.clone(),
                "audit-streams",
                move || {
                    gatehouse_audit::stream::stream_loop(
                        store_for_stream.clone(),
                        stream.clone(),
                        crate::node_cmd::hostname(),
                    )
                },
            ));
        }
        let mut request_settings = settings.requests.clone();
        // Access strings and `.rdp` files name the address users reach; a wildcard listen
        // names this host.
        let reachable = |address: SocketAddr| {
            let host = if address.ip().is_unspecified() {
                std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
            } else {
                address.ip().to_string()
            };
            format!("{host}:{}", address.port())
        };
        if request_settings.ssh_endpoint.is_none() {
            request_settings.ssh_endpoint = Some(reachable(bound));
        }
        if request_settings.rdp_endpoint.is_none()
            && let Some(address) = rdp_listener.as_ref().and_then(|l| l.local_addr().ok())
        {
            request_settings.rdp_endpoint = Some(reachable(address));
        }
        let mut authenticator = Authenticator::new(store.clone())?;
        // Directory users (LDAP, Active Directory): a bind checks the password; the NT hash of
        // a password that bound is kept, sealed, so the user can use RDP too.
        if let Some(directory_settings) = &settings.directory {
            let directory = Arc::new(
                gatehouse_directory::Directory::new(directory_settings)
                    .context("settings.json `directory`")?,
            );
            let vault_for_rdp = vault.clone();
            authenticator =
                authenticator.with_directory(gatehouse_auth::directory::DirectoryLogins {
                    directory: directory.clone(),
                    runtime: tokio::runtime::Handle::current(),
                    rdp_secret: Some(Box::new(move |user: &str, password: &str| {
                        let hash = gatehouse_rdp::NtHash::from_password(password);
                        vault_for_rdp
                            .seal_user_secret(
                                user,
                                gatehouse_vault::UserSecretKind::RdpNtHash,
                                hash.expose(),
                            )
                            .ok()
                    })),
                });
            tracing::info!(url = directory.url(), "directory users log in");
            let store_for_sync = store.clone();
            tokio::spawn(crate::leader::while_leading(
                store.clone(),
                "directory-sync",
                move || crate::directory_cmd::sync_loop(store_for_sync.clone(), directory.clone()),
            ));
        }
        let authenticator = Arc::new(authenticator);
        let notifier = gatehouse_notify::Notifier::from_settings(
            settings.mail.as_ref(),
            Arc::new(crate::notify_glue::AuditDeliveries {
                auditor: Auditor::new(store.clone()),
            }),
        )
        .context("mail settings (settings.json `mail`)")?;
        if notifier.is_enabled() {
            tracing::info!("email notifications on");
        }
        // One writer thread for the audit trail and the session records: events queue behind
        // each other in order and commit in groups, and no async worker waits for the disk.
        let group_auditor = Auditor::with_group_commit(store.clone())?;
        let workflow = Arc::new(
            gatehouse_workflow::Workflow::new(
                store.clone(),
                engine.clone(),
                vault.clone(),
                group_auditor.clone(),
                request_settings,
            )
            .with_plugins(plugins.clone())
            .with_notifier(Arc::new(crate::notify_glue::MailNotify {
                notifier,
                auditor: Auditor::new(store.clone()),
            })),
        );
        let aa_plugins = plugins.clone();
        let sessions_for_nodes = Arc::new(gatehouse_cluster::SessionAuthority::new(
            store.clone(),
            Arc::new(Auditor::new(store.clone())),
            authenticator.clone(),
            engine.clone(),
            vault.clone(),
            Some(workflow.clone()),
            aa_plugins,
        ));
        let live = gatehouse_ssh::LiveSessions::default();
        // The Prometheus endpoint, when settings.json asks for one.
        if let Some(metrics) = &settings.metrics {
            let listener = tokio::net::TcpListener::bind(metrics.listen)
                .await
                .with_context(|| format!("listening on {} for metrics", metrics.listen))?;
            let state = Arc::new(crate::metrics::Metrics::new(
                store.clone(),
                live.clone(),
                settings.audit_streams.iter().map(|s| s.name.clone()).collect(),
                plugins.clone(),
            ));
            tracing::info!(address = %metrics.listen, "metrics at /metrics");
            tokio::spawn(state.clone().tail());
            tokio::spawn(crate::metrics::serve(listener, state));
        }
        let services = Arc::new(Services {
            store: store.clone(),
            live: live.clone(),
            auditor: group_auditor,
            authority: Authority::Local(LocalAuthority {
                vault: vault.clone(),
                authenticator: authenticator.clone(),
                policy: engine.clone(),
                plugins,
                workflow: Some(workflow.clone()),
            }),
        });
        // Session search: a new index fills from the recordings in the background.
        let search =
            crate::search::open_for_server(&dir.search_index(), &store, &dir.recordings());
        // The screens of running RDP and VNC sessions, for the API's live view.
        let screens = crate::live_view::LiveScreens::default();
        let (api, draining) = start_api(
            dir,
            &settings.api,
            listen.api,
            ApiParts {
                vault: vault.clone(),
                workflow: workflow.clone(),
                store: store.clone(),
                authenticator,
                search: search.clone(),
                live: live.clone(),
                screens: screens.clone(),
                plugins: plugins_for_api,
            },
        )
        .await?;
        let shutdown = gatehouse_ssh::Shutdown::new();
        let rdp = start_rdp(
            dir,
            rdp_listener,
            rdp_transparent,
            settings.rdp.decodable_recordings,
            &services,
            screens.clone(),
            shutdown.clone(),
        )?;
        let telnet = crate::telnet_glue::start(
            dir,
            telnet_listener,
            telnet_transparent,
            services.clone(),
            shutdown.clone(),
        )?;
        let vnc = crate::vnc_glue::start(
            dir,
            vnc_listener,
            vnc_transparent,
            services.clone(),
            screens,
            shutdown.clone(),
        )?;
        let config = Arc::new(GatewayConfig::new(host_keys, dir.recordings()));
        tracing::info!(address = %bound, "SSH gateway listening");
        // The credential lifecycle: reconcile interrupted changes, then run what is due.
        // One control node runs it when several share the store.
        let (store_for_lifecycle, vault_for_lifecycle) = (store.clone(), vault.clone());
        let scheduler = crate::leader::while_leading(store.clone(), "credential-lifecycle", move || {
            let lifecycle = gatehouse_lifecycle::Lifecycle::new(
                store_for_lifecycle.clone(),
                vault_for_lifecycle.clone(),
            );
            gatehouse_lifecycle::scheduler::run(lifecycle, Default::default())
        });
        // Request changes made by the other control nodes reach this node's waiters.
        let follow = crate::leader::follow_requests(store.clone(), workflow.clone());
        let engine_for_admin = engine.clone();
        let admin = Arc::new(AdminContext {
            store: store.clone(),
            vault: Box::new(move || Ok(vault.clone())),
            policy: Box::new(move || Ok(engine_for_admin.clone())),
            policy_settings: policy_settings.clone(),
            in_server: true,
            live: Some(live),
            cluster_port: cluster_address(&listen.cluster),
            recordings: Some(dir.recordings()),
            search: search.clone(),
            search_dir: Some(dir.search_index()),
            directory: dir.load_settings()?.directory,
        });
        let socket_path = dir.admin_socket();
        let cluster = start_cluster_port(
            &listen.cluster,
            &store,
            &admin,
            sessions_for_nodes,
            dir.recordings(),
        )
        .await?;
        if let Some(ready) = ready {
            ready(bound);
        }
        // systemd (Type=notify) learns that the gateway is up; without NOTIFY_SOCKET this does
        // nothing.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let ssh = serve_ssh(listener, transparent_listener, config, services, &shutdown);
        // What serves operators and keeps the books: it goes on during the drain (sessions can
        // be listed and revoked, requests expire) and stops with the last session.
        let background = async {
            tokio::select! {
                result = api => result.context("HTTPS API"),
                _ = sweep_requests(workflow) => Ok(()),
                result = crate::socket::serve(&socket_path, admin.clone(), plugins_for_socket) => result,
                _ = watch_policies(admin) => Ok(()),
                _ = scheduler => Ok(()),
                _ = follow => Ok(()),
                // Finished recordings: signed manifests linked into the audit trail.
                () = crate::seal::seal_loop(store.clone(), vault_for_seal, dir.recordings(), search, recording_key) => Ok(()),
                result = cluster => result.context("cluster port"),
            }
        };
        tokio::pin!(ssh, rdp, telnet, vnc, background);
        tokio::select! {
            result = &mut ssh => result.context("SSH gateway")?,
            result = &mut rdp => result.context("RDP gateway")?,
            result = &mut telnet => result.context("Telnet gateway")?,
            result = &mut vnc => result.context("VNC gateway")?,
            result = &mut background => result?,
            _ = shutdown_signal() => {
                let grace = listen.shutdown_grace;
                tracing::info!(
                    grace_seconds = grace.as_secs(),
                    "shutting down: no new SSH, RDP, Telnet or VNC connections; running sessions are told and closed when the grace period ends"
                );
                let _ = sd_notify::notify(false, &[
                    sd_notify::NotifyState::Stopping,
                    sd_notify::NotifyState::Status("draining sessions"),
                ]);
                shutdown.begin(grace);
                draining.store(true, std::sync::atomic::Ordering::Relaxed);
                let sessions = async {
                    let (ssh, rdp, telnet, vnc) =
                        tokio::join!(&mut ssh, &mut rdp, &mut telnet, &mut vnc);
                    ssh.context("SSH gateway")?;
                    rdp.context("RDP gateway")?;
                    telnet.context("Telnet gateway")?;
                    vnc.context("VNC gateway")
                };
                tokio::select! {
                    result = sessions => result?,
                    result = &mut background => result?,
                    _ = shutdown_signal() => tracing::warn!("second stop signal: stopping now"),
                }
                tracing::info!("stopped");
            }
        }
        let _ = std::fs::remove_file(&socket_path);
        Ok(())
    })
}

/// The SSH gateway: its listener, and transparent mode's when there is one (the same sessions,
/// the target taken from the connection's original destination).
async fn serve_ssh(
    listener: tokio::net::TcpListener,
    transparent: Option<(tokio::net::TcpListener, crate::listener::Transparent)>,
    config: Arc<GatewayConfig>,
    services: Arc<Services>,
    shutdown: &gatehouse_ssh::Shutdown,
) -> std::io::Result<()> {
    let Some((transparent, mode)) = transparent else {
        return gatehouse_ssh::serve(listener, config, services, shutdown.clone()).await;
    };
    let transparent_config = Arc::new(GatewayConfig {
        transparent: true,
        source_from_client: mode.source_from_client,
        ..(*config).clone()
    });
    let (normal, redirected) = tokio::join!(
        gatehouse_ssh::serve(listener, config, services.clone(), shutdown.clone()),
        gatehouse_ssh::serve(transparent, transparent_config, services, shutdown.clone()),
    );
    normal.and(redirected)
}

type ClusterFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), gatehouse_cluster::ClusterError>> + Send>,
>;

/// Binds the cluster port when this process serves one; the future serves it (or never
/// resolves).
/// Where this process's cluster port listens, if it has one: `--cluster-listen`, else the
/// control role's default.
fn cluster_address(cluster: &ClusterListen) -> Option<SocketAddr> {
    match (cluster.role, cluster.listen) {
        (_, Some(address)) => Some(address),
        (Role::Control, None) => Some(SocketAddr::from((
            [0, 0, 0, 0],
            gatehouse_cluster::DEFAULT_PORT,
        ))),
        _ => None,
    }
}

async fn start_cluster_port(
    cluster: &ClusterListen,
    store: &Arc<Store>,
    admin: &Arc<AdminContext>,
    sessions: Arc<gatehouse_cluster::SessionAuthority>,
    recordings: std::path::PathBuf,
) -> Result<ClusterFuture> {
    let Some(listen) = cluster_address(cluster) else {
        return Ok(Box::pin(std::future::pending()));
    };
    let vault = (admin.vault)()?;
    let ca = crate::node_cmd::load_or_create_ca(store, &vault)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} (the cluster port)"))?;
    let mut names = cluster.names.clone();
    let host = crate::node_cmd::hostname();
    for name in [host, "localhost".into(), "127.0.0.1".into(), "::1".into()] {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if !listen.ip().is_unspecified() && !names.contains(&listen.ip().to_string()) {
        names.push(listen.ip().to_string());
    }
    // Sessions on nodes end when the access request they run under does.
    tokio::spawn(sessions.clone().end_sessions_when_requests_end());
    let control = Arc::new(
        gatehouse_cluster::Control::new(
            store.clone(),
            Arc::new(Auditor::new(store.clone())),
            ca,
            env!("CARGO_PKG_VERSION"),
        )
        .with_sessions(sessions)
        .with_recordings(recordings),
    );
    Ok(Box::pin(async move {
        control
            .serve(listener, &names, std::future::pending::<()>())
            .await
    }))
}

/// `serve --role session`: a node joined with `gatehouse join`. It serves SSH with every login,
/// session and channel decided by its control node, records the sessions in its own data
/// directory (a local store with no user, policy or secret in it, and the recordings), and
/// reports to the control node (status, listeners, version) until stopped.
fn run_session_node(dir: &DataDir, listen: &Listen) -> Result<()> {
    let cluster_dir = gatehouse_cluster::node::cluster_dir(dir.root());
    let identity = gatehouse_cluster::NodeIdentity::load(&cluster_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "`{}` has not joined a cluster: run `gatehouse --data-dir {} join https://CONTROL:8649 \
             --token ... --thumbprint ... --node-id NAME` first",
            dir.root().display(),
            dir.root().display()
        )
    })?;
    for (path, mode) in dir.make_private()? {
        tracing::warn!(
            path = %path.display(),
            was = %format!("{mode:04o}"),
            "the data directory must be private to the service user: removed group and other access"
        );
    }
    let client = identity.client()?;
    // The node's own SSH host key, made at its first start.
    let host_key_path = dir.host_key();
    if !host_key_path.exists() {
        if let Some(parent) = host_key_path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating `{}`", parent.display()))?;
        }
        let key = crate::datadir::generate_host_key()?;
        let text = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .context("encoding the host key")?;
        crate::datadir::write_private_file(&host_key_path, text.as_bytes())?;
        tracing::info!(path = %host_key_path.display(), "made this node's SSH host key");
    }
    let host_keys = dir.load_host_keys()?;
    // The node's own TLS identity for RDP clients, made at its first start.
    if crate::datadir::ensure_tls(dir)? {
        tracing::info!(path = %dir.tls_dir().display(), "made this node's TLS certificate for RDP clients");
    }
    // A session node's own store (its spool of audit events) is always the local redb file.
    let store = Arc::new(Store::open(&dir.store())?);
    for session in gatehouse_audit::close_interrupted_sessions(
        &Auditor::new(store.clone()),
        &dir.recordings(),
    )? {
        tracing::warn!(session = %session.id, user = %session.user, "a session left open by the last stop was closed as interrupted");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let ssh_listen = listen.ssh;
    let grace = listen.shutdown_grace;
    let rdp_explicit = listen.rdp;
    if listen.telnet.is_some() || listen.vnc.is_some() || listen.transparent.any() {
        anyhow::bail!(
            "Telnet, VNC and transparent mode are served by processes that hold the vault (role all or control)"
        );
    }
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(ssh_listen)
            .await
            .with_context(|| format!("listening on {ssh_listen}"))?;
        let bound = listener.local_addr()?;
        let rdp_listener =
            crate::rdp_glue::bind(&crate::datadir::RdpSettings::default(), rdp_explicit).await?;
        let rdp_port = match &rdp_listener {
            Some(l) => Some(l.local_addr()?.port()),
            None => None,
        };
        let live = gatehouse_ssh::LiveSessions::default();
        let auditor = Auditor::with_group_commit(store.clone())?;
        let services = Arc::new(Services {
            store: store.clone(),
            live: live.clone(),
            auditor: auditor.clone(),
            authority: Authority::Remote(client.clone()),
        });
        let config = Arc::new(GatewayConfig::new(host_keys, dir.recordings()));
        let shutdown = gatehouse_ssh::Shutdown::new();
        tracing::info!(
            node = %identity.node_id,
            control = %identity.control,
            certificate = %identity.thumbprint(),
            ssh = %bound,
            rdp = %rdp_port.map_or_else(|| "off".to_string(), |p| p.to_string()),
            "session node started"
        );
        let beat = gatehouse_cluster::wire::Heartbeat {
            ssh_port: Some(bound.port()),
            rdp_port,
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: crate::node_cmd::hostname(),
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let ssh = gatehouse_ssh::serve(listener, config, services, shutdown.clone());
        let rdp: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> =
            match rdp_listener {
                Some(rdp_listener) => {
                    let rdp = Arc::new(crate::rdp_glue::RdpServices {
                        store: store.clone(),
                        authority: crate::rdp_glue::RdpAuthority::Remote(client.clone()),
                        live: live.clone(),
                        screens: Default::default(),
                        auditor,
                        recordings: dir.recordings(),
                        steer_for_recording: true,
                        tls: crate::rdp_glue::load_tls(dir)?,
                        handshake_timeout: std::time::Duration::from_secs(30),
                        connect_timeout: gatehouse_ssh::target::DEFAULT_CONNECT_TIMEOUT,
                    });
                    tracing::info!(address = %rdp_listener.local_addr()?, "RDP gateway listening");
                    Box::pin(crate::rdp_glue::serve(rdp_listener, rdp, shutdown.clone(), None))
                }
                None => {
                    let shutdown = shutdown.clone();
                    Box::pin(async move {
                        shutdown.draining().await;
                        Ok(())
                    })
                }
            };
        let gateways = async move {
            let (ssh, rdp) = tokio::join!(ssh, rdp);
            ssh.context("SSH gateway")?;
            rdp.context("RDP gateway")?;
            anyhow::Ok(())
        };
        // What the node records reaches the control node from its store and recordings
        // directory, at least once, whenever the control node can be reached.
        let shipping = tokio::spawn(gatehouse_cluster::shipping::ship_loop(
            client.clone(),
            store.clone(),
            dir.recordings(),
            live.closed_signal(),
        ));
        let last_client = client.clone();
        let heartbeat =
            gatehouse_cluster::node::heartbeat_loop(
                client,
                beat,
                move |ended: gatehouse_cluster::wire::Termination| {
                    if !live.terminate(&ended.session, &ended.by, &ended.reason) {
                        tracing::info!(session = %ended.session, "the control node ended a session that no longer runs here");
                    }
                },
                std::future::pending::<()>(),
            );
        tokio::pin!(gateways, heartbeat);
        tokio::select! {
            result = &mut gateways => result?,
            () = &mut heartbeat => {}
            _ = shutdown_signal() => {
                tracing::info!(grace_seconds = grace.as_secs(), "shutting down: no new connections; running sessions are told and closed when the grace period ends");
                shutdown.begin(grace);
                tokio::select! {
                    result = &mut gateways => result?,
                    _ = shutdown_signal() => tracing::warn!("second stop signal: stopping now"),
                }
            }
        }
        // One last delivery of what the drain recorded, if the control node is there.
        shipping.abort();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            gatehouse_cluster::shipping::ship_once(&last_client, &store, &dir.recordings()),
        )
        .await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The RDP listener's future (one that never resolves when RDP is off).
fn start_rdp(
    dir: &DataDir,
    listener: Option<tokio::net::TcpListener>,
    transparent: Option<(tokio::net::TcpListener, crate::listener::Transparent)>,
    steer_for_recording: bool,
    services: &Services,
    screens: crate::live_view::LiveScreens,
    shutdown: gatehouse_ssh::Shutdown,
) -> Result<std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>> {
    if listener.is_none() && transparent.is_none() {
        // No RDP: nothing to drain.
        return Ok(Box::pin(async move {
            shutdown.draining().await;
            Ok(())
        }));
    }
    let Some(local) = services.local() else {
        anyhow::bail!("RDP is served by processes that hold the vault (role all or control)");
    };
    let rdp = Arc::new(crate::rdp_glue::RdpServices {
        store: services.store.clone(),
        authority: crate::rdp_glue::RdpAuthority::Local(crate::rdp_glue::LocalRdp {
            vault: local.vault.clone(),
            authenticator: local.authenticator.clone(),
            policy: local.policy.clone(),
            plugins: local.plugins.clone(),
            workflow: local.workflow.clone(),
        }),
        live: services.live.clone(),
        screens,
        auditor: services.auditor.clone(),
        recordings: dir.recordings(),
        steer_for_recording,
        tls: crate::rdp_glue::load_tls(dir)?,
        handshake_timeout: std::time::Duration::from_secs(30),
        connect_timeout: gatehouse_ssh::target::DEFAULT_CONNECT_TIMEOUT,
    });
    if let Some(listener) = &listener {
        tracing::info!(address = %listener.local_addr()?, "RDP gateway listening");
    }
    let plain = listener.map(|l| crate::rdp_glue::serve(l, rdp.clone(), shutdown.clone(), None));
    let redirected =
        transparent.map(|(l, t)| crate::rdp_glue::serve(l, rdp, shutdown.clone(), Some(t)));
    Ok(Box::pin(crate::listener::both(plain, redirected)))
}

type ApiFuture = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// What the HTTPS API serves from.
struct ApiParts {
    vault: Arc<Vault>,
    workflow: Arc<gatehouse_workflow::Workflow>,
    store: Arc<Store>,
    authenticator: Arc<Authenticator>,
    search: Option<Arc<gatehouse_search::SearchIndex>>,
    /// The sessions running here, for `POST /api/v1/sessions/{id}/terminate` and the live view.
    live: gatehouse_ssh::LiveSessions,
    /// The screens of running RDP sessions, for the live view.
    screens: crate::live_view::LiveScreens,
    /// This gateway's plugins, for the admin pages.
    plugins: Option<gatehouse_plugin_host::PluginHost>,
}

/// Binds the HTTPS API; the returned future serves it (or never resolves when it is off), and
/// the flag, once set, makes its health answer `draining`.
async fn start_api(
    dir: &DataDir,
    settings: &gatehouse_api::ApiSettings,
    listen: Option<SocketAddr>,
    parts: ApiParts,
) -> Result<(ApiFuture, Arc<std::sync::atomic::AtomicBool>)> {
    let ApiParts {
        vault,
        workflow,
        store,
        authenticator,
        search,
        live,
        screens,
        plugins,
    } = parts;
    if !settings.enabled && listen.is_none() {
        tracing::info!("HTTPS API disabled (settings.json api.enabled)");
        return Ok((Box::pin(std::future::pending()), Arc::default()));
    }
    let address = listen.unwrap_or(settings.listen);
    let cert = std::fs::read(dir.tls_dir().join("cert.pem")).context("reading tls/cert.pem")?;
    let key = std::fs::read(dir.tls_dir().join("key.pem")).context("reading tls/key.pem")?;
    let tls = gatehouse_api::tls_config(&cert, &key)?;
    let tokens = gatehouse_api::TokenKeys::new(
        vault.derive_key("api-token")?,
        std::time::Duration::from_secs(settings.token_seconds),
    );
    let state = gatehouse_api::ApiState::new(
        workflow.clone(),
        store.clone(),
        authenticator,
        Auditor::new(store.clone()),
        tokens,
        gatehouse_api::Recordings {
            dir: dir.recordings(),
            renderer: crate::rdp_glue::video_renderer(dir),
            search,
        },
    )
    .with_portal_idle(std::time::Duration::from_secs(
        settings.portal_idle_seconds.max(1),
    ))
    .with_session_control(Arc::new(crate::admin::ApiSessionControl {
        store: store.clone(),
        live: live.clone(),
    }))
    .with_live_view(Arc::new(crate::live_view::ApiLiveView {
        live,
        screens,
        auditor: Auditor::new(store.clone()),
        store: store.clone(),
    }));
    let state = match plugins {
        Some(host) => state
            .with_sign_in_plugins(Arc::new(crate::plugin_glue::WebSignIn {
                store: store.clone(),
                host: host.clone(),
            }))
            .with_plugin_admin(Arc::new(crate::plugin_glue::ApiPlugins {
                store: store.clone(),
                host,
            })),
        None => state,
    };
    // Set when the shutdown starts: health then says `draining`.
    let draining = state.draining_flag();
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(l) => l,
        // The default address taken (a second gateway, another service): the gateway still
        // serves SSH; an address the operator chose must work or the start fails.
        Err(e) if listen.is_none() && address == gatehouse_api::ApiSettings::default().listen => {
            tracing::error!(%address, error = %e, "HTTPS API not started: the default address is in use; set settings.json api.listen or --api-listen");
            return Ok((Box::pin(std::future::pending()), draining));
        }
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("listening on {address} for the HTTPS API"))
            );
        }
    };
    tracing::info!(address = %listener.local_addr()?, "HTTPS API listening (docs at /api/docs)");
    let serving = gatehouse_api::serve(listener, tls, state, settings.max_connections);
    Ok((Box::pin(serving), draining))
}

/// Ends requests whose approval deadline or access window passed, and brings the policy links
/// up to date; sessions under an ended request are closed by their watchers.
async fn sweep_requests(workflow: Arc<gatehouse_workflow::Workflow>) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tick.tick().await;
        let workflow = workflow.clone();
        let _ = tokio::task::spawn_blocking(move || workflow.expire_due()).await;
    }
}

/// Starts the enabled plugins of `<data-dir>/plugins`: a host even when none is enabled (it
/// accepts at once), so that enabling one later takes effect without a restart.
fn start_plugins(
    dir: &DataDir,
    store: Arc<Store>,
    vault: Arc<Vault>,
) -> Result<Option<gatehouse_plugin_host::PluginHost>> {
    let registry = gatehouse_plugin_host::Registry::open(dir.root.join("plugins"))?;
    let options = gatehouse_plugin_host::HostOptions {
        compile_cache_dir: Some(dir.root.join("plugins/.compiled")),
        audit: Some(Arc::new(crate::plugin_glue::AuditLog {
            auditor: gatehouse_audit::Auditor::new(store.clone()),
        })),
        secrets: Arc::new(crate::plugin_glue::VaultSecrets { store, vault }),
        ..Default::default()
    };
    let host = gatehouse_plugin_host::PluginHost::start(&registry, options)
        .context("starting the plugins")?;
    for plugin in host.plugins() {
        match &plugin.load_error {
            None => tracing::info!(plugin = %plugin.name, "plugin loaded"),
            Some(e) => {
                tracing::error!(plugin = %plugin.name, error = %e, "plugin not loaded; calls to it are refused")
            }
        }
    }
    Ok(Some(host))
}

/// How often policy files and grants are checked for changes.
const POLICY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads the policies when a file or grant changes, and on SIGHUP. A failed reload keeps the
/// previous policies and is audited with the positions of the problems.
async fn watch_policies(admin: Arc<AdminContext>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(POLICY_POLL);
    loop {
        #[cfg(unix)]
        let forced = match hangup.as_mut() {
            Some(h) => tokio::select! {
                _ = tick.tick() => false,
                _ = h.recv() => true,
            },
            None => {
                tick.tick().await;
                false
            }
        };
        #[cfg(not(unix))]
        let forced = {
            tick.tick().await;
            false
        };
        let admin = admin.clone();
        let actor = if forced { "SIGHUP" } else { "file watcher" };
        let _ = tokio::task::spawn_blocking(move || {
            crate::policy_cmd::reload_audited(&admin, actor, forced)
        })
        .await;
    }
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
