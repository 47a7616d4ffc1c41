//! The hostile plugin: each misbehaviour is contained within its limit and ends in a deny or
//! a typed failure with the reason, while a well-behaved call running at the same time
//! completes.

use crate::support::*;
use gatehouse_plugin_host::*;
use std::time::{Duration, Instant};

/// (mode, expected outcome). Limits: 32 MiB memory, 100 ms CPU, 2000 ms wall clock.
const CASES: &[(&str, &str)] = &[
    (
        "loop",
        "failure: the plugin used more than its CPU budget of 100 ms",
    ),
    (
        "memory",
        "failure: the plugin hit its memory limit of 33554432 bytes",
    ),
    (
        "recursion",
        "failure: the plugin trapped: wasm trap: call stack exhausted",
    ),
    (
        "shadow-stack",
        "failure: the plugin trapped: wasm trap: out of bounds memory access",
    ),
    (
        "trap",
        "failure: the plugin trapped: wasm trap: wasm `unreachable` instruction executed",
    ),
    (
        "giant-string",
        "failure: the plugin returned a malformed answer: the deny reason is 8388608 bytes long (at most 1024)",
    ),
    (
        "giant-prompt",
        "failure: the plugin returned a malformed answer: the question prompt is 100000 bytes long (at most 512)",
    ),
    (
        "many-audit-pairs",
        "failure: the plugin returned a malformed answer: 10000 audit pairs (at most 32)",
    ),
    (
        "bad-rename",
        "failure: the plugin returned a malformed answer: the renamed user `root; rm -rf /` is not a valid name",
    ),
    (
        "giant-cookie",
        "deny: HostError::TooLarge(\"cookie larger than 4096 bytes\")",
    ),
    ("accept", "accept"),
];

fn outcome(result: &Result<AaVerdict, PluginFailure>) -> String {
    match result {
        Ok(AaVerdict::Accept(_)) => "accept".into(),
        Ok(AaVerdict::Deny { reason, .. }) => format!("deny: {reason}"),
        Ok(AaVerdict::NeedInfo { question, .. }) => format!("need-info: {}", question.key),
        Err(failure) => {
            assert_eq!(failure.plugin, "hostile");
            assert_eq!(failure.hook, Hook::Authenticate);
            format!("failure: {}", failure.kind)
        }
    }
}

