//! `gatehouse plugin ...`: install, list, show, enable, disable, configure, grant, remove and
//! test plugins. A thin layer over `gatehouse_plugin_host::Registry` in `DATA_DIR/plugins`;
//! a running server picks changes up when it restarts.

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

pub fn run(dir: &DataDir, command: PluginCommand) -> Result<()> {
    let registry = Registry::open(dir.root.join("plugins"))?;
    match command {
        PluginCommand::Install { path } => {
            let plugin = registry.install(&path)?;
            println!("installed {}", summary(&plugin));
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
        PluginCommand::Enable { name } => println!("{}", summary(&registry.enable(&name)?)),
        PluginCommand::Disable { name } => println!("{}", summary(&registry.disable(&name)?)),
        PluginCommand::Config { name, file } => {
            registry.set_config(&name, &read(&file)?)?;
            println!("configured `{name}`");
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
            println!("granted `{name}`");
        }
        PluginCommand::Remove { name } => {
            registry.remove(&name)?;
            println!("removed `{name}`");
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
