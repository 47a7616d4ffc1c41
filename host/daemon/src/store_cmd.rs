//! `gatehouse store status|migrate`, and the check that ties a store to one master key: several
//! control nodes on one PostgreSQL must all hold the key its vault was sealed with, so the first
//! start records the key's public id and every later start (of any node) compares.

use crate::datadir::DataDir;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use gatehouse_store::{ALL_TABLES, SETTINGS, Store, StoreError, StoreLocation};

/// The record in `settings` naming the master key the store's secrets are sealed with.
const VAULT_KEY: &str = "vault";

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Where the store is, its engine and schema versions, how many records and audit events.
    Status,
    /// Copy every record and the whole audit trail (numbers and hash chain as they are) into an
    /// empty store, e.g. from this node's redb file to PostgreSQL. Stop `gatehouse serve` first.
    /// When the source is this data directory's store, settings.json is switched to the
    /// destination.
    Migrate {
        /// The source: `redb:PATH` or `postgres://…` (default: this data directory's store).
        #[arg(long)]
        from: Option<String>,
        /// The destination: `postgres://…` or `redb:PATH`; must be empty.
        #[arg(long)]
        to: String,
    },
}

/// Records the master key's id in a fresh store, or checks it against the recorded one.
pub fn bind_master_key(store: &Store, key_id: &str) -> Result<()> {
    let id = key_id.to_string();
    let recorded = store.write(|t| -> Result<Option<String>, StoreError> {
        match t.get(&SETTINGS, VAULT_KEY)? {
            Some(v) => Ok(v
                .get("master_key")
                .and_then(|k| k.as_str())
                .map(str::to_string)),
            None => {
                t.put(
                    &SETTINGS,
                    VAULT_KEY,
                    &serde_json::json!({ "master_key": id }),
                )?;
                Ok(None)
            }
        }
    })?;
    match recorded {
        Some(recorded) if recorded != id => bail!(
            "this store's vault is sealed with master key `{recorded}`, but this node's key is \
             `{id}`: every control node on one store needs the same master key \
             (`--master-key-file`, docs/cluster.md)"
        ),
        _ => Ok(()),
    }
}

pub fn run(dir: &DataDir, command: StoreCommand) -> Result<()> {
    match command {
        // Answered by the process that has the store open (see `AdminCommand::StoreStatus`).
        StoreCommand::Status => bail!("`store status` runs as an admin command"),
        StoreCommand::Migrate { from, to } => {
            let current = dir.store_location().ok();
            let from = match from {
                Some(text) => StoreLocation::parse(&text)?,
                None => current
                    .clone()
                    .context("no source: give `--from`, or run in an initialised data directory")?,
            };
            let to = StoreLocation::parse(&to)?;
            if from == to {
                bail!("the source and the destination are the same store (`{from}`)");
            }
            let source = Store::open_location(&from).map_err(|e| match e {
                StoreError::InUse(_) => anyhow::anyhow!(
                    "`{from}` is in use by a running gatehouse: stop it first (the copy must see \
                     a store nobody writes to)"
                ),
                other => anyhow::Error::new(other).context(format!("opening `{from}`")),
            })?;
            let destination =
                Store::open_location(&to).with_context(|| format!("opening `{to}`"))?;
            let started = std::time::Instant::now();
            let (records, events) = source
                .copy_into(&destination)
                .with_context(|| format!("copying `{from}` into `{to}`"))?;
            let check = destination.verify_audit(None)?;
            if !check.intact() {
                bail!(
                    "the copied audit trail does not verify ({} problems); `{to}` holds the copy, \
                     the source is unchanged",
                    check.problems.len()
                );
            }
            println!(
                "copied {records} records and {events} audit events from `{from}` to `{to}` in {:.1} s; the audit trail verifies",
                started.elapsed().as_secs_f64()
            );
            if current.as_ref() == Some(&from) && dir.is_initialised() {
                let path = dir.settings();
                let mut settings = dir.load_settings()?;
                settings.store = match &to {
                    StoreLocation::Redb(p) if *p == dir.store() => None,
                    other => Some(other.clone()),
                };
                let text = serde_json::to_string_pretty(&settings)?;
                crate::datadir::replace_private_file(&path, format!("{text}\n").as_bytes())?;
                println!("settings.json now points at `{to}`; the old store is left as it was");
            }
            Ok(())
        }
    }
}

/// What `gatehouse store status` prints.
pub fn status(store: &Store, location: &str) -> Result<String> {
    let mut out = format!(
        "store     {location}\nengine    {}\nschema    {}\n",
        store.engine(),
        store.schema_version()?
    );
    let mut total = 0;
    let counts: Vec<(&str, usize)> = store.read(|r| -> Result<Vec<(&str, usize)>, StoreError> {
        let mut counts = Vec::new();
        for name in ALL_TABLES {
            counts.push((name, r.count(name)?));
        }
        Ok(counts)
    })?;
    for (name, n) in &counts {
        total += n;
        if *n > 0 {
            out.push_str(&format!("  {name:<22} {n}\n"));
        }
    }
    out.push_str(&format!("records   {total}\n"));
    match store.list_audit(Some(1))?.pop() {
        Some(head) => out.push_str(&format!(
            "audit     {} events, head {}:{}\n",
            head.seq,
            head.seq,
            head.chain.unwrap_or_default()
        )),
        None => out.push_str("audit     empty\n"),
    }
    Ok(out)
}
