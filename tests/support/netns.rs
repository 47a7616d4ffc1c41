//! Test hosts in network namespaces for transparent mode: a client namespace and a server
//! namespace, each joined by a veth pair to a router namespace, where the test's thread and
//! everything it starts (the gateway) run: the test moves itself into a fresh network
//! namespace first, so its rules and routes never touch the host's. An iptables REDIRECT rule on the client's link sends the
//! client's SSH connections to the server's address to the gateway's transparent listener, as
//! the seeds describe (Debian packages iproute2, iptables), or a TPROXY rule with the policy
//! routing it needs; the same routing brings the servers' replies to connections the gateway
//! made from the client's address back to it. Everything is removed on drop.

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
    /// The same three over IPv6.
    pub client_ip6: String,
    pub router_client_ip6: String,
    pub server_ip6: String,
    router_client_if: String,
    router_server_if: String,
    /// iptables rules added (table, rule), deleted on drop.
    rules: Vec<(String, Vec<String>)>,
    /// The firewall mark and routing table of local delivery (TPROXY, replies to the client's
    /// address), once set up.
    local_mark: Option<u32>,
    n: u32,
}

impl Network {
    /// Moves the calling test's thread into a new network namespace (the router: what it
    /// starts from now on runs there), and builds the client and server namespaces around it.
    pub fn start() -> Network {
        assert!(
            Command::new("ip")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success()),
            "`ip` is missing (Debian package iproute2)"
        );
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("a network namespace of the test's own (run as root)");
        must("ip", &["link", "set", "lo", "up"]);
        // Distinct per network and per process (tests may run side by side in one process).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
        let n = (std::process::id() % 50) * 4 + k + 20;
        let network = Network {
            client_ns: format!("ghtc{n}"),
            server_ns: format!("ghts{n}"),
            client_ip: format!("10.79.{n}.2"),
            router_client_ip: format!("10.79.{n}.1"),
            server_ip: format!("10.78.{n}.2"),
            client_ip6: format!("fd79:{n}::2"),
            router_client_ip6: format!("fd79:{n}::1"),
            server_ip6: format!("fd78:{n}::2"),
            router_client_if: format!("ghrc{n}"),
            router_server_if: format!("ghrs{n}"),
            rules: Vec::new(),
            local_mark: None,
            n,
        };
        let router_server_ip = format!("10.78.{n}.1");
        let router_server_ip6 = format!("fd78:{n}::1");
        for ns in [&network.client_ns, &network.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            must("ip", &["netns", "add", ns]);
            must("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        for (router_if, ns, ns_ip, router_ip, ns_ip6, router_ip6) in [
            (
                &network.router_client_if,
                &network.client_ns,
                &network.client_ip,
                &network.router_client_ip,
                &network.client_ip6,
                &network.router_client_ip6,
            ),
            (
                &network.router_server_if,
                &network.server_ns,
                &network.server_ip,
                &router_server_ip,
                &network.server_ip6,
                &router_server_ip6,
            ),
        ] {
            let _ = Command::new("ip").args(["link", "del", router_if]).output();
            must(
                "ip",
                &[
                    "link", "add", router_if, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            );
            // IPv6 without duplicate address detection: usable at once.
            for (ip, dev_args) in [
                (format!("{router_ip}/24"), vec![]),
                (format!("{router_ip6}/64"), vec!["nodad"]),
            ] {
                let mut args = vec!["addr", "add", ip.as_str(), "dev", router_if.as_str()];
                args.extend(dev_args);
                must("ip", &args);
            }
            must("ip", &["link", "set", router_if, "up"]);
            for (ip, nodad) in [
                (format!("{ns_ip}/24"), false),
                (format!("{ns_ip6}/64"), true),
            ] {
                let mut args = vec!["-n", ns.as_str(), "addr", "add", ip.as_str(), "dev", "eth0"];
                if nodad {
                    args.push("nodad");
                }
                must("ip", &args);
            }
            must("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            must(
                "ip",
                &["-n", ns, "route", "add", "default", "via", router_ip],
            );
            must(
                "ip",
                &["-n", ns, "-6", "route", "add", "default", "via", router_ip6],
            );
        }
        network
    }

    /// Sends the client's TCP connections to `port` of the server to `to_port` on this host
    /// (the gateway's transparent listener) with an iptables `REDIRECT` (NAT).
    pub fn redirect(&mut self, port: u16, to_port: u16) {
        let rule = self.to_server(
            port,
            &["-j", "REDIRECT", "--to-ports", &to_port.to_string()],
        );
        self.add_rule("nat", rule);
    }

    /// [`Network::redirect`] for the client's IPv6 connections to the server (ip6tables).
    pub fn redirect6(&mut self, port: u16, to_port: u16) {
        let rule: Vec<String> = [
            "PREROUTING",
            "-i",
            &self.router_client_if,
            "-p",
            "tcp",
            "-d",
            &self.server_ip6,
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
        self.add_rule("ip6tables nat", rule);
    }

    /// The same with `TPROXY` (no NAT: the gateway's socket has the server's address as its
    /// local address; the listener needs IP_TRANSPARENT).
    pub fn tproxy(&mut self, port: u16, to_port: u16) {
        let mark = self.local_delivery();
        let rule = self.to_server(
            port,
            &[
                "-j",
                "TPROXY",
                "--on-port",
                &to_port.to_string(),
                "--tproxy-mark",
                &format!("{mark:#x}/0xffffffff"),
            ],
        );
        self.add_rule("mangle", rule);
    }

    /// The servers' replies to connections made from the client's address (the gateway's
    /// `--transparent-source client`) are delivered here rather than routed to the client.
    pub fn return_to_gateway(&mut self) {
        let mark = self.local_delivery();
        let rule: Vec<String> = [
            "PREROUTING",
            "-i",
            &self.router_server_if,
            "-p",
            "tcp",
            "-m",
            "socket",
            "--transparent",
            "-j",
            "MARK",
            "--set-mark",
            &format!("{mark:#x}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.add_rule("mangle", rule);
    }

    /// A rule for the client's TCP connections to `port` of the server, then `action`.
    fn to_server(&self, port: u16, action: &[&str]) -> Vec<String> {
        let mut rule: Vec<String> = [
            "PREROUTING",
            "-i",
            &self.router_client_if,
            "-p",
            "tcp",
            "-d",
            &self.server_ip,
            "--dport",
            &port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        rule.extend(action.iter().map(|s| s.to_string()));
        rule
    }

    /// Adds `rule` to `table` (`nat`, `mangle`; `ip6tables nat` for IPv6).
    fn add_rule(&mut self, table: &str, rule: Vec<String>) {
        let (program, name) = table.split_once(' ').unwrap_or(("iptables", table));
        assert!(
            Command::new(program)
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success()),
            "`{program}` is missing (Debian package iptables)"
        );
        let mut args = vec!["-t".to_string(), name.to_string(), "-A".to_string()];
        args.extend(rule.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        must(program, &args);
        self.rules.push((table.to_string(), rule));
    }

    /// Packets marked with the returned mark are delivered locally (`ip rule` + a table whose
    /// default route is `local`), as TPROXY needs.
    fn local_delivery(&mut self) -> u32 {
        if let Some(mark) = self.local_mark {
            return mark;
        }
        let mark = 0x4700 + self.n;
        let table = (4700 + self.n).to_string();
        let _ = Command::new("ip")
            .args(["rule", "del", "fwmark", &format!("{mark:#x}")])
            .output();
        must(
            "ip",
            &[
                "rule",
                "add",
                "fwmark",
                &format!("{mark:#x}"),
                "lookup",
                &table,
            ],
        );
        must(
            "ip",
            &[
                "route",
                "replace",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                &table,
            ],
        );
        self.local_mark = Some(mark);
        mark
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
        for (table, rule) in self.rules.drain(..) {
            let (program, name) = table.split_once(' ').unwrap_or(("iptables", &table));
            let mut args = vec!["-t".to_string(), name.to_string(), "-D".to_string()];
            args.extend(rule);
            let _ = Command::new(program).args(&args).output();
        }
        if let Some(mark) = self.local_mark.take() {
            let table = (4700 + self.n).to_string();
            let _ = Command::new("ip")
                .args(["rule", "del", "fwmark", &format!("{mark:#x}")])
                .output();
            let _ = Command::new("ip")
                .args(["route", "flush", "table", &table])
                .output();
        }
        for dev in [&self.router_client_if, &self.router_server_if] {
            let _ = Command::new("ip").args(["link", "del", dev]).output();
        }
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
