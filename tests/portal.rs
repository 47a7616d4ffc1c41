//! End to end: the portal's sign-in, over the real HTTPS API with curl. The session token lives
//! in a cookie scripts cannot read (HttpOnly, Secure, SameSite=Strict, `__Host-` prefix); a
//! request that changes something needs the session's CSRF token; logging out and idling end
//! the session; bearer tokens are unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use support::world::{GATEWAY_PASSWORD, GATEWAY_USER, World};
use support::{Gatehouse, OutputExt};

/// A request with headers `extra` and an optional JSON body: (status, headers, body).
fn call(
    gh: &Gatehouse,
    method: &str,
    path: &str,
    extra: &[&str],
    body: Option<&str>,
) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("h");
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-X",
        method,
        "--max-time",
        "30",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ])
    .arg("--cacert")
    .arg(gh.data_dir().join("tls/cert.pem"))
    .arg("-D")
    .arg(&head);
    for h in extra {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("{}{path}", gh.api_url()));
    let out = cmd.output().expect("curl");
    assert!(out.status.success(), "curl: {}", out.describe());
    let text = out.stdout_text();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.trim().parse().unwrap(),
        std::fs::read_to_string(&head).unwrap_or_default(),
        body.to_string(),
    )
}

/// Signs in: (the `Cookie:` header to send, the CSRF token, the Set-Cookie line).
fn sign_in(gh: &Gatehouse) -> (String, String, String) {
    let body = json!({"user": GATEWAY_USER, "password": GATEWAY_PASSWORD}).to_string();
    let (status, headers, answer) = call(gh, "POST", "/api/v1/portal/login", &[], Some(&body));
    assert_eq!(status, 200, "{answer}");
    let set_cookie = headers
        .lines()
        .find(|l| l.to_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {headers}"))
        .trim()
        .to_string();
    let value = set_cookie
        .split_once(':')
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let csrf = answer["csrf_token"].as_str().unwrap().to_string();
    (format!("Cookie: {value}"), csrf, set_cookie)
}

#[test]
fn portal_sessions_use_a_locked_down_cookie_csrf_tokens_logout_and_an_idle_timeout() {
    let w = World::builder("portal")
        .setup(|ctx| {
            ctx.gh.edit_settings(|settings| {
                settings["api"]["portal_idle_seconds"] = json!(4);
            });
        })
        .start();
    let gh = &w.gh;
    let (cookie, csrf, set_cookie) = sign_in(gh);
    for flag in [
        "__Host-gatehouse=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set_cookie.contains(flag), "{flag} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Domain"), "{set_cookie}");

    // The cookie is who you are; the answer never carried the token itself.
    let (status, _, me) = call(gh, "GET", "/api/v1/me", &[&cookie], None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        serde_json::from_str::<Value>(&me).unwrap()["name"],
        GATEWAY_USER
    );

    // Changing something without the CSRF token, or with a wrong one: refused, nothing done.
    let new_request =
        json!({"target": w.target_spec(), "access": "session", "reason": "portal test"})
            .to_string();
    for token in [None, Some("X-CSRF-Token: not-the-token")] {
        let headers: Vec<&str> = [Some(cookie.as_str()), token]
            .into_iter()
            .flatten()
            .collect();
        let (status, _, answer) =
            call(gh, "POST", "/api/v1/requests", &headers, Some(&new_request));
        assert_eq!(status, 403, "{answer}");
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap()["error"]["code"],
            "csrf"
        );
    }
    let csrf_header = format!("X-CSRF-Token: {csrf}");
    let (status, _, answer) = call(
        gh,
        "POST",
        "/api/v1/requests",
        &[&cookie, &csrf_header],
        Some(&new_request),
    );
    // With it the request reaches the workflow (which answers for itself: alice may not
    // request this access).
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{answer}"
    );

    // Logging out needs the token too, ends the session and clears the cookie.
    let (status, _, _) = call(gh, "POST", "/api/v1/portal/logout", &[&cookie], None);
    assert_eq!(status, 403);
    let (status, headers, _) = call(
        gh,
        "POST",
        "/api/v1/portal/logout",
        &[&cookie, &csrf_header],
        None,
    );
    assert_eq!(status, 204);
    assert!(headers.contains("Max-Age=0"), "{headers}");
    let (status, _, answer) = call(gh, "GET", "/api/v1/me", &[&cookie], None);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("the session has ended"), "{answer}");

    // Idle longer than the setting: signed out.
    let (cookie, _, _) = sign_in(gh);
    let (status, _, _) = call(gh, "GET", "/api/v1/me", &[&cookie], None);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(5));
    let (status, _, answer) = call(gh, "GET", "/api/v1/me", &[&cookie], None);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("idle too long"), "{answer}");

    // Requests keep a session alive past the idle time, and it outlives a restart of the
    // gateway (sessions are kept in the store, shared by every control node on it).
    let (cookie, _, _) = sign_in(gh);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1500));
        let (status, _, answer) = call(gh, "GET", "/api/v1/me", &[&cookie], None);
        assert_eq!(status, 200, "an active session ended: {answer}");
    }
    let mut w = w;
    w.gh.stop_server();
    w.gh.serve();
    let gh = &w.gh;
    let (status, _, answer) = call(gh, "GET", "/api/v1/me", &[&cookie], None);
    assert_eq!(
        status, 200,
        "a restart signed the portal session out: {answer}"
    );

    // A wrong password: no cookie, and the failure is audited as a portal login.
    let body = json!({"user": GATEWAY_USER, "password": "wrong-password-1"}).to_string();
    let (status, headers, _) = call(gh, "POST", "/api/v1/portal/login", &[], Some(&body));
    assert_eq!(status, 401);
    assert!(!headers.to_lowercase().contains("set-cookie"), "{headers}");
    assert!(
        gh.audit_of("login_failed")
            .iter()
            .any(|e| e["fields"]["protocol"] == "portal"),
        "the failed portal login is audited"
    );
    // Bearer tokens are unaffected, and a bearer request needs no CSRF token.
    let bearer = support::api_bearer(gh, GATEWAY_USER, GATEWAY_PASSWORD);
    let (status, _, _) = call(gh, "GET", "/api/v1/me", &[&bearer], None);
    assert_eq!(status, 200);

    // My access, as Cedar decides it: alice's grant opens sessions now; nothing lets her see
    // the password or ask; bob has nothing, so sees nothing.
    let (cookie, _, _) = sign_in(gh);
    let (status, _, answer) = call(gh, "GET", "/api/v1/access", &[&cookie], None);
    assert_eq!(status, 200, "{answer}");
    let access: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        access,
        json!([{
            "target": w.target_spec(), "account": w.account.name, "asset": "db1",
            "protocols": ["ssh"], "ssh": "now", "rdp": null, "password": null, "private_key": null,
        }])
    );
    let (_, _, none) = call(
        gh,
        "GET",
        "/api/v1/access?q=no-such-target",
        &[&cookie],
        None,
    );
    assert_eq!(serde_json::from_str::<Value>(&none).unwrap(), json!([]));
    gh.cli_stdin_ok(
        &["user", "add", "bob", "--password-stdin"],
        "Bob-has-nothing-3x\n",
    );
    let bob = support::api_bearer(gh, "bob", "Bob-has-nothing-3x");
    let (_, _, nothing) = call(gh, "GET", "/api/v1/access", &[&bob], None);
    assert_eq!(serde_json::from_str::<Value>(&nothing).unwrap(), json!([]));
}

