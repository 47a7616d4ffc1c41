//! Access strings: a granted session request yields an `ssh` command line carrying a single-use,
//! expiring token bound to the requester and the request, and for an asset with RDP an `.rdp`
//! file whose user name carries the same token. The gateway redeems it at connect time (the user
//! still logs in with their own gateway password); the vault password never reaches the user.

use crate::requests::Actor;
use crate::{Workflow, WorkflowError, sha256_hex};
use gatehouse_audit::Entry;
use gatehouse_core::time::Timestamp;
use gatehouse_core::{AccessKind, AccessRequest, AccessToken, AuditKind, TargetSpec, User};
use gatehouse_core::{Asset, Node, nodes::network_for};
use gatehouse_store::{ACCESS_TOKENS, ASSETS, NETWORKS, NODES, REQUESTS};
use std::net::{IpAddr, ToSocketAddrs};

/// The login option that carries the token: `access=<token>@user@account@asset`.
pub const ACCESS_OPTION: &str = "access";

/// An issued access string. The token is shown once; only its hash is stored.
pub struct AccessString {
    pub request: String,
    /// The command line to run (contains the token).
    pub command: String,
    /// For an asset with an RDP endpoint (and RDP served): an `.rdp` file for mstsc or
    /// xfreerdp whose user name carries the same token. The token works once, by either.
    pub rdp_file: Option<String>,
    pub expires: Timestamp,
    /// The session node the strings point at, when a managed network holds the asset's address;
    /// `None`: this gateway.
    pub node: Option<String>,
}

impl std::fmt::Debug for AccessString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessString")
            .field("request", &self.request)
            .field("command", &"<redacted>")
            .field("rdp_file", &self.rdp_file.as_ref().map(|_| "<redacted>"))
            .field("expires", &self.expires)
            .field("node", &self.node)
            .finish()
    }
}

/// `host:port`, `[v6]:port` or a bare host; the host comes back without brackets.
fn endpoint(text: &str) -> (String, Option<u16>) {
    if let Some((host, port)) = text
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]:"))
    {
        return (host.to_string(), port.parse().ok());
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host.to_string(), Some(p)),
            Err(_) => (text.to_string(), None),
        },
        _ => (text.to_string(), None),
    }
}

/// An `.rdp` file (the text format mstsc and xfreerdp read: `name:type:value` lines, CRLF)
/// that connects to the gateway as `login`. No password is in it: the user types their own
/// gateway password, and NLA (CredSSP) is required, as the gateway requires it.
fn rdp_file(gateway: &str, login: &str, request: &AccessRequest) -> String {
    let (host, port) = endpoint(gateway);
    let address = match port {
        Some(p) if p != 3389 => format!("{host}:{p}"),
        _ => host,
    };
    let lines = [
        format!("full address:s:{address}"),
        format!("username:s:{login}"),
        "prompt for credentials:i:1".to_string(),
        "enablecredsspsupport:i:1".to_string(),
        "negotiate security layer:i:1".to_string(),
        // Warn (do not silently connect) when the gateway's certificate is not trusted.
        "authentication level:i:2".to_string(),
        "screen mode id:i:1".to_string(),
        "desktopwidth:i:1280".to_string(),
        "desktopheight:i:800".to_string(),
        "session bpp:i:32".to_string(),
        // Gatehouse request, for the user's eyes (mstsc ignores unknown names).
        format!(
            "gatehouse request:s:{} {}@{}",
            request.id, request.account, request.asset
        ),
    ];
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text
}

