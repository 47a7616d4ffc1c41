//! The data directory: where the store, keys, recordings and the admin socket live, and `init`.

use anyhow::{Context, Result, bail};
use gatehouse_vault::{KeySource, MasterKey};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
    /// `--store` / `GATEHOUSE_STORE`: where the store is, over what settings.json says.
    pub store_override: Option<gatehouse_store::StoreLocation>,
}

/// What `init` decided, kept in `settings.json` so that `serve` finds the same master key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub master_key: MasterKeySetting,
    /// Where the store is when not the redb file of the data directory: a `postgres://` URL
    /// shared by several control nodes (docs/cluster.md). Its password stays in this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<gatehouse_store::StoreLocation>,
    #[serde(default)]
    pub policy: PolicySettings,
    /// The HTTPS API.
    #[serde(default)]
    pub api: gatehouse_api::ApiSettings,
    /// Access requests, access strings, the connect-time hold.
    #[serde(default)]
    pub requests: gatehouse_workflow::WorkflowSettings,
    /// Email notifications (docs/notifications.md); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<gatehouse_notify::MailSettings>,
    /// The RDP listener (docs/rdp.md).
    #[serde(default)]
    pub rdp: RdpSettings,
    /// The Telnet listener (docs/telnet.md); off unless turned on.
    #[serde(default)]
    pub telnet: TelnetSettings,
    /// The VNC listener (docs/vnc.md); off unless turned on.
    #[serde(default)]
    pub vnc: VncSettings,
    /// Where the audit trail is streamed (RFC 5424 syslog over TCP); none when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_streams: Vec<gatehouse_audit::stream::StreamSettings>,
    /// The Prometheus endpoint; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::MetricsSettings>,
    /// Sealed recordings: RFC 3161 timestamps from a time stamping authority, encryption at
    /// rest; neither when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recordings: Option<crate::timestamp::RecordingSettings>,
    /// Gateway users from LDAP or Active Directory (docs/directory.md); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<gatehouse_directory::DirectorySettings>,
}

/// Where `serve` accepts RDP clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RdpSettings {
    pub enabled: bool,
    /// When this default address cannot be bound, `serve` logs an error and goes on without RDP.
    pub listen: std::net::SocketAddr,
    /// Steer capability negotiation so every recording can be rendered back to frames (no
    /// graphics pipeline, no drawing orders, no bitmap codecs: more bandwidth, plain bitmaps).
    /// Off, the client and target negotiate freely and recordings are likely not decodable
    /// (each session's verdict says so).
    pub decodable_recordings: bool,
}

impl Default for RdpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], gatehouse_rdp::DEFAULT_PORT)),
            decodable_recordings: true,
        }
    }
}

/// Where `serve` accepts Telnet clients. Telnet is cleartext (the gateway password crosses the
/// network as typed), so it is off unless an operator turns it on for devices that speak
/// nothing else.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelnetSettings {
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
}

impl Default for TelnetSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 2323)),
        }
    }
}

/// Where `serve` accepts VNC viewers (VeNCrypt: TLS with the gateway's certificate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct VncSettings {
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
}

impl Default for VncSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 5900)),
        }
    }
}

/// Where the policies are and what context the gateway gives them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PolicySettings {
    /// The directory of `*.cedar` files (default: `<data-dir>/policies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The `Gateway` entity's id (default `gatehouse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_name: Option<String>,
    /// IANA time zone for `context.time` (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterKeySetting {
    File(PathBuf),
    Env(String),
}

