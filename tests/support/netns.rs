//! Test hosts in network namespaces for transparent mode: a client namespace and a server
//! namespace, each joined to this (the test's) namespace by a veth pair, so this namespace is
//! the router the gateway runs on. An iptables REDIRECT rule on the client's link sends the
//! client's SSH connections to the server's address to the gateway's transparent listener, as
//! the seeds describe (Debian packages iproute2, iptables). Everything is removed on drop.

use super::{OutputExt, run};
use std::process::Command;
use std::time::Duration;

/// Runs `program args` and fails the test with its output when it fails.
fn must(program: &str, args: &[&str]) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = run(cmd, None, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        out.describe()
    );
}

/// The client and server namespaces and the router rules.
pub struct Network {
    pub client_ns: String,
    pub server_ns: String,
    /// The client's address, and the router's on the client's link.
    pub client_ip: String,
    pub router_client_ip: String,
    /// The server's address (what the client connects to).
    pub server_ip: String,
    router_client_if: String,
    router_server_if: String,
    redirect: Option<Vec<String>>,
}

impl Network {
    pub fn start() -> Network {
        assert!(
            Command::new("ip")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success()),
            "`ip` is missing (Debian package iproute2)"
        );
        // Distinct per network and per process (tests may run side by side in one process).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2;
        let n = (std::process::id() % 100) * 2 + k + 20;
        let network = Network {
            client_ns: format!("ghtc{n}"),
            server_ns: format!("ghts{n}"),
            client_ip: format!("10.79.{n}.2"),
            router_client_ip: format!("10.79.{n}.1"),
            server_ip: format!("10.78.{n}.2"),
            router_client_if: format!("ghrc{n}"),
            router_server_if: format!("ghrs{n}"),
            redirect: None,
        };
        let router_server_ip = format!("10.78.{n}.1");
        for ns in [&network.client_ns, &network.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            must("ip", &["netns", "add", ns]);
            must("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        for (router_if, ns, ns_ip, router_ip) in [
            (
                &network.router_client_if,
                &network.client_ns,
                &network.client_ip,
                &network.router_client_ip,
            ),
            (
                &network.router_server_if,
                &network.server_ns,
                &network.server_ip,
                &router_server_ip,
            ),
        ] {
            let _ = Command::new("ip").args(["link", "del", router_if]).output();
            must(
                "ip",
                &[
                    "link", "add", router_if, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            );
            must(
                "ip",
                &["addr", "add", &format!("{router_ip}/24"), "dev", router_if],
            );
            must("ip", &["link", "set", router_if, "up"]);
            must(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{ns_ip}/24"),
                    "dev",
                    "eth0",
                ],
            );
            must("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            must(
                "ip",
                &["-n", ns, "route", "add", "default", "via", router_ip],
            );
        }
        network
    }

    /// Sends the client's TCP connections to `port` of the server to `to_port` on this host
    /// (the gateway's transparent listener).
    pub fn redirect(&mut self, port: u16, to_port: u16) {
        assert!(
            Command::new("iptables")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success()),
            "`iptables` is missing (Debian package iptables)"
        );
        let rule: Vec<String> = [
            "PREROUTING",
            "-i",
            &self.router_client_if,
            "-p",
            "tcp",
            "-d",
            &self.server_ip,
            "--dport",
            &port.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &to_port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut add = vec!["-t".to_string(), "nat".to_string(), "-A".to_string()];
        add.extend(rule.iter().cloned());
        let args: Vec<&str> = add.iter().map(String::as_str).collect();
        must("iptables", &args);
        self.redirect = Some(rule);
    }

    /// `program args` run in the client's namespace.
    pub fn in_client(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.client_ns, program]);
        cmd
    }

    /// `program args` run in the server's namespace.
    pub fn in_server(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server_ns, program]);
        cmd
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(rule) = self.redirect.take() {
            let mut args = vec!["-t".to_string(), "nat".to_string(), "-D".to_string()];
            args.extend(rule);
            let _ = Command::new("iptables").args(&args).output();
        }
        for dev in [&self.router_client_if, &self.router_server_if] {
            let _ = Command::new("ip").args(["link", "del", dev]).output();
        }
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
