//! The engine against a real store: every decision point (session, channels, release, review,
//! auto-approval, A2A), approval counts, and reloads that keep the old set on error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    Account, Asset, AssetGroup, Grant, Group, HostKeyPolicy, Name, Principal, TargetSpec, User,
};
use gatehouse_policy::{
    ChannelRequest, Clock, Denied, EngineSettings, NodeFacts, PolicyEngine, ReleaseKind,
    RequestFacts, SessionFacts,
};
use gatehouse_store::{ACCOUNTS, ASSET_GROUPS, ASSETS, GRANTS, GROUPS, Store, StoreError, USERS};
use std::path::Path;
use std::sync::Arc;

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn user(n: &str, groups: &[&str]) -> User {
    User {
        name: name(n),
        password_hash: None,
        public_keys: vec![],
        groups: groups.iter().map(|g| name(g)).collect(),
        email: None,
        rdp_secret: None,
        created: Timestamp(0),
    }
}

const A2A_POLICY: &str = r#"
@id("billing-reads-prod-from-the-lan")
permit (principal in Group::"apps", action == Action::"a2a_retrieve", resource in AssetGroup::"prod")
when { context.client.ip.isInRange(ip("10.0.0.0/8")) };
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    engine: PolicyEngine,
    policy_dir: std::path::PathBuf,
    grant_id: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
    let grant_id = "g-dbas".to_string();
    store
        .write(|t| -> Result<(), StoreError> {
            for (n, groups) in [
                ("alice", &["dbas", "security-approvers"][..]),
                ("carol", &["security-approvers"]),
                ("mallory", &["dbas"]),
                ("olga", &["on-call"]),
                ("ada", &["admins", "dbas"]),
                ("nina", &["cluster-admins"]),
            ] {
                t.put(&USERS, n, &user(n, groups))?;
            }
            for g in [
                "dbas",
                "security-approvers",
                "on-call",
                "admins",
                "apps",
                "cluster-admins",
            ] {
                t.put(
                    &GROUPS,
                    g,
                    &Group {
                        name: name(g),
                        description: String::new(),
                        parents: vec![],
                        created: Timestamp(0),
                    },
                )?;
            }
            t.put(
                &ASSET_GROUPS,
                "prod",
                &AssetGroup {
                    name: name("prod"),
                    description: String::new(),
                    parents: vec![],
                    created: Timestamp(0),
                },
            )?;
            t.put(
                &ASSETS,
                "db1",
                &Asset {
                    name: name("db1"),
                    address: "10.1.0.1".into(),
                    port: 22,
                    host_key: HostKeyPolicy::TrustOnFirstUse,
                    rdp: None,
                    telnet: None,
                    vnc: None,
                    groups: vec![name("prod")],
                    created: Timestamp(0),
                },
            )?;
            t.put(
                &ACCOUNTS,
                "db1/root",
                &Account {
                    name: name("root"),
                    asset: name("db1"),
                    id: "acc-1".into(),
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
                &grant_id,
                &Grant {
                    id: grant_id.clone(),
                    principal: Principal::Group(name("dbas")),
                    account: name("root"),
                    asset: name("db1"),
                    created: Timestamp(0),
                },
            )
        })
        .unwrap();
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    for f in [
        "base.cedar",
        "examples/release-approvals.cedar",
        "examples/on-call-auto-approve.cedar",
        "examples/port-forwarding-admins.cedar",
        "examples/cluster-admins.cedar",
    ] {
        let from = shipped.join(f);
        std::fs::copy(&from, policy_dir.join(from.file_name().unwrap())).unwrap();
    }
    std::fs::write(policy_dir.join("a2a.cedar"), A2A_POLICY).unwrap();
    let engine = PolicyEngine::open(
        EngineSettings {
            policy_dir: policy_dir.clone(),
            gateway: "gw-test".into(),
            time_zone: Some("Europe/Berlin".into()),
        },
        store,
    )
    .unwrap();
    Fixture {
        _dir: dir,
        engine,
        policy_dir,
        grant_id,
    }
}

fn facts(engine: &PolicyEngine) -> SessionFacts {
    SessionFacts {
        session_id: "s-1".into(),
        protocol: "ssh".into(),
        client: "10.0.0.7:50000".parse().unwrap(),
        pairs: vec![],
        authenticated_with: vec!["password".into()],
        ticket_verified: false,
        time: engine.clock().now(),
        node: None,
        destination: None,
    }
}

fn request(id: &str, requester: &str, access: &str, ticket: &str, verified: bool) -> RequestFacts {
    RequestFacts {
        id: id.into(),
        requester: requester.into(),
        asset: "db1".into(),
        account: "root".into(),
        access: access.into(),
        reason: "test".into(),
        ticket: ticket.into(),
        ticket_verified: verified,
        duration_minutes: 60,
        emergency: false,
    }
}

