//! `gatehouse a2a ...` (application registrations, API keys, and retrieval over the API) and
//! `gatehouse service ...` (the services toggles).

use crate::admin::{
    AdminContext, Inputs, audit_change, insert_new, json, json_or_table, table, time_text,
    write_audited,
};
use crate::api_client::{ApiArgs, ApiClient};
use crate::cli::JsonFlag;
use crate::datadir::DataDir;
use crate::request_cmd::{AccessRequestArgs, client, print, released_secret, runtime};
use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{A2aKey, A2aScope, Application, Name, SERVICE_NAMES, TargetSpec};
use gatehouse_store::{A2A_KEYS, ACCOUNTS, APPLICATIONS, StoreError, Txn, account_key};
use gatehouse_workflow::{A2aRegistration, SourceList, cert_thumbprint};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum A2aCommand {
    /// Register an application by its client certificate (pinned by SHA-256).
    Register {
        name: String,
        /// The application's client certificate (PEM).
        #[arg(long)]
        cert_file: PathBuf,
        /// Source address or network it may call from (repeatable; default: anywhere).
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// Groups the application is in, for policies (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// May file access requests on behalf of users.
        #[arg(long)]
        broker: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Registered applications.
    List(JsonFlag),
    Show {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove an application and its keys.
    Remove {
        name: String,
    },
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    /// Issue an API key bound to one account (`ACCOUNT@ASSET`), or a broker key (`--broker`).
    /// The key is printed once.
    KeyAdd {
        application: String,
        target: Option<String>,
        #[arg(long)]
        broker: bool,
    },
    /// An application's keys (ids and scopes; never the keys).
    KeyList {
        application: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    KeyRemove {
        application: String,
        id: String,
    },
    /// Retrieve a credential over the API, as an application does (mutual TLS + API key).
    Retrieve {
        #[command(flatten)]
        app: AppCredentials,
        /// `password` or `private_key`.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// File an access request for a user, as a broker application does.
    Request {
        #[command(flatten)]
        app: AppCredentials,
        /// The user the request is for.
        #[arg(long)]
        on_behalf_of: String,
        #[command(flatten)]
        request: AccessRequestArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// How an application proves itself to the API: mutual TLS and an API key.
#[derive(Debug, Args, Serialize, Deserialize)]
pub struct AppCredentials {
    /// The application's client certificate and key (PEM).
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// A file holding the API key.
    #[arg(long)]
    api_key_file: PathBuf,
}

impl AppCredentials {
    /// A client presenting the application's certificate, and the `Authorization` value that
    /// carries its API key.
    fn connect(&self, dir: &DataDir, api: &ApiArgs) -> Result<(ApiClient, Zeroizing<String>)> {
        let client = client(dir, api, Some((&self.cert, &self.key)))?;
        let key = std::fs::read_to_string(&self.api_key_file).map_err(|e| {
            anyhow!(
                "reading the API key file `{}`: {e}",
                self.api_key_file.display()
            )
        })?;
        let key = key.lines().next().unwrap_or("").trim();
        Ok((client, Zeroizing::new(format!("A2A {key}"))))
    }
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum ServiceCommand {
    /// Which services are on.
    List(JsonFlag),
    /// Turn a service on.
    Enable { name: String },
    /// Turn a service off: new work is refused with a clear message; running work finishes.
    Disable { name: String },
}

/// Whether the command talks to the API rather than the store.
pub fn is_api(command: &A2aCommand) -> bool {
    matches!(
        command,
        A2aCommand::Retrieve { .. } | A2aCommand::Request { .. }
    )
}

/// Reads the certificate file of `register` into the inputs.
pub fn gather(command: &A2aCommand, inputs: &mut Inputs) -> Result<()> {
    if let A2aCommand::Register { cert_file, .. } = command {
        inputs.certificate = Some(
            std::fs::read_to_string(cert_file)
                .map_err(|e| anyhow!("reading the certificate `{}`: {e}", cert_file.display()))?,
        );
    }
    Ok(())
}

fn app_name(text: &str) -> Result<Name> {
    Name::new(text).map_err(|e| anyhow!("invalid application name `{text}`: {e}"))
}

fn load_app(txn: &Txn<'_>, name: &Name) -> Result<Application> {
    txn.get(&APPLICATIONS, name.as_str())?
        .ok_or_else(|| anyhow!("no application `{name}`"))
}

fn app_view(app: &Application, keys: &[A2aKey]) -> serde_json::Value {
    serde_json::json!({
        "name": app.name,
        "description": app.description,
        "cert_sha256": app.cert_sha256,
        "allowed_sources": app.allowed_sources,
        "groups": app.groups,
        "broker": app.broker,
        "disabled": app.disabled,
        "created": time_text(app.created),
        "keys": keys.iter().map(key_view).collect::<Vec<_>>(),
    })
}

fn scope_text(scope: &A2aScope) -> String {
    match scope {
        A2aScope::Credential { asset, account } => format!("{account}@{asset}"),
        A2aScope::Broker => "broker".into(),
    }
}

fn key_view(key: &A2aKey) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "scope": scope_text(&key.scope),
        "created": time_text(key.created),
    })
}

fn keys_of(txn: &Txn<'_>, app: &Name) -> Result<Vec<(String, A2aKey)>, StoreError> {
    // Keys are stored under their hash; the listing needs both.
    Ok(txn
        .entries(&A2A_KEYS)?
        .into_iter()
        .filter(|(_, k)| k.application == *app)
        .collect())
}

/// Runs an administrative `a2a` command against the store.
pub fn admin(ctx: &AdminContext, command: &A2aCommand, inputs: &Inputs) -> Result<String> {
    let actor = inputs.actor.as_str();
    match command {
        A2aCommand::Register {
            name,
            allow,
            groups,
            broker,
            description,
            ..
        } => {
            let name = app_name(name)?;
            let pem = inputs
                .certificate
                .as_deref()
                .ok_or_else(|| anyhow!("no certificate was read"))?;
            let der = CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| anyhow!("the certificate file is not a PEM certificate: {e}"))?;
            SourceList::parse(allow).map_err(|e| anyhow!(e))?;
            let groups = groups
                .iter()
                .map(|g| Name::new(g).map_err(|e| anyhow!("invalid group `{g}`: {e}")))
                .collect::<Result<Vec<_>>>()?;
            let app = Application {
                name: name.clone(),
                description: description.clone(),
                cert_sha256: cert_thumbprint(der.as_ref()),
                allowed_sources: allow.clone(),
                groups,
                broker: *broker,
                disabled: false,
                created: Timestamp::now(),
            };
            ctx.store.write(|txn| {
                insert_new(
                    txn,
                    &APPLICATIONS,
                    name.as_str(),
                    &app,
                    &format!("A2A application `{name}`"),
                    actor,
                )
            })?;
            Ok(format!(
                "registered application `{name}` (client certificate sha256 {})\n",
                app.cert_sha256
            ))
        }
        A2aCommand::List(j) => {
            let (apps, keys) = ctx.store.write(|txn| -> Result<_, StoreError> {
                Ok((txn.list(&APPLICATIONS)?, txn.entries(&A2A_KEYS)?))
            })?;
            let keys_of_app = |a: &Application| -> Vec<A2aKey> {
                keys.iter()
                    .filter(|(_, k)| k.application == a.name)
                    .map(|(_, k)| k.clone())
                    .collect()
            };
            json_or_table(
                j,
                &apps,
                |a| app_view(a, &keys_of_app(a)),
                &["NAME", "CERT SHA256", "SOURCES", "KEYS", ""],
                |a| {
                    vec![
                        a.name.to_string(),
                        a.cert_sha256[..16.min(a.cert_sha256.len())].to_string(),
                        if a.allowed_sources.is_empty() {
                            "any".into()
                        } else {
                            a.allowed_sources.join(",")
                        },
                        keys_of_app(a).len().to_string(),
                        if a.disabled {
                            "disabled"
                        } else if a.broker {
                            "broker"
                        } else {
                            ""
                        }
                        .into(),
                    ]
                },
            )
        }
        // JSON either way: an application's record reads best as it is.
        A2aCommand::Show { name, .. } => {
            let name = app_name(name)?;
            let (app, keys) = ctx.store.write(|txn| -> Result<_> {
                let app = load_app(txn, &name)?;
                let keys: Vec<A2aKey> = keys_of(txn, &name)?.into_iter().map(|(_, k)| k).collect();
                Ok((app, keys))
            })?;
            json(&app_view(&app, &keys))
        }
        A2aCommand::Remove { name } => {
            let name = app_name(name)?;
            let detail = format!("removed A2A application `{name}` and its keys");
            write_audited(ctx, actor, &detail, |txn| {
                load_app(txn, &name)?;
                for (hash, _) in keys_of(txn, &name)? {
                    txn.delete(&A2A_KEYS, &hash)?;
                }
                txn.delete(&APPLICATIONS, name.as_str())?;
                Ok(())
            })?;
            Ok(format!("removed application `{name}`\n"))
        }
        A2aCommand::Disable { name } | A2aCommand::Enable { name } => {
            let disable = matches!(command, A2aCommand::Disable { .. });
            let name = app_name(name)?;
            let state = if disable { "disabled" } else { "enabled" };
            let detail = format!("{state} A2A application `{name}`");
            write_audited(ctx, actor, &detail, |txn| {
                let mut app = load_app(txn, &name)?;
                app.disabled = disable;
                txn.put(&APPLICATIONS, name.as_str(), &app)?;
                Ok(())
            })?;
            Ok(format!("application `{name}` {state}\n"))
        }
        A2aCommand::KeyAdd {
            application,
            target,
            broker,
        } => {
            let name = app_name(application)?;
            let scope = match (target, broker) {
                (Some(_), true) | (None, false) => {
                    bail!("give either a target (ACCOUNT@ASSET) or --broker")
                }
                (None, true) => A2aScope::Broker,
                (Some(t), false) => {
                    let spec: TargetSpec = t
                        .parse()
                        .map_err(|_| anyhow!("invalid target `{t}`: expected `ACCOUNT@ASSET`"))?;
                    A2aScope::Credential {
                        asset: spec.asset,
                        account: spec.account,
                    }
                }
            };
            let issued = ctx.store.write(|txn| -> Result<A2aRegistration> {
                let app = load_app(txn, &name)?;
                if matches!(scope, A2aScope::Broker) && !app.broker {
                    bail!("application `{name}` is not registered as a broker (register with --broker)");
                }
                if let A2aScope::Credential { asset, account } = &scope
                    && txn
                        .get(&ACCOUNTS, &account_key(asset.as_str(), account.as_str()))?
                        .is_none()
                {
                    bail!("no account `{account}@{asset}`");
                }
                let issued = A2aRegistration::new(&app, scope.clone());
                txn.put(&A2A_KEYS, &issued.hash, &issued.record)?;
                audit_change(
                    txn,
                    actor,
                    format!(
                        "issued A2A key {} for `{name}` ({})",
                        issued.record.id,
                        scope_text(&scope)
                    ),
                )?;
                Ok(issued)
            })?;
            Ok(format!(
                "{}\n# key id {} for `{name}` ({}); shown once, keep it in the application's secret store\n",
                issued.key.expose(),
                issued.record.id,
                scope_text(&issued.record.scope)
            ))
        }
        A2aCommand::KeyList {
            application,
            json: j,
        } => {
            let name = app_name(application)?;
            let keys = ctx.store.write(|txn| -> Result<Vec<A2aKey>> {
                load_app(txn, &name)?;
                Ok(keys_of(txn, &name)?.into_iter().map(|(_, k)| k).collect())
            })?;
            json_or_table(j, &keys, key_view, &["ID", "SCOPE", "CREATED"], |k| {
                vec![k.id.clone(), scope_text(&k.scope), time_text(k.created)]
            })
        }
        A2aCommand::KeyRemove { application, id } => {
            let name = app_name(application)?;
            let detail = format!("removed A2A key {id} of `{name}`");
            write_audited(ctx, actor, &detail, |txn| {
                let found = keys_of(txn, &name)?
                    .into_iter()
                    .find(|(_, k)| k.id == *id)
                    .ok_or_else(|| anyhow!("application `{name}` has no key `{id}`"))?;
                txn.delete(&A2A_KEYS, &found.0)?;
                Ok(())
            })?;
            Ok(format!("removed key {id}\n"))
        }
        A2aCommand::Retrieve { .. } | A2aCommand::Request { .. } => {
            bail!("this command talks to the API, not the store")
        }
    }
}

/// Runs a services command against the store.
pub fn service(ctx: &AdminContext, command: &ServiceCommand, inputs: &Inputs) -> Result<String> {
    match command {
        ServiceCommand::List(j) => {
            let toggles = ctx.store.services()?;
            if j.json {
                let map: serde_json::Map<String, serde_json::Value> = SERVICE_NAMES
                    .iter()
                    .map(|n| (n.to_string(), toggles.get(n).unwrap_or(false).into()))
                    .collect();
                return json(&map);
            }
            let rows = SERVICE_NAMES
                .iter()
                .map(|n| {
                    vec![
                        n.to_string(),
                        if toggles.get(n).unwrap_or(false) {
                            "on"
                        } else {
                            "off"
                        }
                        .into(),
                    ]
                })
                .collect::<Vec<_>>();
            Ok(table(&["SERVICE", "STATE"], &rows))
        }
        ServiceCommand::Enable { name } | ServiceCommand::Disable { name } => {
            let on = matches!(command, ServiceCommand::Enable { .. });
            if !SERVICE_NAMES.contains(&name.as_str()) {
                bail!(
                    "unknown service `{name}`; the services are {}",
                    SERVICE_NAMES.join(", ")
                );
            }
            let state = if on { "on" } else { "off" };
            let detail = format!("turned the {name} service {state}");
            write_audited(ctx, &inputs.actor, &detail, |txn| {
                let mut toggles = txn.services()?;
                if let Some(slot) = toggles.get_mut(name) {
                    *slot = on;
                }
                txn.put_services(&toggles)?;
                Ok(())
            })?;
            Ok(format!("service {name} is {state}\n"))
        }
    }
}

/// `a2a retrieve` and `a2a request`: what an application does, over the API.
pub fn api(dir: &DataDir, command: A2aCommand) -> Result<()> {
    let rt = runtime()?;
    match command {
        A2aCommand::Retrieve {
            app,
            kind,
            json: j,
            api,
        } => {
            let (client, auth) = app.connect(dir, &api)?;
            let path = match kind {
                Some(k) => format!("/api/v1/a2a/credential?kind={k}"),
                None => "/api/v1/a2a/credential".into(),
            };
            let value = rt
                .block_on(client.call("GET", &path, Some(&auth), None))?
                .ok()?;
            print(&value, j, |v| released_secret(v).to_string())
        }
        A2aCommand::Request {
            app,
            on_behalf_of,
            request,
            api,
        } => {
            let (client, auth) = app.connect(dir, &api)?;
            let mut body = request.body();
            body["on_behalf_of"] = on_behalf_of.into();
            let value = rt
                .block_on(client.call("POST", "/api/v1/a2a/requests", Some(&auth), Some(&body)))?
                .ok()?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        _ => bail!("this command changes the store; it is not an API call"),
    }
}
