//! Executing admin commands against the store. Secrets and files are read on the caller's side
//! ([`gather_inputs`]) so that the same request can run here or in the running server.

use crate::admin_groups;
use crate::cli::*;
use anyhow::{Context, Result, anyhow, bail};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    Account, Asset, AssetGroup, AuditEvent, AuditKind, Grant, Group, HostKeyPolicy, Name,
    Principal, RdpCertificatePolicy, RdpEndpoint, SealedSecret, SessionRecord, TargetSpec, User,
};
use gatehouse_policy::PolicyEngine;
use gatehouse_store::{
    ACCOUNTS, ASSETS, GRANTS, GROUPS, SESSIONS, Store, StoreError, Table, Txn, USERS, account_key,
};
use gatehouse_vault::{SecretKind, UserSecretKind, Vault};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroize;

/// Secrets and file contents a command needs, gathered before it runs.
#[derive(Default, Serialize, Deserialize)]
pub struct Inputs {
    pub password: Option<String>,
    pub private_key: Option<String>,
    pub public_keys: Vec<String>,
    pub host_key: Option<String>,
    /// A PEM certificate (A2A registration).
    #[serde(default)]
    pub certificate: Option<String>,
    /// Who asked (the operating-system user), for the audit trail.
    pub actor: String,
}

impl Inputs {
    /// Empty inputs for a request made by `actor`.
    pub fn by(actor: impl Into<String>) -> Self {
        let mut inputs = Self::default();
        inputs.actor = actor.into();
        inputs
    }
}

impl Drop for Inputs {
    fn drop(&mut self) {
        self.password.zeroize();
        self.private_key.zeroize();
    }
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inputs([redacted])")
    }
}

/// A command with its inputs: what travels over the admin socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminRequest {
    pub command: AdminCommand,
    pub inputs: Inputs,
}

/// The answer to an [`AdminRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminResponse {
    pub ok: bool,
    pub output: String,
}

pub(crate) fn read_first_line_stdin() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_string();
    line.zeroize();
    if trimmed.is_empty() {
        bail!("no password on standard input");
    }
    Ok(trimmed)
}

fn read_file(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} `{}`", path.display()))
}

fn read_password(stdin: bool, file: &Option<std::path::PathBuf>) -> Result<Option<String>> {
    if stdin {
        return read_first_line_stdin().map(Some);
    }
    match file {
        Some(path) => {
            let mut text = read_file(path, "password file")?;
            let first = text.lines().next().unwrap_or_default().to_string();
            text.zeroize();
            if first.is_empty() {
                bail!("password file `{}` is empty", path.display());
            }
            Ok(Some(first))
        }
        None => Ok(None),
    }
}

fn read_private_key(path: &Option<std::path::PathBuf>) -> Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let text = read_file(path, "private key file")?;
    if let Err(e) = russh::keys::decode_secret_key(&text, None) {
        bail!(
            "`{}` is not an unencrypted OpenSSH private key: {e}",
            path.display()
        );
    }
    Ok(Some(text))
}

/// Reads what a command needs from standard input and files.
pub fn gather_inputs(command: &AdminCommand) -> Result<Inputs> {
    let mut inputs = Inputs::by(std::env::var("USER").unwrap_or_else(|_| "local".into()));
    if let AdminCommand::A2a(c) = command {
        crate::a2a_cmd::gather(c, &mut inputs)?;
    }
    match command {
        AdminCommand::User(UserCommand::Add {
            password_stdin,
            key_files,
            ..
        }) => {
            if *password_stdin {
                inputs.password = Some(read_first_line_stdin()?);
            }
            for path in key_files {
                inputs.public_keys.push(read_file(path, "public key file")?);
            }
        }
        AdminCommand::PluginSecret(PluginSecretCommand::Set { .. }) => {
            inputs.password = Some(read_first_line_stdin()?);
        }
        AdminCommand::User(UserCommand::SetPassword { .. }) => {
            inputs.password = Some(read_first_line_stdin()?);
        }
        AdminCommand::User(UserCommand::AddKey { key_file, .. }) => {
            inputs
                .public_keys
                .push(read_file(key_file, "public key file")?);
        }
        AdminCommand::Asset(AssetCommand::Add {
            host_key,
            host_key_file,
            ..
        }) => {
            inputs.host_key = match (host_key, host_key_file) {
                (Some(line), _) => Some(line.clone()),
                (None, Some(path)) => Some(read_file(path, "host key file")?),
                (None, None) => None,
            };
        }
        AdminCommand::Account(
            AccountCommand::Add {
                password_stdin,
                password_file,
                key_file,
                ..
            }
            | AccountCommand::SetSecret {
                password_stdin,
                password_file,
                key_file,
                ..
            },
        ) => {
            inputs.password = read_password(*password_stdin, password_file)?;
            inputs.private_key = read_private_key(key_file)?;
        }
        _ => {}
    }
    Ok(inputs)
}

/// What the executor works with.
pub struct AdminContext {
    pub store: Arc<Store>,
    /// Loaded on demand: only commands that seal secrets need the master key.
    pub vault: Box<dyn Fn() -> Result<Arc<Vault>> + Send + Sync>,
    /// The policy engine: the running server's, or one loaded on demand from the data directory.
    pub policy: Box<dyn Fn() -> Result<Arc<PolicyEngine>> + Send + Sync>,
    pub policy_settings: gatehouse_policy::EngineSettings,
    /// Whether this runs inside the server (for `policy reload`).
    pub in_server: bool,
    /// The running server's SSH sessions (to end one); `None` outside the server.
    pub live: Option<gatehouse_ssh::LiveSessions>,
    /// Where the running server's cluster port listens (for the join line `node token`
    /// prints); `None` outside the server or without a cluster port.
    pub cluster_port: Option<std::net::SocketAddr>,
    /// The data directory's recordings (for `audit verify` to check sealed recordings).
    pub recordings: Option<std::path::PathBuf>,
    /// The running server's search index (`session reindex` rebuilds it there).
    pub search: Option<Arc<gatehouse_search::SearchIndex>>,
    /// Where the search index is, for commands run without the server.
    pub search_dir: Option<std::path::PathBuf>,
    /// settings.json `directory`, for `directory sync|show`.
    pub directory: Option<gatehouse_directory::DirectorySettings>,
}

