//! End to end in network namespaces (tests/support/netns.rs): transparent mode. The client, in
//! a namespace of its own, runs a stock `ssh` to the *server's* address as `alice@ACCOUNT` (no
//! asset in the name); the router (this namespace) redirects it with iptables to the gateway's
//! transparent listener; the gateway reads the original destination (SO_ORIGINAL_DST), maps it
//! to the asset at that address, logs in there with the vault's password and relays to the
//! real sshd in the server's namespace. Cedar sees the original destination.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::Duration;
use support::netns::Network;
use support::ssh_client::Client;
use support::world::{GATEWAY_PASSWORD, GATEWAY_USER, World};
use support::{OutputExt, json_str, poll};

const LONG: Duration = Duration::from_secs(30);

/// A real sshd on the server's address, port 22, in the server's namespace; killed on drop.
struct ServerSshd {
    child: Child,
    _dir: tempfile::TempDir,
}

impl ServerSshd {
    fn start(network: &Network) -> ServerSshd {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = dir.path().join("host_key");
        let keygen = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(keygen.status.success());
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {}\nPort 22\nHostKey {}\nPidFile {}\nPasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nStrictModes no\n\
                 PrintMotd no\nPrintLastLog no\nLogLevel DEBUG\n",
                network.server_ip,
                key.display(),
                dir.path().join("sshd.pid").display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = network
            .in_server("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("sshd in the server's namespace");
        let listening = format!("Server listening on {} port 22", network.server_ip);
        let up = poll(LONG, || {
            std::fs::read_to_string(dir.path().join("sshd.log"))
                .unwrap_or_default()
                .contains(&listening)
                .then_some(())
        });
        assert!(
            up.is_some(),
            "sshd did not start: {}",
            std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
        );
        ServerSshd { child, _dir: dir }
    }
}

impl Drop for ServerSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stock ssh run in the client's namespace: a `ssh` on PATH that enters it first.
fn client_in(network: &Network, login: &str, password: &str) -> (Client, tempfile::TempDir) {
    let bin = tempfile::tempdir().unwrap();
    let wrapper = bin.path().join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ip netns exec {} /usr/bin/ssh \"$@\"\n",
            network.client_ns
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.path().display());
    let client = Client::password(22, login, password)
        .host(&network.server_ip)
        .env("PATH", &path);
    (client, bin)
}

#[test]
fn a_redirected_ssh_connection_reaches_the_server_it_was_addressed_to() {
    let mut network = Network::start();
    let mut w = World::start("transparent");
    let _sshd = ServerSshd::start(&network);
    let transparent_port = support::free_port();
    w.gh.stop_server();
    w.gh.serve_options(
        &[
            "--ssh-transparent-listen",
            &format!("{}:{transparent_port}", network.router_client_ip),
        ],
        &[],
    );
    w.gh.serve();
    network.redirect(22, transparent_port);
    w.gh.cli_ok(&[
        "asset",
        "add",
        "srv",
        "--address",
        &network.server_ip,
        "--tofu",
    ]);
    let spec = format!("{}@srv", w.account.name);
    w.gh.add_account_with_password(&spec, w.vault_password());
    w.gh.grant_user(GATEWAY_USER, &spec);

    // The user names only themselves and the account; the server is where they connected.
    let login = format!("{GATEWAY_USER}@{}", w.account.name);
    let (client, _bin) = client_in(&network, &login, GATEWAY_PASSWORD);
    let out = client.ssh("echo transparent-$((6*7)); ip -4 -o addr show dev eth0");
    assert!(
        out.status.success(),
        "{}\n--- audit ---\n{:#?}",
        out.describe(),
        w.gh.audit().iter().rev().take(6).collect::<Vec<_>>()
    );
    let text = out.stdout_text();
    assert!(text.contains("transparent-42"), "{text}");
    assert!(
        text.contains(&network.server_ip),
        "the command ran elsewhere than the server: {text}"
    );
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    let record = &sessions[0];
    assert_eq!(json_str(record, "asset"), "srv", "{record}");
    assert!(
        json_str(record, "client").starts_with(&format!("{}:", network.client_ip)),
        "the client's own address is recorded: {record}"
    );
    let connected = w.gh.audit_of("target_connect_ok").pop().unwrap();
    assert_eq!(
        connected["fields"]["destination"],
        format!("{}:22", network.server_ip),
        "{connected}"
    );

    // Naming another asset than the one connected to: refused in one line.
    let (other, _bin2) = client_in(
        &network,
        &format!("{GATEWAY_USER}@{}@db1", w.account.name),
        GATEWAY_PASSWORD,
    );
    let refused = other.ssh("echo must-not-run");
    assert!(!refused.status.success());
    assert!(
        refused.stderr_text().contains("transparent"),
        "{}",
        refused.describe()
    );

    // Cedar sees the original destination: a policy can refuse it by address.
    std::fs::write(
        w.gh.data_dir().join("policies/no-srv.cedar"),
        format!(
            "@id(\"no-direct-srv\")\nforbid (principal, action in Action::\"session\", resource)\nwhen {{ context has destination && context.destination.ip == ip(\"{}\") && context.destination.port == 22 }};\n",
            network.server_ip
        ),
    )
    .unwrap();
    let denied = poll(LONG, || {
        let out = client.ssh("echo must-not-run");
        (!out.status.success()).then_some(out)
    })
    .expect("the policy on the destination was not applied");
    assert!(!denied.stdout_text().contains("must-not-run"));
    assert!(
        w.gh.audit_of("access_denied")
            .iter()
            .any(|e| e["fields"]["policies"]
                .to_string()
                .contains("no-direct-srv")),
        "the refusal names the policy"
    );
}

