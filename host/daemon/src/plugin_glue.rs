//! Glue between the plugin host and the rest of Gatehouse: plugin secrets sealed by the vault
//! in the store (`gatehouse plugin-secret`), the audit sink for `serve`, and live plugin changes:
//! `gatehouse plugin enable|disable|install|grant|config|remove` tells a running gateway over the
//! admin socket, which reloads its plugin host at once ([`PluginsChanged`]).

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

/// What `gatehouse plugin ...` sends over the admin socket after changing the registry: the
/// running gateway reloads its plugins and answers with what it loaded (a JSON list of
/// [`LoadedPlugin`]). Its own shape, so a gateway that predates it refuses it as malformed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsChanged {
    pub plugins_changed: PluginChange,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginChange {
    /// Who changed it (the operating-system user), for the audit trail.
    pub actor: String,
    /// What changed, as the CLI said it ("enabled `totp-mfa`").
    pub what: String,
}

/// One plugin the running gateway loaded after a change.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadedPlugin {
    pub name: String,
    /// Why it could not be loaded (calls to it are refused).
    pub load_error: Option<String>,
}

/// The gateway's side: reload, audit (as `change.actor` from `client`), and say what is loaded
/// now. `Err` when the registry could not be read (the previous plugins stay).
pub fn apply_change(
    store: &Arc<Store>,
    host: &gatehouse_plugin_host::PluginHost,
    change: &PluginChange,
    client: &str,
) -> Result<String> {
    let loaded = reload(store, host, change, client)?;
    let view: Vec<LoadedPlugin> = loaded
        .into_iter()
        .map(|p| LoadedPlugin {
            name: p.name,
            load_error: p.load_error,
        })
        .collect();
    Ok(serde_json::to_string(&view)?)
}

/// Reloads the running plugins after `change`, logs and audits what is loaded now.
fn reload(
    store: &Arc<Store>,
    host: &gatehouse_plugin_host::PluginHost,
    change: &PluginChange,
    client: &str,
) -> Result<Vec<gatehouse_plugin_host::LoadedPluginInfo>> {
    let auditor = gatehouse_audit::Auditor::new(store.clone());
    let entry = |detail: String| {
        gatehouse_audit::Entry::new(gatehouse_core::AuditKind::AdminChange, detail)
            .user(change.actor.clone())
            .client(client.to_string())
    };
    let loaded = match host.reload() {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(change = %change.what, error = %e, "plugins not reloaded; the previous plugins stay");
            auditor.record_best_effort(entry(format!(
                "{}: the running gateway could not reload its plugins and kept the previous ones: {e}",
                change.what
            )));
            bail!(
                "the running gateway could not reload its plugins and kept the previous ones: {e}"
            );
        }
    };
    let names: Vec<String> = loaded
        .iter()
        .map(|p| match &p.load_error {
            None => p.name.clone(),
            Some(_) => format!("{} (not loaded)", p.name),
        })
        .collect();
    let now = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    tracing::info!(change = %change.what, plugins = %now, "plugins reloaded");
    for plugin in &loaded {
        if let Some(e) = &plugin.load_error {
            tracing::error!(plugin = %plugin.name, error = %e, "plugin not loaded; calls to it are refused");
        }
    }
    auditor.record_best_effort(entry(format!(
        "{}; the running gateway reloaded its plugins: {now}",
        change.what
    )));
    Ok(loaded)
}

/// The admin pages' view of this gateway's plugins (`/api/v1/plugins`): the registry on disk
/// and what the running host loaded. The API has decided who may before calling.
pub struct ApiPlugins {
    pub store: Arc<Store>,
    pub host: gatehouse_plugin_host::PluginHost,
}

impl ApiPlugins {
    fn view(
        &self,
        plugin: &gatehouse_plugin_host::InstalledPlugin,
        loaded: &[gatehouse_plugin_host::LoadedPluginInfo],
    ) -> gatehouse_api::PluginView {
        let running = loaded.iter().find(|p| p.name == plugin.name());
        gatehouse_api::PluginView {
            name: plugin.name().to_string(),
            version: plugin.manifest.version.clone(),
            description: plugin.manifest.description.clone(),
            kinds: plugin
                .manifest
                .kinds
                .iter()
                .map(|k| k.as_str().to_string())
                .collect(),
            wit: plugin.manifest.wit.clone(),
            enabled: plugin.grants.enabled,
            loaded: running.is_some_and(|p| p.load_error.is_none()),
            load_error: running.and_then(|p| p.load_error.clone()),
            granted_http: plugin.grants.http.clone(),
            granted_secrets: plugin.grants.secrets.clone(),
        }
    }
}

