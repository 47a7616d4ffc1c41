//! `gatehouse policy`: tooling for policy authors. `validate`, `explain`, `who-can` and `reload`
//! run against the store (here, or in the running server through the admin socket); `test` and
//! `schema` need neither.

use crate::admin::{AdminContext, Inputs, json};
use crate::cli::{DecisionArgs, PolicyAdminCommand};
use anyhow::{Context, Result, anyhow, bail};
use gatehouse_core::{AuditKind, TargetSpec, User};
use gatehouse_policy::load::{self, Link};
use gatehouse_policy::{ChannelRequest, Decision, PolicyEngine, SessionFacts, scenario};
use gatehouse_store::{GRANTS, USERS};
use std::fmt::Write as _;
use std::path::Path;

/// The session facts and channel a `DecisionArgs` describes.
fn facts(
    engine: &PolicyEngine,
    args: &DecisionArgs,
) -> Result<(SessionFacts, Option<ChannelRequest>)> {
    let time = match &args.at {
        Some(text) => engine.clock().parse(text)?,
        None => engine.clock().now(),
    };
    let pairs = args
        .pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("`--pair {p}`: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let authenticated_with = if args.authenticated_with.is_empty() {
        vec!["password".to_string()]
    } else {
        args.authenticated_with.clone()
    };
    let forward = || -> Result<(String, u32)> {
        let text = args
            .forward
            .as_deref()
            .ok_or_else(|| anyhow!("`{}` needs `--forward HOST:PORT`", args.action))?;
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("`--forward {text}`: expected HOST:PORT"))?;
        let port = port
            .parse()
            .map_err(|_| anyhow!("`--forward {text}`: bad port"))?;
        Ok((host.to_string(), port))
    };
    let channel = match args.action.as_str() {
        "ssh_shell" => Some(ChannelRequest::Shell),
        "ssh_exec" => Some(ChannelRequest::Exec {
            command: args.command.clone().unwrap_or_default(),
        }),
        "ssh_subsystem" => Some(ChannelRequest::Subsystem {
            name: args.subsystem.clone().unwrap_or_else(|| "sftp".into()),
        }),
        "ssh_direct_tcpip" => {
            let (host, port) = forward()?;
            Some(ChannelRequest::DirectTcpip { host, port })
        }
        "ssh_forwarded_tcpip" => {
            let (host, port) = forward()?;
            Some(ChannelRequest::ForwardedTcpip { host, port })
        }
        "ssh_x11" => Some(ChannelRequest::X11),
        "ssh_agent" => Some(ChannelRequest::Agent),
        _ => None,
    };
    let protocol = match args.action.as_str() {
        "rdp_session" => "rdp",
        "telnet_session" => "telnet",
        "vnc_session" => "vnc",
        _ => "ssh",
    };
    Ok((
        SessionFacts {
            session_id: "explain".into(),
            protocol: protocol.into(),
            client: args.client,
            pairs,
            authenticated_with,
            ticket_verified: args.ticket_verified,
            time,
            node: None,
            destination: None,
        },
        channel,
    ))
}

fn target(text: &str) -> Result<TargetSpec> {
    text.parse()
        .map_err(|_| anyhow!("invalid target `{text}`: expected `ACCOUNT@ASSET`"))
}

/// Writes a decision with each determining policy's origin and text.
fn describe(engine: &PolicyEngine, decision: &Decision, out: &mut String) {
    let bundle = engine.bundle();
    let _ = writeln!(
        out,
        "decision  {}",
        if decision.allowed { "allow" } else { "deny" }
    );
    if decision.policies.is_empty() {
        let _ = writeln!(
            out,
            "policies  none: no policy permits it (deny by default)"
        );
    }
    for id in &decision.policies {
        let origin = bundle
            .origin(id)
            .map(|o| format!("{}:{}", o.file, o.line))
            .unwrap_or_else(|| "a link in the store".into());
        let _ = writeln!(out, "policy    {id}  ({origin})");
        if let Some(text) = bundle.policy_text(id) {
            for line in text.lines() {
                let _ = writeln!(out, "          | {line}");
            }
        }
    }
    for e in &decision.errors {
        let _ = writeln!(out, "error     {e}");
    }
}

