//! `gatehouse plugin ...`: install, list, show, enable, disable, configure, grant, remove and
//! test plugins. A thin layer over `gatehouse_plugin_host::Registry` in `DATA_DIR/plugins`.
//! After a change the CLI tells a running gateway over the admin socket, which reloads its
//! plugins at once (logins already past their plugins are not affected; the next login uses the
//! new set), and says so; with no gateway running the change applies when it starts.

use crate::datadir::DataDir;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use gatehouse_plugin_host::fixture::{Fixture, run as run_fixture};
use gatehouse_plugin_host::{Grants, InstalledPlugin, Registry};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Install a plugin package (a directory with plugin.toml and plugin.wasm). It arrives
    /// disabled, with no grants.
    Install { path: PathBuf },
    /// List installed plugins.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one plugin: manifest, grants, configuration.
    Show { name: String },
    /// Enable a plugin (its grants and configuration are checked first).
    Enable { name: String },
    /// Disable a plugin.
    Disable { name: String },
    /// Set a plugin's configuration from a TOML file, checked against its schema.
    Config { name: String, file: PathBuf },
    /// Set what the operator grants a plugin (http, secrets, ticketing, limits) from a TOML file.
    Grant { name: String, file: PathBuf },
    /// Remove a plugin.
    Remove { name: String },
    /// Run one hook of a plugin against a fixture file and print the verdict (exit 1 unless
    /// it accepts).
    Test { name: String, fixture: PathBuf },
}

fn summary(plugin: &InstalledPlugin) -> String {
    let kinds: Vec<&str> = plugin.manifest.kinds.iter().map(|k| k.as_str()).collect();
    format!(
        "{:<20} {:<8} {:<9} {:<24} wit {}",
        plugin.name(),
        plugin.manifest.version,
        if plugin.grants.enabled {
            "enabled"
        } else {
            "disabled"
        },
        kinds.join(","),
        plugin.manifest.wit
    )
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))
}

/// What a change means for a running gateway, for the line the CLI prints.
enum Change {
    /// The plugin should be in the running set afterwards (if enabled).
    Uses(String),
    /// The plugin should not be in the running set afterwards.
    Drops(String),
}

/// Tells the running gateway (if any) that the registry changed, and prints what that did.
fn tell_gateway(dir: &DataDir, registry: &Registry, what: &str, change: Change) -> Result<()> {
    let notice = crate::plugin_glue::PluginsChanged {
        plugins_changed: crate::plugin_glue::PluginChange {
            actor: std::env::var("USER").unwrap_or_else(|_| "local".into()),
            what: what.to_string(),
        },
    };
    let Some(response) = crate::socket::send_plugins_changed(&dir.admin_socket(), &notice)? else {
        println!("{what}; takes effect when the gateway starts");
        return Ok(());
    };
    if !response.ok {
        bail!(
            "{what}, but the running gateway did not apply it: {}",
            response.output
        );
    }
    let loaded: Vec<crate::plugin_glue::LoadedPlugin> = serde_json::from_str(&response.output)
        .context("malformed answer from the running gateway")?;
    let find = |name: &str| loaded.iter().find(|p| p.name == name);
    match change {
        Change::Uses(name) => {
            let enabled = registry.show(&name).map(|p| p.grants.enabled)?;
            match find(&name) {
                _ if !enabled => {
                    println!("{what}; it is disabled, so the running gateway does not use it")
                }
                Some(plugin) => match &plugin.load_error {
                    None => println!("{what}; the running gateway uses it now"),
                    Some(e) => bail!(
                        "{what}, but the running gateway could not load it, so every call to it \
                         is refused (logins through an AA plugin fail): {e}"
                    ),
                },
                None => bail!("{what}, but the running gateway did not load it"),
            }
        }
        Change::Drops(name) => match find(&name) {
            None => println!("{what}; the running gateway no longer uses it"),
            Some(_) => bail!("{what}, but the running gateway still has it loaded"),
        },
    }
    Ok(())
}

pub fn run(dir: &DataDir, command: PluginCommand) -> Result<()> {
    let registry = Registry::open(dir.root.join("plugins"))?;
    match command {
        PluginCommand::Install { path } => {
            let plugin = registry.install(&path)?;
            // Installed plugins arrive disabled: nothing changes for a running gateway.
            println!(
                "installed {}\n`{}` is disabled until `gatehouse plugin enable {}`",
                summary(&plugin),
                plugin.name(),
                plugin.name()
            );
        }
        PluginCommand::List { json } => {
            let plugins = registry.list()?;
            if json {
                let rows: Vec<serde_json::Value> = plugins
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.name(),
                            "version": p.manifest.version,
                            "enabled": p.grants.enabled,
                            "kinds": p.manifest.kinds,
                            "wit": p.manifest.wit,
                            "sha256": p.component_sha256,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for plugin in &plugins {
                    println!("{}", summary(plugin));
                }
            }
        }
        PluginCommand::Show { name } => {
            let plugin = registry.show(&name)?;
            println!("{}", summary(&plugin));
            println!("  description  {}", plugin.manifest.description);
            println!("  sha256       {}", plugin.component_sha256);
            println!(
                "  requests     http {:?}, secrets {:?}",
                plugin.manifest.capabilities.http, plugin.manifest.capabilities.secrets
            );
            println!("\n# grants.toml\n{}", toml_text(&plugin.grants)?);
            println!("# config.toml\n{}", toml_text(&plugin.config)?);
        }
        PluginCommand::Enable { name } => {
            println!("{}", summary(&registry.enable(&name)?));
            tell_gateway(
                dir,
                &registry,
                &format!("enabled `{name}`"),
                Change::Uses(name),
            )?;
        }
        PluginCommand::Disable { name } => {
            println!("{}", summary(&registry.disable(&name)?));
            tell_gateway(
                dir,
                &registry,
                &format!("disabled `{name}`"),
                Change::Drops(name),
            )?;
        }
        PluginCommand::Config { name, file } => {
            registry.set_config(&name, &read(&file)?)?;
            tell_gateway(
                dir,
                &registry,
                &format!("configured `{name}`"),
                Change::Uses(name),
            )?;
        }
        PluginCommand::Grant { name, file } => {
            let current = registry.show(&name)?;
            let grants: Grants = toml::from_str(&read(&file)?)
                .with_context(|| format!("grants file `{}`", file.display()))?;
            // The enabled flag is changed by enable/disable only.
            let grants = Grants {
                enabled: current.grants.enabled,
                ..grants
            };
            registry.set_grants(&name, &grants)?;
            tell_gateway(
                dir,
                &registry,
                &format!("granted `{name}`"),
                Change::Uses(name),
            )?;
        }
        PluginCommand::Remove { name } => {
            registry.remove(&name)?;
            tell_gateway(
                dir,
                &registry,
                &format!("removed `{name}`"),
                Change::Drops(name),
            )?;
        }
        PluginCommand::Test { name, fixture } => {
            let fixture = Fixture::parse(&read(&fixture)?)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(run_fixture(&registry, &name, &fixture))?;
            println!("{}", outcome.text);
            if !outcome.accepted {
                bail!("the hook did not accept");
            }
        }
    }
    Ok(())
}

fn toml_text<T: serde::Serialize>(value: &T) -> Result<String> {
    Ok(toml::to_string(value)?)
}
