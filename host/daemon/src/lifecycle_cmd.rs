//! The credential lifecycle's commands: `gatehouse account check|change|reconcile|set|status|
//! checked-in`, `gatehouse profile ...`, `gatehouse partition ...` and `gatehouse discover ...`.
//!
//! Batch forms (`--partition`, `--all`) run on the caller's side: the list of accounts and each
//! account's operation are separate admin requests, so a progress bar can follow them whether
//! they run in this process or in the running server (through the admin socket).

use crate::admin::{AdminContext, Inputs, json, table, time_text};
use crate::cli::{AccountCommand, AdminCommand, JsonFlag};
use crate::datadir::DataDir;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    Account, AccountLifecycle, AssetLifecycle, ChangeKind, CredentialChange, Name, Partition,
    PasswordRule, Profile, RunOutcome, TargetSpec,
};
use gatehouse_lifecycle::discovery::DiscoveryFilter;
use gatehouse_lifecycle::{Lifecycle, rule, schedule};
use gatehouse_store::{
    ACCOUNT_LIFECYCLE, ACCOUNTS, ASSET_LIFECYCLE, ASSETS, CREDENTIAL_CHANGES, PARTITIONS, PROFILES,
    StoreError, Txn, account_key,
};
use gatehouse_vault::KeySource;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;

/// Which accounts a batch command covers.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct Selection {
    /// One account, `ACCOUNT@ASSET`.
    pub target: Option<String>,
    /// Every account on the assets of this partition.
    #[arg(long, conflicts_with_all = ["target", "all"])]
    pub partition: Option<String>,
    /// Every account.
    #[arg(long, conflicts_with = "target")]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
pub enum KindArg {
    Password,
    Key,
}