/// `policy validate DIR` without a data directory: the files against the schema, without the
/// store's grants.
pub fn validate_standalone(dir: &Path) -> Result<String> {
    let mut out = validated(dir, &[], "is valid against the schema")?;
    out.push_str("(no data directory: grants in the store were not checked)\n");
    Ok(out)
}

/// Compiles the policies in `dir` with `links` and says what they hold.
fn validated(dir: &Path, links: &[Link], verdict: &str) -> Result<String> {
    let sources = load::read_dir(dir)?;
    let bundle = load::compile(&sources, links)?;
    let mut out = format!("`{}` {verdict}:", dir.display());
    for (what, count) in load::summary(&bundle) {
        let _ = write!(out, " {count} {what},");
    }
    out.pop();
    out.push('\n');
    Ok(out)
}

pub fn admin(ctx: &AdminContext, command: &PolicyAdminCommand, inputs: &Inputs) -> Result<String> {
    match command {
        PolicyAdminCommand::Validate { dir } => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| ctx.policy_settings.policy_dir.clone());
            let links = ctx
                .store
                .list(&GRANTS)?
                .iter()
                .map(load::grant_link)
                .collect::<Result<Vec<Link>, _>>()?;
            validated(&dir, &links, "is valid")
        }
        PolicyAdminCommand::Explain {
            user,
            target: t,
            decision,
            json: as_json,
        } => {
            let engine = (ctx.policy)()?;
            let record: User = ctx
                .store
                .get(&USERS, user)?
                .ok_or_else(|| anyhow!("user `{user}` does not exist"))?;
            let (facts, channel) = facts(&engine, decision)?;
            let decided = engine
                .decide_as(
                    &record,
                    &target(t)?,
                    &decision.action,
                    &facts,
                    channel.as_ref(),
                )
                .map_err(|e| anyhow!("{e}"))?;
            if *as_json {
                return json(&decided);
            }
            let mut out = format!(
                "request   {user} {} {t} at {} {:02}:{:02} ({})\n",
                decision.action,
                facts.time.weekday,
                facts.time.hour,
                facts.time.minute,
                facts.time.zone
            );
            describe(&engine, &decided, &mut out);
            Ok(out)
        }
        PolicyAdminCommand::WhoCan {
            target: t,
            decision,
            json: as_json,
        } => {
            let engine = (ctx.policy)()?;
            let (facts, channel) = facts(&engine, decision)?;
            let allowed = engine
                .who_can(&target(t)?, &decision.action, &facts, channel.as_ref())
                .map_err(|e| anyhow!("{e}"))?;
            if *as_json {
                let view: Vec<_> = allowed
                    .iter()
                    .map(|(u, d)| serde_json::json!({"user": u, "policies": d.policies}))
                    .collect();
                return json(&view);
            }
            let rows: Vec<Vec<String>> = allowed
                .iter()
                .map(|(u, d)| vec![u.clone(), d.policies.join(", ")])
                .collect();
            Ok(crate::admin::table(&["USER", "PERMITTED BY"], &rows))
        }
        PolicyAdminCommand::Reload => {
            if !ctx.in_server {
                bail!(
                    "no server is running: policies are loaded when `gatehouse serve` starts (check them with `gatehouse policy validate`)"
                );
            }
            let engine = (ctx.policy)()?;
            match engine.reload() {
                Ok(report) => {
                    audit_reload(ctx, inputs, Ok(&report));
                    Ok(format!(
                        "reloaded: {} files, {} policies, {} templates, {} grant links\n",
                        report.files, report.policies, report.templates, report.grant_links
                    ))
                }
                Err(e) => {
                    audit_reload(ctx, inputs, Err(&e.to_string()));
                    bail!("{e}\nthe previous policies stay in force")
                }
            }
        }
    }
}

