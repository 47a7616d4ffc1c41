//! "My access": every account a person can do something with, and how, from Cedar (not a copy
//! of the rules): a session now, a session after approval, a password or key release now or
//! after approval. Used by the portal's first page; nothing is audited (it decides nothing).

use crate::requests::Actor;
use crate::{Workflow, WorkflowError};
use gatehouse_core::{Account, Asset, TargetSpec};
use gatehouse_store::{ACCOUNTS, ASSETS};
use serde::Serialize;

/// How a person can use an account one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    /// Policy permits it directly (or a granted request is in play).
    Now,
    /// Policy lets the person ask: it needs an approved request.
    Request,
}

/// One account and the ways the person can use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessEntry {
    /// `account@asset`.
    pub target: String,
    pub account: String,
    pub asset: String,
    /// Protocols the asset speaks: `ssh`, and `rdp` when it has an RDP endpoint.
    pub protocols: Vec<String>,
    pub ssh: Option<Way>,
    pub rdp: Option<Way>,
    /// Showing the vaulted password or private key (only when the account has one).
    pub password: Option<Way>,
    pub private_key: Option<Way>,
}

impl Workflow {
    /// The accounts `actor` can use, with how; `filter` keeps those whose target contains it.
    pub fn my_access(
        &self,
        actor: &Actor,
        filter: Option<&str>,
    ) -> Result<Vec<AccessEntry>, WorkflowError> {
        let facts = self.facts(actor, false);
        let assets: Vec<Asset> = self.store.list(&ASSETS)?;
        let accounts: Vec<Account> = self.store.list(&ACCOUNTS)?;
        let mut entries = Vec::new();
        for account in accounts {
            let target_text = format!("{}@{}", account.name, account.asset);
            if filter.is_some_and(|f| !target_text.contains(f)) {
                continue;
            }
            let Ok(target) = target_text.parse::<TargetSpec>() else {
                continue;
            };
            let Some(asset) = assets.iter().find(|a| a.name == account.asset) else {
                continue;
            };
            // Asked as the protocol would ask it (`context.protocol`).
            let allowed = |action: &str| {
                let mut facts = facts.clone();
                match action {
                    "ssh_session" => facts.protocol = "ssh".into(),
                    "rdp_session" => facts.protocol = "rdp".into(),
                    _ => {}
                }
                self.policy
                    .decide_access(&actor.user, &target, action, &facts, None)
                    .is_ok_and(|d| d.allowed)
            };
            let may_ask = allowed("request_access");
            let granted = self
                .usable_session_request(&actor.user.name, &target)
                .ok()
                .flatten()
                .is_some();
            let way = |action: &str, in_play: bool| {
                if allowed(action) || in_play {
                    Some(Way::Now)
                } else if may_ask {
                    Some(Way::Request)
                } else {
                    None
                }
            };
            let mut protocols = vec!["ssh".to_string()];
            let ssh = way("ssh_session", granted);
            let rdp = if asset.rdp.is_some() {
                protocols.push("rdp".into());
                way("rdp_session", granted)
            } else {
                None
            };
            let password = account
                .password
                .as_ref()
                .and_then(|_| way("release_password", false));
            let private_key = account
                .private_key
                .as_ref()
                .and_then(|_| way("release_key", false));
            if ssh.is_none() && rdp.is_none() && password.is_none() && private_key.is_none() {
                continue;
            }
            entries.push(AccessEntry {
                target: target_text,
                account: account.name.to_string(),
                asset: account.asset.to_string(),
                protocols,
                ssh,
                rdp,
                password,
                private_key,
            });
        }
        entries.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(entries)
    }
}
