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

/// A policy directory: the shipped `base.cedar` and `typo.cedar`, whose line 2 names an action
/// that does not exist (`ssh_sesion`).
fn policies_with_a_typo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(shipped("base.cedar"), dir.path().join("base.cedar")).unwrap();
    std::fs::write(
        dir.path().join("typo.cedar"),
        "@id(\"typo\")\npermit (principal in Group::\"ops\", action == Action::\"ssh_sesion\", resource);\n",
    )
    .unwrap();
    dir
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

/// One command line and what its output (stdout and stderr together) must and must not contain.
struct Case {
    /// The arguments, split at spaces; `'...'` keeps spaces in one argument.
    line: &'static str,
    success: bool,
    contains: &'static [&'static str],
    absent: &'static [&'static str],
}

impl Case {
    const fn ok(line: &'static str, contains: &'static [&'static str]) -> Case {
        Case {
            line,
            success: true,
            contains,
            absent: &[],
        }
    }

    const fn fails(line: &'static str, contains: &'static [&'static str]) -> Case {
        Case {
            success: false,
            ..Case::ok(line, contains)
        }
    }

    const fn without(self, absent: &'static [&'static str]) -> Case {
        Case { absent, ..self }
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut quoted = false;
        let mut word: Option<String> = None;
        for c in self.line.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    word.get_or_insert_with(String::new);
                }
                ' ' if !quoted => args.extend(word.take()),
                _ => word.get_or_insert_with(String::new).push(c),
            }
        }
        args.extend(word);
        args
    }

    /// What is wrong with the command's answer, if anything.
    fn check(&self, gh: &Gatehouse) -> Option<String> {
        let args = self.args();
        let out = gh.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let text = format!("{}{}", out.stdout_text(), out.stderr_text());
        let mut problems = Vec::new();
        if out.status.success() != self.success {
            problems.push(format!("exit {:?}", out.status.code()));
        }
        for needle in self.contains {
            if !text.contains(needle) {
                problems.push(format!("missing `{needle}`"));
            }
        }
        for needle in self.absent {
            if text.contains(needle) {
                problems.push(format!("unexpected `{needle}`"));
            }
        }
        (!problems.is_empty()).then(|| {
            format!(
                "gatehouse {}: {}\n{text}",
                args.join(" "),
                problems.join(", ")
            )
        })
    }
}

/// 2026-11-24 is a Tuesday: 10:00 is within business hours, 19:30 is not; the 28th is a Saturday.
const CASES: &[Case] = &[
    Case::ok(
        "policy validate",
        &["is valid: 2 files, 1 grant links, 2 policies, 4 templates"],
    ),
    Case::ok(
        "policy explain --user alice --target root@db1 --at 2026-11-24T10:00",
        &[
            "decision  allow",
            "policy    dbas-prod-business-hours  (",
            "business-hours.cedar:4)",
            "| permit (",
        ],
    )
    .without(&["deny"]),
    Case::ok(
        "policy explain --user alice --target root@db1 --at 2026-11-24T19:30",
        &[
            "at tue 19:30",
            "decision  deny",
            "none: no policy permits it",
        ],
    )
    .without(&["dbas-prod-business-hours"]),
    Case::ok(
        "policy explain --user alice --target root@db1 --at 2026-11-28T10:00",
        &["at sat 10:00", "decision  deny"],
    ),
    Case::ok(
        "policy explain --user alice --target root@web1 --at 2026-11-24T10:00",
        &["decision  deny"],
    ),
    Case::ok(
        "policy explain --user bob --target root@web1",
        &["decision  allow", "policy    grant:", "a link in the store"],
    ),
    Case::ok(
        "policy explain --user alice --target root@db1 --action ssh_shell",
        &["decision  allow", "policy    session-channels"],
    ),
    Case::ok(
        "policy explain --user alice --target root@db1 --action ssh_direct_tcpip \
         --forward localhost:5432",
        &["decision  deny"],
    ),
    Case::ok(
        "policy who-can root@db1 --at 2026-11-24T10:00",
        &["alice  dbas-prod-business-hours"],
    )
    .without(&["bob"]),
    Case::ok("policy who-can root@web1", &["bob   grant:"]).without(&["alice"]),
    Case::ok(
        "policy who-can root@db1 --action release_password",
        &["(none)"],
    ),
    Case::fails(
        "policy explain --user carol --target root@db1",
        &["user `carol` does not exist"],
    ),
    Case::fails(
        "policy explain --user alice --target root@nowhere",
        &["asset `nowhere` does not exist"],
    ),
    Case::fails(
        "policy explain --user alice --target root@db1 --at 'tea time'",
        &["time `tea time`"],
    ),
    Case::fails(
        "group nest dbas dbas-oncall",
        &["`dbas-oncall` is already inside `dbas`; nesting would make a cycle"],
    ),
    Case::fails(
        "asset-group nest prod prod-db-eu",
        &["nesting would make a cycle"],
    ),
    Case::fails("policy reload", &["no server is running"]),
];

#[test]
fn policy_commands_explain_decisions_from_the_store() {
    let gh = store_with_hierarchies();
    let failures: Vec<String> = CASES.iter().filter_map(|case| case.check(&gh)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn validate_reports_every_problem_with_its_position() {
    let gh = Gatehouse::init();
    let dir = policies_with_a_typo();
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
    let broken = policies_with_a_typo();
    let out = run(broken.path());
    assert!(!out.status.success());
    let err = out.stderr_text();
    assert!(
        err.contains("typo.cedar:2:") && err.contains("ssh_sesion"),
        "{err}"
    );
    assert!(!data_dir.exists(), "validate created a data directory");
}