/// Reloads when a policy file or the grants changed (or always, when `forced`), and audits the
/// outcome under `actor`. Used by the file watcher, SIGHUP and after admin changes.
pub fn reload_audited(ctx: &AdminContext, actor: &str, forced: bool) {
    let Ok(engine) = (ctx.policy)() else {
        return;
    };
    let outcome = if forced {
        Some(engine.reload())
    } else {
        engine.reload_if_changed()
    };
    let inputs = Inputs::by(actor);
    match outcome {
        Some(Ok(report)) => audit_reload(ctx, &inputs, Ok(&report)),
        Some(Err(e)) => audit_reload(ctx, &inputs, Err(&e.to_string())),
        None => {}
    }
}

/// Audits a reload's outcome.
pub fn audit_reload(
    ctx: &AdminContext,
    inputs: &Inputs,
    outcome: std::result::Result<&gatehouse_policy::ReloadReport, &str>,
) {
    let auditor = gatehouse_audit::Auditor::new(ctx.store.clone());
    let entry = match outcome {
        Ok(report) => gatehouse_audit::Entry::new(
            AuditKind::PolicyReloaded,
            format!(
                "policies reloaded: {} files, {} policies, {} grant links",
                report.files, report.policies, report.grant_links
            ),
        ),
        Err(problems) => gatehouse_audit::Entry::new(
            AuditKind::PolicyReloadFailed,
            format!("policy reload failed; the previous policies stay in force: {problems}"),
        ),
    }
    .user(inputs.actor.clone());
    auditor.record_best_effort(entry);
}

/// `gatehouse policy test`.
pub fn test(path: &Path, as_json: bool) -> Result<bool> {
    let results = scenario::run_path(path)?;
    let passed = results.iter().all(|r| r.passed());
    if as_json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(passed);
    }
    let (mut ok, mut failed) = (0, 0);
    for result in &results {
        println!("{}", result.file);
        for case in &result.cases {
            if case.passed {
                ok += 1;
                println!("  ok    {}", case.name);
            } else {
                failed += 1;
                println!("  FAIL  {}", case.name);
                if let Some(why) = &case.failure {
                    println!("        {why}");
                }
            }
        }
    }
    println!("{ok} passed, {failed} failed");
    Ok(passed)
}

/// `gatehouse policy explain --scenario FILE --request NAME`.
pub fn explain_scenario(file: &Path, request: &str, as_json: bool) -> Result<String> {
    let loaded = scenario::load(file).with_context(|| format!("loading `{}`", file.display()))?;
    let spec = loaded
        .scenario
        .requests
        .iter()
        .find(|r| r.name == request)
        .ok_or_else(|| anyhow!("`{}` has no request named `{request}`", file.display()))?;
    let (decision, _) = loaded.decide(spec)?;
    if as_json {
        return json(&decision);
    }
    let mut out = format!(
        "request   {} {} {}\ndecision  {}\n",
        spec.principal,
        spec.action,
        spec.resource,
        if decision.allowed { "allow" } else { "deny" }
    );
    if decision.policies.is_empty() {
        out.push_str("policies  none: no policy permits it (deny by default)\n");
    }
    for id in &decision.policies {
        let origin = loaded
            .bundle
            .origin(id)
            .map(|o| format!("{}:{}", o.file, o.line))
            .unwrap_or_else(|| "a link".into());
        let _ = writeln!(out, "policy    {id}  ({origin})");
        if let Some(text) = loaded.bundle.policy_text(id) {
            for line in text.lines() {
                let _ = writeln!(out, "          | {line}");
            }
        }
    }
    for e in &decision.errors {
        let _ = writeln!(out, "error     {e}");
    }
    Ok(out)
}

/// The Cedar schema policies are written against (`gatehouse policy schema`).
pub const SCHEMA_SOURCE: &str = gatehouse_policy::schema::SCHEMA_SOURCE;
