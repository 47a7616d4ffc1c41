//! A gateway world (store, policy engine, grants) that makes real `TargetAuthorization`s, and the
//! real FreeRDP peers, shared with the end-to-end tests (`tests/support/rdp_peers.rs`).
#![allow(dead_code)]

#[path = "../../../../tests/support/rdp_peers.rs"]
mod rdp_peers;

pub use rdp_peers::*;

use gatehouse_core::time::Timestamp;
use gatehouse_core::{Account, Asset, Grant, HostKeyPolicy, Name, Principal, User};
use gatehouse_policy::{EngineSettings, PolicyEngine};
use gatehouse_store::{ACCOUNTS, ASSETS, GRANTS, Store, StoreError, USERS};
use std::path::Path;
use std::sync::Arc;

/// A store with one gateway user granted one RDP account on one asset, and the policy engine
/// over it: the only way to get a `TargetAuthorization`.
pub struct World {
    pub engine: PolicyEngine,
    _dir: tempfile::TempDir,
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

impl World {
    pub fn new(user: &str, account: &str, asset: &str, port: u16) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
        store
            .write(|t| -> Result<(), StoreError> {
                t.put(
                    &USERS,
                    user,
                    &User {
                        name: name(user),
                        password_hash: None,
                        public_keys: vec![],
                        groups: vec![],
                        email: None,
                        rdp_secret: None,
                        created: Timestamp(0),
                    },
                )?;
                t.put(
                    &ASSETS,
                    asset,
                    &Asset {
                        name: name(asset),
                        address: "127.0.0.1".into(),
                        port,
                        host_key: HostKeyPolicy::TrustOnFirstUse,
                        rdp: None,
                        telnet: None,
                        vnc: None,
                        groups: vec![],
                        created: Timestamp(0),
                    },
                )?;
                t.put(
                    &ACCOUNTS,
                    &format!("{asset}/{account}"),
                    &Account {
                        name: name(account),
                        asset: name(asset),
                        id: "acc-rdp".into(),
                        password: None,
                        private_key: None,
                        credential_plugin: None,
                        created: Timestamp(0),
                        change_after_checkin: false,
                        change_due: None,
                        secret_updated: Timestamp(0),
                    },
                )?;
                t.put(
                    &GRANTS,
                    "g-rdp",
                    &Grant {
                        id: "g-rdp".into(),
                        principal: Principal::User(name(user)),
                        account: name(account),
                        asset: name(asset),
                        created: Timestamp(0),
                    },
                )
            })
            .unwrap();
        let policy_dir = dir.path().join("policies");
        std::fs::create_dir_all(&policy_dir).unwrap();
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/base.cedar");
        std::fs::copy(base, policy_dir.join("base.cedar")).unwrap();
        let engine = PolicyEngine::open(
            EngineSettings {
                policy_dir,
                gateway: "gw-rdp-test".into(),
                time_zone: Some("UTC".into()),
            },
            store,
        )
        .unwrap();
        World { engine, _dir: dir }
    }

    /// The user record the store holds for `user` (no password hash, no groups).
    pub fn user_record(user: &str) -> User {
        User {
            name: name(user),
            password_hash: None,
            public_keys: vec![],
            groups: vec![],
            email: None,
            rdp_secret: None,
            created: Timestamp(0),
        }
    }
}
