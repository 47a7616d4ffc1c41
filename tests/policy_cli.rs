//! `gatehouse policy ...` for policy authors, against a store with nested groups and nested
//! asset groups: validate, test, explain, who-can. Table-driven: each case is a command line and
//! what its output must (and must not) contain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};

use support::{Gatehouse, OutputExt};

fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies")
        .join(rel)
}

/// alice is in dbas-oncall, which is in dbas; db1 is in prod-db-eu, in prod-db, in prod.
fn store_with_hierarchies() -> Gatehouse {
    let gh = Gatehouse::init();
    for args in [
        &["group", "add", "dbas"][..],
        &["group", "add", "dbas-oncall", "--parent", "dbas"],
        &["group", "add", "web"],
        &["asset-group", "add", "prod"],
        &["asset-group", "add", "prod-db", "--parent", "prod"],
        &["asset-group", "add", "prod-db-eu"],
        &["asset-group", "nest", "prod-db-eu", "prod-db"],
        &[
            "asset",
            "add",
            "db1",
            "--address",
            "10.1.0.1",
            "--tofu",
            "--group",
            "prod-db-eu",
        ],
        &[
            "asset",
            "add",
            "web1",
            "--address",
            "10.1.0.2",
            "--tofu",
            "--group",
            "prod",
        ],
    ] {
        gh.cli_ok(args);
    }
    gh.cli_stdin_ok(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--group",
            "dbas-oncall",
        ],
        "pw-a",
    );
    gh.cli_stdin_ok(
        &["user", "add", "bob", "--password-stdin", "--group", "web"],
        "pw-b",
    );
    gh.cli_stdin_ok(
        &["account", "add", "root@db1", "--password-stdin"],
        "secret-1",
    );
    gh.cli_stdin_ok(
        &["account", "add", "root@web1", "--password-stdin"],
        "secret-2",
    );
    gh.cli_ok(&["grant", "add", "--group", "web", "root@web1"]);
    std::fs::copy(
        shipped("examples/business-hours.cedar"),
        gh.data_dir().join("policies/business-hours.cedar"),
    )
    .unwrap();
    gh
}

struct Case {
    args: &'static [&'static str],
    success: bool,
    contains: &'static [&'static str],
    absent: &'static [&'static str],
}

const TUESDAY_10: &str = "2026-11-24T10:00";