fn hostile_env(mode: &str) -> TestEnv {
    let mut env = TestEnv::new();
    env.install_hostile(mode, grants(), "");
    env.secret("totp-mfa", "totp-seed/alice", RFC_SEED);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained_data_driven() {
    for (mode, expected) in CASES {
        let env = hostile_env(mode);
        let host = env.host();
        let started = Instant::now();
        let result = authenticate_once(&host, &connection("alice")).await;
        let elapsed = started.elapsed();
        assert_eq!(&outcome(&result), expected, "mode `{mode}`");
        assert!(
            elapsed < Duration::from_millis(1500),
            "mode `{mode}` took {elapsed:?}, more than its limits allow"
        );
        // The user only ever sees the generic message.
        if let Err(failure) = &result {
            assert!(!PluginFailure::USER_MESSAGE.contains(&failure.kind.to_string()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_call_completes_while_a_hostile_one_spins() {
    for mode in ["loop", "memory", "recursion", "giant-string"] {
        let env = hostile_env(mode);
        // The well-behaved plugin (totp-mfa) is called directly through its own host sharing
        // the process; the hostile host has only the hostile plugin enabled.
        let hostile = env.host();
        let good_env = TestEnv::with_totp();
        let good = good_env.host();
        let bad_task = tokio::spawn(async move {
            let mut cookies = SessionCookies::default();
            hostile
                .authenticate(&connection("mallory"), &mut cookies, &[])
                .await
        });
        let started = Instant::now();
        let verdict = authenticate_once(&good, &connection_with("alice", "otp", "287082")).await;
        let good_elapsed = started.elapsed();
        assert!(
            matches!(verdict, Ok(AaVerdict::Accept(_))),
            "{mode}: {verdict:?}"
        );
        assert!(
            good_elapsed < Duration::from_millis(1000),
            "{mode}: the well-behaved call took {good_elapsed:?}"
        );
        let bad = bad_task.await.unwrap();
        assert!(bad.is_err(), "{mode}: {bad:?}");
    }
}

#[tokio::test]
async fn every_call_gets_a_fresh_instance() {
    let env = hostile_env("counter");
    let host = env.host();
    for _ in 0..5 {
        let result = authenticate_once(&host, &connection("alice")).await;
        assert_eq!(outcome(&result), "deny: call 1, heap byte 1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_keeps_serving_after_a_plugin_fails() {
    let env = hostile_env("loop");
    let host = env.host();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let host = host.clone();
        handles.push(tokio::spawn(async move {
            authenticate_once(&host, &connection("mallory")).await
        }));
    }
    for handle in handles {
        let result = handle.await.unwrap();
        assert_eq!(
            outcome(&result),
            "failure: the plugin used more than its CPU budget of 100 ms"
        );
    }
    // Same host, same plugin, switched to a harmless mode: a fresh host with new config.
    env.registry
        .set_config("hostile", "mode = \"accept\"")
        .unwrap();
    let host = env.host();
    let result = authenticate_once(&host, &connection("alice")).await;
    assert_eq!(outcome(&result), "accept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_timeout_covers_http_waits() {
    let env = hostile_waiting_on_a_silent_server(300).await;
    let host = env.host();
    let started = Instant::now();
    let result = authenticate_once(&host, &connection("alice")).await;
    let elapsed = started.elapsed();
    assert_eq!(
        outcome(&result),
        "failure: the plugin did not answer within 300 ms"
    );
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
}

#[tokio::test]
async fn per_plugin_limits_are_configurable() {
    // The memory limit, with a CPU budget (wall-clock epochs) a loaded machine cannot exhaust
    // before the hog reaches 8 MiB.
    let env = TestEnv::new();
    env.install_hostile(
        "memory",
        limited(Limits {
            memory_mib: 8,
            cpu_ms: 2000,
            ..Limits::default()
        }),
        "",
    );
    let host = env.host();
    let result = authenticate_once(&host, &connection("alice")).await;
    assert_eq!(
        outcome(&result),
        "failure: the plugin hit its memory limit of 8388608 bytes"
    );
    // The CPU budget.
    let env = TestEnv::new();
    env.install_hostile(
        "loop",
        limited(Limits {
            cpu_ms: 20,
            ..Limits::default()
        }),
        "",
    );
    let host = env.host();
    let started = Instant::now();
    let result = authenticate_once(&host, &connection("alice")).await;
    assert_eq!(
        outcome(&result),
        "failure: the plugin used more than its CPU budget of 20 ms"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_refuses_instead_of_queueing() {
    let env = TestEnv::new();
    env.install_hostile(
        "loop",
        limited(Limits {
            cpu_ms: 1000,
            ..Limits::default()
        }),
        "",
    );
    let options = HostOptions {
        pool: PoolLimits {
            max_instances: 1,
            ..PoolLimits::default()
        },
        ..env.options()
    };
    let host = PluginHost::start(&env.registry, options).unwrap();
    // Two calls at once for one instance slot: whichever comes second is refused at once.
    let calls = (0..2).map(|_| {
        let host = host.clone();
        tokio::spawn(async move { authenticate_once(&host, &connection("mallory")).await })
    });
    let mut outcomes = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        outcomes.push(outcome(&call.await.unwrap()));
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "failure: the plugin used more than its CPU budget of 1000 ms",
            "failure: too many plugin calls at once (instance pool exhausted)",
        ]
    );
}

#[tokio::test]
async fn cookies_carry_state_between_calls_of_one_session() {
    let env = hostile_env("cookie");
    let host = env.host();
    let mut session = SessionCookies::default();
    for expected in [
        "deny: call 1 of this session, shared ``",
        "deny: call 2 of this session, shared `x`",
        "deny: call 3 of this session, shared `xx`",
    ] {
        let result = host
            .authenticate(&connection("alice"), &mut session, &[])
            .await;
        assert_eq!(outcome(&result), expected);
    }
    let other = authenticate_once(&host, &connection("alice")).await;
    assert_eq!(outcome(&other), "deny: call 1 of this session, shared ``");
}
