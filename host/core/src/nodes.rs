//! Cluster records: session nodes joined to a control node, the tokens they join with and the
//! networks each one manages.

use crate::names::Name;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A session node joined to this control node. Removing it soft-deletes it (`deleted` set): its id
/// and what references it (managed networks, sessions) stay, and a relink of the same node id
/// reuses them; a hard delete removes the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: Name,
    /// The host name the node reported when it joined.
    pub hostname: String,
    /// The address users reach the node at (an IP address or a name), as given at the join or
    /// set later by an administrator.
    pub address: String,
    pub description: String,
    /// Launch strings (access strings, `.rdp` files) name the node by `hostname` instead of
    /// `address`.
    #[serde(default)]
    pub use_hostname: bool,
    /// `SHA256:` and the base64 of the SHA-256 of the node's certificate (DER): the node's
    /// identity on the cluster port. Calls with any other certificate are refused.
    pub thumbprint: String,
    /// The ports the node last reported for its listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdp_port: Option<u16>,
    /// The node's software version, as last reported.
    #[serde(default)]
    pub version: String,
    pub joined: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// When the node was removed (soft delete); `None` while it is a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Timestamp>,
}

/// How a node looks from the control node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// It called within the last [`Node::UNAVAILABLE_AFTER_MS`].
    Up,
    /// It has called, but not recently.
    Unavailable,
    /// It joined and has not called since.
    Unknown,
    /// Removed (soft-deleted).
    Disconnected,
}

impl Node {
    /// A node that has not called for this long is unavailable (it calls every 10 s).
    pub const UNAVAILABLE_AFTER_MS: u64 = 30_000;

    /// The node's status at `now`.
    pub fn status(&self, now: Timestamp) -> NodeStatus {
        if self.deleted.is_some() {
            return NodeStatus::Disconnected;
        }
        match self.last_seen {
            None => NodeStatus::Unknown,
            Some(seen) if now.0.saturating_sub(seen.0) <= Self::UNAVAILABLE_AFTER_MS => {
                NodeStatus::Up
            }
            Some(_) => NodeStatus::Unavailable,
        }
    }

    /// The name launch strings use for this node.
    pub fn launch_host(&self) -> &str {
        if self.use_hostname && !self.hostname.is_empty() {
            &self.hostname
        } else {
            &self.address
        }
    }
}

/// A single-use join token, stored by the SHA-256 (hex) of its text; the text itself is shown once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The first characters of the hash, to name the token in lists and the audit trail.
    pub id: String,
    pub created: Timestamp,
    pub expires: Timestamp,
    /// Who made it (an administrator, `local` for the CLI on the control node).
    pub created_by: String,
}

/// A network a session node manages: assets whose address is in it are reached through that node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManagedNetwork {
    /// The network in canonical CIDR form (`10.0.0.0/24`), also its key.
    pub network: String,
    pub node: Name,
    #[serde(default)]
    pub description: String,
    pub created: Timestamp,
}

impl ManagedNetwork {
    /// The prefix length of this network when it holds `address`.
    fn holds(&self, address: IpAddr) -> Option<u8> {
        let net = self.network.parse::<ipnet::IpNet>().ok()?;
        net.contains(&address).then_some(net.prefix_len())
    }
}

/// The managed network an address falls in (the most specific one), if any.
pub fn network_for(networks: &[ManagedNetwork], address: IpAddr) -> Option<&ManagedNetwork> {
    networks
        .iter()
        .filter_map(|m| m.holds(address).map(|prefix| (prefix, m)))
        .max_by_key(|(prefix, _)| *prefix)
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(cidr: &str, node: &str) -> ManagedNetwork {
        ManagedNetwork {
            network: cidr.into(),
            node: Name::new(node).unwrap(),
            description: String::new(),
            created: Timestamp(0),
        }
    }

    #[test]
    fn the_most_specific_network_wins() {
        let networks = [
            network("10.0.0.0/8", "wide"),
            network("10.1.0.0/16", "narrow"),
            network("192.0.2.0/24", "other"),
            network("2001:db8::/32", "six"),
        ];
        let pick = |a: &str| network_for(&networks, a.parse().unwrap()).map(|m| m.node.to_string());
        assert_eq!(pick("10.1.2.3").as_deref(), Some("narrow"));
        assert_eq!(pick("10.2.0.1").as_deref(), Some("wide"));
        assert_eq!(pick("192.0.2.9").as_deref(), Some("other"));
        assert_eq!(pick("2001:db8::7").as_deref(), Some("six"));
        assert_eq!(pick("203.0.113.1"), None);
    }

    fn node(last_seen: Option<u64>, deleted: bool) -> Node {
        Node {
            id: Name::new("sess-a").unwrap(),
            hostname: "sess-a.example".into(),
            address: "10.0.0.5".into(),
            description: String::new(),
            use_hostname: false,
            thumbprint: "SHA256:x".into(),
            ssh_port: None,
            rdp_port: None,
            version: String::new(),
            joined: Timestamp(1_000),
            last_seen: last_seen.map(Timestamp),
            deleted: deleted.then_some(Timestamp(5_000)),
        }
    }

    #[test]
    fn status_from_last_seen() {
        let now = Timestamp(100_000);
        assert_eq!(node(None, false).status(now), NodeStatus::Unknown);
        assert_eq!(node(Some(90_000), false).status(now), NodeStatus::Up);
        assert_eq!(node(Some(70_000), false).status(now), NodeStatus::Up);
        assert_eq!(
            node(Some(69_999), false).status(now),
            NodeStatus::Unavailable
        );
        assert_eq!(
            node(Some(99_000), true).status(now),
            NodeStatus::Disconnected
        );
    }

    #[test]
    fn launch_host_follows_the_setting() {
        let mut n = node(None, false);
        assert_eq!(n.launch_host(), "10.0.0.5");
        n.use_hostname = true;
        assert_eq!(n.launch_host(), "sess-a.example");
    }
}