/// The admin pages' API: the policies in force and a decision explained, the services turned
/// off and on again, the plugins listed, enabled and disabled, for a gateway admin (the shipped
/// example policy); refused to others. With the TOTP plugin enabled, an API sign-in asks for the
/// one-time code after the password.
#[test]
fn gateway_admins_read_policies_explain_decisions_and_toggle_services() {
    let w = World::builder("portal_admin")
        .setup(|ctx| {
            let gh = ctx.gh;
            // Installed and granted, not enabled: the admin enables it over the API.
            gh.install_plugin(
                ctx.scratch,
                "totp-mfa",
                "secrets = [\"totp-seed/*\"]\n",
                None,
            );
            gh.cli_ok(&["plugin", "disable", "totp-mfa"]);
            gh.cli_stdin_ok(
                &["plugin-secret", "set", &format!("totp-seed/{GATEWAY_USER}")],
                support::totp::SEED,
            );
            gh.cli_ok(&["group", "add", "gateway-admins"]);
            gh.cli_stdin_ok(
                &[
                    "user",
                    "add",
                    "gia",
                    "--password-stdin",
                    "--group",
                    "gateway-admins",
                ],
                "Gia-admin-pw-6Tr\n",
            );
            std::fs::write(
                gh.data_dir().join("policies/gateway-admins.cedar"),
                include_str!("../policies/examples/gateway-admins.cedar"),
            )
            .unwrap();
        })
        .start();
    let gh = &w.gh;
    let gia = support::api_bearer(gh, "gia", "Gia-admin-pw-6Tr");
    let alice = support::api_bearer(gh, GATEWAY_USER, GATEWAY_PASSWORD);

    let (status, _, answer) = call(gh, "GET", "/api/v1/policies", &[&gia], None);
    assert_eq!(status, 200, "{answer}");
    let policies: Value = serde_json::from_str(&answer).unwrap();
    let admin = policies
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "gateway-admins-administer")
        .unwrap_or_else(|| panic!("{policies:#}"));
    assert!(
        admin["file"]
            .as_str()
            .unwrap()
            .ends_with("gateway-admins.cedar"),
        "{admin}"
    );
    assert!(
        admin["text"].as_str().unwrap().contains("manage_services"),
        "{admin}"
    );

    let query = format!(
        "/api/v1/policies/explain?user={GATEWAY_USER}&target={}",
        w.target_spec()
    );
    let (status, _, answer) = call(gh, "GET", &query, &[&gia], None);
    assert_eq!(status, 200, "{answer}");
    let explained: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(explained["allowed"], true, "{explained:#}");
    assert!(
        explained["policies"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("grant:"),
        "{explained:#}"
    );
    let (status, _, answer) = call(
        gh,
        "GET",
        &format!(
            "/api/v1/policies/explain?user=gia&target={}",
            w.target_spec()
        ),
        &[&gia],
        None,
    );
    assert_eq!(status, 200);
    let denied: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["policies"][0]["id"], "default-deny", "{denied:#}");

    let off = json!({"enabled": false}).to_string();
    let (status, _, answer) = call(gh, "PUT", "/api/v1/services/a2a", &[&gia], Some(&off));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["services"]["a2a"],
        false
    );
    assert!(
        gh.audit_of("admin_change")
            .iter()
            .any(|e| e["fields"]["service"] == "a2a" && e["fields"]["enabled"] == false),
        "the change is audited"
    );
    let on = json!({"enabled": true}).to_string();
    let (status, _, _) = call(gh, "PUT", "/api/v1/services/a2a", &[&gia], Some(&on));
    assert_eq!(status, 200);
    let (status, _, answer) = call(gh, "PUT", "/api/v1/services/teleport", &[&gia], Some(&on));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("the services are"), "{answer}");

    // alice administers nothing: refused, and the refusals are audited.
    for (method, path, body) in [
        ("GET", "/api/v1/policies".to_string(), None),
        ("GET", query.clone(), None),
        (
            "PUT",
            "/api/v1/services/a2a".to_string(),
            Some(off.as_str()),
        ),
        ("GET", "/api/v1/plugins".to_string(), None),
        (
            "PUT",
            "/api/v1/plugins/totp-mfa".to_string(),
            Some(on.as_str()),
        ),
    ] {
        let (status, _, answer) = call(gh, method, &path, &[&alice], body);
        assert_eq!(status, 403, "{path}: {answer}");
    }
    let refused = gh
        .audit_of("admin_decision")
        .into_iter()
        .filter(|e| e["user"] == GATEWAY_USER && e["fields"]["allowed"] == false)
        .count();
    assert_eq!(refused, 5);

    // A draft policy checked before it is deployed: valid; a typo with its position; an id
    // another file already uses. alice may not.
    let check = |who: &str, name: &str, text: &str| {
        let body = json!({"name": name, "text": text}).to_string();
        let (status, _, answer) =
            call(gh, "POST", "/api/v1/policies/validate", &[who], Some(&body));
        (status, serde_json::from_str::<Value>(&answer).unwrap())
    };
    let (status, valid) = check(
        &gia,
        "ops.cedar",
        "@id(\"ops-view\")\npermit (principal in Group::\"gateway-admins\", action == Action::\"view_cluster\", resource);\n",
    );
    assert_eq!(status, 200, "{valid}");
    assert_eq!(
        (&valid["valid"], &valid["policies"]),
        (&json!(true), &json!(1)),
        "{valid}"
    );
    let (_, typo) = check(
        &gia,
        "ops.cedar",
        "@id(\"ops-view\")\npermit (principal, action == Action::\"no_such_action\", resource);\n",
    );
    assert_eq!(typo["valid"], false, "{typo}");
    assert_eq!(typo["problems"][0]["file"], "ops.cedar", "{typo}");
    assert_eq!(typo["problems"][0]["line"], 2, "{typo}");
    let (_, clash) = check(
        &gia,
        "other.cedar",
        "@id(\"gateway-admins-administer\")\npermit (principal, action == Action::\"view_cluster\", resource);\n",
    );
    assert_eq!(clash["valid"], false, "{clash}");
    assert!(
        clash["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already defined at"),
        "{clash}"
    );
    let (status, _) = check(&alice, "ops.cedar", "permit (principal, action, resource);");
    assert_eq!(status, 403);

    // The plugins: installed, granted, not enabled; gia enables the TOTP plugin.
    let (status, _, answer) = call(gh, "GET", "/api/v1/plugins", &[&gia], None);
    assert_eq!(status, 200, "{answer}");
    let listed: Value = serde_json::from_str(&answer).unwrap();
    let totp = &listed.as_array().unwrap()[0];
    assert_eq!(
        (
            &totp["name"],
            &totp["enabled"],
            &totp["loaded"],
            &totp["kinds"],
            &totp["granted_secrets"]
        ),
        (
            &json!("totp-mfa"),
            &json!(false),
            &json!(false),
            &json!(["aa"]),
            &json!(["totp-seed/*"])
        ),
        "{listed:#}"
    );
    let (status, _, answer) = call(gh, "PUT", "/api/v1/plugins/totp-mfa", &[&gia], Some(&on));
    assert_eq!(status, 200, "{answer}");
    let enabled: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        (&enabled["enabled"], &enabled["loaded"]),
        (&json!(true), &json!(true))
    );
    let change = gh
        .audit_of("admin_change")
        .into_iter()
        .find(|e| {
            e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("enabled `totp-mfa` (api)")
        })
        .expect("the plugin change is audited");
    assert_eq!(change["user"], "gia", "{change}");
    assert!(
        change["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{change}"
    );
    let (status, _, answer) = call(
        gh,
        "PUT",
        "/api/v1/plugins/no-such-plugin",
        &[&gia],
        Some(&on),
    );
    assert_eq!(status, 404, "{answer}");
    let (status, _, answer) = call(
        gh,
        "PUT",
        "/api/v1/plugins/totp-mfa",
        &[&gia],
        Some("{\"on\":1}"),
    );
    assert_eq!(status, 422, "{answer}");

    // Now a sign-in asks for the one-time code after the password: nothing is issued until it
    // is given; a wrong code is refused like a wrong password; the right one signs in.
    let login = |answers: Value| {
        let body = json!({"user": GATEWAY_USER, "password": GATEWAY_PASSWORD, "answers": answers});
        let (status, _, answer) = call(gh, "POST", "/api/v1/login", &[], Some(&body.to_string()));
        (status, serde_json::from_str::<Value>(&answer).unwrap())
    };
    let (status, asked) = login(json!({}));
    assert_eq!(status, 401, "{asked}");
    assert_eq!(asked["error"]["code"], "answer_needed", "{asked}");
    assert_eq!(asked["error"]["question"]["key"], "otp", "{asked}");
    assert_eq!(asked["error"]["question"]["echo"], false, "{asked}");
    assert!(asked.get("token").is_none());
    let code = support::totp::totp_now();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, refused) = login(json!({"otp": wrong}));
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["error"]["code"], "unauthorized", "{refused}");
    assert!(refused["error"].get("question").is_none(), "{refused}");
    assert!(
        gh.audit_of("login_failed").iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("plugin `totp-mfa` denied: wrong one-time code")),
        "the wrong code is audited"
    );
    let (status, signed_in) = login(json!({"otp": code}));
    assert_eq!(status, 200, "{signed_in}");
    assert!(signed_in["token"].as_str().unwrap().starts_with("ght1."));
    let ok = gh.audit_of("login_ok").pop().unwrap();
    assert_eq!(ok["detail"], "API login (password and totp-mfa)", "{ok}");
    // The same code again: refused (one use per code).
    let (status, replay) = login(json!({"otp": code}));
    assert_eq!(status, 401, "{replay}");

    // Disabled again: the password alone signs in.
    let (status, answer) = {
        let (s, _, a) = call(gh, "PUT", "/api/v1/plugins/totp-mfa", &[&gia], Some(&off));
        (s, serde_json::from_str::<Value>(&a).unwrap())
    };
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["enabled"], &answer["loaded"]),
        (&json!(false), &json!(false))
    );
    let (status, answer) = login(json!({}));
    assert_eq!(status, 200, "{answer}");
}