/// inetutils-inetd in the server's namespace, running `telnetd` on port 23 with a login
/// program that knows one account (tests/support/telnetd.rs); killed on drop.
struct ServerTelnetd {
    child: Child,
    _dir: tempfile::TempDir,
}

impl ServerTelnetd {
    fn start(network: &Network, user: &str, password: &str) -> ServerTelnetd {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("login.sh");
        std::fs::write(&program, support::telnetd::login_program(user, password)).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.path().join("inetd.conf");
        std::fs::write(
            &conf,
            format!(
                "telnet stream tcp nowait root {} telnetd --no-hostinfo --exec-login={}\n",
                support::telnetd::TELNETD,
                program.display()
            ),
        )
        .unwrap();
        let child = network
            .in_server("/usr/sbin/inetutils-inetd")
            .arg("-d")
            .arg(format!(
                "--pidfile={}",
                dir.path().join("inetd.pid").display()
            ))
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("inetutils-inetd (Debian package inetutils-inetd, with inetutils-telnetd)");
        let address = format!("{}:23", network.server_ip);
        let up = poll(LONG, || {
            std::net::TcpStream::connect(address.as_str())
                .ok()
                .map(|_| ())
        });
        assert!(up.is_some(), "telnetd did not listen on {address}");
        ServerTelnetd { child, _dir: dir }
    }
}

impl Drop for ServerTelnetd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_redirected_telnet_connection_reaches_the_device_it_was_addressed_to() {
    let mut network = Network::start();
    let mut w = World::start("transparent_tn");
    let _telnetd = ServerTelnetd::start(&network, &w.account.name, w.vault_password());
    let transparent_port = support::free_port();
    w.gh.stop_server();
    w.gh.serve_options(
        &[
            "--telnet-transparent-listen",
            &format!("{}:{transparent_port}", network.router_client_ip),
        ],
        &[],
    );
    w.gh.serve();
    network.redirect(23, transparent_port);
    w.gh.cli_ok(&[
        "asset",
        "add",
        "tsrv",
        "--address",
        &network.server_ip,
        "--tofu",
        "--telnet-port",
        "23",
        "--telnet-success",
        r"target\$$",
    ]);
    let spec = format!("{}@tsrv", w.account.name);
    w.gh.add_account_with_password(&spec, w.vault_password());
    w.gh.grant_user(GATEWAY_USER, &spec);

    let mut cmd = network.in_client("script");
    cmd.args([
        "-qfec",
        &format!("TERM=vt220 exec telnet {} 23", network.server_ip),
        "/dev/null",
    ]);
    let mut session = support::ssh_client::PtySession::spawn_command(cmd);
    session.expect("login: ", LONG);
    session.send_raw(format!("{GATEWAY_USER}@{}\r", w.account.name).as_bytes());
    session.expect("Password: ", LONG);
    session.send_raw(format!("{GATEWAY_PASSWORD}\r").as_bytes());
    session.expect("target$ ", LONG);
    session.send_raw(b"echo via-transparent-telnet-$((6*7))\r");
    session.expect("via-transparent-telnet-42", LONG);
    session.send_raw(b"exit\r");
    let _ = session.wait(LONG);
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    assert_eq!(json_str(&sessions[0], "asset"), "tsrv", "{}", sessions[0]);
    assert_eq!(
        json_str(&sessions[0], "protocol"),
        "telnet",
        "{}",
        sessions[0]
    );
    assert!(
        json_str(&sessions[0], "client").starts_with(&format!("{}:", network.client_ip)),
        "{}",
        sessions[0]
    );
}