fn registry_error(e: gatehouse_plugin_host::RegistryError) -> gatehouse_api::PluginAdminError {
    use gatehouse_api::PluginAdminError as E;
    use gatehouse_plugin_host::RegistryError as R;
    match e {
        R::NotInstalled(name) => E::NotInstalled(name),
        R::Grants { .. } | R::Config { .. } | R::Manifest(_) => E::Refused(e.to_string()),
        R::Io { .. } | R::Parse { .. } | R::AlreadyInstalled(_) => E::Failed(e.to_string()),
    }
}

impl gatehouse_api::PluginAdmin for ApiPlugins {
    fn list(&self) -> Result<Vec<gatehouse_api::PluginView>, gatehouse_api::PluginAdminError> {
        let loaded = self.host.plugins();
        let installed = self.host.registry().list().map_err(registry_error)?;
        Ok(installed.iter().map(|p| self.view(p, &loaded)).collect())
    }

    fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        actor: &str,
        client: &str,
    ) -> Result<gatehouse_api::PluginView, gatehouse_api::PluginAdminError> {
        let registry = self.host.registry();
        if enabled {
            registry.enable(name)
        } else {
            registry.disable(name)
        }
        .map_err(registry_error)?;
        let change = PluginChange {
            actor: actor.to_string(),
            what: format!(
                "{} `{name}` (api)",
                if enabled { "enabled" } else { "disabled" }
            ),
        };
        let loaded = reload(&self.store, &self.host, &change, client)
            .map_err(|e| gatehouse_api::PluginAdminError::Failed(format!("{e:#}")))?;
        let installed = registry.show(name).map_err(registry_error)?;
        Ok(self.view(&installed, &loaded))
    }
}

/// Second factors at portal and API sign-in: the enabled AA plugins' `authenticate` hooks
/// (protocol `web`, no target), after the password was right.
pub struct WebSignIn {
    pub store: Arc<Store>,
    pub host: gatehouse_plugin_host::PluginHost,
}

/// One web sign-in as the plugins' login conversation sees it.
struct WebLogin<'a> {
    store: &'a Arc<Store>,
    client: std::net::SocketAddr,
    via: &'a str,
    session: String,
}

impl gatehouse_plugin_host::login::LoginContext for WebLogin<'_> {
    fn connection(
        &self,
        user: &gatehouse_core::User,
        login: &gatehouse_core::LoginSpec,
    ) -> gatehouse_plugin_host::ConnectionInfo {
        gatehouse_plugin_host::ConnectionInfo::of_login(
            &self.session,
            gatehouse_plugin_host::Protocol::Web,
            self.client,
            user,
            login,
            (String::new(), 0),
        )
    }

    fn find_user(&self, name: &str) -> Option<gatehouse_core::User> {
        self.store.get(&gatehouse_store::USERS, name).ok().flatten()
    }

    fn refused(&self, user: &gatehouse_core::User, detail: String) {
        gatehouse_audit::Auditor::new(self.store.clone()).record_best_effort(
            gatehouse_audit::Entry::new(
                gatehouse_core::AuditKind::LoginFailed,
                format!("{} sign-in refused: {detail}", self.via),
            )
            .user(user.name.to_string())
            .client(self.client.to_string())
            .session(self.session.clone())
            .field("protocol", self.via),
        );
    }
}

impl gatehouse_api::SignInPlugins for WebSignIn {
    fn check<'a>(
        &'a self,
        user: gatehouse_core::User,
        client: std::net::SocketAddr,
        via: &'a str,
        answers: Vec<(String, String)>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = gatehouse_api::SignInVerdict> + Send + 'a>,
    > {
        Box::pin(async move {
            use gatehouse_plugin_host::login::{self, Next, PendingLogin};
            if self.host.aa_plugins().is_empty() {
                return gatehouse_api::SignInVerdict::Accept {
                    user,
                    methods: "password".into(),
                };
            }
            let ctx = WebLogin {
                store: &self.store,
                client,
                via,
                session: format!("{via}-sign-in-{}", uuid::Uuid::new_v4()),
            };
            let mut pending = PendingLogin::sign_in(user, "password", answers);
            let mut cookies = gatehouse_plugin_host::SessionCookies::default();
            match login::run(&ctx, &self.host, &mut pending, &mut cookies).await {
                Next::Accept => {
                    let done = pending.into_parts();
                    let (methods, _) =
                        PendingLogin::audit_summary(&done.method, &done.accepted_by, vec![]);
                    gatehouse_api::SignInVerdict::Accept {
                        user: done.user,
                        methods,
                    }
                }
                Next::Ask(question) => {
                    gatehouse_api::SignInVerdict::Ask(gatehouse_api::QuestionView {
                        key: question.key,
                        prompt: question.prompt,
                        echo: question.echo,
                    })
                }
                Next::Deny => gatehouse_api::SignInVerdict::Refused(
                    pending.refusal().unwrap_or(login::REFUSED).to_string(),
                ),
            }
        })
    }
}