fn target() -> TargetSpec {
    "root@db1".parse().unwrap()
}

#[test]
fn sessions_and_channels() {
    let f = fixture();
    let e = &f.engine;
    let alice = user("alice", &["dbas", "security-approvers"]);
    let auth = e.authorize_session(&alice, &target(), facts(e)).unwrap();
    assert_eq!(auth.reasons(), [format!("grant:{}", f.grant_id)]);
    let shell = e.authorize_channel(&auth, &ChannelRequest::Shell);
    assert!(shell.permitted);
    assert_eq!(shell.reasons, ["session-channels"]);
    let forward = ChannelRequest::DirectTcpip {
        host: "localhost".into(),
        port: 5432,
    };
    let denied = e.authorize_channel(&auth, &forward);
    assert!(!denied.permitted);
    assert_eq!(denied.reasons, ["default-deny"]);

    let ada = user("ada", &["admins", "dbas"]);
    let auth = e.authorize_session(&ada, &target(), facts(e)).unwrap();
    assert!(e.authorize_channel(&auth, &forward).permitted);
    let smtp = ChannelRequest::DirectTcpip {
        host: "mail".into(),
        port: 25,
    };
    assert_eq!(
        e.authorize_channel(&auth, &smtp).reasons,
        ["no-forwarding-to-smtp"]
    );

    let olga = user("olga", &["on-call"]);
    match e.authorize_session(&olga, &target(), facts(e)) {
        Err(Denied::NotPermitted { decision, .. }) => {
            assert_eq!(decision.reasons(), ["default-deny"])
        }
        other => panic!("{other:?}"),
    }
    let missing: TargetSpec = "root@db9".parse().unwrap();
    assert!(matches!(
        e.authorize_session(&alice, &missing, facts(e)),
        Err(Denied::NoSuchAsset(_))
    ));
}

#[test]
fn approvals_are_counted_by_policy() {
    let f = fixture();
    let e = &f.engine;
    let alice = user("alice", &["dbas", "security-approvers"]);
    let carol = user("carol", &["security-approvers"]);
    let mallory = user("mallory", &["dbas"]);
    let pw = request("req-1", "alice", "password", "", false);

    let approve = e.decide_request(&carol, "approve", &pw, 0).unwrap();
    assert!(approve.allowed);
    assert_eq!(approve.policies, ["security-approvers-review"]);
    let own = e.decide_request(&alice, "approve", &pw, 0).unwrap();
    assert!(!own.allowed);
    assert_eq!(own.policies, ["no-self-review"]);
    assert!(
        !e.decide_request(&mallory, "reject", &pw, 0)
            .unwrap()
            .allowed
    );

    assert_eq!(e.required_approvals(&alice, &pw).unwrap(), Some(2));
    let granted = e.decide_request(&alice, "grant_request", &pw, 2).unwrap();
    assert_eq!(granted.policies, ["prod-password-needs-two-approvals"]);
    // No rule grants a session request, however many approve it.
    let session = request("req-2", "alice", "session", "", false);
    assert_eq!(e.required_approvals(&alice, &session).unwrap(), None);

    let olga = user("olga", &["on-call"]);
    let incident = request("req-3", "olga", "session", "INC-77", true);
    let auto = e
        .decide_request(&olga, "auto_approve", &incident, 0)
        .unwrap();
    assert_eq!(auto.policies, ["on-call-auto-approve"]);
    let unverified = request("req-4", "olga", "session", "INC-77", false);
    assert!(
        !e.decide_request(&olga, "auto_approve", &unverified, 0)
            .unwrap()
            .allowed
    );
    assert!(e.decide_request(&olga, "fly", &incident, 0).is_err());

    // Release: nobody by default; the approved-request link is the workflow's (issue 5).
    let release = e
        .authorize_release(
            &alice,
            &target(),
            ReleaseKind::Password,
            &facts(e),
            Some(&pw),
        )
        .unwrap();
    assert!(!release.allowed);
    assert_eq!(release.reasons(), ["default-deny"]);
}

#[test]
fn a2a_retrieval() {
    let f = fixture();
    let e = &f.engine;
    let groups = vec!["apps".to_string()];
    let lan = e
        .authorize_a2a(
            "billing",
            &groups,
            &target(),
            "10.2.3.4:443".parse().unwrap(),
        )
        .unwrap();
    assert!(lan.allowed);
    assert_eq!(lan.policies, ["billing-reads-prod-from-the-lan"]);
    let outside = e
        .authorize_a2a(
            "billing",
            &groups,
            &target(),
            "192.0.2.1:443".parse().unwrap(),
        )
        .unwrap();
    assert!(!outside.allowed);
    let stranger = e
        .authorize_a2a("other", &[], &target(), "10.2.3.4:443".parse().unwrap())
        .unwrap();
    assert!(!stranger.allowed);
}