pub(crate) fn name(kind: &str, value: &str) -> Result<Name> {
    Name::new(value).map_err(|e| anyhow!("invalid {kind}: {e}"))
}

fn target(value: &str) -> Result<TargetSpec> {
    value
        .parse::<TargetSpec>()
        .map_err(|_| anyhow!("invalid target `{value}`: expected `ACCOUNT@ASSET`"))
}

pub(crate) fn json<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// A listing: with `--json` the `view` of every record as one JSON array, else a table with one
/// `row` per record.
pub(crate) fn json_or_table<'a, T, V: Serialize>(
    flag: &JsonFlag,
    records: &'a [T],
    view: impl Fn(&'a T) -> V,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<String> {
    if flag.json {
        return json(&records.iter().map(view).collect::<Vec<_>>());
    }
    Ok(table(headers, &records.iter().map(row).collect::<Vec<_>>()))
}

/// The record looked up, or the error that the `kind` named `key` does not exist.
pub(crate) fn existing<T>(record: Option<T>, kind: &str, key: impl std::fmt::Display) -> Result<T> {
    record.ok_or_else(|| anyhow!("{kind} `{key}` does not exist"))
}

/// Formats rows as an aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

pub(crate) fn names_text(names: &[Name], separator: &str) -> String {
    names
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(separator)
}

pub fn time_text(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(t.to_system_time()).to_string()
}

pub(crate) fn audit_change(
    txn: &mut Txn<'_>,
    actor: &str,
    detail: String,
) -> Result<(), StoreError> {
    // Audited in the same transaction as the change itself: both land or neither does.
    txn.append_audit(AuditEvent {
        seq: 0,
        time: Timestamp::now(),
        kind: AuditKind::AdminChange,
        session: None,
        user: Some(actor.to_string()),
        target: None,
        client: Some("cli".into()),
        detail,
        fields: Default::default(),
        chain: None,
    })
    .map(|_| ())
}