const REQUEST_POLICY: &str = r#"
@id("rita-may-request")
permit (principal == User::"rita", action == Action::"request_access", resource in Asset::"db1");

@id("ron-may-request")
permit (principal == User::"ron", action == Action::"request_access", resource in Asset::"db1");

@id("carl-reviews")
permit (principal == User::"carl", action in Action::"review", resource is AccessRequest);

@id("one-approval")
permit (principal, action == Action::"grant_request", resource is AccessRequest)
when { resource.requester == principal && context.approvals >= 1 };
"#;
const PORTAL_PASSWORD: &str = "Portal-user-pw-6Vx";

/// Runs `tests/browser/SCRIPT` with node against `w`'s gateway, with the settings every portal
/// script reads (GH_URL, PASSWORD, CHROMIUM, SCREENSHOTS) and `settings`; fails with `what` and
/// the script's output when a check failed. What it printed.
fn portal_script(
    w: &World,
    (chromium, shots): (&std::path::Path, &str),
    script: &str,
    settings: &[(&str, &str)],
    what: &str,
) -> String {
    let mut node = std::process::Command::new("node");
    node.arg(script)
        .current_dir(support::browser::browser_dir())
        .env("GH_URL", w.gh.api_url())
        .env("PASSWORD", PORTAL_PASSWORD)
        .env("CHROMIUM", chromium)
        .env("SCREENSHOTS", shots)
        .envs(settings.iter().copied());
    let out = support::run(node, None, Duration::from_secs(300));
    let printed = out.stdout_text();
    eprintln!("{printed}");
    assert!(out.status.success(), "{what}:\n{}", out.describe());
    printed
}

