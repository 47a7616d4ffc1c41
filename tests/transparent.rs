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
                "ListenAddress {}\nListenAddress {}\nPort 22\nHostKey {}\nPidFile {}\nPasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nStrictModes no\n\
                 PrintMotd no\nPrintLastLog no\nLogLevel DEBUG\n",
                network.server_ip,
                network.server_ip6,
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

/// Restarts the world's gateway with transparent mode's `listen` flag on a free port of `host`
/// (the router's address on the client's link) and `extra` flags; that port.
fn serve_transparent(w: &mut World, listen: &str, host: &str, extra: &[&str]) -> u16 {
    let port = support::free_port();
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut args = vec![listen, address.as_str()];
    args.extend_from_slice(extra);
    w.gh.stop_server();
    w.gh.serve_options(&args, &[]);
    w.gh.serve();
    port
}

/// Asset `asset` at `address` (`extra`: its protocol's port and the like), and `account@asset`
/// with the vault's password, granted to alice.
fn add_server(w: &World, asset: &str, address: &str, account: &str, extra: &[&str]) {
    let mut args = vec!["asset", "add", asset, "--address", address, "--tofu"];
    args.extend_from_slice(extra);
    w.gh.cli_ok(&args);
    let spec = format!("{account}@{asset}");
    w.gh.add_account_with_password(&spec, w.vault_password());
    w.gh.grant_user(GATEWAY_USER, &spec);
}

