//! End to end: every way a connection can go wrong gets a clear message on the client, a
//! non-zero exit, an audit entry of the right kind, and leaves the gateway serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::ssh_client::Client;
use support::world::{ASSET, GATEWAY_PASSWORD, GATEWAY_USER, World};
use support::{OutputExt, TargetSshd, TestAccount, generate_keypair, key_type_and_blob};

const UNKNOWN_OR_FORBIDDEN: &str = "is unknown or you are not permitted to use it";
const MALFORMED: &str = "malformed target";
const UNREACHABLE: &str = "is unreachable";
const HOST_KEY_MISMATCH: &str = "host key does not match";
const CREDENTIAL_REJECTED: &str = "rejected the vault credential";
const PERMISSION_DENIED: &str = "Permission denied";

const BOB: &str = "bob";
const BOB_PASSWORD: &str = "Gw-bob-pw-8Lm2vR";
const WRONG_VAULT_PASSWORD: &str = "Not-the-real-pw-4Hs1";

/// One bad connection attempt and what it must produce.
struct Case {
    name: &'static str,
    login: String,
    password: &'static str,
    /// Substring of the client's stderr.
    message: &'static str,
    /// Whether the message must come as a `gatehouse: ...` line (vs. ssh's own).
    from_gateway: bool,
    /// Audit `kind` that must appear for this attempt: `login_failed` when the gateway login
    /// itself fails, `access_denied` when the user logged in but the target part is malformed,
    /// unknown or not granted, `target_connect_failed` when the target connection fails.
    audit_kind: &'static str,
    /// For the unknown/forbidden group: the user and target to blank out before comparing
    /// the messages, which must otherwise be identical.
    same_message_group: Option<(&'static str, String)>,
}

/// The `gatehouse: ...` part of the first stderr line that has one.
fn gateway_line(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.find("gatehouse: ").map(|i| l[i..].trim_end().to_string()))
}