impl DataDir {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            store_override: None,
        }
    }

    /// The same directory with the store at `location` (`--store`).
    pub fn with_store(mut self, location: Option<gatehouse_store::StoreLocation>) -> Self {
        self.store_override = location;
        self
    }

    /// This gateway's name in records several control nodes share: `HOST/ID`, the id made at
    /// the first start and kept in `gateway.id` (a copied data directory on another host still
    /// differs by its host name).
    pub fn gateway_id(&self) -> Result<String> {
        let path = self.root.join("gateway.id");
        let id = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
            _ => {
                let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
                replace_private_file(&path, format!("{id}\n").as_bytes())?;
                id
            }
        };
        Ok(format!("{}/{id}", crate::node_cmd::hostname()))
    }

    /// Where the store is: `--store`, else settings.json `store`, else the redb file here.
    pub fn store_location(&self) -> Result<gatehouse_store::StoreLocation> {
        if let Some(location) = &self.store_override {
            return Ok(location.clone());
        }
        if self.is_initialised()
            && let Some(location) = self.load_settings()?.store
        {
            return Ok(location);
        }
        Ok(gatehouse_store::StoreLocation::Redb(self.store()))
    }

    /// Opens the store where [`Self::store_location`] says.
    pub fn open_store(&self) -> Result<gatehouse_store::Store, gatehouse_store::StoreError> {
        let location = self
            .store_location()
            .map_err(|e| gatehouse_store::StoreError::Location(format!("{e:#}")))?;
        gatehouse_store::Store::open_location(&location)
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("gatehouse.redb")
    }
    pub fn settings(&self) -> PathBuf {
        self.root.join("settings.json")
    }
    pub fn host_key(&self) -> PathBuf {
        self.root.join("host_keys").join("ssh_host_ed25519_key")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn recordings(&self) -> PathBuf {
        self.root.join("recordings")
    }
    /// The session search index (derived from the recordings; `session reindex` rebuilds it).
    pub fn search_index(&self) -> PathBuf {
        self.root.join("search")
    }
    pub fn policies(&self) -> PathBuf {
        self.root.join("policies")
    }
    /// The policy engine's settings from settings.json, with defaults.
    pub fn policy_settings(&self) -> Result<gatehouse_policy::EngineSettings> {
        let settings = self.load_settings()?;
        Ok(gatehouse_policy::EngineSettings {
            policy_dir: settings.policy.dir.unwrap_or_else(|| self.policies()),
            gateway: settings
                .policy
                .gateway_name
                .unwrap_or_else(|| "gatehouse".into()),
            time_zone: settings.policy.time_zone,
        })
    }
    /// Creates the policy directory with the base policy if it is missing (data directories
    /// made before policies existed).
    pub fn ensure_policies(&self, dir: &Path) -> Result<bool> {
        if dir.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
        std::fs::write(
            dir.join("base.cedar"),
            gatehouse_policy::schema::BASE_POLICY,
        )?;
        Ok(true)
    }
    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }
    pub fn default_master_key(&self) -> PathBuf {
        self.root.join("master.key")
    }

    pub fn is_initialised(&self) -> bool {
        self.settings().exists()
    }

    /// Makes the data directory private again where it is not: a file or directory in it (not
    /// under `recordings/`, whose entries the gateway writes itself) that the group or others may
    /// read is reported and set to 0600 or 0700. Returns what it changed, for the start-up warning.
    pub fn make_private(&self) -> Result<Vec<(PathBuf, u32)>> {
        use std::os::unix::fs::PermissionsExt;
        let mut changed = Vec::new();
        let recordings = self.recordings();
        let mut stack = vec![self.root.clone()];
        while let Some(path) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("reading `{}`", path.display()))?;
            if meta.file_type().is_symlink() {
                continue;
            }
            let mode = meta.permissions().mode() & 0o777;
            let private = if meta.is_dir() { 0o700 } else { 0o600 };
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & private))
                    .with_context(|| format!("making `{}` private", path.display()))?;
                changed.push((path.clone(), mode));
            }
            if meta.is_dir() && path != recordings {
                for entry in std::fs::read_dir(&path)
                    .with_context(|| format!("listing `{}`", path.display()))?
                {
                    stack.push(entry?.path());
                }
            }
        }
        changed.sort();
        Ok(changed)
    }

    pub fn require_initialised(&self) -> Result<()> {
        if !self.is_initialised() {
            bail!(
                "`{}` is not a Gatehouse data directory; run `gatehouse --data-dir {} init` first",
                self.root.display(),
                self.root.display()
            );
        }
        Ok(())
    }

    pub fn load_settings(&self) -> Result<Settings> {
        self.require_initialised()?;
        let text = std::fs::read_to_string(self.settings())
            .with_context(|| format!("reading `{}`", self.settings().display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("`{}` is not valid", self.settings().display()))
    }

    /// The master key source: an explicit override, else what `init` recorded.
    pub fn key_source(&self, override_source: Option<KeySource>) -> Result<KeySource> {
        if let Some(source) = override_source {
            return Ok(source);
        }
        Ok(match self.load_settings()?.master_key {
            MasterKeySetting::File(path) => KeySource::File(path),
            MasterKeySetting::Env(var) => KeySource::Env(var),
        })
    }

    pub fn load_master_key(&self, override_source: Option<KeySource>) -> Result<MasterKey> {
        let source = self.key_source(override_source)?;
        Ok(MasterKey::load(&source)?)
    }

    pub fn load_host_keys(&self) -> Result<Vec<PrivateKey>> {
        let path = self.host_key();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading host key `{}`", path.display()))?;
        let key = russh::keys::decode_secret_key(&text, None)
            .with_context(|| format!("host key `{}` is not a valid OpenSSH key", path.display()))?;
        Ok(vec![key])
    }
}

/// Writes `contents` to a new file readable only by the owner.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating `{}`", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Replaces `path` atomically with a private (0600) file holding `contents`.
pub fn replace_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    write_private_file(&tmp, contents)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing `{}`", path.display()))?;
    Ok(())
}

