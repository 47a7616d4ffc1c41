//! Joins over a real cluster port on loopback (rustls both ends, the store on disk): the happy
//! path, rejoin, relink after a soft delete, hard delete, heartbeats, and every join error an
//! operator can meet, each with the words that say what to do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_audit::Auditor;
use gatehouse_cluster::control::{self, Deleted, NodeEdit};
use gatehouse_cluster::node::{self, ControlAddress, JoinOptions};
use gatehouse_cluster::wire::{Heartbeat, NodeCall};
use gatehouse_cluster::{ClusterCa, ClusterError, Control, NodeIdentity, RefusalKind, Thumbprint};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{NodeStatus, SecretString};
use gatehouse_store::{NODES, Store};
use std::sync::Arc;
use std::time::Duration;

struct World {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    store: Arc<Store>,
    auditor: Arc<Auditor>,
    pin: Thumbprint,
    port: u16,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl World {
    async fn start(names: &[&str]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let store = Arc::new(Store::open(&root.join("gatehouse.redb")).unwrap());
        let auditor = Arc::new(Auditor::new(store.clone()));
        let ca = ClusterCa::generate().unwrap();
        let pin = ca.thumbprint().unwrap();
        let control = Arc::new(Control::new(store.clone(), auditor.clone(), ca, "test"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        tokio::spawn(async move {
            control
                .serve(listener, &names, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        World {
            _dir: dir,
            root,
            store,
            auditor,
            pin,
            port,
            _stop: stop,
        }
    }

    fn token(&self, lifetime: Duration) -> SecretString {
        control::issue_token(&self.store, &self.auditor, lifetime, "admin")
            .unwrap()
            .token
    }

    fn options(&self, host: &str, token: Option<SecretString>, node_id: &str) -> JoinOptions {
        JoinOptions {
            control: ControlAddress::parse(&format!("https://{host}:{}", self.port)).unwrap(),
            also: vec![],
            token,
            pin: self.pin.clone(),
            node_id: node_id.to_string(),
            hostname: format!("{node_id}.example"),
            address: String::new(),
            description: "test node".into(),
            version: "test".into(),
        }
    }

    /// A join from 127.0.0.1 with (a copy of) `token` that must be refused: its kind and message.
    async fn refused(&self, token: &SecretString, node_id: &str) -> (RefusalKind, String) {
        let copy = SecretString::new(token.expose().to_string());
        refusal_kind(
            self.join("x", self.options("127.0.0.1", Some(copy), node_id))
                .await,
        )
    }

    fn node_dir(&self, name: &str) -> std::path::PathBuf {
        self.root.join(name)
    }

    async fn join(
        &self,
        dir: &str,
        options: JoinOptions,
    ) -> Result<node::JoinOutcome, ClusterError> {
        node::join(&self.node_dir(dir), options).await
    }
}

fn refusal_kind(result: Result<node::JoinOutcome, ClusterError>) -> (RefusalKind, String) {
    match result {
        Err(ClusterError::Refused(r)) => (r.kind, r.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn join_list_heartbeat_soft_delete_relink_hard_delete() {
    let world = World::start(&["127.0.0.1", "localhost"]).await;
    let token = world.token(Duration::from_secs(900));
    let outcome = world
        .join("a", world.options("127.0.0.1", Some(token), "sess-a"))
        .await
        .unwrap();
    assert!(!outcome.relinked);
    let node = world.store.get(&NODES, "sess-a").unwrap().unwrap();
    assert_eq!(node.thumbprint, outcome.identity.thumbprint().to_string());
    assert_eq!(
        node.address, "127.0.0.1",
        "the source address when none is given"
    );
    assert_eq!(node.hostname, "sess-a.example");

    // The saved identity works on its own: heartbeats update the node.
    let identity = NodeIdentity::load(&world.node_dir("a")).unwrap().unwrap();
    let client = identity.client().unwrap();
    client
        .call(NodeCall::Heartbeat(Heartbeat {
            ssh_port: Some(2222),
            rdp_port: Some(3389),
            version: "test".into(),
            hostname: "sess-a.example".into(),
        }))
        .await
        .unwrap();
    let node = world.store.get(&NODES, "sess-a").unwrap().unwrap();
    assert_eq!(node.ssh_port, Some(2222));
    assert_eq!(node.status(Timestamp::now()), NodeStatus::Up);

    // Edit.
    let edited = control::edit_node(
        &world.store,
        &world.auditor,
        "sess-a",
        &NodeEdit {
            description: Some("rack 4".into()),
            address: Some("10.9.0.5".into()),
            use_hostname: Some(true),
        },
        "admin",
    )
    .unwrap();
    assert_eq!(edited.launch_host(), "sess-a.example");
    control::add_network(
        &world.store,
        &world.auditor,
        "10.9.0.0/24",
        "sess-a",
        "",
        "admin",
    )
    .unwrap();

    // Rejoin with the node's own certificate needs no token and keeps the record.
    let mut again = world.options("127.0.0.1", None, "sess-a");
    again.address = "10.9.0.6".into();
    // No --description: the administrator's stays.
    again.description = String::new();
    let outcome = world.join("a", again).await.unwrap();
    assert!(outcome.rejoined);
    let node = world.store.get(&NODES, "sess-a").unwrap().unwrap();
    assert_eq!(node.address, "10.9.0.6");
    assert_eq!(node.description, "rack 4");

    // Soft delete: the node's certificate stops working, its networks stay.
    assert_eq!(
        control::delete_node(&world.store, &world.auditor, "sess-a", false, "admin").unwrap(),
        Deleted::Soft
    );
    assert!(control::list_nodes(&world.store, false).unwrap().is_empty());
    assert_eq!(control::list_nodes(&world.store, true).unwrap().len(), 1);
    let err = client
        .call(NodeCall::Heartbeat(Heartbeat::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClusterError::Refused(r) if r.kind == RefusalKind::NotAMember),
        "{err}"
    );

    // Relink: a new join with the same id (a fresh data directory) reuses the record.
    let token = world.token(Duration::from_secs(900));
    let mut relink = world.options("127.0.0.1", Some(token), "sess-a");
    relink.description = String::new();
    let outcome = world.join("a2", relink).await.unwrap();
    assert!(outcome.relinked);
    let node = world.store.get(&NODES, "sess-a").unwrap().unwrap();
    assert!(node.deleted.is_none());
    assert_eq!(node.description, "rack 4");
    assert_eq!(
        world.store.list(&gatehouse_store::NETWORKS).unwrap().len(),
        1
    );

    // Delete twice: soft, then hard (with its networks).
    control::delete_node(&world.store, &world.auditor, "sess-a", false, "admin").unwrap();
    assert_eq!(
        control::delete_node(&world.store, &world.auditor, "sess-a", false, "admin").unwrap(),
        Deleted::Hard { networks: 1 }
    );
    assert!(world.store.get(&NODES, "sess-a").unwrap().is_none());
    assert!(
        world
            .store
            .list(&gatehouse_store::NETWORKS)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn join_errors_say_what_to_do() {
    let world = World::start(&["127.0.0.1"]).await;

    // Unknown token.
    let (kind, message) = refusal_kind(
        world
            .join(
                "x",
                world.options(
                    "127.0.0.1",
                    Some(SecretString::new("ghj_nope".into())),
                    "sess-x",
                ),
            )
            .await,
    );
    assert_eq!(kind, RefusalKind::TokenUnknown);
    assert!(message.contains("gatehouse node token"), "{message}");

    // Expired token.
    let token = world.token(Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (kind, message) = refusal_kind(
        world
            .join("x", world.options("127.0.0.1", Some(token), "sess-x"))
            .await,
    );
    assert_eq!(kind, RefusalKind::TokenExpired);
    assert!(message.contains("expired"), "{message}");

    // Missing and invalid node ids; the token survives both.
    let token = world.token(Duration::from_secs(900));
    let copy = || Some(SecretString::new(token.expose().to_string()));
    let (kind, message) = world.refused(&token, " ").await;
    assert_eq!(kind, RefusalKind::NodeIdMissing);
    assert!(message.contains("--node-id"), "{message}");
    let (kind, message) = world.refused(&token, "bad id!").await;
    assert_eq!(kind, RefusalKind::NodeIdInvalid);
    assert!(message.contains("`bad id!`"), "{message}");

    // Used once, then unknown.
    world
        .join("ok", world.options("127.0.0.1", copy(), "sess-ok"))
        .await
        .unwrap();
    let (kind, _) = world.refused(&token, "sess-y").await;
    assert_eq!(kind, RefusalKind::TokenUnknown, "a token joins once");

    // Taken id.
    let token = world.token(Duration::from_secs(900));
    let (kind, message) = refusal_kind(
        world
            .join("x", world.options("127.0.0.1", Some(token), "sess-ok"))
            .await,
    );
    assert_eq!(kind, RefusalKind::NodeIdTaken);
    assert!(
        message.contains("gatehouse node delete sess-ok"),
        "{message}"
    );

    // The name the certificate carries vs the address given.
    let token = world.token(Duration::from_secs(900));
    let err = world
        .join("x", world.options("localhost", Some(token), "sess-z"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClusterError::NotTrusted { .. }), "{text}");
    assert!(
        text.contains("`127.0.0.1`") && text.contains("`localhost`"),
        "{text}"
    );

    // A wrong thumbprint.
    let token = world.token(Duration::from_secs(900));
    let mut options = world.options("127.0.0.1", Some(token), "sess-z");
    options.pin = ClusterCa::generate().unwrap().thumbprint().unwrap();
    let text = world.join("x", options).await.unwrap_err().to_string();
    assert!(
        text.contains(world.pin.as_str()),
        "names the thumbprint found: {text}"
    );

    // Nothing listening.
    let token = world.token(Duration::from_secs(900));
    let mut options = world.options("127.0.0.1", Some(token), "sess-z");
    options.control.port = 1;
    let err = world.join("x", options).await.unwrap_err();
    assert!(matches!(err, ClusterError::Unreachable { .. }), "{err}");

    // None of the failed joins left a node behind.
    let nodes: Vec<String> = control::list_nodes(&world.store, true)
        .unwrap()
        .into_iter()
        .map(|n| n.id.to_string())
        .collect();
    assert_eq!(nodes, vec!["sess-ok".to_string()]);
}

#[tokio::test]
async fn refused_joins_are_throttled_per_address() {
    let world = World::start(&["127.0.0.1"]).await;
    for _ in 0..10 {
        let bad = world.options(
            "127.0.0.1",
            Some(SecretString::new("ghj_guess".into())),
            "sess-x",
        );
        let (kind, _) = refusal_kind(world.join("x", bad).await);
        assert_eq!(kind, RefusalKind::TokenUnknown);
    }
    // The eleventh is refused before its (good) token is looked at.
    let token = world.token(Duration::from_secs(900));
    let (kind, message) = world.refused(&token, "sess-x").await;
    assert_eq!(kind, RefusalKind::Throttled);
    assert!(message.contains("wait a minute"), "{message}");
    let refused = world
        .store
        .list_audit(None)
        .unwrap()
        .iter()
        .filter(|e| e.kind == gatehouse_core::AuditKind::NodeJoinRefused)
        .count();
    assert_eq!(refused, 10, "the throttled attempt is not audited again");
    assert!(control::list_nodes(&world.store, true).unwrap().is_empty());
}

#[tokio::test]
async fn a_peer_without_a_certificate_cannot_heartbeat() {
    let world = World::start(&["127.0.0.1"]).await;
    let client = gatehouse_cluster::ControlClient::new(
        ControlAddress::parse(&format!("127.0.0.1:{}", world.port)).unwrap(),
        &world.pin,
        None,
    )
    .unwrap();
    let err = client
        .call(NodeCall::Heartbeat(Heartbeat::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClusterError::Refused(r) if r.kind == RefusalKind::NotAMember),
        "{err}"
    );
}

#[tokio::test]
async fn a_node_fails_over_to_the_next_control_node_and_stays_there() {
    let world = World::start(&["127.0.0.1", "localhost"]).await;
    let token = world.token(Duration::from_secs(900));
    // The first control address has nobody listening (a control node that died); the second is
    // the live one. The join itself goes through the second.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let live = world.options("127.0.0.1", Some(token), "sess-f").control;
    let mut options = world.options("127.0.0.1", None, "sess-f");
    options.token = Some(world.token(Duration::from_secs(900)));
    options.control = ControlAddress::parse(&format!("https://127.0.0.1:{dead}")).unwrap();
    options.also = vec![live.clone()];
    let outcome = world.join("f", options).await.unwrap();
    assert_eq!(outcome.identity.also, vec![live.clone()]);
    // The saved identity keeps both and heartbeats through the live one.
    let identity = NodeIdentity::load(&world.node_dir("f")).unwrap().unwrap();
    assert_eq!(identity.also, vec![live.clone()]);
    let client = identity.client().unwrap();
    let beat = Heartbeat {
        ssh_port: Some(2222),
        rdp_port: None,
        version: "test".into(),
        hostname: "sess-f.example".into(),
    };
    client
        .call(NodeCall::Heartbeat(beat.clone()))
        .await
        .unwrap();
    assert_eq!(
        client.address(),
        &live,
        "the one that answered is tried first"
    );
    client.call(NodeCall::Heartbeat(beat)).await.unwrap();
    // With no control node at all, the error names the last one tried.
    let nowhere = gatehouse_cluster::node::ControlClient::new(
        ControlAddress::parse(&format!("https://127.0.0.1:{dead}")).unwrap(),
        &world.pin,
        None,
    )
    .unwrap()
    .with_fallbacks(vec![
        ControlAddress::parse(&format!("https://localhost:{dead}")).unwrap(),
    ]);
    let err = nowhere
        .call(NodeCall::Heartbeat(Heartbeat {
            ssh_port: None,
            rdp_port: None,
            version: "test".into(),
            hostname: "x".into(),
        }))
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::Unreachable { .. }), "{err}");
}
