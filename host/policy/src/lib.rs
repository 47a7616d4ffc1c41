//! Authorization: every access decision is made here, and the right to dial a target is a value
//! only this crate can construct ([`TargetAuthorization`]).
//!
//! Until Cedar lands (a later issue), the decision is an explicit entitlement check: a grant for
//! the user, or for one of the user's groups, on the account. The functions here are the decision
//! points Cedar will take over; their callers will not change.

use gatehouse_core::{Account, Asset, Grant, Name, Principal, TargetSpec, User};
use gatehouse_store::{ACCOUNTS, ASSETS, GRANTS, Store, StoreError, account_key};
use std::sync::Arc;

/// Proof that a user may open a session to an account. Only [`Authorizer`] creates it; the SSH
/// dialer requires it, so a target cannot be dialed without a decision.
#[derive(Debug, Clone)]
pub struct TargetAuthorization {
    user: User,
    asset: Asset,
    account: Account,
    reasons: Vec<String>,
}

impl TargetAuthorization {
    pub fn user(&self) -> &User {
        &self.user
    }
    pub fn asset(&self) -> &Asset {
        &self.asset
    }
    pub fn account(&self) -> &Account {
        &self.account
    }
    /// The ids of the grants (later: Cedar policies) that permitted this.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
}

/// Why a session was refused. `Display` is what the audit trail gets; the user always sees the
/// same message for every variant (no existence oracle).
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("asset `{0}` does not exist")]
    NoSuchAsset(String),
    #[error("account `{0}` does not exist")]
    NoSuchAccount(String),
    #[error("no grant for `{user}` on `{target}`")]
    NotEntitled { user: String, target: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Kinds of SSH channels and channel requests, each a decision point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Shell,
    Exec,
    Subsystem,
    DirectTcpip,
    ForwardedTcpip,
    X11,
    AgentForwarding,
}

impl ChannelKind {
    pub fn label(self) -> &'static str {
        match self {
            ChannelKind::Shell => "shell",
            ChannelKind::Exec => "exec",
            ChannelKind::Subsystem => "subsystem",
            ChannelKind::DirectTcpip => "direct-tcpip",
            ChannelKind::ForwardedTcpip => "forwarded-tcpip",
            ChannelKind::X11 => "x11",
            ChannelKind::AgentForwarding => "agent-forwarding",
        }
    }
}

/// A channel decision with the reasons that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDecision {
    pub permitted: bool,
    pub reasons: Vec<String>,
}

/// Makes access decisions from the store.
#[derive(Debug, Clone)]
pub struct Authorizer {
    store: Arc<Store>,
}

impl Authorizer {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// Decides whether `user` may open a session to `target`.
    pub fn authorize_session(
        &self,
        user: &User,
        target: &TargetSpec,
    ) -> Result<TargetAuthorization, Denied> {
        let asset: Asset = self
            .store
            .get(&ASSETS, target.asset.as_str())?
            .ok_or_else(|| Denied::NoSuchAsset(target.asset.to_string()))?;
        let account: Account = self
            .store
            .get(
                &ACCOUNTS,
                &account_key(target.asset.as_str(), target.account.as_str()),
            )?
            .ok_or_else(|| Denied::NoSuchAccount(target.to_string()))?;
        let grants: Vec<Grant> = self.store.list(&GRANTS)?;
        let reasons: Vec<String> = grants
            .iter()
            .filter(|g| g.account == target.account && g.asset == target.asset)
            .filter(|g| applies_to(&g.principal, user))
            .map(|g| format!("grant:{}", g.id))
            .collect();
        if reasons.is_empty() {
            return Err(Denied::NotEntitled {
                user: user.name.to_string(),
                target: target.to_string(),
            });
        }
        Ok(TargetAuthorization {
            user: user.clone(),
            asset,
            account,
            reasons,
        })
    }

    /// Decides whether a channel or channel request may be used in an authorized session.
    /// Interim rule: terminal, exec and subsystems are permitted; forwarding of ports, agents and
    /// X11 is denied (Cedar policies will be able to permit them).
    pub fn authorize_channel(
        &self,
        _session: &TargetAuthorization,
        kind: ChannelKind,
    ) -> ChannelDecision {
        let permitted = matches!(
            kind,
            ChannelKind::Shell | ChannelKind::Exec | ChannelKind::Subsystem
        );
        let rule = if permitted {
            "builtin:session-channels"
        } else {
            "builtin:deny-forwarding"
        };
        ChannelDecision {
            permitted,
            reasons: vec![rule.to_string()],
        }
    }
}

fn applies_to(principal: &Principal, user: &User) -> bool {
    match principal {
        Principal::User(name) => name == &user.name,
        Principal::Group(group) => user.groups.iter().any(|g: &Name| g == group),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{HostKeyPolicy, time::Timestamp};

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn user(n: &str, groups: &[&str]) -> User {
        User {
            name: name(n),
            password_hash: None,
            public_keys: vec![],
            groups: groups.iter().map(|g| name(g)).collect(),
            created: Timestamp(0),
        }
    }

    #[test]
    fn decisions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
        store
            .write(|t| -> Result<(), StoreError> {
                t.put(
                    &ASSETS,
                    "db1",
                    &Asset {
                        name: name("db1"),
                        address: "127.0.0.1".into(),
                        port: 22,
                        host_key: HostKeyPolicy::TrustOnFirstUse,
                        created: Timestamp(0),
                    },
                )?;
                t.put(
                    &ACCOUNTS,
                    "db1/root",
                    &Account {
                        name: name("root"),
                        asset: name("db1"),
                        id: "a1".into(),
                        password: None,
                        private_key: None,
                        created: Timestamp(0),
                        secret_updated: Timestamp(0),
                    },
                )?;
                t.put(
                    &GRANTS,
                    "g1",
                    &Grant {
                        id: "g1".into(),
                        principal: Principal::Group(name("ops")),
                        account: name("root"),
                        asset: name("db1"),
                        created: Timestamp(0),
                    },
                )
            })
            .unwrap();
        let authz = Authorizer::new(store);
        let target: TargetSpec = "root@db1".parse().unwrap();
        let ok = authz
            .authorize_session(&user("alice", &["ops"]), &target)
            .unwrap();
        assert_eq!(ok.reasons(), ["grant:g1"]);
        let cases = [
            (
                user("bob", &[]),
                "root@db1",
                "no grant for `bob` on `root@db1`",
            ),
            (
                user("alice", &["ops"]),
                "root@db2",
                "asset `db2` does not exist",
            ),
            (
                user("alice", &["ops"]),
                "admin@db1",
                "account `admin@db1` does not exist",
            ),
        ];
        for (u, t, expected) in cases {
            let err = authz
                .authorize_session(&u, &t.parse().unwrap())
                .unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        let forward = authz.authorize_channel(&ok, ChannelKind::DirectTcpip);
        assert!(!forward.permitted);
        assert!(authz.authorize_channel(&ok, ChannelKind::Shell).permitted);
    }
}
