//! The index's guards leave policies out before Cedar sees them; the decision (allowed, the
//! determining policies and the errors) must stay exactly Cedar's over the whole set. This test
//! writes policies with every guard form, including ones that fail or do not apply, and compares
//! the two on every combination of the request attributes they read.

use gatehouse_policy::scenario;
use serde_json::json;
use std::path::Path;

const POLICIES: &str = r#"
@id("tagged-forbid")
forbid (principal, action in Action::"session", resource)
when { context.session.hasTag("quarantine") };

@id("hours")
permit (principal in Group::"ops", action in Action::"session", resource)
when { ["mon","tue","wed","thu","fri"].contains(context.time.weekday)
       && context.time.hour >= 8 && 18 > context.time.hour };

@id("ssh-only")
forbid (principal, action == Action::"rdp_session", resource)
unless { context.protocol == "rdp" && context.session.hasTag("rdp-ok") };

@id("mfa")
permit (principal == User::"alice", action == Action::"ssh_session", resource)
when { context.authenticated_with.contains("totp-mfa") || context.ticket_verified };

@id("has-request")
permit (principal, action in Action::"session", resource)
when { context has request && context.request.reason != "" };

@id("tag-value")
forbid (principal, action in Action::"session", resource)
when { context.session.hasTag("level") && context.session.getTag("level") == "low" };

@id("erroring")
forbid (principal, action in [Action::"session", Action::"ssh_channel"], resource)
when { context has request && context.request.reason == "x" && context.protocol == "ssh" };

@id("not-readable-first")
permit (principal, action in Action::"session", resource)
when { context.client.ip.isLoopback() && context.protocol == "rdp" };

@id("negations")
forbid (principal in Group::"ops", action in Action::"session", resource)
when { !(context.protocol != "ssh") && !context.ticket_verified && context.time.hour < 6 };

@id("entity-attribute")
permit (principal, action == Action::"rdp_session", resource)
when { resource.name == "admin" && principal.name like "a*" };

@id("exec")
forbid (principal, action == Action::"ssh_exec", resource)
when { context.channel has command && context.channel.command like "rm *" };

@id("shell")
permit (principal, action in Action::"ssh_channel", resource)
when { context.channel.kind == "shell" || (context.channel has command && context.session.hasTag("rdp-ok")) };
"#;

#[test]
fn guarded_slices_decide_exactly_as_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/base.cedar");
    std::fs::write(dir.path().join("guards.cedar"), POLICIES).unwrap();

    let session = |id: &str, tags: serde_json::Value| json!({ "uid": format!("Session::\"{id}\""), "attrs": { "id": id }, "tags": tags });
    let mut requests = Vec::new();
    let sessions = ["plain", "quarantined", "rdp-ok", "low", "high"];
    for principal in ["alice", "bob"] {
        for action in ["ssh_session", "rdp_session", "ssh_exec"] {
            for protocol in ["ssh", "rdp"] {
                for (weekday, hour) in [
                    ("tue", 5),
                    ("tue", 8),
                    ("wed", 17),
                    ("fri", 18),
                    ("sat", 10),
                ] {
                    for s in sessions {
                        for ticket in [false, true] {
                            for auth in [vec!["password"], vec!["password", "totp-mfa"]] {
                                // "ghost" names a request that is not among the entities:
                                // reading its attributes fails in Cedar.
                                for reason in [None, Some(""), Some("INC-1"), Some("ghost")] {
                                    let mut context = json!({
                                        "protocol": protocol,
                                        "time": { "weekday": weekday, "hour": hour, "minute": 0,
                                                  "date": "2026-11-24", "zone": "UTC" },
                                        "session": { "__entity": { "type": "Session", "id": s } },
                                        "authenticated_with": auth,
                                        "ticket_verified": ticket,
                                    });
                                    if action == "ssh_exec" {
                                        context["channel"] = if ticket {
                                            json!({ "kind": "exec", "command": "rm -rf /tmp/x" })
                                        } else {
                                            json!({ "kind": "shell" })
                                        };
                                    }
                                    if let Some(reason) = reason {
                                        context["request"] = json!({
                                            "__entity": { "type": "AccessRequest", "id": reason }
                                        });
                                    }
                                    requests.push(json!({
                                        "name": format!("{}", requests.len()),
                                        "principal": format!("User::\"{principal}\""),
                                        "action": format!("Action::\"{action}\""),
                                        "resource": "Account::\"admin@db1\"",
                                        "context": context,
                                        "decision": "deny",
                                    }));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let request_entity = |id: &str| {
        json!({
            "uid": format!("AccessRequest::\"{id}\""),
            "attrs": {
                "requester": { "__entity": { "type": "User", "id": "alice" } },
                "account": { "__entity": { "type": "Account", "id": "admin@db1" } },
                "access": "session", "reason": id, "ticket": "", "ticket_verified": false,
                "duration_minutes": 60, "emergency": false,
            },
        })
    };
    let scenario = json!({
        "description": "guards against the whole set",
        "policies": [base.display().to_string(), "guards.cedar"],
        "context": {
            "client": { "ip": { "__extn": { "fn": "ip", "arg": "10.0.0.7" } }, "port": 50000 },
            "gateway": { "__entity": { "type": "Gateway", "id": "gw1" } },
        },
        "entities": [
            { "uid": "User::\"alice\"", "parents": ["Group::\"ops\""], "attrs": { "name": "alice" } },
            { "uid": "User::\"bob\"", "attrs": { "name": "bob" } },
            { "uid": "Group::\"ops\"", "attrs": { "name": "ops" } },
            { "uid": "Gateway::\"gw1\"", "attrs": { "name": "gw1" } },
            { "uid": "Asset::\"db1\"", "attrs": { "name": "db1", "address": "127.0.0.1", "port": 22 } },
            { "uid": "Account::\"admin@db1\"", "parents": ["Asset::\"db1\""],
              "attrs": { "name": "admin", "asset": { "__entity": { "type": "Asset", "id": "db1" } } } },
            session("plain", json!({})),
            session("quarantined", json!({ "quarantine": "yes" })),
            session("rdp-ok", json!({ "rdp-ok": "1" })),
            session("low", json!({ "level": "low" })),
            session("high", json!({ "level": "high" })),
            request_entity(""),
            request_entity("INC-1"),
        ],
        "requests": requests,
    });
    let file = dir.path().join("guards.toml");
    std::fs::write(&file, toml::to_string(&scenario).unwrap()).unwrap();

    let loaded = scenario::load(&file).unwrap();
    let (mut allowed, mut errors, mut forbidden_by_tag) = (0, 0, 0);
    for request in &loaded.scenario.requests {
        let (sliced, whole) = loaded.decide(request).unwrap();
        assert_eq!(sliced, whole, "request {request:?}");
        allowed += usize::from(whole.allowed);
        errors += usize::from(!whole.errors.is_empty());
        forbidden_by_tag += usize::from(whole.policies.iter().any(|p| p == "tagged-forbid"));
    }
    // The grid reaches every outcome: permits, forbids by a guarded policy, and Cedar errors
    // (which the guards must leave to Cedar).
    let total = loaded.scenario.requests.len();
    assert!(
        allowed > 0 && allowed < total,
        "{allowed} of {total} allowed"
    );
    assert!(errors > 0, "no request made a policy fail");
    assert!(forbidden_by_tag > 0, "the tag forbid never decided");
}