#[test]
fn cluster_administration_is_a_cedar_decision() {
    use gatehouse_policy::AdminAction;
    let f = fixture();
    let e = &f.engine;
    let client = "10.2.3.4:50000".parse().unwrap();
    let nina = user("nina", &["cluster-admins"]);
    for action in [AdminAction::ViewCluster, AdminAction::ManageCluster] {
        let decision = e.authorize_admin(&nina, action, client).unwrap();
        assert!(decision.allowed, "{action:?}");
        assert_eq!(decision.policies, ["cluster-admins-manage"]);
    }
    let alice = user("alice", &["dbas", "security-approvers"]);
    let decision = e
        .authorize_admin(&alice, AdminAction::ViewCluster, client)
        .unwrap();
    assert!(!decision.allowed, "deny by default");
}

/// A session on a session node carries the node (`context.node`, a `Node` with its networks) in
/// the session's and the channels' contexts; a policy may name it.
#[test]
fn the_session_node_is_in_the_context() {
    let f = fixture();
    let e = &f.engine;
    std::fs::write(
        f.policy_dir.join("nodes.cedar"),
        r#"
@id("olga-through-sess-a")
permit (principal == User::"olga", action == Action::"ssh_session", resource in AssetGroup::"prod")
when { context has node && context.node == Node::"sess-a" && context.node.networks.contains("10.1.0.0/16") };

@id("no-shell-on-sess-b")
forbid (principal, action == Action::"ssh_shell", resource)
when { context has node && context.node.name == "sess-b" };
"#,
    )
    .unwrap();
    e.reload().unwrap();
    let on = |id: &str| SessionFacts {
        node: Some(NodeFacts {
            id: id.into(),
            networks: vec!["10.1.0.0/16".into()],
        }),
        ..facts(e)
    };
    let olga = user("olga", &["on-call"]);
    assert!(matches!(
        e.authorize_session(&olga, &target(), facts(e)),
        Err(Denied::NotPermitted { .. })
    ));
    let auth = e.authorize_session(&olga, &target(), on("sess-a")).unwrap();
    assert_eq!(auth.reasons(), ["olga-through-sess-a"]);
    assert!(matches!(
        e.authorize_session(&olga, &target(), on("sess-b")),
        Err(Denied::NotPermitted { .. })
    ));
    // Channels see the node too.
    let alice = user("alice", &["dbas", "security-approvers"]);
    let here = e.authorize_session(&alice, &target(), facts(e)).unwrap();
    assert!(e.authorize_channel(&here, &ChannelRequest::Shell).permitted);
    let there = e
        .authorize_session(&alice, &target(), on("sess-b"))
        .unwrap();
    let shell = e.authorize_channel(&there, &ChannelRequest::Shell);
    assert!(!shell.permitted);
    assert_eq!(shell.reasons, ["no-shell-on-sess-b"]);
}

#[test]
fn a_failed_reload_keeps_the_previous_set() {
    let f = fixture();
    let e = &f.engine;
    let before = e.bundle().policy_count();
    std::fs::write(
        f.policy_dir.join("zz-broken.cedar"),
        "@id(\"x\")\nforbid (principal, action, resource)\nwhen { context.nope };\n",
    )
    .unwrap();
    let err = e.reload().unwrap_err().to_string();
    assert!(err.contains("zz-broken.cedar:3:"), "{err}");
    assert_eq!(e.bundle().policy_count(), before);
    let alice = user("alice", &["dbas", "security-approvers"]);
    assert!(e.authorize_session(&alice, &target(), facts(e)).is_ok());
    // Nothing changed since the failed attempt: the watcher does not retry it.
    assert!(e.reload_if_changed().is_none());

    std::fs::write(
        f.policy_dir.join("zz-broken.cedar"),
        "@id(\"freeze\")\nforbid (principal, action in Action::\"session\", resource);\n",
    )
    .unwrap();
    let report = e.reload_if_changed().expect("a change").unwrap();
    assert_eq!(report.grant_links, 1);
    match e.authorize_session(&alice, &target(), facts(e)) {
        Err(Denied::NotPermitted { decision, .. }) => assert_eq!(decision.policies, ["freeze"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn local_time_in_the_configured_zone() {
    let berlin = Clock::new(Some("Europe/Berlin")).unwrap();
    let t = berlin.parse("2026-11-24T23:30:00Z").unwrap();
    assert_eq!((t.weekday, t.hour, t.minute), ("wed", 0, 30));
    assert_eq!(t.date, "2026-11-25");
    let local = berlin.parse("2026-11-24T10:00").unwrap();
    assert_eq!((local.weekday, local.hour), ("tue", 10));
    assert!(Clock::new(Some("Mars/Olympus")).is_err());
}