/// `host:port` of a session node's listener: the port it reported, else the usual one.
fn node_endpoint(node: &Node, reported: Option<u16>, usual: u16) -> String {
    let host = node.launch_host();
    let port = reported.unwrap_or(usual);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Workflow {
    /// Issues an access string for a granted session request (requester only).
    pub fn access_string(&self, actor: &Actor, id: &str) -> Result<AccessString, WorkflowError> {
        let request = self.get(actor, id)?;
        if request.requester != actor.user.name {
            return Err(WorkflowError::Forbidden(
                "only the requester gets an access string".into(),
            ));
        }
        if request.access != AccessKind::Session {
            return Err(WorkflowError::BadInput(format!(
                "request `{id}` is for a {}; access strings are for session requests",
                request.access
            )));
        }
        let now = Timestamp::now();
        if !request.usable_at(now) {
            return Err(WorkflowError::conflict(&request, "issue an access string"));
        }
        let token = crate::random_hex(20);
        let ttl = self.settings.access_token_seconds.saturating_mul(1000);
        let expires =
            Timestamp((now.0 + ttl).min(request.window_end.map(|e| e.0).unwrap_or(now.0 + ttl)));
        let record = AccessToken {
            request: request.id.clone(),
            user: actor.user.name.clone(),
            asset: request.asset.clone(),
            account: request.account.clone(),
            created: now,
            expires,
            used: None,
        };
        let hash = sha256_hex(token.as_bytes());
        self.store.write(|txn| {
            txn.put(&ACCESS_TOKENS, &hash, &record)?;
            self.auditor.record_in(
                txn,
                Entry::new(AuditKind::AccessTokenIssued, "access string issued")
                    .user(actor.user.name.to_string())
                    .target(request.target())
                    .client(actor.client.to_string())
                    .field("request", request.id.clone())
                    .field("token", hash[..12].to_string())
                    .field("expires", expires.0),
            )
        })?;
        let asset = self.store.get(&ASSETS, request.asset.as_str())?;
        let node = match &asset {
            Some(asset) => self.managing_node(asset)?,
            None => None,
        };
        let (ssh_endpoint, rdp_endpoint) = match &node {
            Some(node) => (
                Some(node_endpoint(node, node.ssh_port, 2222)),
                Some(node_endpoint(node, node.rdp_port, 3389)),
            ),
            None => (
                self.settings.ssh_endpoint.clone(),
                self.settings.rdp_endpoint.clone(),
            ),
        };
        let (host, port) = endpoint(ssh_endpoint.as_deref().unwrap_or("127.0.0.1:2222"));
        let port = port.map(|p| format!("-p {p} ")).unwrap_or_default();
        let login = format!(
            "{ACCESS_OPTION}={token}@{}@{}@{}",
            actor.user.name, request.account, request.asset
        );
        let command = format!("ssh {port}{login}@{host}");
        let has_rdp = asset.is_some_and(|a| a.rdp.is_some());
        let rdp_file = match (&rdp_endpoint, has_rdp) {
            (Some(endpoint), true) => Some(rdp_file(endpoint, &login, &request)),
            _ => None,
        };
        Ok(AccessString {
            request: request.id,
            command,
            rdp_file,
            expires,
            node: node.map(|n| n.id.to_string()),
        })
    }

    /// The session node whose managed network holds `asset`'s address (the most specific
    /// network), or `None` when no network does: then this gateway serves it. An asset named by
    /// host name is matched by the addresses the name resolves to, and only when networks are
    /// managed at all. A network whose node was removed from the cluster is an error: a string
    /// pointing at it would not work.
    fn managing_node(&self, asset: &Asset) -> Result<Option<Node>, WorkflowError> {
        let networks = self.store.list(&NETWORKS)?;
        if networks.is_empty() {
            return Ok(None);
        }
        let addresses: Vec<IpAddr> = match asset.address.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (asset.address.as_str(), asset.port)
                .to_socket_addrs()
                .map(|found| found.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        };
        let Some(managed) = addresses.iter().find_map(|ip| network_for(&networks, *ip)) else {
            return Ok(None);
        };
        let node = self.store.get(&NODES, managed.node.as_str())?;
        match node {
            Some(node) if node.deleted.is_none() => Ok(Some(node)),
            _ => Err(WorkflowError::Unavailable(format!(
                "the network `{}` of asset `{}` is managed by session node `{}`, which is removed from the cluster; ask an administrator to relink it or move the network",
                managed.network, asset.name, managed.node
            ))),
        }
    }

    /// Redeems an access token at connect time: it must exist, be unused and unexpired, belong
    /// to `user` and `target`, and its request must be usable. Marked used in the same
    /// transaction, so it works once. Every refusal is audited with its reason; the caller
    /// shows one line without it.
    pub fn redeem_access_token(
        &self,
        user: &User,
        token: &str,
        target: &TargetSpec,
        session_id: &str,
        client: &str,
    ) -> Result<AccessRequest, WorkflowError> {
        let hash = sha256_hex(token.as_bytes());
        let now = Timestamp::now();
        let refused = |why: String| -> WorkflowError {
            self.audit(
                Entry::new(AuditKind::AccessTokenRefused, why)
                    .user(user.name.to_string())
                    .target(target.to_string())
                    .session(session_id.to_string())
                    .client(client.to_string())
                    .field("token", hash[..12].to_string()),
            );
            WorkflowError::Unauthorized("the access token is unknown, used or expired".into())
        };
        let outcome = self.store.write(
            |txn| -> Result<Result<AccessRequest, String>, WorkflowError> {
                let Some(mut record) = txn.get(&ACCESS_TOKENS, &hash)? else {
                    return Ok(Err("unknown access token".into()));
                };
                if let Some(used) = record.used {
                    return Ok(Err(format!("access token already used at {}", used.0)));
                }
                if now >= record.expires {
                    return Ok(Err("access token expired".into()));
                }
                if record.user != user.name {
                    return Ok(Err(format!(
                        "access token of `{}` presented by `{}`",
                        record.user, user.name
                    )));
                }
                if record.asset != target.asset || record.account != target.account {
                    return Ok(Err(format!(
                        "access token for `{}@{}` used for `{target}`",
                        record.account, record.asset
                    )));
                }
                let Some(request) = txn.get(&REQUESTS, &record.request)? else {
                    return Ok(Err("the token's request no longer exists".into()));
                };
                if !request.usable_at(now) {
                    return Ok(Err(format!(
                        "the token's request `{}` is {}",
                        request.id, request.state
                    )));
                }
                record.used = Some(now);
                txn.put(&ACCESS_TOKENS, &hash, &record)?;
                Ok(Ok(request))
            },
        )?;
        outcome.map_err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AccessRequest {
        serde_json::from_value(serde_json::json!({
            "id": "r-0a1b2c", "requester": "alice", "asset": "win1",
            "account": "administrator", "access": "session", "reason": "",
            "duration_minutes": 60, "state": "available", "created": 0,
            "origin": "api", "approval_deadline": 0,
        }))
        .unwrap()
    }

    #[test]
    fn an_rdp_file_names_the_gateway_and_the_token_login_and_holds_no_password() {
        let login = "access=00ff@alice@administrator@win1";
        let text = rdp_file("gw.example.com:3390", login, &request());
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "full address:s:gw.example.com:3390");
        assert_eq!(lines[1], format!("username:s:{login}"));
        assert!(lines.contains(&"enablecredsspsupport:i:1"));
        assert!(lines.contains(&"prompt for credentials:i:1"));
        assert!(!text.to_lowercase().contains("password"));
        assert!(text.ends_with("\r\n"));
        // The default port is left out, as mstsc writes it.
        let text = rdp_file("gw.example.com:3389", login, &request());
        assert!(text.starts_with("full address:s:gw.example.com\r\n"));
    }
}
