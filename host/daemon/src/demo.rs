//! `gatehouse demo`: a working gateway on a fresh machine. It starts a real OpenSSH sshd on
//! 127.0.0.1 as the demo target (running as the current user, who becomes the target account),
//! puts the account's key in the vault, adds a user `demo` with password `demo`, grants it, and
//! serves.

use crate::admin::{AdminContext, AdminRequest, Inputs, execute};
use crate::cli::*;
use crate::datadir::{self, DataDir};
use anyhow::{Context, Result, bail};
use gatehouse_vault::{KeySource, Vault};
use russh::keys::ssh_key::LineEnding;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;

const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo";
const DEMO_ASSET: &str = "demo-target";

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn current_user() -> Result<String> {
    let output = Process::new("id")
        .arg("-un")
        .output()
        .context("running `id -un`")?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if name.is_empty() {
        bail!("cannot tell the current user's name");
    }
    Ok(name)
}

fn find_sshd() -> Result<PathBuf> {
    for candidate in ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"] {
        if Path::new(candidate).exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!(
        "the demo needs OpenSSH's sshd as its target: install it (`apt-get install openssh-server`)"
    )
}

/// Writes the target's files (once) and returns the account's private key and the host key line.
fn prepare_target(dir: &Path, port: u16) -> Result<(String, String)> {
    std::fs::create_dir_all(dir)?;
    let host_key_path = dir.join("ssh_host_ed25519_key");
    let account_key_path = dir.join("account_key");
    if !host_key_path.exists() {
        let host = datadir::generate_host_key()?;
        datadir::write_private_file(&host_key_path, host.to_openssh(LineEnding::LF)?.as_bytes())?;
        let account = datadir::generate_host_key()?;
        datadir::write_private_file(
            &account_key_path,
            account.to_openssh(LineEnding::LF)?.as_bytes(),
        )?;
        std::fs::write(
            dir.join("authorized_keys"),
            format!("{}\n", account.public_key().to_openssh()?),
        )?;
    }
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {dir}/authorized_keys\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\nStrictModes no\n\
         PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nAcceptEnv LANG LC_*\n",
        host = host_key_path.display(),
        dir = dir.display(),
    );
    std::fs::write(dir.join("sshd_config"), config)?;
    let host = russh::keys::decode_secret_key(&std::fs::read_to_string(&host_key_path)?, None)?;
    let account = std::fs::read_to_string(&account_key_path)?;
    Ok((account, host.public_key().to_openssh()?))
}

fn start_sshd(dir: &Path) -> Result<KillOnDrop> {
    let sshd = find_sshd()?;
    // sshd started as root needs its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Process::new(sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("sshd.log"))?))
        .spawn()
        .context("starting the demo target's sshd")?;
    Ok(KillOnDrop(child))
}

