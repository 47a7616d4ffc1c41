//! `gatehouse`: the command line and server binary. Glue only: it parses the arguments, sets up
//! tracing and dispatches to `gatehouse-daemon` (host/daemon), which composes the services.

/// mimalloc rather than glibc's malloc: a Cedar decision allocates a lot of short-lived
/// values, and glibc's occasional consolidation showed as the decision's tail latency
/// (docs/BENCHMARKS.md, "Policy decisions").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::Parser;
use gatehouse_daemon::cli::{self, AdminCommand, Cli, Command, PolicyAdminCommand, PolicyCommand};
use gatehouse_daemon::datadir::{self, DataDir};
use gatehouse_daemon::{
    a2a_cmd, demo, lifecycle_cmd, node_cmd, plugin_cmd, policy_cmd, request_cmd, run_admin, serve,
    session_cmd,
};
use gatehouse_vault::KeySource;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The store, settings, keys, plugins and recordings are the service user's alone: files the
    // process creates are 0600 and directories 0700, whatever umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    init_tracing(matches!(cli.command, Command::Serve(_) | Command::Demo(_)));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Crates that handle secrets themselves and print them at their own DEBUG or TRACE: sspi dumps
/// the NTLM/Kerberos credentials block (the vault password, UTF-16LE) it encrypts, lettre the SMTP
/// AUTH exchange, russh and rustls key material and authentication. Whatever `RUST_LOG` says, their
/// events are kept at or below these levels (`RUST_LOG=sspi=trace` does not lift the cap).
const SECRET_HANDLING_CRATES: &[(&str, tracing::Level)] = &[
    ("sspi", tracing::Level::WARN),
    ("picky", tracing::Level::WARN),
    ("picky_krb", tracing::Level::WARN),
    ("picky_asn1_der", tracing::Level::WARN),
    ("ironrdp_connector", tracing::Level::INFO),
    ("ironrdp_pdu", tracing::Level::INFO),
    ("lettre", tracing::Level::INFO),
    ("ldap3", tracing::Level::INFO),
    ("russh", tracing::Level::INFO),
    ("russh_cryptovec", tracing::Level::INFO),
    ("rustls", tracing::Level::INFO),
    ("tokio_rustls", tracing::Level::INFO),
    ("hyper", tracing::Level::INFO),
    ("h2", tracing::Level::INFO),
];

/// The cap on [`SECRET_HANDLING_CRATES`]; everything else passes to the `RUST_LOG` filter.
fn secret_cap() -> tracing_subscriber::filter::Targets {
    SECRET_HANDLING_CRATES.iter().fold(
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::TRACE),
        |targets, (name, level)| targets.with_target(*name, *level),
    )
}

fn init_tracing(server: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: a log file or a pipe gets plain text.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(secret_cap())
        .with_filter(filter);
    tracing_subscriber::registry().with(layer).init();
}

fn key_override(cli: &Cli) -> Option<KeySource> {
    match (&cli.master_key_file, &cli.master_key_env) {
        (Some(path), _) => Some(KeySource::File(path.clone())),
        (None, Some(var)) => Some(KeySource::Env(var.clone())),
        (None, None) => None,
    }
}

fn run(cli: Cli) -> Result<()> {
    let store = cli
        .store
        .as_deref()
        .map(gatehouse_store::StoreLocation::parse)
        .transpose()
        .context("--store")?;
    let dir = DataDir::new(cli.data_dir.clone()).with_store(store);
    let overrides = key_override(&cli);
    match cli.command {
        Command::Init => {
            let report = datadir::init(&dir, overrides)?;
            println!("initialised `{}`", dir.root.display());
            println!("  SSH host key  {}", report.host_key_fingerprint);
            println!("  master key    {}", report.master_key);
            Ok(())
        }
        Command::Serve(args) => serve::run(
            &dir,
            overrides,
            serve::Listen {
                ssh: args.ssh_listen,
                transparent: serve::TransparentListen {
                    ssh: args.ssh_transparent_listen,
                    rdp: args.rdp_transparent_listen,
                    telnet: args.telnet_transparent_listen,
                    vnc: args.vnc_transparent_listen,
                    source_from_client: args.transparent_source
                        == gatehouse_daemon::cli::TransparentSource::Client,
                },
                api: args.api_listen,
                rdp: args.rdp_listen,
                telnet: args.telnet_listen,
                vnc: args.vnc_listen,
                shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
                cluster: serve::ClusterListen {
                    role: args.role,
                    listen: args.cluster_listen,
                    names: args.cluster_names,
                },
            },
            None,
        ),
        Command::Demo(args) => demo::run(&dir, overrides, args),
        Command::Join(args) => node_cmd::join(dir.root(), args),
        Command::Store(gatehouse_daemon::store_cmd::StoreCommand::Status) => {
            let location = dir.store_location()?.to_string();
            print!(
                "{}",
                run_admin(&dir, overrides, AdminCommand::StoreStatus { location })?
            );
            Ok(())
        }
        Command::Store(command) => gatehouse_daemon::store_cmd::run(&dir, command),
        Command::Login(args) => request_cmd::login(&dir, args),
        Command::Request(command) => request_cmd::run(&dir, command),
        Command::Admin(AdminCommand::A2a(command)) if a2a_cmd::is_api(&command) => {
            a2a_cmd::api(&dir, command)
        }
        Command::Admin(AdminCommand::Account(cli::AccountCommand::Lifecycle(command))) => {
            lifecycle_cmd::run_account(&dir, overrides, command)
        }
        Command::Admin(command) => {
            let output = run_admin(&dir, overrides, command)?;
            print!("{output}");
            Ok(())
        }
        Command::Session(command) => session_cmd::run(&dir, overrides, command),
        Command::Policy(command) => run_policy(&dir, overrides, command),
        Command::Plugin(command) => plugin_cmd::run(&dir, command),
    }
}

fn run_policy(dir: &DataDir, overrides: Option<KeySource>, command: PolicyCommand) -> Result<()> {
    let admin_command = match command {
        PolicyCommand::Test { path, json } => {
            if !policy_cmd::test(&path, json.json)? {
                anyhow::bail!("some scenarios failed");
            }
            return Ok(());
        }
        PolicyCommand::Schema => {
            print!("{}", policy_cmd::SCHEMA_SOURCE);
            return Ok(());
        }
        // A policy author's checkout or CI has no data directory: check the files against the
        // schema alone.
        PolicyCommand::Validate {
            dir: Some(policies),
        } if !dir.is_initialised() => {
            print!("{}", policy_cmd::validate_standalone(&policies)?);
            return Ok(());
        }
        PolicyCommand::Explain {
            scenario: Some(file),
            request,
            json,
            ..
        } => {
            let request = request.unwrap_or_default();
            print!(
                "{}",
                policy_cmd::explain_scenario(&file, &request, json.json)?
            );
            return Ok(());
        }
        PolicyCommand::Explain {
            user,
            target,
            decision,
            json,
            ..
        } => PolicyAdminCommand::Explain {
            user: user.unwrap_or_default(),
            target: target.unwrap_or_default(),
            decision,
            json: json.json,
        },
        PolicyCommand::WhoCan {
            target,
            decision,
            json,
        } => PolicyAdminCommand::WhoCan {
            target,
            decision,
            json: json.json,
        },
        PolicyCommand::Validate { dir } => PolicyAdminCommand::Validate { dir },
        PolicyCommand::Reload => PolicyAdminCommand::Reload,
    };
    let output = run_admin(dir, overrides, AdminCommand::PolicyAdmin(admin_command))?;
    print!("{output}");
    Ok(())
}