/// `gatehouse account ...` lifecycle subcommands (flattened into `AccountCommand`).
#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AccountLifecycleCommand {
    /// Check that the stored credential still logs in to the asset.
    Check {
        #[command(flatten)]
        selection: Selection,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change the credential on the target (two-phase: the vault always keeps one that works).
    Change {
        #[command(flatten)]
        selection: Selection,
        /// Only the password or only the SSH key (default: each credential the account holds).
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Settle interrupted changes: keep whichever secret logs in (default: every pending one).
    Reconcile {
        #[command(flatten)]
        selection: Selection,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Lifecycle settings of an account.
    Set {
        target: String,
        /// Follow this profile instead of the partition's.
        #[arg(long, conflicts_with = "no_profile")]
        profile: Option<String>,
        /// Follow the partition's profile again.
        #[arg(long)]
        no_profile: bool,
        /// Change the credential after each check-in of a released secret.
        #[arg(long)]
        change_after_checkin: Option<bool>,
        /// Make this account the asset's service account (password changes with `sudo
        /// chpasswd`, discovery of other users' keys).
        #[arg(long)]
        service_account: bool,
    },
    /// Lifecycle status: profile, last check and change, changes pending or due.
    Status {
        target: Option<String>,
        #[arg(long)]
        asset: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Record the check-in of a released credential (what the access-request workflow does):
    /// with change-after-check-in set, the change becomes due and the scheduler makes it.
    CheckedIn { target: String },
}

/// Top-level lifecycle commands (flattened into `AdminCommand`).
#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum LifecycleCommand {
    /// Credential lifecycle profiles: password rules, check and change schedules.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Partitions: sets of assets managed alike, with their profile.
    #[command(subcommand)]
    Partition(PartitionCommand),
    /// Discover the accounts and SSH keys on an asset.
    #[command(subcommand)]
    Discover(DiscoverCommand),
    /// One step of a batch command (internal).
    #[command(subcommand, hide = true)]
    LifecycleOp(OpCommand),
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RuleArgs {
    /// Password length.
    #[arg(long)]
    pub length: Option<u16>,
    #[arg(long)]
    pub min_lower: Option<u16>,
    #[arg(long)]
    pub min_upper: Option<u16>,
    #[arg(long)]
    pub min_digit: Option<u16>,
    #[arg(long)]
    pub min_symbol: Option<u16>,
    /// The symbols a password may use.
    #[arg(long)]
    pub symbols: Option<String>,
    /// Characters never used.
    #[arg(long)]
    pub exclude: Option<String>,
    /// Check schedule: `every 12h`, `daily 02:00`, `weekly sun 03:00` (UTC).
    #[arg(long)]
    pub check: Option<String>,
    /// Change schedule, same forms.
    #[arg(long)]
    pub change: Option<String>,
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum ProfileCommand {
    /// Add a profile (unset rule fields take the defaults: 24 characters, one of each class).
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Change a profile's rule or schedules.
    Set {
        name: String,
        #[command(flatten)]
        rule: RuleArgs,
        /// Stop scheduled checks.
        #[arg(long, conflicts_with = "check")]
        no_check: bool,
        /// Stop scheduled changes.
        #[arg(long, conflicts_with = "change")]
        no_change: bool,
    },
    /// List profiles.
    List(JsonFlag),
    /// Remove a profile no partition or account uses.
    Remove { name: String },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum PartitionCommand {
    /// Add a partition.
    Add {
        name: String,
        /// The profile its accounts follow.
        #[arg(long)]
        profile: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Set (or with no `--profile`, clear) a partition's profile.
    SetProfile {
        name: String,
        #[arg(long)]
        profile: Option<String>,
    },
    /// Put an asset in a partition (an asset is in at most one).
    AddAsset { partition: String, asset: String },
    /// Take an asset out of its partition.
    RemoveAsset { partition: String, asset: String },
    /// List partitions with their assets.
    List(JsonFlag),
    /// Remove a partition (its assets leave it).
    Remove { name: String },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum DiscoverCommand {
    /// Read the asset's user database and the accounts' authorized keys.
    Run {
        asset: String,
        #[arg(long, default_value_t = 1000)]
        min_uid: u32,
        #[arg(long, default_value_t = 60000)]
        max_uid: u32,
        /// Keep only names matching this pattern (`*` wildcard; repeatable).
        #[arg(long)]
        include: Vec<String>,
        /// Drop names matching this pattern (repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        /// Drop accounts whose shell is `nologin` or `false`.
        #[arg(long)]
        login_shells_only: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List discovered accounts (unmanaged ones until an administrator manages them).
    List {
        #[arg(long)]
        asset: Option<String>,
        /// Only the accounts not managed yet.
        #[arg(long)]
        unmanaged: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Manage a discovered account: it becomes a vault account (set its secret with `account
    /// set-secret`, or let `account change` set one through the service account).
    Manage { target: String },
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum OpCommand {
    Targets {
        #[command(flatten)]
        selection: Selection,
        #[arg(long)]
        pending_only: bool,
    },
    Check {
        target: String,
    },
    Change {
        target: String,
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
    Reconcile {
        target: String,
    },
}

/// What one operation on one account came to (a row of the summary table).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpResult {
    pub target: String,
    /// `ok`, `failed` (the operation ran and the answer is no) or `error` (it could not run).
    pub outcome: String,
    pub detail: String,
}

fn spec(value: &str) -> Result<TargetSpec> {
    value
        .parse::<TargetSpec>()
        .map_err(|_| anyhow!("invalid target `{value}`: expected `ACCOUNT@ASSET`"))
}

fn name(kind: &str, value: &str) -> Result<Name> {
    crate::admin::name(kind, value)
}

/// Runs a future to completion from the synchronous admin executor: on the running server's
/// runtime (the socket runs requests on blocking threads), or on a runtime made for it.
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(future)),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime")?
            .block_on(future)),
    }
}

fn lifecycle(ctx: &AdminContext) -> Result<Lifecycle> {
    Ok(Lifecycle::new(ctx.store.clone(), (ctx.vault)()?))
}

fn audit_change(txn: &mut Txn<'_>, actor: &str, detail: String) -> Result<(), StoreError> {
    crate::admin::audit_change(txn, actor, detail)
}

// ---------------------------------------------------------------------------------------------
// The caller's side: batch commands with a progress bar and a summary table
// ---------------------------------------------------------------------------------------------

/// Runs `gatehouse account <lifecycle subcommand>`.
pub fn run_account(
    dir: &DataDir,
    overrides: Option<KeySource>,
    command: AccountLifecycleCommand,
) -> Result<()> {
    let (selection, json_out, pending_only, make): (_, _, _, Box<dyn Fn(String) -> OpCommand>) =
        match command {
            AccountLifecycleCommand::Check { selection, json } => (
                selection,
                json.json,
                false,
                Box::new(|target| OpCommand::Check { target }),
            ),
            AccountLifecycleCommand::Change {
                selection,
                kind,
                json,
            } => (
                selection,
                json.json,
                false,
                Box::new(move |target| OpCommand::Change { target, kind }),
            ),
            AccountLifecycleCommand::Reconcile { selection, json } => {
                let mut selection = selection;
                let everything = selection.target.is_none() && selection.partition.is_none();
                if everything {
                    selection.all = true;
                }
                (
                    selection,
                    json.json,
                    everything,
                    Box::new(|target| OpCommand::Reconcile { target }),
                )
            }
            other => {
                let output = crate::run_admin(
                    dir,
                    overrides,
                    AdminCommand::Account(AccountCommand::Lifecycle(other)),
                )?;
                print!("{output}");
                return Ok(());
            }
        };
    if selection.target.is_none() && selection.partition.is_none() && !selection.all {
        bail!("give `ACCOUNT@ASSET`, `--partition NAME` or `--all`");
    }
    let op = |command: OpCommand| {
        crate::run_admin(
            dir,
            overrides.clone(),
            AdminCommand::Lifecycle(LifecycleCommand::LifecycleOp(command)),
        )
    };
    let targets: Vec<String> = serde_json::from_str(&op(OpCommand::Targets {
        selection,
        pending_only,
    })?)
    .context("malformed list of accounts")?;
    let bar = indicatif::ProgressBar::new(targets.len() as u64);
    if std::io::stdout().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut results = Vec::new();
    for target in targets {
        bar.set_message(target.clone());
        let result = match op(make(target.clone())) {
            Ok(text) => serde_json::from_str::<OpResult>(&text).unwrap_or_else(|e| OpResult {
                target: target.clone(),
                outcome: "error".into(),
                detail: format!("malformed answer: {e}"),
            }),
            Err(e) => OpResult {
                target: target.clone(),
                outcome: "error".into(),
                detail: format!("{e:#}"),
            },
        };
        results.push(result);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json_out {
        print!("{}", json(&results)?);
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| vec![r.target.clone(), r.outcome.clone(), r.detail.clone()])
            .collect();
        print!("{}", table(&["ACCOUNT", "RESULT", "DETAIL"], &rows));
    }
    let bad = results.iter().filter(|r| r.outcome != "ok").count();
    if bad > 0 {
        bail!("{bad} of {} account(s) did not succeed", results.len());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The executor's side: here or in the running server
// ---------------------------------------------------------------------------------------------

/// Executes a top-level lifecycle command.
pub fn execute(ctx: &AdminContext, command: &LifecycleCommand, inputs: &Inputs) -> Result<String> {
    match command {
        LifecycleCommand::Profile(c) => profile(ctx, c, inputs),
        LifecycleCommand::Partition(c) => partition(ctx, c, inputs),
        LifecycleCommand::Discover(c) => discover(ctx, c, inputs),
        LifecycleCommand::LifecycleOp(c) => operation(ctx, c, inputs),
    }
}

fn operation(ctx: &AdminContext, command: &OpCommand, inputs: &Inputs) -> Result<String> {
    let actor = inputs.actor.as_str();
    let result = match command {
        OpCommand::Targets {
            selection,
            pending_only,
        } => return json(&select(ctx, selection, *pending_only)?),
        OpCommand::Check { target } => {
            let s = spec(target)?;
            let lc = lifecycle(ctx)?;
            let report = block_on(gatehouse_lifecycle::check_account(
                &lc, &s.asset, &s.account, actor,
            ))??;
            OpResult {
                target: report.target,
                outcome: if report.ok { "ok" } else { "failed" }.into(),
                detail: report.detail,
            }
        }
        OpCommand::Change { target, kind } => {
            let s = spec(target)?;
            let lc = lifecycle(ctx)?;
            let kind = kind.map(|k| match k {
                KindArg::Password => ChangeKind::Password,
                KindArg::Key => ChangeKind::SshKey,
            });
            let report = block_on(gatehouse_lifecycle::change_account(
                &lc, &s.asset, &s.account, kind, "manual", actor,
            ))??;
            OpResult {
                target: report.target,
                outcome: "ok".into(),
                detail: report.detail,
            }
        }
        OpCommand::Reconcile { target } => {
            let s = spec(target)?;
            let lc = lifecycle(ctx)?;
            let outcome = block_on(gatehouse_lifecycle::reconcile_account(
                &lc, &s.asset, &s.account, actor,
            ))??;
            OpResult {
                target: s.to_string(),
                outcome: "ok".into(),
                detail: outcome.unwrap_or_else(|| "nothing pending".into()),
            }
        }
    };
    json(&result)
}

/// The accounts a selection covers, as `account@asset`.
fn select(ctx: &AdminContext, selection: &Selection, pending_only: bool) -> Result<Vec<String>> {
    let accounts: Vec<Account> = ctx.store.list(&ACCOUNTS)?;
    let mut out = Vec::new();
    if let Some(target) = &selection.target {
        let s = spec(target)?;
        if ctx
            .store
            .get::<Account>(
                &ACCOUNTS,
                &account_key(s.asset.as_str(), s.account.as_str()),
            )?
            .is_none()
        {
            bail!("account `{s}` does not exist");
        }
        return Ok(vec![s.to_string()]);
    }
    let partition = match &selection.partition {
        Some(p) => {
            if ctx.store.get::<Partition>(&PARTITIONS, p)?.is_none() {
                bail!("partition `{p}` does not exist");
            }
            Some(p.clone())
        }
        None => None,
    };
    for account in accounts {
        let key = account_key(account.asset.as_str(), account.name.as_str());
        if let Some(p) = &partition {
            let settings: Option<AssetLifecycle> =
                ctx.store.get(&ASSET_LIFECYCLE, account.asset.as_str())?;
            if settings
                .and_then(|s| s.partition)
                .is_none_or(|q| q.as_str() != p)
            {
                continue;
            }
        }
        if pending_only
            && ctx
                .store
                .get::<CredentialChange>(&CREDENTIAL_CHANGES, &key)?
                .is_none()
        {
            continue;
        }
        out.push(format!("{}@{}", account.name, account.asset));
    }
    Ok(out)
}

/// Executes the non-batch `account` lifecycle subcommands.
pub fn account(
    ctx: &AdminContext,
    command: &AccountLifecycleCommand,
    inputs: &Inputs,
) -> Result<String> {
    match command {
        AccountLifecycleCommand::Set {
            target,
            profile,
            no_profile,
            change_after_checkin,
            service_account,
        } => {
            let s = spec(target)?;
            let key = account_key(s.asset.as_str(), s.account.as_str());
            let profile = profile
                .as_deref()
                .map(|p| name("profile name", p))
                .transpose()?;
            let mut said = Vec::new();
            ctx.store.write(|txn| -> Result<()> {
                let mut account: Account = txn
                    .get(&ACCOUNTS, &key)?
                    .ok_or_else(|| anyhow!("account `{s}` does not exist"))?;
                if let Some(p) = &profile {
                    if txn.get(&PROFILES, p.as_str())?.is_none() {
                        bail!("profile `{p}` does not exist");
                    }
                    said.push(format!("profile `{p}`"));
                }
                if profile.is_some() || *no_profile {
                    let mut settings: AccountLifecycle =
                        txn.get(&ACCOUNT_LIFECYCLE, &key)?.unwrap_or_default();
                    settings.profile = profile.clone();
                    txn.put(&ACCOUNT_LIFECYCLE, &key, &settings)?;
                    if *no_profile {
                        said.push("the partition's profile".into());
                    }
                }
                if let Some(flag) = change_after_checkin {
                    account.change_after_checkin = *flag;
                    txn.put(&ACCOUNTS, &key, &account)?;
                    said.push(format!("change after check-in {}", on_off(*flag)));
                }
                if *service_account {
                    let mut settings: AssetLifecycle = txn
                        .get(&ASSET_LIFECYCLE, s.asset.as_str())?
                        .unwrap_or_default();
                    settings.service_account = Some(s.account.clone());
                    txn.put(&ASSET_LIFECYCLE, s.asset.as_str(), &settings)?;
                    said.push(format!("service account of asset `{}`", s.asset));
                }
                if said.is_empty() {
                    bail!(
                        "nothing to set: give `--profile`, `--no-profile`, `--change-after-checkin` or `--service-account`"
                    );
                }
                audit_change(txn, &inputs.actor, format!("set `{s}`: {}", said.join(", ")))?;
                Ok(())
            })?;
            Ok(format!("set `{s}`: {}\n", said.join(", ")))
        }
        AccountLifecycleCommand::Status {
            target,
            asset,
            json: j,
        } => status(ctx, target.as_deref(), asset.as_deref(), j.json),
        AccountLifecycleCommand::CheckedIn { target } => {
            let s = spec(target)?;
            let lc = lifecycle(ctx)?;
            if gatehouse_lifecycle::mark_checked_in(&lc, &s.asset, &s.account, &inputs.actor)? {
                Ok(format!(
                    "checked in `{s}`: its credential change is due (the scheduler in `gatehouse serve` makes it)\n"
                ))
            } else {
                Ok(format!(
                    "checked in `{s}`: no change follows (change after check-in is off)\n"
                ))
            }
        }
        AccountLifecycleCommand::Check { .. }
        | AccountLifecycleCommand::Change { .. }
        | AccountLifecycleCommand::Reconcile { .. } => {
            bail!("batch commands run on the caller's side")
        }
    }
}

fn on_off(flag: bool) -> &'static str {
    if flag { "on" } else { "off" }
}

fn outcome_text(outcome: &Option<RunOutcome>) -> String {
    match outcome {
        Some(o) => format!(
            "{} {}",
            if o.ok { "ok" } else { "FAILED" },
            time_text(o.time)
        ),
        None => "-".into(),
    }
}

fn status(
    ctx: &AdminContext,
    target: Option<&str>,
    asset: Option<&str>,
    json_out: bool,
) -> Result<String> {
    let wanted = target.map(spec).transpose()?;
    let accounts: Vec<Account> = ctx.store.list(&ACCOUNTS)?;
    let mut views = Vec::new();
    for account in accounts {
        if asset.is_some_and(|a| account.asset.as_str() != a) {
            continue;
        }
        if wanted
            .as_ref()
            .is_some_and(|w| w.account != account.name || w.asset != account.asset)
        {
            continue;
        }
        let key = account_key(account.asset.as_str(), account.name.as_str());
        let settings: AccountLifecycle =
            ctx.store.get(&ACCOUNT_LIFECYCLE, &key)?.unwrap_or_default();
        let asset_settings: AssetLifecycle = ctx
            .store
            .get(&ASSET_LIFECYCLE, account.asset.as_str())?
            .unwrap_or_default();
        let pending: Option<CredentialChange> = ctx.store.get(&CREDENTIAL_CHANGES, &key)?;
        let profile = gatehouse_lifecycle::effective_profile(&ctx.store, &account)?;
        views.push(serde_json::json!({
            "target": format!("{}@{}", account.name, account.asset),
            "profile": profile.map(|p| p.name.to_string()),
            "partition": asset_settings.partition,
            "service_account": asset_settings.service_account.as_ref() == Some(&account.name),
            "change_after_checkin": account.change_after_checkin,
            "change_due": account.change_due.map(time_text),
            "last_check": settings.last_check,
            "last_change": settings.last_change,
            "pending": pending.map(|p| serde_json::json!({
                "kind": p.kind,
                "phase": p.phase,
                "reason": p.reason,
                "started": time_text(p.started),
            })),
            "secret_updated": time_text(account.secret_updated),
        }));
    }
    if wanted.is_some() && views.is_empty() {
        bail!("account `{}` does not exist", target.unwrap_or_default());
    }
    if json_out {
        return json(&views);
    }
    let text = |v: &serde_json::Value, k: &str| -> String {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let outcome = |k: &str| {
                outcome_text(
                    &v.get(k)
                        .and_then(|o| serde_json::from_value(o.clone()).ok()),
                )
            };
            vec![
                text(v, "target"),
                text(v, "profile"),
                outcome("last_check"),
                outcome("last_change"),
                v.get("pending")
                    .and_then(|p| p.get("phase"))
                    .and_then(|p| p.as_str())
                    .unwrap_or("-")
                    .to_string(),
                text(v, "change_due"),
            ]
        })
        .collect();
    Ok(table(
        &[
            "ACCOUNT",
            "PROFILE",
            "CHECKED",
            "CHANGED",
            "PENDING",
            "CHANGE DUE",
        ],
        &rows,
    ))
}

fn apply_rule_args(rule: &mut PasswordRule, args: &RuleArgs) {
    let set = |slot: &mut u16, value: Option<u16>| {
        if let Some(v) = value {
            *slot = v;
        }
    };
    set(&mut rule.length, args.length);
    set(&mut rule.min_lower, args.min_lower);
    set(&mut rule.min_upper, args.min_upper);
    set(&mut rule.min_digit, args.min_digit);
    set(&mut rule.min_symbol, args.min_symbol);
    if let Some(s) = &args.symbols {
        rule.symbols = s.clone();
    }
    if let Some(e) = &args.exclude {
        rule.exclude = e.clone();
    }
}

fn parse_schedule(text: &Option<String>) -> Result<Option<gatehouse_core::Schedule>> {
    text.as_deref()
        .map(schedule::parse)
        .transpose()
        .map_err(|e| anyhow!(e))
}

fn profile(ctx: &AdminContext, command: &ProfileCommand, inputs: &Inputs) -> Result<String> {
    match command {
        ProfileCommand::Add {
            name: n,
            description,
            rule: args,
        } => {
            let profile_name = name("profile name", n)?;
            let mut password_rule = PasswordRule::default();
            apply_rule_args(&mut password_rule, args);
            rule::validate(&password_rule)
                .map_err(|e| anyhow!("profile `{n}`: the password rule cannot be met: {e}"))?;
            let record = Profile {
                name: profile_name,
                description: description.clone(),
                password_rule,
                check: parse_schedule(&args.check)?,
                change: parse_schedule(&args.change)?,
                created: Timestamp::now(),
            };
            ctx.store.write(|txn| -> Result<()> {
                crate::admin::insert_new(
                    txn,
                    &PROFILES,
                    n,
                    &record,
                    &format!("profile `{n}`"),
                    &inputs.actor,
                )
            })?;
            Ok(format!("added profile `{n}`\n"))
        }
        ProfileCommand::Set {
            name: n,
            rule: args,
            no_check,
            no_change,
        } => {
            let check = parse_schedule(&args.check)?;
            let change = parse_schedule(&args.change)?;
            ctx.store.write(|txn| -> Result<()> {
                let mut record: Profile = txn
                    .get(&PROFILES, n)?
                    .ok_or_else(|| anyhow!("profile `{n}` does not exist"))?;
                apply_rule_args(&mut record.password_rule, args);
                rule::validate(&record.password_rule)
                    .map_err(|e| anyhow!("profile `{n}`: the password rule cannot be met: {e}"))?;
                if check.is_some() || *no_check {
                    record.check = check;
                }
                if change.is_some() || *no_change {
                    record.change = change;
                }
                txn.put(&PROFILES, n, &record)?;
                audit_change(txn, &inputs.actor, format!("changed profile `{n}`"))?;
                Ok(())
            })?;
            Ok(format!("changed profile `{n}`\n"))
        }
        ProfileCommand::List(j) => {
            let profiles: Vec<Profile> = ctx.store.list(&PROFILES)?;
            if j.json {
                return json(&profiles);
            }
            let sched = |s: &Option<gatehouse_core::Schedule>| {
                s.as_ref()
                    .map(schedule::describe)
                    .unwrap_or_else(|| "-".into())
            };
            let rows: Vec<Vec<String>> = profiles
                .iter()
                .map(|p| {
                    vec![
                        p.name.to_string(),
                        rule::describe(&p.password_rule),
                        sched(&p.check),
                        sched(&p.change),
                    ]
                })
                .collect();
            Ok(table(&["NAME", "PASSWORD RULE", "CHECK", "CHANGE"], &rows))
        }
        ProfileCommand::Remove { name: n } => {
            ctx.store.write(|txn| -> Result<()> {
                let used_by_partition = txn
                    .list(&PARTITIONS)?
                    .into_iter()
                    .find(|p| p.profile.as_ref().is_some_and(|q| q.as_str() == n));
                if let Some(p) = used_by_partition {
                    bail!("profile `{n}` is used by partition `{}`", p.name);
                }
                let used_by_account = txn
                    .list(&ACCOUNT_LIFECYCLE)?
                    .into_iter()
                    .any(|a| a.profile.as_ref().is_some_and(|q| q.as_str() == n));
                if used_by_account {
                    bail!("profile `{n}` is set on an account (`account set --no-profile`)");
                }
                if !txn.delete(&PROFILES, n)? {
                    bail!("profile `{n}` does not exist");
                }
                audit_change(txn, &inputs.actor, format!("removed profile `{n}`"))?;
                Ok(())
            })?;
            Ok(format!("removed profile `{n}`\n"))
        }
    }
}

fn partition(ctx: &AdminContext, command: &PartitionCommand, inputs: &Inputs) -> Result<String> {
    let check_profile = |txn: &Txn<'_>, p: &Option<String>| -> Result<Option<Name>> {
        match p {
            Some(p) => {
                if txn.get(&PROFILES, p)?.is_none() {
                    bail!("profile `{p}` does not exist");
                }
                Ok(Some(name("profile name", p)?))
            }
            None => Ok(None),
        }
    };
    match command {
        PartitionCommand::Add {
            name: n,
            profile: p,
            description,
        } => {
            let partition_name = name("partition name", n)?;
            ctx.store.write(|txn| -> Result<()> {
                let record = Partition {
                    name: partition_name.clone(),
                    description: description.clone(),
                    profile: check_profile(txn, p)?,
                    created: Timestamp::now(),
                };
                crate::admin::insert_new(
                    txn,
                    &PARTITIONS,
                    n,
                    &record,
                    &format!("partition `{n}`"),
                    &inputs.actor,
                )
            })?;
            Ok(format!("added partition `{n}`\n"))
        }
        PartitionCommand::SetProfile {
            name: n,
            profile: p,
        } => {
            ctx.store.write(|txn| -> Result<()> {
                let mut record: Partition = txn
                    .get(&PARTITIONS, n)?
                    .ok_or_else(|| anyhow!("partition `{n}` does not exist"))?;
                record.profile = check_profile(txn, p)?;
                txn.put(&PARTITIONS, n, &record)?;
                audit_change(
                    txn,
                    &inputs.actor,
                    format!(
                        "set the profile of partition `{n}` to {}",
                        p.as_deref().unwrap_or("none")
                    ),
                )?;
                Ok(())
            })?;
            Ok(format!("set the profile of partition `{n}`\n"))
        }
        PartitionCommand::AddAsset {
            partition: p,
            asset,
        } => {
            let partition_name = name("partition name", p)?;
            ctx.store.write(|txn| -> Result<()> {
                if txn.get(&PARTITIONS, p)?.is_none() {
                    bail!("partition `{p}` does not exist");
                }
                if txn.get(&ASSETS, asset)?.is_none() {
                    bail!("asset `{asset}` does not exist");
                }
                let mut settings: AssetLifecycle =
                    txn.get(&ASSET_LIFECYCLE, asset)?.unwrap_or_default();
                if let Some(other) = &settings.partition
                    && other != &partition_name
                {
                    bail!("asset `{asset}` is in partition `{other}`; remove it from there first");
                }
                settings.partition = Some(partition_name.clone());
                txn.put(&ASSET_LIFECYCLE, asset, &settings)?;
                audit_change(
                    txn,
                    &inputs.actor,
                    format!("put asset `{asset}` in partition `{p}`"),
                )?;
                Ok(())
            })?;
            Ok(format!("put asset `{asset}` in partition `{p}`\n"))
        }
        PartitionCommand::RemoveAsset {
            partition: p,
            asset,
        } => {
            ctx.store.write(|txn| -> Result<()> {
                let mut settings: AssetLifecycle =
                    txn.get(&ASSET_LIFECYCLE, asset)?.unwrap_or_default();
                if settings.partition.as_ref().is_none_or(|q| q.as_str() != p) {
                    bail!("asset `{asset}` is not in partition `{p}`");
                }
                settings.partition = None;
                txn.put(&ASSET_LIFECYCLE, asset, &settings)?;
                audit_change(
                    txn,
                    &inputs.actor,
                    format!("took asset `{asset}` out of partition `{p}`"),
                )?;
                Ok(())
            })?;
            Ok(format!("took asset `{asset}` out of partition `{p}`\n"))
        }
        PartitionCommand::List(j) => {
            let partitions: Vec<Partition> = ctx.store.list(&PARTITIONS)?;
            let assets: Vec<gatehouse_core::Asset> = ctx.store.list(&ASSETS)?;
            let mut members: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for a in assets {
                let settings: Option<AssetLifecycle> =
                    ctx.store.get(&ASSET_LIFECYCLE, a.name.as_str())?;
                if let Some(p) = settings.and_then(|s| s.partition) {
                    members
                        .entry(p.to_string())
                        .or_default()
                        .push(a.name.to_string());
                }
            }
            if j.json {
                let views: Vec<serde_json::Value> = partitions
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.name,
                            "description": p.description,
                            "profile": p.profile,
                            "assets": members.get(p.name.as_str()).cloned().unwrap_or_default(),
                        })
                    })
                    .collect();
                return json(&views);
            }
            let rows: Vec<Vec<String>> = partitions
                .iter()
                .map(|p| {
                    vec![
                        p.name.to_string(),
                        p.profile
                            .as_ref()
                            .map(Name::to_string)
                            .unwrap_or_else(|| "-".into()),
                        members
                            .get(p.name.as_str())
                            .map(|m| m.join(", "))
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            Ok(table(&["NAME", "PROFILE", "ASSETS"], &rows))
        }
        PartitionCommand::Remove { name: n } => {
            ctx.store.write(|txn| -> Result<()> {
                if !txn.delete(&PARTITIONS, n)? {
                    bail!("partition `{n}` does not exist");
                }
                for a in txn.list(&ASSETS)? {
                    if let Some(mut settings) = txn.get(&ASSET_LIFECYCLE, a.name.as_str())?
                        && settings.partition.as_ref().is_some_and(|p| p.as_str() == n)
                    {
                        settings.partition = None;
                        txn.put(&ASSET_LIFECYCLE, a.name.as_str(), &settings)?;
                    }
                }
                audit_change(txn, &inputs.actor, format!("removed partition `{n}`"))?;
                Ok(())
            })?;
            Ok(format!("removed partition `{n}`\n"))
        }
    }
}

fn discover(ctx: &AdminContext, command: &DiscoverCommand, inputs: &Inputs) -> Result<String> {
    match command {
        DiscoverCommand::Run {
            asset,
            min_uid,
            max_uid,
            include,
            exclude,
            login_shells_only,
            json: j,
        } => {
            let asset_name = name("asset name", asset)?;
            if min_uid > max_uid {
                bail!("`--min-uid` {min_uid} is above `--max-uid` {max_uid}");
            }
            let filter = DiscoveryFilter {
                min_uid: *min_uid,
                max_uid: *max_uid,
                include: include.clone(),
                exclude: exclude.clone(),
                login_shells_only: *login_shells_only,
            };
            let lc = lifecycle(ctx)?;
            let report = block_on(gatehouse_lifecycle::discovery::discover(
                &lc,
                &asset_name,
                &filter,
                &inputs.actor,
            ))??;
            if j.json {
                return json(&report);
            }
            let mut out = format!(
                "discovered {} account(s) with {} key(s) on `{asset}` ({} new, {} gone)\n",
                report.found, report.keys, report.new, report.gone
            );
            out.push_str(&discovered_table(&report.accounts));
            Ok(out)
        }
        DiscoverCommand::List {
            asset,
            unmanaged,
            json: j,
        } => {
            let mut views =
                gatehouse_lifecycle::discovery::list_discovered(&ctx.store, asset.as_deref())?;
            if *unmanaged {
                views.retain(|v| !v.managed);
            }
            if j.json {
                return json(&views);
            }
            Ok(discovered_table(&views))
        }
        DiscoverCommand::Manage { target } => {
            let s = spec(target)?;
            let lc = lifecycle(ctx)?;
            gatehouse_lifecycle::discovery::manage(
                &lc,
                &s.asset,
                s.account.as_str(),
                &inputs.actor,
            )?;
            Ok(format!(
                "managing `{s}`: give it a secret with `gatehouse account set-secret {s}`, or set a new password through the asset's service account with `gatehouse account change {s}`\n"
            ))
        }
    }
}

fn discovered_table(views: &[gatehouse_lifecycle::discovery::DiscoveredView]) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let a = &v.account;
            vec![
                format!("{}@{}", a.name, a.asset),
                a.uid.to_string(),
                a.shell.clone(),
                if a.keys_read {
                    a.keys
                        .iter()
                        .map(|k| format!("{} {}", k.algorithm, k.fingerprint))
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    "(unreadable)".into()
                },
                if v.managed { "managed" } else { "unmanaged" }.into(),
            ]
        })
        .collect();
    table(&["ACCOUNT", "UID", "SHELL", "KEYS", "STATUS"], &rows)
}