#[test]
fn policy_commands_explain_decisions_from_the_store() {
    let gh = store_with_hierarchies();
    let cases = [
        Case {
            args: &["policy", "validate"],
            success: true,
            contains: &["is valid: 2 files, 1 grant links, 2 policies, 4 templates"],
            absent: &[],
        },
        Case {
            args: &[
                "policy", "explain", "--user", "alice", "--target", "root@db1", "--at", TUESDAY_10,
            ],
            success: true,
            contains: &[
                "decision  allow",
                "policy    dbas-prod-business-hours  (",
                "business-hours.cedar:4)",
                "| permit (",
            ],
            absent: &["deny"],
        },
        Case {
            args: &[
                "policy",
                "explain",
                "--user",
                "alice",
                "--target",
                "root@db1",
                "--at",
                "2026-11-24T19:30",
            ],
            success: true,
            contains: &[
                "at tue 19:30",
                "decision  deny",
                "none: no policy permits it",
            ],
            absent: &["dbas-prod-business-hours"],
        },
        Case {
            args: &[
                "policy",
                "explain",
                "--user",
                "alice",
                "--target",
                "root@db1",
                "--at",
                "2026-11-28T10:00",
            ],
            success: true,
            contains: &["at sat 10:00", "decision  deny"],
            absent: &[],
        },
        Case {
            args: &[
                "policy",
                "explain",
                "--user",
                "alice",
                "--target",
                "root@web1",
                "--at",
                TUESDAY_10,
            ],
            success: true,
            contains: &["decision  deny"],
            absent: &[],
        },
        Case {
            args: &[
                "policy",
                "explain",
                "--user",
                "bob",
                "--target",
                "root@web1",
            ],
            success: true,
            contains: &["decision  allow", "policy    grant:", "a link in the store"],
            absent: &[],
        },
        Case {
            args: &[
                "policy",
                "explain",
                "--user",
                "alice",
                "--target",
                "root@db1",
                "--action",
                "ssh_shell",
            ],
            success: true,
            contains: &["decision  allow", "policy    session-channels"],
            absent: &[],
        },
        Case {
            args: &[
                "policy",
                "explain",
                "--user",
                "alice",
                "--target",
                "root@db1",
                "--action",
                "ssh_direct_tcpip",
                "--forward",
                "localhost:5432",
            ],
            success: true,
            contains: &["decision  deny"],
            absent: &[],
        },
        Case {
            args: &["policy", "who-can", "root@db1", "--at", TUESDAY_10],
            success: true,
            contains: &["alice  dbas-prod-business-hours"],
            absent: &["bob"],
        },
        Case {
            args: &["policy", "who-can", "root@web1"],
            success: true,
            contains: &["bob   grant:"],
            absent: &["alice"],
        },
        Case {
            args: &[
                "policy",
                "who-can",
                "root@db1",
                "--action",
                "release_password",
            ],
            success: true,
            contains: &["(none)"],
            absent: &[],
        },
        Case {
            args: &[
                "policy", "explain", "--user", "carol", "--target", "root@db1",
            ],
            success: false,
            contains: &["user `carol` does not exist"],
            absent: &[],
        },
        Case {
            args: &[
                "policy",
                "explain",
                "--user",
                "alice",
                "--target",
                "root@nowhere",
            ],
            success: false,
            contains: &["asset `nowhere` does not exist"],
            absent: &[],
        },
        Case {
            args: &[
                "policy", "explain", "--user", "alice", "--target", "root@db1", "--at", "tea time",
            ],
            success: false,
            contains: &["time `tea time`"],
            absent: &[],
        },
        Case {
            args: &["group", "nest", "dbas", "dbas-oncall"],
            success: false,
            contains: &["`dbas-oncall` is already inside `dbas`; nesting would make a cycle"],
            absent: &[],
        },
        Case {
            args: &["asset-group", "nest", "prod", "prod-db-eu"],
            success: false,
            contains: &["nesting would make a cycle"],
            absent: &[],
        },
        Case {
            args: &["policy", "reload"],
            success: false,
            contains: &["no server is running"],
            absent: &[],
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let out = gh.cli(case.args);
        let text = format!("{}{}", out.stdout_text(), out.stderr_text());
        let mut problems = Vec::new();
        if out.status.success() != case.success {
            problems.push(format!("exit {:?}", out.status.code()));
        }
        for needle in case.contains {
            if !text.contains(needle) {
                problems.push(format!("missing `{needle}`"));
            }
        }
        for needle in case.absent {
            if text.contains(needle) {
                problems.push(format!("unexpected `{needle}`"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "gatehouse {}: {}\n{text}",
                case.args.join(" "),
                problems.join(", ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn validate_reports_every_problem_with_its_position() {
    let gh = Gatehouse::init();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(shipped("base.cedar"), dir.path().join("base.cedar")).unwrap();
    std::fs::write(
        dir.path().join("typo.cedar"),
        "@id(\"typo\")\npermit (principal in Group::\"ops\", action == Action::\"ssh_sesion\", resource);\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("syntax.cedar"),
        "// missing a comma\n\npermit (principal action, resource);\n",
    )
    .unwrap();
    let out = gh.cli(&["policy", "validate", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = out.stderr_text();
    assert!(err.contains("syntax.cedar:3:19: "), "{err}");
    assert!(err.contains("typo.cedar:2:"), "{err}");
    assert!(err.contains("ssh_sesion"), "{err}");
}

#[test]
fn policy_test_runs_the_shipped_scenarios() {
    let gh = Gatehouse::init();
    let out = gh.cli(&["policy", "test", shipped("tests").to_str().unwrap()]);
    let text = out.stdout_text();
    assert!(out.status.success(), "{}", out.describe());
    assert!(text.contains(" passed, 0 failed"), "{text}");
    assert!(text.contains("ok    two approvals grant it"), "{text}");

    let explained = gh.cli_ok(&[
        "policy",
        "explain",
        "--scenario",
        shipped("tests/release-approvals.toml").to_str().unwrap(),
        "--request",
        "an approver never approves their own request",
    ]);
    assert!(explained.contains("decision  deny"), "{explained}");
    assert!(
        explained.contains("policy    no-self-review  ("),
        "{explained}"
    );

    // A scenario whose expectation is wrong fails the command.
    let dir = tempfile::tempdir().unwrap();
    let wrong = std::fs::read_to_string(shipped("tests/on-call-auto-approve.toml"))
        .unwrap()
        .replace("../", &format!("{}/", shipped("").display()))
        .replace("decision = \"allow\"", "decision = \"deny\"");
    std::fs::write(dir.path().join("wrong.toml"), wrong).unwrap();
    let failed = gh.cli(&["policy", "test", dir.path().to_str().unwrap()]);
    assert!(!failed.status.success());
    assert!(
        failed
            .stdout_text()
            .contains("FAIL  on call with a verified incident ticket"),
        "{}",
        failed.describe()
    );
}

#[test]
fn validate_works_in_a_checkout_without_a_data_directory() {
    // A policy author's checkout or CI: no `gatehouse init` anywhere.
    let nowhere = tempfile::tempdir().unwrap();
    let data_dir = nowhere.path().join("no-data-dir");
    let run = |policies: &Path| {
        std::process::Command::new(support::GATEHOUSE_BIN)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["policy", "validate"])
            .arg(policies)
            .env_remove("GATEHOUSE_DATA_DIR")
            .output()
            .unwrap()
    };
    let out = run(&shipped(""));
    assert!(out.status.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    assert!(text.contains("is valid against the schema"), "{text}");
    assert!(
        text.contains("grants in the store were not checked"),
        "{text}"
    );

    // A broken file fails with its position, the same as with a data directory.
    let broken = tempfile::tempdir().unwrap();
    std::fs::copy(shipped("base.cedar"), broken.path().join("base.cedar")).unwrap();
    std::fs::write(
        broken.path().join("typo.cedar"),
        "@id(\"typo\")\npermit (principal in Group::\"ops\", action == Action::\"ssh_sesion\", resource);\n",
    )
    .unwrap();
    let out = run(broken.path());
    assert!(!out.status.success());
    let err = out.stderr_text();
    assert!(
        err.contains("typo.cedar:2:") && err.contains("ssh_sesion"),
        "{err}"
    );
    assert!(!data_dir.exists(), "validate created a data directory");
}
