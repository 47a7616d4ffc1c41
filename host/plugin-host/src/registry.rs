//! The installed-plugins registry on disk: `<dir>/<name>/{plugin.toml, plugin.wasm,
//! grants.toml, config.toml}`. Library functions for install, list, show, enable, disable,
//! grant, configure and remove, so the CLI stays a thin layer.

use crate::error::RegistryError;
use crate::grants::Grants;
use crate::manifest::{Manifest, ValidConfig};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

pub const MANIFEST_FILE: &str = "plugin.toml";
pub const COMPONENT_FILE: &str = "plugin.wasm";
pub const GRANTS_FILE: &str = "grants.toml";
pub const CONFIG_FILE: &str = "config.toml";

/// The registry rooted at one directory (for example `<data-dir>/plugins`).
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

/// One installed plugin as found on disk.
#[derive(Debug, Clone)]
pub struct InstalledPlugin {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub grants: Grants,
    /// The operator's configuration as written (see [`InstalledPlugin::valid_config`]).
    pub config: toml::Table,
    /// Hex SHA-256 of `plugin.wasm`.
    pub component_sha256: String,
}

impl InstalledPlugin {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn component_path(&self) -> PathBuf {
        self.dir.join(COMPONENT_FILE)
    }

    /// The configuration checked against the manifest's schema.
    pub fn valid_config(&self) -> Result<ValidConfig, RegistryError> {
        self.manifest.validate_config(&self.config)
    }
}