#[test]
fn bad_input_is_refused_clearly_and_audited() {
    let account = TestAccount::new("b_bad");
    // A target that is down: started for its host key, then stopped.
    let mut down = TargetSshd::start(std::slice::from_ref(&account));
    let (down_port, down_key) = (down.port(), down.host_key());
    down.stop();
    // A target that hangs up on every connection at once (like sshd past MaxStartups).
    let dropper = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let drop_port = dropper.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in dropper.incoming() {
            drop(conn);
        }
    });

    let acct = account.name.clone();
    let w = World::builder("b_bad")
        .setup(move |ctx| {
            let gh = ctx.gh;
            gh.add_user_with_password(BOB, BOB_PASSWORD); // no grant
            // Down target.
            gh.add_asset("down1", down_port, &down_key);
            gh.add_account_with_password(&format!("{acct}@down1"), &ctx.account.password);
            gh.grant_user(GATEWAY_USER, &format!("{acct}@down1"));
            // Target that hangs up.
            gh.add_asset("drop1", drop_port, &ctx.target.host_key());
            gh.add_account_with_password(&format!("{acct}@drop1"), &ctx.account.password);
            gh.grant_user(GATEWAY_USER, &format!("{acct}@drop1"));
            // Live target pinned to someone else's key.
            let (_, other) = generate_keypair(ctx.scratch, "not_the_host_key");
            gh.add_asset("mismatch1", ctx.target.port(), &key_type_and_blob(&other));
            gh.add_account_with_password(&format!("{acct}@mismatch1"), &ctx.account.password);
            gh.grant_user(GATEWAY_USER, &format!("{acct}@mismatch1"));
            // Live target, right key, wrong password in the vault.
            gh.add_asset("wrongpw1", ctx.target.port(), &ctx.target.host_key());
            gh.add_account_with_password(&format!("{acct}@wrongpw1"), WRONG_VAULT_PASSWORD);
            gh.grant_user(GATEWAY_USER, &format!("{acct}@wrongpw1"));
        })
        .start();
    let acct = w.account.name.clone();
    let target = w.target_spec();

    let case = |name, login: String, password, message, audit_kind| Case {
        name,
        login,
        password,
        message,
        from_gateway: message != PERMISSION_DENIED,
        audit_kind,
        same_message_group: None,
    };
    let mut cases = vec![
        // Usernames that cannot work at all: refused at once with the reason, no password asked.
        case(
            "unusable: no gateway user",
            "@@@".to_string(),
            GATEWAY_PASSWORD,
            "gatehouse: this login cannot be used: no gateway user in `@@@`",
            "login_failed",
        ),
        case(
            "unusable: gateway user name too long",
            format!("{}@{target}", "u".repeat(70)),
            GATEWAY_PASSWORD,
            "gatehouse: this login cannot be used: invalid gateway user",
            "login_failed",
        ),
        case(
            "unusable: malformed option",
            format!("=x@{GATEWAY_USER}@{target}"),
            GATEWAY_PASSWORD,
            "gatehouse: this login cannot be used: malformed option `=x`",
            "login_failed",
        ),
        case(
            "malformed: empty account",
            format!("{GATEWAY_USER}@@{ASSET}"),
            GATEWAY_PASSWORD,
            MALFORMED,
            "access_denied",
        ),
        case(
            "malformed: no asset",
            format!("{GATEWAY_USER}@{acct}"),
            GATEWAY_PASSWORD,
            MALFORMED,
            "access_denied",
        ),
        case(
            "unknown gateway user",
            format!("nobody@{target}"),
            GATEWAY_PASSWORD,
            PERMISSION_DENIED,
            "login_failed",
        ),
        case(
            "wrong gateway password",
            format!("{GATEWAY_USER}@{target}"),
            "wrong-password",
            PERMISSION_DENIED,
            "login_failed",
        ),
        case(
            "target down",
            format!("{GATEWAY_USER}@{acct}@down1"),
            GATEWAY_PASSWORD,
            UNREACHABLE,
            "target_connect_failed",
        ),
        case(
            "target hangs up during the handshake",
            format!("{GATEWAY_USER}@{acct}@drop1"),
            GATEWAY_PASSWORD,
            "closed the connection before login (busy or not accepting connections); try again",
            "target_connect_failed",
        ),
        case(
            "host key mismatch",
            format!("{GATEWAY_USER}@{acct}@mismatch1"),
            GATEWAY_PASSWORD,
            HOST_KEY_MISMATCH,
            "target_connect_failed",
        ),
        case(
            "vault credential rejected",
            format!("{GATEWAY_USER}@{acct}@wrongpw1"),
            GATEWAY_PASSWORD,
            CREDENTIAL_REJECTED,
            "target_connect_failed",
        ),
    ];
    for (name, user, password, spec) in [
        (
            "unknown asset",
            GATEWAY_USER,
            GATEWAY_PASSWORD,
            format!("{acct}@nosuchasset"),
        ),
        (
            "unknown account",
            GATEWAY_USER,
            GATEWAY_PASSWORD,
            format!("nosuchaccount@{ASSET}"),
        ),
        ("not entitled", BOB, BOB_PASSWORD, target.clone()),
    ] {
        let mut c = case(
            name,
            format!("{user}@{spec}"),
            password,
            UNKNOWN_OR_FORBIDDEN,
            "access_denied",
        );
        c.same_message_group = Some((user, spec));
        cases.push(c);
    }

    let mut failures = Vec::new();
    let mut group_messages = Vec::new();
    for c in &cases {
        let since = w.gh.audit().len();
        let out = w.client_as(&c.login, c.password).ssh("echo should-not-run");
        let stderr = out.stderr_text();
        let mut problems = Vec::new();
        if out.status.success() || out.stdout_text().contains("should-not-run") {
            problems.push("the command ran / ssh exited 0".to_string());
        }
        if c.from_gateway {
            match gateway_line(&stderr) {
                Some(line) if line.contains(c.message) => {
                    if let Some((user, spec)) = &c.same_message_group {
                        let normalized = line
                            .replace(spec.as_str(), "<target>")
                            .replace(user, "<user>");
                        group_messages.push((c.name, normalized));
                    }
                }
                Some(line) => {
                    problems.push(format!("gateway said {line:?}, expected {:?}", c.message))
                }
                None => problems.push(format!("no `gatehouse: ` line (expected {:?})", c.message)),
            }
        } else if !stderr.contains(c.message) {
            problems.push(format!("stderr lacks {:?}", c.message));
        }
        if w.gh
            .wait_for_audit(since, c.audit_kind, Duration::from_secs(10))
            .is_none()
        {
            let recent: Vec<String> =
                w.gh.audit()
                    .iter()
                    .skip(since)
                    .map(|e| e.to_string())
                    .collect();
            problems.push(format!(
                "no `{}` audit entry; new entries: {recent:#?}",
                c.audit_kind
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case `{}` (login {:?}): {}\n{}",
                c.name,
                c.login,
                problems.join("; "),
                out.describe()
            ));
        }
        w.assert_no_secret_leaks(&[&out.stdout_text(), &stderr]);
    }

    // Unknown asset, unknown account and not entitled must be indistinguishable.
    if let Some((first_name, first)) = group_messages.first() {
        for (name, msg) in &group_messages[1..] {
            if msg != first {
                failures.push(format!(
                    "`{name}` and `{first_name}` must give the same message:\n  {msg}\n  {first}"
                ));
            }
        }
    }

    // The wrong vault password never shows either.
    assert!(
        !w.gh.log_text().contains(WRONG_VAULT_PASSWORD),
        "the (wrong) vault password appears in the gateway log"
    );

    // After all that, the gateway still serves a good session.
    let mut w = w;
    assert!(
        w.gh.is_serving(),
        "gatehouse serve died\n{}",
        w.gh.log_tail(80)
    );
    let good = w.client().ssh("echo still-serving");
    if !(good.status.success() && good.stdout_text() == "still-serving\n") {
        failures.push(format!(
            "good session after the bad ones failed\n{}",
            good.describe()
        ));
    }

    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n\n{}\n--- serve.log tail ---\n{}",
        failures.len(),
        cases.len() + 2,
        failures.join("\n\n"),
        w.gh.log_tail(60)
    );
}