/// Makes `change` in one transaction with its audit event `detail`: both land or neither does.
pub(crate) fn write_audited(
    ctx: &AdminContext,
    actor: &str,
    detail: &str,
    change: impl FnOnce(&mut Txn<'_>) -> Result<()>,
) -> Result<()> {
    ctx.store.write(|txn| {
        change(txn)?;
        audit_change(txn, actor, detail.to_string())?;
        Ok(())
    })
}

/// Inserts a record that must be new, and audits it in the same transaction.
pub(crate) fn insert_new<T: Serialize + serde::de::DeserializeOwned>(
    txn: &mut Txn<'_>,
    table: &Table<T>,
    key: &str,
    record: &T,
    what: &str,
    actor: &str,
) -> Result<()> {
    if txn.get(table, key)?.is_some() {
        bail!("{what} already exists");
    }
    txn.put(table, key, record)?;
    audit_change(txn, actor, format!("added {what}"))?;
    Ok(())
}

/// Runs one admin command and returns what it prints.
pub fn execute(ctx: &AdminContext, request: &AdminRequest) -> Result<String> {
    let inputs = &request.inputs;
    match &request.command {
        AdminCommand::StoreStatus { location } => crate::store_cmd::status(&ctx.store, location),
        AdminCommand::User(c) => user(ctx, c, inputs),
        AdminCommand::Group(c) => group(ctx, c, inputs),
        AdminCommand::Asset(c) => asset(ctx, c, inputs),
        AdminCommand::Account(c) => account(ctx, c, inputs),
        AdminCommand::Grant(c) => grant(ctx, c, inputs),
        AdminCommand::AssetGroup(c) => admin_groups::asset_group(ctx, c, inputs),
        AdminCommand::PluginSecret(c) => crate::plugin_glue::secret_command(ctx, c, inputs),
        AdminCommand::PolicyAdmin(c) => crate::policy_cmd::admin(ctx, c, inputs),
        AdminCommand::A2a(c) => crate::a2a_cmd::admin(ctx, c, inputs),
        AdminCommand::Service(c) => crate::a2a_cmd::service(ctx, c, inputs),
        AdminCommand::Directory(c) => crate::directory_cmd::run(ctx, c),
        AdminCommand::Node(c) => crate::node_cmd::node(ctx, c, inputs),
        AdminCommand::Network(c) => crate::node_cmd::network(ctx, c, inputs),
        AdminCommand::Lifecycle(c) => crate::lifecycle_cmd::execute(ctx, c, inputs),
        AdminCommand::Audit(AuditCommand::List { limit, json: j }) => {
            let events = ctx.store.list_audit(*limit)?;
            json_or_table(
                j,
                &events,
                |e| e,
                &["SEQ", "TIME", "KIND", "USER", "TARGET", "DETAIL"],
                |e| {
                    vec![
                        e.seq.to_string(),
                        time_text(e.time),
                        serde_json::to_value(&e.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        e.user.clone().unwrap_or_default(),
                        e.target.clone().unwrap_or_default(),
                        e.detail.clone(),
                    ]
                },
            )
        }
        AdminCommand::Report {
            since,
            until,
            csv,
            json: j,
        } => {
            let report = crate::report::build(ctx, since, until.as_deref())?;
            if *csv {
                return Ok(crate::report::to_csv(&report));
            }
            if j.json {
                return json(&report);
            }
            Ok(report_text(&report))
        }
        AdminCommand::Audit(AuditCommand::Verify { head, json: j }) => {
            verify_audit(ctx, head.as_deref(), j.json)
        }
        AdminCommand::SessionRecord(SessionRecordCommand::Reindex) => crate::search::reindex(ctx),
        AdminCommand::SessionRecord(SessionRecordCommand::List(_)) => {
            json(&ctx.store.list(&SESSIONS)?)
        }
        AdminCommand::SessionRecord(SessionRecordCommand::Show { id }) => {
            let record: Option<SessionRecord> = ctx.store.get(&SESSIONS, id)?;
            json(&record)
        }
        AdminCommand::SessionRecord(SessionRecordCommand::Terminate { id, reason }) => {
            terminate_session(ctx, id, reason)
        }
    }
}

/// Ends a running session: here when it runs in this gateway, or at its session node's next
/// call to this control node.
fn terminate_session(ctx: &AdminContext, id: &str, reason: &str) -> Result<String> {
    let Some(live) = &ctx.live else {
        bail!("no gateway is running on this data directory: there is no session to end");
    };
    match end_session(&ctx.store, live, id, "local", reason)? {
        gatehouse_api::Terminated::Here => Ok(format!("ended session {id}\n")),
        gatehouse_api::Terminated::AtNode(node) => Ok(format!(
            "session {id} runs on node `{node}`: it ends at the node's next call (within 10 s)\n"
        )),
        gatehouse_api::Terminated::NotRunning => {
            let record: Option<SessionRecord> = ctx.store.get(&SESSIONS, id)?;
            match record {
                None => bail!("no session `{id}`"),
                Some(r) if r.ended.is_some() => bail!("session `{id}` has ended already"),
                Some(_) => bail!(
                    "session `{id}` is not running in this gateway (it was cut off and is closed at the next start)"
                ),
            }
        }
    }
}

/// Ends session `id` for `by` (an administrator's name, or `local`): in this gateway's `live`
/// sessions, or by asking its session node; `NotRunning` when neither runs it.
pub(crate) fn end_session(
    store: &Arc<Store>,
    live: &gatehouse_ssh::LiveSessions,
    id: &str,
    by: &str,
    reason: &str,
) -> Result<gatehouse_api::Terminated> {
    if live.terminate(id, by, reason) {
        return Ok(gatehouse_api::Terminated::Here);
    }
    let record: Option<SessionRecord> = store.get(&SESSIONS, id)?;
    match record {
        Some(SessionRecord {
            node: Some(node),
            ended: None,
            ..
        }) => {
            gatehouse_cluster::control::request_termination(
                store,
                &gatehouse_audit::Auditor::new(store.clone()),
                &node,
                gatehouse_cluster::wire::Termination {
                    session: id.to_string(),
                    by: by.to_string(),
                    reason: reason.to_string(),
                },
            )?;
            Ok(gatehouse_api::Terminated::AtNode(node))
        }
        _ => Ok(gatehouse_api::Terminated::NotRunning),
    }
}

/// The API's way to end sessions: [`end_session`] over this gateway's running sessions.
pub struct ApiSessionControl {
    pub store: Arc<Store>,
    pub live: gatehouse_ssh::LiveSessions,
}

impl gatehouse_api::SessionControl for ApiSessionControl {
    fn terminate(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> std::result::Result<gatehouse_api::Terminated, String> {
        end_session(&self.store, &self.live, id, by, reason).map_err(|e| format!("{e:#}"))
    }
}

fn user(ctx: &AdminContext, command: &UserCommand, inputs: &Inputs) -> Result<String> {
    match command {
        UserCommand::Add {
            name: n,
            groups,
            email,
            ..
        } => {
            let user_name = name("user name", n)?;
            if let Some(address) = email
                && !valid_email(address)
            {
                bail!("`{address}` is not an email address (expected name@domain)");
            }
            let password_hash = inputs
                .password
                .as_deref()
                .map(gatehouse_auth::hash_password)
                .transpose()?;
            let rdp_secret = inputs
                .password
                .as_deref()
                .map(|p| rdp_secret(ctx, user_name.as_str(), p))
                .transpose()?;
            let keys = parse_keys(&inputs.public_keys)?;
            let groups = groups
                .iter()
                .map(|g| name("group name", g))
                .collect::<Result<Vec<_>>>()?;
            ctx.store.write(|txn| -> Result<()> {
                for g in &groups {
                    if txn.get(&GROUPS, g.as_str())?.is_none() {
                        bail!("group `{g}` does not exist");
                    }
                }
                let record = User {
                    name: user_name.clone(),
                    password_hash,
                    public_keys: keys,
                    groups,
                    email: email.clone(),
                    rdp_secret,
                    created: Timestamp::now(),
                };
                insert_new(
                    txn,
                    &USERS,
                    n,
                    &record,
                    &format!("user `{n}`"),
                    &inputs.actor,
                )
            })?;
            Ok(format!("added user `{n}`\n"))
        }
        UserCommand::List(j) => {
            let users: Vec<User> = ctx.store.list(&USERS)?;
            json_or_table(
                j,
                &users,
                user_view,
                &["NAME", "PASSWORD", "KEYS", "GROUPS"],
                |u| {
                    vec![
                        u.name.to_string(),
                        if u.password_hash.is_some() {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        u.public_keys.len().to_string(),
                        names_text(&u.groups, ","),
                    ]
                },
            )
        }
        UserCommand::Show { name: n, json: j } => {
            let u: User = existing(ctx.store.get(&USERS, n)?, "user", n)?;
            let view = user_view(&u);
            if j.json {
                return json(&view);
            }
            let mut out = format!(
                "user      {}\npassword  {}\ngroups    {}\ncreated   {}\n",
                u.name,
                if u.password_hash.is_some() {
                    "set"
                } else {
                    "none"
                },
                view["groups"].as_array().map(|g| g.len()).unwrap_or(0),
                time_text(u.created)
            );
            for key in &u.public_keys {
                let _ = writeln!(out, "key       {}", key_summary(key));
            }
            Ok(out)
        }
        UserCommand::Remove { name: n } => {
            let done = format!("removed user `{n}`");
            write_audited(ctx, &inputs.actor, &done, |txn| {
                if !txn.delete(&USERS, n)? {
                    bail!("user `{n}` does not exist");
                }
                let principal = Principal::User(name("user name", n)?);
                remove_grants(txn, |g| g.principal == principal)?;
                Ok(())
            })?;
            Ok(format!("{done}\n"))
        }
        UserCommand::SetPassword { name: n } => {
            let password = inputs
                .password
                .as_deref()
                .ok_or_else(|| anyhow!("no password given"))?;
            let hash = gatehouse_auth::hash_password(password)?;
            let sealed = rdp_secret(ctx, name("user name", n)?.as_str(), password)?;
            update_user(ctx, n, inputs, "changed the password of", |u| {
                u.password_hash = Some(hash.clone());
                u.rdp_secret = Some(sealed.clone());
                Ok(())
            })
        }
        UserCommand::AddKey { name: n, .. } => {
            let keys = parse_keys(&inputs.public_keys)?;
            update_user(ctx, n, inputs, "added a public key to", |u| {
                u.public_keys.extend(keys.iter().cloned());
                Ok(())
            })
        }
    }
}

/// The user's NT hash for RDP's NTLM, sealed by the vault for this user. Computed here because
/// only here is the plaintext password at hand; users whose password was set before RDP support
/// have none until it is set again.
fn rdp_secret(ctx: &AdminContext, user: &str, password: &str) -> Result<SealedSecret> {
    let vault = (ctx.vault)()?;
    let hash = gatehouse_rdp::NtHash::from_password(password);
    Ok(vault.seal_user_secret(user, UserSecretKind::RdpNtHash, hash.expose())?)
}

fn update_user(
    ctx: &AdminContext,
    n: &str,
    inputs: &Inputs,
    verb: &str,
    change: impl FnOnce(&mut User) -> Result<()>,
) -> Result<String> {
    let done = format!("{verb} user `{n}`");
    write_audited(ctx, &inputs.actor, &done, |txn| {
        let mut u: User = existing(txn.get(&USERS, n)?, "user", n)?;
        change(&mut u)?;
        txn.put(&USERS, n, &u)?;
        Ok(())
    })?;
    Ok(format!("{done}\n"))
}

fn parse_keys(texts: &[String]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for text in texts {
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            gatehouse_auth::parse_public_key(line).map_err(|e| anyhow!("{e}"))?;
            keys.push(line.to_string());
        }
    }
    Ok(keys)
}

fn key_summary(line: &str) -> String {
    match gatehouse_auth::parse_public_key(line) {
        Ok(k) => format!(
            "{} {}",
            k.algorithm().as_str(),
            k.fingerprint(Default::default())
        ),
        Err(_) => "(unreadable key)".into(),
    }
}

fn user_view(u: &User) -> serde_json::Value {
    serde_json::json!({
        "name": u.name,
        "password": u.password_hash.is_some(),
        "rdp": u.rdp_secret.is_some(),
        "public_keys": u.public_keys.iter().map(|k| key_summary(k)).collect::<Vec<_>>(),
        "groups": u.groups,
        "email": u.email,
        "created": time_text(u.created),
    })
}

fn remove_grants(txn: &mut Txn<'_>, pred: impl Fn(&Grant) -> bool) -> Result<usize> {
    let grants: Vec<Grant> = txn.list(&GRANTS)?;
    let mut removed = 0;
    for g in grants.iter().filter(|g| pred(g)) {
        txn.delete(&GRANTS, &g.id)?;
        removed += 1;
    }
    Ok(removed)
}

fn group(ctx: &AdminContext, command: &GroupCommand, inputs: &Inputs) -> Result<String> {
    match command {
        GroupCommand::Add {
            name: n,
            description,
            parents,
        } => admin_groups::add::<Group>(ctx, n, description, parents, inputs),
        GroupCommand::List(j) => admin_groups::list::<Group>(ctx, j),
        GroupCommand::Show { name: n, json: j } => {
            admin_groups::show(ctx, n, j, |g: &Group, members| {
                format!(
                    "group        {}\ndescription  {}\nin           {}\nmembers      {}\n",
                    g.name,
                    g.description,
                    names_text(&g.parents, ", "),
                    members.join(", ")
                )
            })
        }
        GroupCommand::Remove { name: n } => {
            let done = format!("removed group `{n}`");
            write_audited(ctx, &inputs.actor, &done, |txn| {
                if !txn.delete(&GROUPS, n)? {
                    bail!("group `{n}` does not exist");
                }
                let group_name = name("group name", n)?;
                admin_groups::leave::<Group>(txn, &group_name)?;
                let principal = Principal::Group(group_name);
                remove_grants(txn, |g| g.principal == principal)?;
                Ok(())
            })?;
            Ok(format!("{done}\n"))
        }
        GroupCommand::AddMember { group: g, user: u } => {
            let group_name = name("group name", g)?;
            if ctx.store.get(&GROUPS, g)?.is_none() {
                bail!("group `{g}` does not exist");
            }
            update_user(ctx, u, inputs, &format!("added to group `{g}`:"), |user| {
                if !user.groups.contains(&group_name) {
                    user.groups.push(group_name.clone());
                }
                Ok(())
            })
        }
        GroupCommand::Nest { group: g, parent } => {
            admin_groups::nest::<Group>(ctx, g, parent, true, inputs)
        }
        GroupCommand::Unnest { group: g, parent } => {
            admin_groups::nest::<Group>(ctx, g, parent, false, inputs)
        }
        GroupCommand::RemoveMember { group: g, user: u } => {
            let group_name = name("group name", g)?;
            update_user(
                ctx,
                u,
                inputs,
                &format!("removed from group `{g}`:"),
                |user| {
                    if !user.groups.contains(&group_name) {
                        bail!("user `{u}` is not in group `{g}`");
                    }
                    user.groups.retain(|x| x != &group_name);
                    Ok(())
                },
            )
        }
    }
}

fn host_key_text(policy: &HostKeyPolicy) -> String {
    match policy {
        HostKeyPolicy::Pinned { key } => format!("pinned {}", key_summary(key)),
        HostKeyPolicy::TrustOnFirstUse => "trust on first use (none seen yet)".into(),
    }
}

fn rdp_text(rdp: Option<&RdpEndpoint>) -> String {
    match rdp {
        None => "no".into(),
        Some(e) => match &e.certificate {
            RdpCertificatePolicy::Pinned { pin } => format!("port {}, key pinned {pin}", e.port),
            RdpCertificatePolicy::TrustOnFirstUse => {
                format!("port {}, key trusted on first use (none seen yet)", e.port)
            }
        },
    }
}

fn telnet_text(telnet: Option<&gatehouse_core::TelnetEndpoint>) -> String {
    match telnet {
        None => "no".into(),
        Some(e) => {
            let custom = [&e.login_prompt, &e.password_prompt, &e.failure, &e.success]
                .iter()
                .any(|p| p.is_some());
            format!(
                "port {}, {} prompts",
                e.port,
                if custom { "custom" } else { "default" }
            )
        }
    }
}

fn asset(ctx: &AdminContext, command: &AssetCommand, inputs: &Inputs) -> Result<String> {
    match command {
        AssetCommand::Add {
            name: n,
            address,
            port,
            tofu,
            groups,
            rdp_port,
            rdp_cert_pin,
            telnet_port,
            telnet_login_prompt,
            telnet_password_prompt,
            telnet_failure,
            telnet_success,
            vnc_port,
            ..
        } => {
            let asset_name = name("asset name", n)?;
            let groups = admin_groups::check_groups_exist::<AssetGroup>(ctx, groups)?;
            if address.trim().is_empty() || address.contains(char::is_whitespace) {
                bail!("invalid address `{address}`");
            }
            if *port == 0 {
                bail!("invalid port 0");
            }
            let host_key = match (&inputs.host_key, tofu) {
                (Some(text), _) => {
                    let line = text
                        .lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty() && !l.starts_with('#'))
                        .ok_or_else(|| anyhow!("no host key given"))?;
                    // Accept `known_hosts`-style lines too: skip a leading host pattern.
                    let key = gatehouse_auth::parse_public_key(line)
                        .or_else(|first| {
                            line.split_once(' ')
                                .map(|(_, rest)| gatehouse_auth::parse_public_key(rest))
                                .unwrap_or(Err(first))
                        })
                        .map_err(|e| anyhow!("invalid host key: {e}"))?;
                    HostKeyPolicy::Pinned {
                        key: key.to_openssh()?,
                    }
                }
                (None, true) => HostKeyPolicy::TrustOnFirstUse,
                (None, false) => bail!(
                    "give the asset's host key with `--host-key`/`--host-key-file`, or `--tofu` to trust the first one seen"
                ),
            };
            let rdp = match rdp_port {
                None => None,
                Some(0) => bail!("invalid RDP port 0"),
                Some(rdp_port) => Some(RdpEndpoint {
                    port: *rdp_port,
                    certificate: match rdp_cert_pin {
                        Some(text) => RdpCertificatePolicy::Pinned {
                            pin: gatehouse_rdp::CertificatePin::parse(text.trim())
                                .map_err(|e| anyhow!("invalid RDP certificate pin: {e}"))?
                                .to_string(),
                        },
                        None => RdpCertificatePolicy::TrustOnFirstUse,
                    },
                }),
            };
            let telnet = match telnet_port {
                None => None,
                Some(0) => bail!("invalid Telnet port 0"),
                Some(telnet_port) => {
                    let endpoint = gatehouse_core::TelnetEndpoint {
                        port: *telnet_port,
                        login_prompt: telnet_login_prompt.clone(),
                        password_prompt: telnet_password_prompt.clone(),
                        failure: telnet_failure.clone(),
                        success: telnet_success.clone(),
                    };
                    crate::telnet_glue::login_script(&endpoint).map_err(|e| anyhow!(e))?;
                    Some(endpoint)
                }
            };
            let record = Asset {
                name: asset_name,
                address: address.clone(),
                port: *port,
                host_key,
                groups,
                rdp,
                telnet,
                vnc: match vnc_port {
                    None => None,
                    Some(0) => bail!("invalid VNC port 0"),
                    Some(port) => Some(gatehouse_core::VncEndpoint { port: *port }),
                },
                created: Timestamp::now(),
            };
            ctx.store.write(|txn| -> Result<()> {
                insert_new(
                    txn,
                    &ASSETS,
                    n,
                    &record,
                    &format!("asset `{n}`"),
                    &inputs.actor,
                )
            })?;
            Ok(format!(
                "added asset `{n}` ({})\n",
                host_key_text(&record.host_key)
            ))
        }
        AssetCommand::List(j) => {
            let assets: Vec<Asset> = ctx.store.list(&ASSETS)?;
            json_or_table(
                j,
                &assets,
                |a| a,
                &["NAME", "ADDRESS", "HOST KEY", "RDP"],
                |a| {
                    vec![
                        a.name.to_string(),
                        format!("{}:{}", a.address, a.port),
                        host_key_text(&a.host_key),
                        match &a.rdp {
                            None => "-".into(),
                            Some(e) => match &e.certificate {
                                RdpCertificatePolicy::Pinned { .. } => {
                                    format!("{} (pinned)", e.port)
                                }
                                RdpCertificatePolicy::TrustOnFirstUse => {
                                    format!("{} (tofu)", e.port)
                                }
                            },
                        },
                    ]
                },
            )
        }
        AssetCommand::Show { name: n, json: j } => {
            let a: Asset = existing(ctx.store.get(&ASSETS, n)?, "asset", n)?;
            if j.json {
                return json(&a);
            }
            let accounts: Vec<String> = ctx
                .store
                .list(&ACCOUNTS)?
                .into_iter()
                .filter(|acc: &Account| acc.asset == a.name)
                .map(|acc| acc.name.to_string())
                .collect();
            Ok(format!(
                "asset     {}\naddress   {}:{}\nhost key  {}\nrdp       {}\ntelnet    {}\nvnc       {}\ngroups    {}\naccounts  {}\ncreated   {}\n",
                a.name,
                a.address,
                a.port,
                host_key_text(&a.host_key),
                rdp_text(a.rdp.as_ref()),
                telnet_text(a.telnet.as_ref()),
                a.vnc
                    .as_ref()
                    .map_or_else(|| "no".to_string(), |v| format!("port {}", v.port)),
                names_text(&a.groups, ", "),
                accounts.join(", "),
                time_text(a.created)
            ))
        }
        AssetCommand::Remove { name: n } => {
            write_audited(ctx, &inputs.actor, &format!("removed asset `{n}`"), |txn| {
                if !txn.delete(&ASSETS, n)? {
                    bail!("asset `{n}` does not exist");
                }
                for acc in txn.list(&ACCOUNTS)? {
                    if acc.asset.as_str() == n {
                        txn.delete(&ACCOUNTS, &account_key(n, acc.name.as_str()))?;
                    }
                }
                remove_grants(txn, |g| g.asset.as_str() == n)?;
                Ok(())
            })?;
            Ok(format!(
                "removed asset `{n}` with its accounts and grants\n"
            ))
        }
        AssetCommand::ResetHostKey { name: n } => {
            let detail = format!("reset the host key of asset `{n}`");
            write_audited(ctx, &inputs.actor, &detail, |txn| {
                let mut a: Asset = existing(txn.get(&ASSETS, n)?, "asset", n)?;
                a.host_key = HostKeyPolicy::TrustOnFirstUse;
                txn.put(&ASSETS, n, &a)?;
                Ok(())
            })?;
            Ok(format!(
                "the next connection to `{n}` will trust and pin the host key it sees\n"
            ))
        }
    }
}

fn seal_inputs(ctx: &AdminContext, account: &mut Account, inputs: &Inputs) -> Result<()> {
    if inputs.password.is_none() && inputs.private_key.is_none() {
        bail!("give a credential: `--password-stdin`, `--password-file` or `--key-file`");
    }
    let vault = (ctx.vault)()?;
    account.password = inputs
        .password
        .as_deref()
        .map(|p| vault.seal(&account.id, SecretKind::Password, p.as_bytes()))
        .transpose()?;
    account.private_key = inputs
        .private_key
        .as_deref()
        .map(|k| vault.seal(&account.id, SecretKind::PrivateKey, k.as_bytes()))
        .transpose()?;
    account.secret_updated = Timestamp::now();
    Ok(())
}

fn account_view(a: &Account) -> serde_json::Value {
    serde_json::json!({
        "account": a.name,
        "asset": a.asset,
        "id": a.id,
        "password": a.password.is_some(),
        "private_key": a.private_key.is_some(),
        "created": time_text(a.created),
        "secret_updated": time_text(a.secret_updated),
    })
}

fn account(ctx: &AdminContext, command: &AccountCommand, inputs: &Inputs) -> Result<String> {
    match command {
        AccountCommand::Add {
            target: t,
            credential_plugin,
            ..
        } => {
            let spec = target(t)?;
            let mut record = Account {
                name: spec.account.clone(),
                asset: spec.asset.clone(),
                id: uuid::Uuid::new_v4().to_string(),
                password: None,
                private_key: None,
                credential_plugin: credential_plugin.clone(),
                change_after_checkin: false,
                change_due: None,
                created: Timestamp::now(),
                secret_updated: Timestamp::now(),
            };
            match credential_plugin {
                Some(plugin) => {
                    name("plugin name", plugin)?;
                }
                None => seal_inputs(ctx, &mut record, inputs)?,
            }
            let key = account_key(spec.asset.as_str(), spec.account.as_str());
            ctx.store.write(|txn| -> Result<()> {
                if txn.get(&ASSETS, spec.asset.as_str())?.is_none() {
                    bail!("asset `{}` does not exist", spec.asset);
                }
                insert_new(
                    txn,
                    &ACCOUNTS,
                    &key,
                    &record,
                    &format!("account `{spec}`"),
                    &inputs.actor,
                )
            })?;
            Ok(format!("added account `{spec}`\n"))
        }
        AccountCommand::SetSecret { target: t, .. } => {
            let spec = target(t)?;
            let key = account_key(spec.asset.as_str(), spec.account.as_str());
            let mut record: Account = existing(ctx.store.get(&ACCOUNTS, &key)?, "account", &spec)?;
            seal_inputs(ctx, &mut record, inputs)?;
            let done = format!("replaced the credential of `{spec}`");
            write_audited(ctx, &inputs.actor, &done, |txn| {
                txn.put(&ACCOUNTS, &key, &record)?;
                Ok(())
            })?;
            Ok(format!("{done}\n"))
        }
        AccountCommand::List { asset: a, json: j } => {
            let accounts: Vec<Account> = ctx
                .store
                .list(&ACCOUNTS)?
                .into_iter()
                .filter(|acc: &Account| a.as_deref().is_none_or(|a| acc.asset.as_str() == a))
                .collect();
            json_or_table(
                j,
                &accounts,
                account_view,
                &["ACCOUNT", "CREDENTIAL", "UPDATED"],
                |acc| {
                    let mut kinds = Vec::new();
                    if acc.password.is_some() {
                        kinds.push("password");
                    }
                    if acc.private_key.is_some() {
                        kinds.push("private key");
                    }
                    vec![
                        format!("{}@{}", acc.name, acc.asset),
                        kinds.join(" + "),
                        time_text(acc.secret_updated),
                    ]
                },
            )
        }
        AccountCommand::Show { target: t, json: j } => {
            let spec = target(t)?;
            let key = account_key(spec.asset.as_str(), spec.account.as_str());
            let acc: Account = existing(ctx.store.get(&ACCOUNTS, &key)?, "account", &spec)?;
            let view = account_view(&acc);
            if j.json {
                return json(&view);
            }
            Ok(format!(
                "account      {spec}\nid           {}\npassword     {}\nprivate key  {}\nupdated      {}\n",
                acc.id,
                if acc.password.is_some() {
                    "stored (sealed)"
                } else {
                    "none"
                },
                if acc.private_key.is_some() {
                    "stored (sealed)"
                } else {
                    "none"
                },
                time_text(acc.secret_updated)
            ))
        }
        AccountCommand::Remove { target: t } => {
            let spec = target(t)?;
            let done = format!("removed account `{spec}`");
            write_audited(ctx, &inputs.actor, &done, |txn| {
                if !txn.delete(
                    &ACCOUNTS,
                    &account_key(spec.asset.as_str(), spec.account.as_str()),
                )? {
                    bail!("account `{spec}` does not exist");
                }
                remove_grants(txn, |g| g.asset == spec.asset && g.account == spec.account)?;
                Ok(())
            })?;
            Ok(format!("{done}\n"))
        }
        AccountCommand::Lifecycle(c) => crate::lifecycle_cmd::account(ctx, c, inputs),
    }
}

fn principal(args: &PrincipalArgs) -> Result<Principal> {
    match (&args.user, &args.group) {
        (Some(u), None) => Ok(Principal::User(name("user name", u)?)),
        (None, Some(g)) => Ok(Principal::Group(name("group name", g)?)),
        _ => bail!("give exactly one of `--user` and `--group`"),
    }
}

fn grant(ctx: &AdminContext, command: &GrantCommand, inputs: &Inputs) -> Result<String> {
    match command {
        GrantCommand::Add {
            principal: p,
            target: t,
        } => {
            let who = principal(p)?;
            let spec = target(t)?;
            let done = format!("granted {who} sessions on `{spec}`");
            write_audited(ctx, &inputs.actor, &done, |txn| {
                match &who {
                    Principal::User(u) if txn.get(&USERS, u.as_str())?.is_none() => {
                        bail!("user `{u}` does not exist")
                    }
                    Principal::Group(g) if txn.get(&GROUPS, g.as_str())?.is_none() => {
                        bail!("group `{g}` does not exist")
                    }
                    _ => {}
                }
                let key = account_key(spec.asset.as_str(), spec.account.as_str());
                if txn.get(&ACCOUNTS, &key)?.is_none() {
                    bail!("account `{spec}` does not exist");
                }
                let existing: Vec<Grant> = txn.list(&GRANTS)?;
                if existing.iter().any(|g| {
                    g.principal == who && g.asset == spec.asset && g.account == spec.account
                }) {
                    bail!("{who} already has a grant on `{spec}`");
                }
                let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
                let record = Grant {
                    id: id.clone(),
                    principal: who.clone(),
                    account: spec.account.clone(),
                    asset: spec.asset.clone(),
                    created: Timestamp::now(),
                };
                txn.put(&GRANTS, &id, &record)?;
                Ok(())
            })?;
            Ok(format!("{done}\n"))
        }
        GrantCommand::List(j) => {
            let grants: Vec<Grant> = ctx.store.list(&GRANTS)?;
            json_or_table(
                j,
                &grants,
                |g| g,
                &["ID", "WHO", "TARGET"],
                |g| {
                    vec![
                        g.id.clone(),
                        g.principal.to_string(),
                        format!("{}@{}", g.account, g.asset),
                    ]
                },
            )
        }
        GrantCommand::Remove {
            principal: p,
            target: t,
        } => {
            let who = principal(p)?;
            let spec = target(t)?;
            let done = format!("revoked {who} on `{spec}`");
            write_audited(ctx, &inputs.actor, &done, |txn| {
                let removed = remove_grants(txn, |g| {
                    g.principal == who && g.asset == spec.asset && g.account == spec.account
                })?;
                if removed == 0 {
                    bail!("{who} has no grant on `{spec}`");
                }
                Ok(())
            })?;
            Ok(format!("{done}\n"))
        }
    }
}

/// A plausible mail address: one `@`, a non-empty local part, a domain with no spaces.
fn valid_email(address: &str) -> bool {
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// `gatehouse audit verify`: the chain walked from the first event; an error (non-zero exit)
/// naming each problem when it is not intact.
fn verify_audit(ctx: &AdminContext, head: Option<&str>, as_json: bool) -> Result<String> {
    let expect = match head {
        None => None,
        Some(text) => {
            let (seq, chain) = text
                .split_once(':')
                .ok_or_else(|| anyhow!("--head `{text}`: expected SEQ:CHAIN"))?;
            let seq: u64 = seq
                .parse()
                .map_err(|_| anyhow!("--head `{text}`: `{seq}` is not a sequence number"))?;
            if chain.len() != 64 || !chain.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("--head `{text}`: the chain part is 64 hex digits");
            }
            Some((seq, chain.to_string()))
        }
    };
    let verified = ctx
        .store
        .verify_audit(expect.as_ref().map(|(seq, chain)| (*seq, chain.as_str())))?;
    if as_json {
        let text = json(&verified)?;
        if verified.intact() {
            return Ok(text);
        }
        bail!("{}", text.trim_end());
    }
    let mut out = String::new();
    if verified.unlinked_before_chain > 0 {
        out.push_str(&format!(
            "{} events from before the hash chain are not checked\n",
            verified.unlinked_before_chain
        ));
    }
    // Sealed recordings: each one the trail sealed must still match its signed manifest.
    let mut recording_problems = Vec::new();
    let mut recording_warnings = Vec::new();
    let mut recordings_checked = 0u64;
    let mut timestamped = 0u64;
    let mut elsewhere = 0u64;
    let mut stamps = None;
    if let Some(recordings) = &ctx.recordings {
        let key = crate::seal::signer_public(&ctx.store)?;
        // RFC 3161 tokens (manifest.json.tsr): checked where present, expected when a TSA is set.
        let checker = crate::timestamp::Checker::for_recordings(recordings)?;
        if let Some(why) = &checker.ca_problem {
            recording_problems.push(format!("{why} (timestamps are checked without it)"));
        }
        let mut after = 0;
        loop {
            let batch = ctx.store.audit_after(after, 1000)?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for event in batch
                .iter()
                .filter(|e| e.kind == gatehouse_core::AuditKind::RecordingSealed)
            {
                let (Some(session), Some(hash)) = (
                    event.session.as_deref(),
                    event.fields.get("manifest_sha256").and_then(|v| v.as_str()),
                ) else {
                    continue;
                };
                // Sealed by another control node on the same store: on its disk, checked there.
                let sealed_by = event.fields.get("gateway").and_then(|v| v.as_str());
                if sealed_by.is_some()
                    && sealed_by != gatehouse_core::gateway::gateway_id().as_deref()
                {
                    elsewhere += 1;
                    continue;
                }
                recordings_checked += 1;
                for problem in crate::seal::check_sealed(recordings, session, hash, key.as_ref()) {
                    recording_problems.push(format!("recording of session {session}: {problem}"));
                }
                match checker.check(recordings, session, event.time.to_system_time()) {
                    crate::timestamp::Stamp::Verified(_) => timestamped += 1,
                    crate::timestamp::Stamp::Problem(problem) => recording_problems
                        .push(format!("recording of session {session}: {problem}")),
                    crate::timestamp::Stamp::Missing { overdue: true } => {
                        recording_warnings.push(format!(
                            "warning: recording of session {session}: sealed at {} and not timestamped yet (is the TSA reachable? serve's log says why)",
                            time_text(event.time)
                        ))
                    }
                    crate::timestamp::Stamp::Missing { overdue: false } => {}
                }
            }
        }
        stamps = Some(checker);
    }
    if !verified.intact() || !recording_problems.is_empty() {
        for problem in &verified.problems {
            out.push_str(&format!("  {problem}\n"));
        }
        for problem in &recording_problems {
            out.push_str(&format!("  {problem}\n"));
        }
        for warning in &recording_warnings {
            out.push_str(&format!("  {warning}\n"));
        }
        let count = verified.problems.len() + recording_problems.len();
        bail!(
            "the audit trail is not intact ({} events, {recordings_checked} sealed recordings, {count} problem{}):\n{}",
            verified.events,
            if count == 1 { "" } else { "s" },
            out.trim_end()
        );
    }
    out.push_str(&format!(
        "audit trail: {} events, hash chain intact\n{recordings_checked} sealed recordings intact\n",
        verified.events
    ));
    if elsewhere > 0 {
        out.push_str(&format!(
            "{elsewhere} sealed recordings are kept by other control nodes (`audit verify` there checks them)\n"
        ));
    }
    if let Some(checker) = stamps
        .as_ref()
        .filter(|c| timestamped > 0 || c.url.is_some())
    {
        let against = match &checker.ca_file {
            Some(ca) => format!("its TSA certificate chained to `{}`", ca.display()),
            None => "its TSA certificate not checked against a CA (no timestamp_ca_file)".into(),
        };
        out.push_str(&format!(
            "{timestamped} sealed recordings timestamped (RFC 3161: each token matches its manifest, its signature verifies, {against})\n(`openssl ts -verify -data manifest.json -in manifest.json.tsr -token_in -CAfile TSA.pem` checks a manifest.json.tsr)\n"
        ));
    }
    for warning in &recording_warnings {
        out.push_str(&format!("{warning}\n"));
    }
    if let Some((seq, chain)) = &verified.head {
        out.push_str(&format!(
            "head: {seq}:{chain}\n(record it: `gatehouse audit verify --head {seq}:{chain}` later proves the trail still holds it)\n"
        ));
    }
    if let Some(key) = crate::seal::signer_public(&ctx.store)? {
        out.push_str(&format!(
            "recording manifests are signed by: {}\n(`ssh-keygen -Y verify -n {} ...` checks a manifest.json.sig)\n",
            key.to_openssh().unwrap_or_default(),
            crate::seal::NAMESPACE
        ));
    }
    if let Some((seq, _)) = &expect {
        out.push_str(&format!("the recorded head {seq} is in the trail\n"));
    }
    Ok(out)
}

fn report_text(report: &crate::report::Report) -> String {
    let mut out = format!("from {} until {}\n\nsessions\n", report.from, report.until);
    out.push_str(&table(
        &[
            "USER", "TARGET", "PROTOCOL", "SESSIONS", "SECONDS", "UP", "DOWN",
        ],
        &report
            .sessions
            .iter()
            .map(|s| {
                vec![
                    s.user.clone(),
                    s.target.clone(),
                    s.protocol.clone(),
                    s.sessions.to_string(),
                    s.seconds.to_string(),
                    s.bytes_up.to_string(),
                    s.bytes_down.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    for (title, rows) in [
        ("failed logins", &report.logins_failed),
        ("denied access", &report.access_denied),
        ("approvals", &report.approvals),
        ("denied requests", &report.denials),
        ("credential releases", &report.releases),
    ] {
        out.push_str(&format!("\n{title}\n"));
        out.push_str(&table(
            &["USER", "TARGET", "COUNT"],
            &rows
                .iter()
                .map(|r| vec![r.user.clone(), r.target.clone(), r.count.to_string()])
                .collect::<Vec<_>>(),
        ));
    }
    out.push_str("\nrotations\n");
    out.push_str(&table(
        &["TARGET", "CHANGED", "FAILED"],
        &report
            .rotations
            .iter()
            .map(|r| {
                vec![
                    r.target.clone(),
                    r.changed.to_string(),
                    r.failed.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    out
}
