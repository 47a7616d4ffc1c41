//! An RDP connection as the access decisions see it (`crate::access_gate`). RDP has no prompt
//! the gateway controls before the session, so a plugin's question is answered from the
//! login's `key=value@` options (`otp=123456@alice@administrator@win1`), or the login is
//! refused with the key to give; a connection held for approval just waits (after NLA).

use super::Session;
use crate::access_gate::Gate;
use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::{AccessRequest, Asset, AuditKind, LoginSpec};
use gatehouse_plugin_host::{Protocol, Question};
use gatehouse_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

impl Gate for Session {
    const PROTOCOL: &'static str = "rdp";
    const LABEL: &'static str = "RDP";
    const PLUGIN_PROTOCOL: Protocol = Protocol::Rdp;

    fn id(&self) -> &str {
        &self.id
    }

    fn client(&self) -> SocketAddr {
        self.client
    }

    fn store(&self) -> &Arc<Store> {
        &self.services.store
    }

    fn auditor(&self) -> &Auditor {
        &self.services.auditor
    }

    fn entry(&self, kind: AuditKind, detail: String) -> Entry {
        Session::entry(self, kind, detail)
    }

    fn port(asset: &Asset) -> u16 {
        asset.rdp.as_ref().map(|r| r.port).unwrap_or(3389)
    }

    async fn answer(&self, question: &Question, login: &LoginSpec) -> Result<String, String> {
        if let Some(answer) = login.option(&question.key) {
            return Ok(answer.to_string());
        }
        let rest = match &login.target {
            Ok(t) => format!("{}@{t}", login.user),
            Err(_) => login.user.to_string(),
        };
        Err(format!(
            "a plugin asks `{}` ({}), which an RDP login cannot prompt for: give it in the user name as `{}=<answer>@{}`",
            question.key,
            question.prompt.trim(),
            question.key,
            rest
        ))
    }

    async fn held(&self, _request: &AccessRequest, _wait: Duration) {}

    fn destination(&self) -> Option<SocketAddr> {
        self.arrived.as_ref().map(|a| a.arrival.destination)
    }

    fn source(&self) -> Option<std::net::IpAddr> {
        self.arrived.as_ref().and_then(|a| a.source)
    }
}