fn create_private_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating `{}`", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A new random Ed25519 host key.
pub fn generate_host_key() -> Result<PrivateKey> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, seed.as_mut());
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

/// What `init` created, for its report.
pub struct InitReport {
    pub host_key_fingerprint: String,
    pub master_key: String,
}

/// Creates a data directory: store, SSH host key, TLS key pair, master key and settings.
pub fn init(dir: &DataDir, key_override: Option<KeySource>) -> Result<InitReport> {
    if dir.is_initialised() {
        bail!(
            "`{}` is already initialised; refusing to overwrite its keys",
            dir.root.display()
        );
    }
    // A shared store is reached before anything is written here.
    let location = dir.store_location()?;
    if location.is_postgres() {
        drop(gatehouse_store::Store::open_location(&location)?);
    }
    // A failed init leaves nothing behind, so that it can simply be run again.
    let created = !dir.root.exists();
    let result = init_inner(dir, key_override);
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(&dir.root);
    }
    result
}

fn init_inner(dir: &DataDir, key_override: Option<KeySource>) -> Result<InitReport> {
    create_private_dir(&dir.root)?;
    create_private_dir(&dir.recordings())?;
    create_private_dir(&dir.tls_dir())?;
    if let Some(parent) = dir.host_key().parent() {
        create_private_dir(parent)?;
    }

    // Master key: generated into the data directory unless the operator keeps it elsewhere.
    let (setting, master_key_text) = match key_override {
        None => {
            let path = dir.default_master_key();
            MasterKey::generate().write_new_file(&path)?;
            (
                MasterKeySetting::File(path.clone()),
                format!("generated in `{}` (mode 0600)", path.display()),
            )
        }
        Some(KeySource::File(path)) => {
            if !path.exists() {
                MasterKey::generate().write_new_file(&path)?;
            }
            MasterKey::load(&KeySource::File(path.clone()))?;
            (
                MasterKeySetting::File(path.clone()),
                format!("from file `{}`", path.display()),
            )
        }
        Some(KeySource::Env(var)) => {
            MasterKey::load(&KeySource::Env(var.clone()))?;
            (
                MasterKeySetting::Env(var.clone()),
                format!("from environment variable `{var}`"),
            )
        }
    };

    let host_key = generate_host_key()?;
    let pem = host_key.to_openssh(LineEnding::LF)?;
    write_private_file(&dir.host_key(), pem.as_bytes())?;
    let public = host_key.public_key().to_openssh()?;
    std::fs::write(dir.host_key().with_extension("pub"), format!("{public}\n"))?;

    // A TLS key pair for the HTTPS API and RDP clients.
    write_tls(dir)?;

    dir.ensure_policies(&dir.policies())?;
    let location = dir.store_location()?;
    let store = gatehouse_store::Store::open_location(&location)?;
    let key_source = match &setting {
        MasterKeySetting::File(path) => KeySource::File(path.clone()),
        MasterKeySetting::Env(var) => KeySource::Env(var.clone()),
    };
    crate::store_cmd::bind_master_key(&store, MasterKey::load(&key_source)?.id())?;
    let settings = Settings {
        master_key: setting,
        store: dir.store_override.clone().filter(|l| l.is_postgres()),
        policy: PolicySettings::default(),
        api: Default::default(),
        requests: Default::default(),
        mail: None,
        rdp: Default::default(),
        telnet: Default::default(),
        vnc: Default::default(),
        audit_streams: Vec::new(),
        metrics: None,
        recordings: None,
        directory: None,
    };
    std::fs::write(dir.settings(), serde_json::to_vec_pretty(&settings)?)?;
    Ok(InitReport {
        host_key_fingerprint: host_key
            .public_key()
            .fingerprint(Default::default())
            .to_string(),
        master_key: master_key_text,
    })
}

/// A self-signed TLS key pair in `tls/` (for the HTTPS API and RDP clients).
fn write_tls(dir: &DataDir) -> Result<()> {
    let tls = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    write_private_file(
        &dir.tls_dir().join("key.pem"),
        tls.signing_key.serialize_pem().as_bytes(),
    )?;
    std::fs::write(dir.tls_dir().join("cert.pem"), tls.cert.pem())?;
    Ok(())
}

/// Makes `tls/` with a self-signed key pair unless it holds one (a session node's first start).
/// True when it made one.
pub fn ensure_tls(dir: &DataDir) -> Result<bool> {
    if dir.tls_dir().join("cert.pem").exists() && dir.tls_dir().join("key.pem").exists() {
        return Ok(false);
    }
    create_private_dir(&dir.tls_dir())?;
    write_tls(dir)?;
    Ok(true)
}