#[test]
fn a_redirected_ssh_connection_reaches_the_server_it_was_addressed_to() {
    let mut network = Network::start();
    let mut w = World::start("transparent");
    let _sshd = ServerSshd::start(&network);
    let port = serve_transparent(
        &mut w,
        "--ssh-transparent-listen",
        &network.router_client_ip,
        &[],
    );
    network.redirect(22, port);
    add_server(&w, "srv", &network.server_ip, &w.account.name, &[]);

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
    let port = serve_transparent(
        &mut w,
        "--telnet-transparent-listen",
        &network.router_client_ip,
        &[],
    );
    network.redirect(23, port);
    let account = w.account.name.clone();
    add_server(
        &w,
        "tsrv",
        &network.server_ip,
        &account,
        &["--telnet-port", "23", "--telnet-success", r"target\$$"],
    );

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

/// Over IPv6: the original destination comes from `IP6T_SO_ORIGINAL_DST` (ip6tables
/// `REDIRECT`) and names the asset at the server's IPv6 address.
#[test]
fn a_redirected_ipv6_connection_reaches_the_server_at_its_ipv6_address() {
    let mut network = Network::start();
    let mut w = World::start("transparent_v6");
    let _sshd = ServerSshd::start(&network);
    let port = serve_transparent(
        &mut w,
        "--ssh-transparent-listen",
        &network.router_client_ip6,
        &[],
    );
    network.redirect6(22, port);
    add_server(&w, "srv6", &network.server_ip6, &w.account.name, &[]);

    let login = format!("{GATEWAY_USER}@{}", w.account.name);
    let (client, _bin) = client_in(&network, &login, GATEWAY_PASSWORD);
    let client = client.host(&network.server_ip6);
    let out = client.ssh("echo \"v6-$((6*7)) ${SSH_CONNECTION}\"");
    assert!(
        out.status.success(),
        "{}\n--- audit ---\n{:#?}\n--- serve.log ---\n{}",
        out.describe(),
        w.gh.audit().iter().rev().take(6).collect::<Vec<_>>(),
        w.gh.log_tail(40)
    );
    let text = out.stdout_text();
    assert!(text.contains("v6-42"), "{text}");
    assert!(
        text.contains(&format!("{} 22", network.server_ip6)),
        "the command ran elsewhere than the server's IPv6 address: {text}"
    );
    let connected = w.gh.audit_of("target_connect_ok").pop().unwrap();
    assert_eq!(
        connected["fields"]["destination"],
        format!("[{}]:22", network.server_ip6),
        "{connected}"
    );
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    assert!(
        json_str(&sessions[0], "client").starts_with(&format!("[{}]:", network.client_ip6)),
        "{}",
        sessions[0]
    );
}

/// Intercepted with TPROXY (no NAT) and dialed from the client's own address
/// (`--transparent-source client`, IP_TRANSPARENT): the server sees the user's address, as if
/// there were no gateway, and its replies come back to the gateway through the router's policy
/// routing.
#[test]
fn with_tproxy_and_the_clients_source_the_server_sees_the_users_own_address() {
    let mut network = Network::start();
    let mut w = World::start("transparent_src");
    let _sshd = ServerSshd::start(&network);
    let port = serve_transparent(
        &mut w,
        "--ssh-transparent-listen",
        &network.router_client_ip,
        &["--transparent-source", "client"],
    );
    network.tproxy(22, port);
    network.return_to_gateway();
    add_server(&w, "srv", &network.server_ip, &w.account.name, &[]);

    let login = format!("{GATEWAY_USER}@{}", w.account.name);
    let (client, _bin) = client_in(&network, &login, GATEWAY_PASSWORD);
    let out = client.ssh("echo \"seen-from=${SSH_CONNECTION%% *}\"");
    assert!(
        out.status.success(),
        "{}\n--- audit ---\n{:#?}\n--- serve.log ---\n{}",
        out.describe(),
        w.gh.audit().iter().rev().take(6).collect::<Vec<_>>(),
        w.gh.log_tail(40)
    );
    let text = out.stdout_text();
    assert!(
        text.contains(&format!("seen-from={}\n", network.client_ip)),
        "the server saw another address than the user's: {text}"
    );
    let connected = w.gh.audit_of("target_connect_ok").pop().unwrap();
    assert_eq!(
        connected["fields"]["destination"],
        format!("{}:22", network.server_ip),
        "{connected}"
    );
    assert_eq!(
        connected["fields"]["dialed_from"], network.client_ip,
        "{connected}"
    );
}

/// freerdp-shadow-cli on a virtual display, serving RDP on the server's address, port 3389, in
/// the server's namespace (NLA with one local account); killed on drop.
struct ServerShadow {
    _process: support::rdp_peers::Process,
    display: support::rdp_peers::Display,
}

impl ServerShadow {
    fn start(network: &Network, dir: &std::path::Path, account: &str, password: &str) -> Self {
        use support::rdp_peers::{Display, require, shadow_files, spawn_logged};
        let shadow = require("freerdp-shadow-cli", "freerdp2-shadow-x11");
        let (sam, home) = shadow_files(dir, account, password);
        let display = Display::start(dir);
        let mut command = network.in_server(shadow.to_str().unwrap());
        command
            .env("HOME", &home)
            .env("DISPLAY", display.env())
            .arg("/port:3389")
            .arg(format!("/bind-address:{}", network.server_ip))
            .arg("/sec:nla")
            .arg(format!("/sam-file:{}", sam.display()));
        let process = spawn_logged(command, "freerdp-shadow-cli", dir.join("shadow.log"));
        let address = format!("{}:3389", network.server_ip);
        let up = poll(LONG, || {
            std::net::TcpStream::connect(address.as_str())
                .ok()
                .map(|_| ())
        });
        assert!(
            up.is_some(),
            "freerdp-shadow-cli did not listen on {address}:\n{}",
            process.log_text()
        );
        ServerShadow {
            _process: process,
            display,
        }
    }
}

#[test]
fn a_redirected_rdp_connection_reaches_the_server_it_was_addressed_to() {
    const ACCOUNT: &str = "rdpuser";
    let mut network = Network::start();
    let mut w = World::start("transparent_rdp");
    let dir = tempfile::tempdir().unwrap();
    let shadow = ServerShadow::start(&network, dir.path(), ACCOUNT, w.vault_password());
    let port = serve_transparent(
        &mut w,
        "--rdp-transparent-listen",
        &network.router_client_ip,
        &[],
    );
    network.redirect(3389, port);
    add_server(
        &w,
        "wsrv",
        &network.server_ip,
        ACCOUNT,
        &["--rdp-port", "3389"],
    );

    // xfreerdp in the client's namespace to the server's address, as `alice@rdpuser`: the
    // session runs (on the server's screen) until the test ends it.
    let client = support::rdp_peers::Client::on_display(dir.path(), &shadow.display);
    let command = client.command_in_netns(
        &network.client_ns,
        &network.server_ip,
        3389,
        &format!("{GATEWAY_USER}@{ACCOUNT}"),
        GATEWAY_PASSWORD,
        &["/sec:nla", "/size:800x600"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(12));
    assert!(
        killed,
        "the session should have run until the test ended it:\n{}\n--- audit ---\n{:#?}\n--- serve.log ---\n{}",
        support::rdp_peers::text(&output),
        w.gh.audit().iter().rev().take(6).collect::<Vec<_>>(),
        w.gh.log_tail(40)
    );
    let connected = poll(LONG, || w.gh.audit_of("target_connect_ok").pop())
        .expect("the gateway connected to the server");
    assert_eq!(connected["fields"]["protocol"], "rdp", "{connected}");
    assert_eq!(
        connected["fields"]["destination"],
        format!("{}:3389", network.server_ip),
        "{connected}"
    );
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    assert_eq!(json_str(&sessions[0], "asset"), "wsrv", "{}", sessions[0]);
    assert!(
        json_str(&sessions[0], "client").starts_with(&format!("{}:", network.client_ip)),
        "{}",
        sessions[0]
    );

    // Naming another asset than the server connected to: refused, and the trail says why.
    let command = client.command_in_netns(
        &network.client_ns,
        &network.server_ip,
        3389,
        &format!("{GATEWAY_USER}@{ACCOUNT}@other"),
        GATEWAY_PASSWORD,
        &["/sec:nla", "/size:800x600"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(30));
    assert!(
        !killed && !output.status.success(),
        "{}",
        support::rdp_peers::text(&output)
    );
    let refused = poll(LONG, || {
        w.gh.audit_of("login_failed")
            .into_iter()
            .find(|e| json_str(e, "detail").contains("transparent connection to"))
    })
    .expect("the refusal is audited");
    assert!(
        json_str(&refused, "detail").contains(&format!("{}:3389", network.server_ip)),
        "{refused}"
    );
}

/// x11vnc serving `display` on the server's address, port 5900, in the server's namespace,
/// with VNC authentication by `password`; killed on drop.
struct ServerX11vnc {
    _process: support::vnc_peers::Process,
}

impl ServerX11vnc {
    fn start(
        network: &Network,
        dir: &std::path::Path,
        display: &support::vnc_peers::Display,
        password: &str,
    ) -> Self {
        let file = support::vnc_peers::password_file(dir, password);
        let log = std::fs::File::create(dir.join("x11vnc.log")).unwrap();
        let child = network
            .in_server("x11vnc")
            .args(["-display", &display.name(), "-rfbport", "5900", "-listen"])
            .arg(&network.server_ip)
            .args(["-forever", "-shared", "-rfbauth", file.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("x11vnc");
        let process = support::vnc_peers::Process(child);
        let address = format!("{}:5900", network.server_ip);
        let up = poll(LONG, || {
            std::net::TcpStream::connect(address.as_str())
                .ok()
                .map(|_| ())
        });
        assert!(
            up.is_some(),
            "x11vnc did not listen on {address}:\n{}",
            std::fs::read_to_string(dir.join("x11vnc.log")).unwrap_or_default()
        );
        ServerX11vnc { _process: process }
    }
}

/// The gateway's TLS identity replaced by one that also names `ip`: a VNC viewer checks the
/// certificate against the address it connected to, which in transparent mode is the server's.
fn certificate_naming(data_dir: &std::path::Path, ip: &str) {
    let tls = data_dir.join("tls");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=gatehouse-transparent",
            "-addext",
            &format!("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:{ip}"),
            "-keyout",
        ])
        .arg(tls.join("key.pem"))
        .arg("-out")
        .arg(tls.join("cert.pem"))
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(out.status.success(), "{}", out.describe());
}

#[test]
fn a_redirected_vnc_viewer_reaches_the_server_it_was_addressed_to() {
    use support::vnc_peers::Display;
    let mut network = Network::start();
    let mut w = World::start("transparent_vnc");
    let dir = tempfile::tempdir().unwrap();
    let desktop = Display::start("800x600x24");
    desktop.run("xsetroot", &["-solid", "red"]);
    let _x11vnc = ServerX11vnc::start(&network, dir.path(), &desktop, w.vault_password());
    certificate_naming(w.gh.data_dir(), &network.server_ip);
    let port = serve_transparent(
        &mut w,
        "--vnc-transparent-listen",
        &network.router_client_ip,
        &[],
    );
    network.redirect(5900, port);
    add_server(
        &w,
        "vsrv",
        &network.server_ip,
        "console",
        &["--vnc-port", "5900"],
    );

    // TigerVNC's viewer in the client's namespace, to the server's address and display 0
    // (port 5900), as `alice@console`.
    let screen = Display::start("1024x768x24");
    let home = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(home.path().join("viewer.log")).unwrap();
    let ca = w.gh.data_dir().join("tls/cert.pem");
    let viewer = network
        .in_client("xtigervncviewer")
        .args(["-SecurityTypes", "X509Plain", "-X509CA"])
        .arg(&ca)
        .args(["-AutoSelect=0", "-FullColor=1", "-RemoteResize=0"])
        .arg(format!("{}::5900", network.server_ip))
        .env("DISPLAY", screen.name())
        .env("HOME", home.path())
        .env("VNC_USERNAME", format!("{GATEWAY_USER}@console"))
        .env("VNC_PASSWORD", GATEWAY_PASSWORD)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("xtigervncviewer (Debian package tigervnc-viewer)");
    let viewer = support::vnc_peers::Process(viewer);
    let running = poll(LONG, || {
        w.gh.sessions()
            .into_iter()
            .find(|s| s["ended"].is_null() && json_str(s, "protocol") == "vnc")
    })
    .unwrap_or_else(|| {
        panic!(
            "no running VNC session; viewer log:\n{}\n--- serve.log ---\n{}",
            std::fs::read_to_string(home.path().join("viewer.log")).unwrap_or_default(),
            w.gh.log_tail(40)
        )
    });
    assert_eq!(json_str(&running, "asset"), "vsrv", "{running}");
    assert!(
        json_str(&running, "client").starts_with(&format!("{}:", network.client_ip)),
        "{running}"
    );
    let connected =
        w.gh.audit_of("target_connect_ok")
            .into_iter()
            .find(|e| e["fields"]["protocol"] == "vnc")
            .expect("the gateway connected to the server");
    assert_eq!(
        connected["fields"]["destination"],
        format!("{}:5900", network.server_ip),
        "{connected}"
    );
    drop(viewer);
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    assert_eq!(json_str(&sessions[0], "asset"), "vsrv", "{}", sessions[0]);
}

/// `--transparent-source client` is refused at start, in one line, when it could only fail
/// later: without a transparent listener, and without CAP_NET_ADMIN (root with that capability
/// and CAP_NET_RAW out of its bounding set, util-linux `setpriv`).
#[test]
fn the_clients_source_is_refused_at_start_when_it_cannot_work() {
    let gh = support::Gatehouse::init();
    let serve = |prefix: &[&str], extra: &[&str]| {
        let gatehouse = gh.command();
        let mut cmd = std::process::Command::new(prefix.first().copied().unwrap_or("env"));
        cmd.args(prefix.iter().skip(1))
            .arg(gatehouse.get_program())
            .args(gatehouse.get_args())
            .env_remove("GATEHOUSE_DATA_DIR")
            .env("NO_COLOR", "1")
            .args([
                "serve",
                "--ssh-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
                "--rdp-listen",
                "127.0.0.1:0",
                "--transparent-source",
                "client",
            ])
            .args(extra);
        let out = support::run(cmd, None, LONG);
        assert!(!out.status.success(), "{}", out.describe());
        out.stderr_text()
    };
    let said = serve(&[], &[]);
    assert!(
        said.contains("--transparent-source client applies to transparent listeners"),
        "{said}"
    );
    let said = serve(
        &["setpriv", "--bounding-set=-net_admin,-net_raw"],
        &["--ssh-transparent-listen", "127.0.0.1:0"],
    );
    assert!(
        said.contains("which needs CAP_NET_ADMIN or CAP_NET_RAW"),
        "{said}"
    );
}