#[test]
fn a_wrong_password_may_be_retyped_as_often_as_openssh_allows_and_an_address_is_throttled() {
    let w = World::start("b_retry");
    // OpenSSH asks three times by default; the gateway must let all three reach it.
    let client = Client::password_with_answers(w.gh.ssh_port(), w.login(), "not-the-password", &[])
        .option("NumberOfPasswordPrompts=3");
    let before =
        w.gh.audit()
            .iter()
            .filter(|e| e["kind"] == "login_failed")
            .count();
    let out = client.ssh("true");
    assert!(!out.status.success());
    let prompts = client.prompts_seen();
    assert_eq!(
        prompts
            .lines()
            .filter(|l| l.to_lowercase().contains("password"))
            .count(),
        3,
        "the client was asked {prompts:?}; stderr: {}",
        out.stderr_text()
    );
    let failed =
        w.gh.audit()
            .iter()
            .filter(|e| e["kind"] == "login_failed")
            .count();
    assert_eq!(failed - before, 3, "each wrong password is audited");

    // Past ten failures in a minute from one address, even the right password is refused there,
    // with the reason, until the minute is over.
    for _ in 0..3 {
        assert!(!client.ssh("true").status.success());
    }
    let right = w.client();
    let out = right.ssh("echo in");
    assert!(!out.status.success(), "a throttled address got in");
    assert!(
        out.stderr_text()
            .contains("gatehouse: too many failed logins from your address; try again in"),
        "{}",
        out.stderr_text()
    );
    assert!(
        w.gh.audit().iter().any(|e| e["kind"] == "login_failed"
            && e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("too many failed logins from 127.0.0.1")),
        "the throttled attempt is not audited"
    );
}
