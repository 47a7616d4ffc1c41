//! Glue between the plugin host and the rest of Gatehouse: plugin secrets sealed by the vault
//! in the store (`gatehouse plugin-secret`), and starting the plugin host for `serve`.

use crate::admin::{AdminContext, Inputs, audit_change, json, table, time_text};
use crate::cli::PluginSecretCommand;
use anyhow::{Result, anyhow, bail};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{PluginSecret, SecretString};
use gatehouse_plugin_host::SecretProvider;
use gatehouse_store::{PLUGIN_SECRETS, Store};
use gatehouse_vault::{SecretKind, Vault};
use std::sync::Arc;

/// The vault's binding for a plugin secret: its name.
fn binding(name: &str) -> String {
    format!("plugin-secret:{name}")
}

/// Plugin secrets from the store, opened with the vault when a granted plugin asks.
pub struct VaultSecrets {
    pub store: Arc<Store>,
    pub vault: Arc<Vault>,
}

impl SecretProvider for VaultSecrets {
    fn secret(&self, plugin: &str, name: &str) -> Option<SecretString> {
        let record: PluginSecret = match self.store.get(&PLUGIN_SECRETS, name) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(plugin, secret = name, error = %e, "cannot read a plugin secret");
                return None;
            }
        };
        match self
            .vault
            .open_text(&binding(name), SecretKind::Password, &record.sealed)
        {
            Ok(secret) => Some(secret),
            Err(e) => {
                tracing::error!(plugin, secret = name, error = %e, "cannot open a plugin secret");
                None
            }
        }
    }
}

/// Plugins' warnings and errors, into the audit trail under their session.
pub struct AuditLog {
    pub auditor: gatehouse_audit::Auditor,
}

impl gatehouse_plugin_host::AuditSink for AuditLog {
    fn plugin_log(&self, session: &str, plugin: &str, hook: &str, message: &str) {
        self.auditor.record_best_effort(
            gatehouse_audit::Entry::new(
                gatehouse_core::AuditKind::PluginLog,
                format!("plugin `{plugin}` in {hook}: {message}"),
            )
            .session(session.to_string()),
        );
    }
}

fn valid_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '@'));
    if !ok {
        bail!("invalid secret name `{name}`: 1-128 of A-Z a-z 0-9 - _ . / @");
    }
    Ok(())
}

pub fn secret_command(
    ctx: &AdminContext,
    command: &PluginSecretCommand,
    inputs: &Inputs,
) -> Result<String> {
    match command {
        PluginSecretCommand::Set { name } => {
            valid_name(name)?;
            let value = inputs
                .password
                .as_deref()
                .ok_or_else(|| anyhow!("no secret value on standard input"))?;
            let vault = (ctx.vault)()?;
            let sealed = vault.seal(&binding(name), SecretKind::Password, value.as_bytes())?;
            ctx.store.write(|txn| -> Result<()> {
                txn.put(
                    &PLUGIN_SECRETS,
                    name,
                    &PluginSecret {
                        name: name.clone(),
                        sealed,
                        updated: Timestamp::now(),
                    },
                )?;
                audit_change(txn, &inputs.actor, format!("set plugin secret `{name}`"))?;
                Ok(())
            })?;
            Ok(format!("set plugin secret `{name}`\n"))
        }
        PluginSecretCommand::List(j) => {
            let secrets: Vec<PluginSecret> = ctx.store.list(&PLUGIN_SECRETS)?;
            if j.json {
                let view: Vec<_> = secrets
                    .iter()
                    .map(|s| serde_json::json!({"name": s.name, "updated": s.updated}))
                    .collect();
                return json(&view);
            }
            let rows: Vec<Vec<String>> = secrets
                .iter()
                .map(|s| vec![s.name.clone(), time_text(s.updated)])
                .collect();
            Ok(table(&["NAME", "UPDATED"], &rows))
        }
        PluginSecretCommand::Remove { name } => {
            ctx.store.write(|txn| -> Result<()> {
                if !txn.delete(&PLUGIN_SECRETS, name)? {
                    bail!("plugin secret `{name}` does not exist");
                }
                audit_change(
                    txn,
                    &inputs.actor,
                    format!("removed plugin secret `{name}`"),
                )?;
                Ok(())
            })?;
            Ok(format!("removed plugin secret `{name}`\n"))
        }
    }
}