fn read_text(path: &Path) -> Result<String, RegistryError> {
    fs::read_to_string(path).map_err(|e| RegistryError::io(path, e))
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RegistryError> {
    toml::from_str(&read_text(path)?).map_err(|e| RegistryError::Parse {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), RegistryError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).map_err(|e| RegistryError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| RegistryError::io(path, e))
}

fn to_toml<T: serde::Serialize>(value: &T) -> Result<String, RegistryError> {
    toml::to_string(value).map_err(|e| RegistryError::Manifest(e.to_string()))
}

fn sha256_file(path: &Path) -> Result<String, RegistryError> {
    let bytes = fs::read(path).map_err(|e| RegistryError::io(path, e))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl Registry {
    /// Opens (and creates if needed) the registry directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, RegistryError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| RegistryError::io(&root, e))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn plugin_dir(&self, name: &str) -> Result<PathBuf, RegistryError> {
        // Names are validated like every other name, so they cannot escape the root.
        gatehouse_core::Name::new(name.to_owned())
            .map_err(|_| RegistryError::NotInstalled(name.to_owned()))?;
        Ok(self.root.join(name))
    }

    /// Installs the plugin in `source`: a directory holding `plugin.toml` and `plugin.wasm`,
    /// or the path of a `plugin.toml` with `plugin.wasm` beside it. It arrives disabled, with
    /// no grants and no configuration.
    pub fn install(&self, source: &Path) -> Result<InstalledPlugin, RegistryError> {
        let source_dir = if source.is_dir() {
            source.to_owned()
        } else {
            source.parent().map(Path::to_owned).unwrap_or_default()
        };
        let manifest_path = if source.is_dir() {
            source.join(MANIFEST_FILE)
        } else {
            source.to_owned()
        };
        let manifest_text = read_text(&manifest_path)?;
        let manifest = Manifest::parse(&manifest_text)?;
        let component = source_dir.join(COMPONENT_FILE);
        let wasm = fs::read(&component).map_err(|e| RegistryError::io(&component, e))?;
        let dir = self.plugin_dir(&manifest.name)?;
        if dir.exists() {
            return Err(RegistryError::AlreadyInstalled(manifest.name));
        }
        let staging = self.root.join(format!(".installing-{}", manifest.name));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging).map_err(|e| RegistryError::io(&staging, e))?;
        write_atomic(&staging.join(MANIFEST_FILE), manifest_text.as_bytes())?;
        write_atomic(&staging.join(COMPONENT_FILE), &wasm)?;
        write_atomic(
            &staging.join(GRANTS_FILE),
            to_toml(&Grants::default())?.as_bytes(),
        )?;
        fs::rename(&staging, &dir).map_err(|e| RegistryError::io(&dir, e))?;
        self.show(&manifest.name)
    }

    /// Every installed plugin, by name.
    pub fn list(&self) -> Result<Vec<InstalledPlugin>, RegistryError> {
        let entries = fs::read_dir(&self.root).map_err(|e| RegistryError::io(&self.root, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| RegistryError::io(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().join(MANIFEST_FILE).is_file() {
                names.push(name);
            }
        }
        names.sort();
        names.iter().map(|name| self.show(name)).collect()
    }

    /// One installed plugin.
    pub fn show(&self, name: &str) -> Result<InstalledPlugin, RegistryError> {
        let dir = self.plugin_dir(name)?;
        if !dir.join(MANIFEST_FILE).is_file() {
            return Err(RegistryError::NotInstalled(name.to_owned()));
        }
        let manifest = Manifest::parse(&read_text(&dir.join(MANIFEST_FILE))?)?;
        let grants_path = dir.join(GRANTS_FILE);
        let grants: Grants = if grants_path.exists() {
            read_toml(&grants_path)?
        } else {
            Grants::default()
        };
        let config_path = dir.join(CONFIG_FILE);
        let config: toml::Table = if config_path.exists() {
            read_toml(&config_path)?
        } else {
            toml::Table::new()
        };
        let component_sha256 = sha256_file(&dir.join(COMPONENT_FILE))?;
        Ok(InstalledPlugin {
            dir,
            manifest,
            grants,
            config,
            component_sha256,
        })
    }

    /// Enables a plugin after checking its grants and configuration.
    pub fn enable(&self, name: &str) -> Result<InstalledPlugin, RegistryError> {
        let plugin = self.show(name)?;
        plugin.grants.check(&plugin.manifest)?;
        plugin.valid_config()?;
        let grants = Grants {
            enabled: true,
            ..plugin.grants
        };
        self.write_grants(name, &grants)?;
        self.show(name)
    }

    pub fn disable(&self, name: &str) -> Result<InstalledPlugin, RegistryError> {
        let plugin = self.show(name)?;
        let grants = Grants {
            enabled: false,
            ..plugin.grants
        };
        self.write_grants(name, &grants)?;
        self.show(name)
    }

    /// Replaces a plugin's grants (the `enabled` flag in `grants` is kept as given).
    pub fn set_grants(
        &self,
        name: &str,
        grants: &Grants,
    ) -> Result<InstalledPlugin, RegistryError> {
        let plugin = self.show(name)?;
        grants.check(&plugin.manifest)?;
        self.write_grants(name, grants)?;
        self.show(name)
    }

    /// Replaces a plugin's configuration with `text` (TOML), checked against its schema first.
    pub fn set_config(&self, name: &str, text: &str) -> Result<InstalledPlugin, RegistryError> {
        let plugin = self.show(name)?;
        let table: toml::Table = toml::from_str(text).map_err(|e| RegistryError::Config {
            plugin: name.to_owned(),
            message: e.message().to_owned(),
        })?;
        plugin.manifest.validate_config(&table)?;
        write_atomic(&plugin.dir.join(CONFIG_FILE), text.as_bytes())?;
        self.show(name)
    }

    pub fn remove(&self, name: &str) -> Result<(), RegistryError> {
        let plugin = self.show(name)?;
        fs::remove_dir_all(&plugin.dir).map_err(|e| RegistryError::io(&plugin.dir, e))
    }

    fn write_grants(&self, name: &str, grants: &Grants) -> Result<(), RegistryError> {
        let dir = self.plugin_dir(name)?;
        write_atomic(&dir.join(GRANTS_FILE), to_toml(grants)?.as_bytes())
    }
}