fn setup(
    dir: &DataDir,
    overrides: Option<KeySource>,
    account_key: String,
    host_key: String,
    port: u16,
    account: &str,
) -> Result<()> {
    let store = Arc::new(dir.open_store()?);
    let key = dir.load_master_key(overrides)?;
    let vault = Arc::new(Vault::new(key));
    let policy_settings = dir.policy_settings()?;
    let ctx = AdminContext {
        store,
        vault: Box::new(move || Ok(vault.clone())),
        policy: Box::new(|| anyhow::bail!("the demo set-up makes no policy decisions")),
        policy_settings,
        in_server: false,
        live: None,
        cluster_port: None,
        recordings: None,
        search: None,
        search_dir: None,
        directory: None,
    };
    let actor = "demo".to_string();
    let requests = vec![
        AdminRequest {
            command: AdminCommand::User(UserCommand::Add {
                name: DEMO_USER.into(),
                password_stdin: true,
                key_files: vec![],
                groups: vec![],
                email: None,
            }),
            inputs: with(&actor, |i| i.password = Some(DEMO_PASSWORD.into())),
        },
        AdminRequest {
            command: AdminCommand::Asset(AssetCommand::Add {
                name: DEMO_ASSET.into(),
                address: "127.0.0.1".into(),
                port,
                host_key: Some(host_key.clone()),
                host_key_file: None,
                tofu: false,
                groups: vec![],
                rdp_port: None,
                rdp_cert_pin: None,
                telnet_port: None,
                telnet_login_prompt: None,
                telnet_password_prompt: None,
                telnet_failure: None,
                telnet_success: None,
                vnc_port: None,
            }),
            inputs: with(&actor, |i| i.host_key = Some(host_key.clone())),
        },
        AdminRequest {
            command: AdminCommand::Account(AccountCommand::Add {
                target: format!("{account}@{DEMO_ASSET}"),
                credential_plugin: None,
                password_stdin: false,
                password_file: None,
                key_file: None,
            }),
            inputs: with(&actor, |i| i.private_key = Some(account_key.clone())),
        },
        AdminRequest {
            command: AdminCommand::Grant(GrantCommand::Add {
                principal: PrincipalArgs {
                    user: Some(DEMO_USER.into()),
                    group: None,
                },
                target: format!("{account}@{DEMO_ASSET}"),
            }),
            inputs: Inputs::by(actor.clone()),
        },
    ];
    for request in &requests {
        execute(&ctx, request)?;
    }
    Ok(())
}

fn with(actor: &str, set: impl FnOnce(&mut Inputs)) -> Inputs {
    let mut inputs = Inputs::by(actor);
    set(&mut inputs);
    inputs
}

pub fn run(dir: &DataDir, overrides: Option<KeySource>, args: DemoArgs) -> Result<()> {
    let account = current_user()?;
    let fresh = !dir.is_initialised();
    if fresh {
        datadir::init(dir, overrides.clone())?;
        // A demo listens on loopback only, RDP included (the product's default is 0.0.0.0).
        let path = dir.settings();
        let mut settings: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        settings["rdp"]["listen"] = serde_json::Value::from("127.0.0.1:3389");
        std::fs::write(&path, serde_json::to_vec_pretty(&settings)?)?;
    }
    // sshd re-executes itself from `/` for every connection: its paths must be absolute.
    let target_dir = std::path::absolute(dir.root.join("demo-target"))?;
    let (account_key, host_key) = prepare_target(&target_dir, args.target_port)?;
    let _sshd = start_sshd(&target_dir)?;
    if fresh {
        setup(
            dir,
            overrides.clone(),
            account_key,
            host_key,
            args.target_port,
            &account,
        )?;
    }
    let listen = args.ssh_listen;
    let data_dir = dir.root.display().to_string();
    let ready = Box::new(move |bound: std::net::SocketAddr| {
        println!();
        println!("Gatehouse demo is running. In another terminal:");
        println!();
        println!(
            "  ssh -p {} {DEMO_USER}@{account}@{DEMO_ASSET}@{}      (password: {DEMO_PASSWORD})",
            bound.port(),
            bound.ip()
        );
        println!(
            "  scp -P {} /etc/hostname {DEMO_USER}@{account}@{DEMO_ASSET}@{}:/tmp/",
            bound.port(),
            bound.ip()
        );
        println!();
        println!("then look at what was recorded:");
        println!();
        println!("  gatehouse --data-dir {data_dir} session list");
        println!("  gatehouse --data-dir {data_dir} session play <ID>");
        println!("  gatehouse --data-dir {data_dir} audit list");
        println!();
        let _ = listen;
    });
    crate::serve::run(
        dir,
        overrides,
        crate::serve::Listen {
            ssh: args.ssh_listen,
            transparent: Default::default(),
            api: Some(args.api_listen),
            rdp: args.rdp_listen,
            telnet: None,
            vnc: None,
            shutdown_grace: std::time::Duration::from_secs(5),
            cluster: crate::serve::ClusterListen {
                listen: args.cluster_listen,
                ..Default::default()
            },
        },
        Some(ready),
    )
}
