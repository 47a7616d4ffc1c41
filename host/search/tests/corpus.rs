//! The search corpus (`corpus.json`): recorded sessions written in the recorder's format,
//! indexed, and every query's hits compared with the expected (session, kind) pairs. A query
//! that finds a secret, misses a moment or finds too much fails with the query named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_core::time::Timestamp;
use gatehouse_search::{SearchIndex, SessionMeta};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;

fn write_session(root: &std::path::Path, session: &Value) -> SessionMeta {
    let id = session["id"].as_str().unwrap();
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(cast) = session["cast"].as_array() {
        let mut text = String::from("{\"version\":2,\"width\":80,\"height\":24}\n");
        for event in cast {
            writeln!(text, "{event}").unwrap();
        }
        std::fs::write(dir.join("channel-0.cast"), text).unwrap();
    }
    let mut events = String::new();
    for event in session["events"].as_array().unwrap() {
        writeln!(events, "{event}").unwrap();
    }
    std::fs::write(dir.join("events.jsonl"), events).unwrap();
    let started = Timestamp::parse_moment(session["started"].as_str().unwrap()).unwrap();
    SessionMeta {
        id: id.into(),
        user: session["user"].as_str().unwrap().into(),
        account: session["account"].as_str().unwrap().into(),
        asset: session["asset"].as_str().unwrap().into(),
        protocol: session["protocol"].as_str().unwrap().into(),
        node: session["node"].as_str().map(Into::into),
        started,
    }
}

/// The corpus written and indexed in a scratch directory.
struct Indexed {
    corpus: Value,
    scratch: tempfile::TempDir,
    metas: Vec<SessionMeta>,
    index: SearchIndex,
}

impl Indexed {
    fn new() -> Self {
        let corpus: Value =
            serde_json::from_str(include_str!("corpus.json")).expect("corpus.json is JSON");
        let scratch = tempfile::tempdir().unwrap();
        let recordings = scratch.path().join("recordings");
        let metas: Vec<SessionMeta> = corpus["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| write_session(&recordings, s))
            .collect();
        let (index, created) = SearchIndex::open_or_create(&scratch.path().join("index")).unwrap();
        assert!(created);
        let indexed = index.rebuild(&recordings, &metas, &mut |_| {}).unwrap();
        assert_eq!(indexed.sessions, 3, "{indexed:?}");
        assert_eq!(indexed.unreadable, 0, "{indexed:?}");
        Indexed {
            corpus,
            scratch,
            metas,
            index,
        }
    }

    fn recordings(&self) -> std::path::PathBuf {
        self.scratch.path().join("recordings")
    }
}

#[test]
fn every_query_of_the_corpus_finds_exactly_its_moments() {
    let indexed = Indexed::new();
    let (corpus, metas, index) = (&indexed.corpus, &indexed.metas, &indexed.index);
    let recordings = indexed.recordings();

    let mut failures = Vec::new();
    for query in corpus["queries"].as_array().unwrap() {
        let text = query["q"].as_str().unwrap();
        let expected: BTreeSet<(String, String)> = query["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_string(),
                    pair[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        match index.search(text, None, 100) {
            Ok(hits) => {
                let found: BTreeSet<(String, String)> =
                    hits.into_iter().map(|h| (h.session, h.kind)).collect();
                if found != expected {
                    failures.push(format!(
                        "{text}\n  expected {expected:?}\n  found    {found:?}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{text}: {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // The index reopened (by a reader in another process, as `gatehouse session search` does)
    // answers the same; a session indexed again replaces its fragments instead of adding.
    let reader = SearchIndex::open(index.dir()).unwrap();
    assert_eq!(reader.search("vacuum", None, 100).unwrap().len(), 2);
    let before = index.fragments();
    index.index_session(&recordings, &metas[0]).unwrap();
    assert_eq!(index.fragments(), before);
}

#[test]
fn hits_carry_the_moment_and_only_allowed_sessions_are_searched() {
    let indexed = Indexed::new();
    let (scratch, index) = (&indexed.scratch, &indexed.index);

    let hits = index.search("kind:input vacuum", None, 10).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    let hit = &hits[0];
    // Typed at 9.0 s of the cast, whose clock starts 0.1 s into the session.
    assert_eq!(hit.cast_time, Some(9.0));
    assert!((hit.time - 9.1).abs() < 1e-9, "{hit:?}");
    assert_eq!(hit.at, "2026-11-02T09:00:09.100Z");
    assert_eq!(hit.channel, Some(0));
    assert_eq!(hit.target, "root@db1");
    assert_eq!(
        &hit.snippet[hit.highlights[0].0..hit.highlights[0].1],
        "vacuum"
    );

    let only_web: std::collections::HashSet<String> = ["s-exec-web1".to_string()].into();
    assert!(
        index
            .search("vacuum", Some(&only_web), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        index.search("deploy", Some(&only_web), 10).unwrap().len(),
        1
    );
    assert!(
        index
            .search("deploy", Some(&Default::default()), 10)
            .unwrap()
            .is_empty()
    );

    // A missing or older index is named with the command that builds it.
    let missing = SearchIndex::open(&scratch.path().join("none")).unwrap_err();
    assert!(
        missing.to_string().contains("gatehouse session reindex"),
        "{missing}"
    );
    std::fs::write(
        index.dir().join("gatehouse-search.json"),
        "{\"version\":0}\n",
    )
    .unwrap();
    let outdated = SearchIndex::open(index.dir()).unwrap_err();
    assert!(
        outdated.to_string().contains("another version"),
        "{outdated}"
    );
}