/// The portal in Debian's chromium (tests/browser/portal.mjs): rita signs in, finds db1 in "My
/// access", asks for its password; carl approves in a second browser context; rita checks the
/// password out (the vault's, shown then hidden), checks it in, asks for a session and gets an
/// ssh line, which a real ssh then uses. Screenshots go to `GATEHOUSE_PORTAL_SCREENSHOTS` when
/// set (docs/portal.md's come from there).
#[test]
fn the_portal_in_chromium_requests_approves_checks_out_and_launches() {
    let chromium = support::browser::require_browser_tools();
    let mut w = World::builder("portal_ui")
        .setup(|ctx| {
            // carl approves and audits (he may watch every recording).
            // ada administers (gateway-admins).
            ctx.gh.cli_ok(&["group", "add", "auditors"]);
            ctx.gh.cli_ok(&["group", "add", "gateway-admins"]);
            ctx.gh.cli_ok(&["group", "add", "supervisors"]);
            for (user, groups) in [
                ("rita", &[][..]),
                (
                    "carl",
                    &["--group", "auditors", "--group", "supervisors"][..],
                ),
                ("ron", &[][..]),
                ("ada", &["--group", "gateway-admins"][..]),
            ] {
                let mut args = vec!["user", "add", user, "--password-stdin"];
                args.extend_from_slice(groups);
                ctx.gh.cli_stdin_ok(&args, &format!("{PORTAL_PASSWORD}\n"));
            }
            std::fs::write(
                ctx.gh.data_dir().join("policies/portal.cedar"),
                REQUEST_POLICY,
            )
            .unwrap();
            let admins = format!(
                "{}\n@id(\"admins-run-the-cluster\")\npermit (principal in Group::\"gateway-admins\", action in [Action::\"view_cluster\", Action::\"manage_cluster\"], resource);\n",
                include_str!("../policies/examples/gateway-admins.cedar")
            );
            std::fs::write(ctx.gh.data_dir().join("policies/admins.cedar"), admins).unwrap();
            std::fs::write(
                ctx.gh.data_dir().join("policies/recordings.cedar"),
                include_str!("../policies/examples/auditors-view-recordings.cedar"),
            )
            .unwrap();
            std::fs::write(
                ctx.gh.data_dir().join("policies/supervisors.cedar"),
                include_str!("../policies/examples/supervisors-end-sessions.cedar"),
            )
            .unwrap();
            ctx.gh.edit_settings(|s| s["requests"] = json!({}));
            // The TOTP plugin, installed and granted, not enabled: ada enables it in the page.
            ctx.gh.install_plugin(
                ctx.scratch,
                "totp-mfa",
                "secrets = [\"totp-seed/*\"]\n",
                None,
            );
            ctx.gh.cli_ok(&["plugin", "disable", "totp-mfa"]);
            ctx.gh
                .cli_stdin_ok(&["plugin-secret", "set", "totp-seed/rita"], support::totp::SEED);
        })
        .start();
    let shots = std::env::var("GATEHOUSE_PORTAL_SCREENSHOTS").ok();
    let scratch = tempfile::tempdir().unwrap();
    let shots_dir = shots
        .clone()
        .unwrap_or_else(|| scratch.path().display().to_string());
    let target = w.target_spec();
    let browser = (chromium.as_path(), shots_dir.as_str());
    let printed = portal_script(
        &w,
        browser,
        "portal.mjs",
        &[
            ("REQUESTER", "rita"),
            ("APPROVER", "carl"),
            ("TARGET", &target),
            ("VAULT_SECRET", w.vault_password()),
        ],
        "the portal checks failed",
    );
    for name in [
        "portal-sign-in",
        "portal-my-access",
        "portal-approvals",
        "portal-checkout",
    ] {
        let file = std::path::Path::new(&shots_dir).join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&file)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "no screenshot {}",
            file.display()
        );
    }

    // The launch line works with a stock ssh client.
    let command = printed
        .lines()
        .find_map(|l| l.strip_prefix("launch: "))
        .expect("the page printed no launch line")
        .to_string();
    let destination = command.split_whitespace().nth(3).unwrap();
    let (login, _) = destination.rsplit_once('@').unwrap();
    let client = w.client_as(login, PORTAL_PASSWORD);
    let ran = client.ssh("echo launched-from-the-portal");
    assert!(ran.status.success(), "{}", ran.describe());
    assert_eq!(ran.stdout_text(), "launched-from-the-portal\n");

    // A held ssh login released by the approval clicked in the browser: ron connects, the
    // gateway files his request and holds the connection; carl approves it in Approvals.
    let ron = w.client_as(&format!("ron@{}", w.target_spec()), PORTAL_PASSWORD);
    let held = std::thread::spawn(move || ron.ssh("echo released-in-the-browser"));
    let filed = support::poll(Duration::from_secs(30), || {
        w.gh.audit_of("request_created")
            .into_iter()
            .find(|e| e["user"] == "ron")
    });
    assert!(filed.is_some(), "ron's held login filed no request");
    assert!(!held.is_finished(), "ron's login was not held");
    portal_script(
        &w,
        browser,
        "portal-approve.mjs",
        &[("APPROVER", "carl"), ("REQUESTER", "ron")],
        "the approval in the browser failed",
    );
    let released = held.join().unwrap();
    assert!(released.status.success(), "{}", released.describe());
    assert_eq!(released.stdout_text(), "released-in-the-browser\n");

    // The Sessions page, as carl the auditor: both ssh sessions, filters, the player's link.
    portal_script(
        &w,
        browser,
        "portal-sessions.mjs",
        &[
            ("AUDITOR", "carl"),
            ("REQUESTER", "rita"),
            ("HELD_USER", "ron"),
        ],
        "the sessions page failed",
    );

    // A running session watched live and ended from the portal: alice's shell, carl of
    // supervisors. alice types the second line once she is told someone watches.
    let long = Duration::from_secs(120);
    let reason = "ended from the portal test";
    let mut alice = w.client().pty();
    alice.expect("$ ", long);
    alice.send_line("echo live-before-$((6*7))");
    alice.expect("live-before-42", long);
    let typing = std::thread::spawn(move || {
        alice.expect_stderr("carl is watching this session (read-only, api)", long);
        alice.send_line("echo live-while-watched-$((7*7))");
        alice.expect("live-while-watched-49", long);
        alice.wait(long)
    });
    portal_script(
        &w,
        browser,
        "portal-live.mjs",
        &[
            ("SUPERVISOR", "carl"),
            ("USER_NAME", GATEWAY_USER),
            ("EARLIER", "live-before-42"),
            ("LATER", "live-while-watched-49"),
            ("REASON", reason),
        ],
        "watching and ending a running session failed",
    );
    let ended = typing.join().unwrap();
    assert!(
        format!("{}{}", ended.stdout, ended.stderr).contains(&format!(
            "an administrator (carl) ended this session: {reason}"
        )),
        "{}",
        ended.describe()
    );
    let ended_event = support::poll(Duration::from_secs(10), || {
        w.gh.audit_of("session_ended")
            .into_iter()
            .find(|e| e["fields"]["terminated_by"] == "carl")
    })
    .expect("the end is audited with who ended it");
    assert_eq!(ended_event["fields"]["reason"], reason);

    // A session node to administer: the gateway opens its cluster port, sess-p joins from a
    // data directory of its own and is given a network.
    w.gh.stop_server();
    let cluster_port = support::free_port();
    w.gh.serve_options(
        &["--cluster-listen", &format!("127.0.0.1:{cluster_port}")],
        &[],
    );
    w.gh.serve();
    let token =
        w.gh.cli_json(&["node", "token", "--expires", "10m", "--json"]);
    let node_dir = tempfile::tempdir().unwrap();
    let mut join = Command::new(support::GATEHOUSE_BIN);
    join.arg("--data-dir")
        .arg(node_dir.path())
        .env_remove("GATEHOUSE_DATA_DIR")
        .args([
            "join",
            &format!("https://127.0.0.1:{cluster_port}"),
            "--token",
            token["token"].as_str().unwrap(),
            "--thumbprint",
            token["thumbprint"].as_str().unwrap(),
            "--node-id",
            "sess-p",
        ]);
    let joined = support::run(join, None, Duration::from_secs(60));
    assert!(joined.status.success(), "join: {}", joined.describe());
    w.gh.cli_ok(&["network", "add", "127.0.0.2/32", "--node", "sess-p"]);

    // The Admin page, as ada of gateway-admins; rita signs in with a one-time code while the
    // TOTP plugin is on, and sees no Admin link.
    portal_script(
        &w,
        browser,
        "portal-admin.mjs",
        &[
            ("ADMIN", "ada"),
            ("USER_NAME", "rita"),
            ("TARGET", &target),
            ("TOTP_SEED", support::totp::SEED),
            ("NODE", "sess-p"),
            ("NETWORK", "127.0.0.2/32"),
        ],
        "the admin page failed",
    );
    let plugin_changes: Vec<Value> =
        w.gh.audit_of("admin_change")
            .into_iter()
            .filter(|e| {
                e["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("`totp-mfa` (api)")
            })
            .collect();
    assert_eq!(plugin_changes.len(), 2, "{plugin_changes:?}");
    assert!(
        plugin_changes.iter().all(|e| e["user"] == "ada"),
        "{plugin_changes:?}"
    );
    assert!(
        w.gh.audit_of("login_ok")
            .iter()
            .any(|e| e["user"] == "rita" && e["detail"] == "portal login (password and totp-mfa)"),
        "rita's sign-in with the one-time code is audited"
    );
    let node_changes: Vec<String> =
        w.gh.audit()
            .into_iter()
            .filter(|e| e["user"] == "ada")
            .map(|e| e["detail"].as_str().unwrap_or("").to_string())
            .filter(|d| d.contains("sess-p") || d.contains("127.0.0.2/32"))
            .collect();
    assert!(
        node_changes.len() >= 3,
        "edit, network, removal: {node_changes:?}"
    );
    let changed: Vec<Value> =
        w.gh.audit_of("admin_change")
            .into_iter()
            .filter(|e| e["fields"]["service"] == "discovery")
            .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(changed.iter().all(|e| e["user"] == "ada"), "{changed:?}");

    // What the browser did is in the audit trail, as the portal's.
    let approvals = w.gh.audit_of("request_approved");
    assert_eq!(approvals.len(), 3, "{approvals:?}");
    assert!(
        approvals.iter().all(|e| e["user"] == "carl"),
        "{approvals:?}"
    );
    let releases = w.gh.audit_of("credential_released");
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert!(
        !w.gh.log_text().contains(w.vault_password()),
        "the vault password is in the log"
    );
}
