//! The `mail` section of the gateway's settings: what an operator writes, checked before use.
//!
//! The settings never hold the SMTP password itself, only the path of a file holding it, so
//! they can be printed, logged and stored as they are. The password is read by
//! [`MailSettings::read_password`] into a [`SecretString`].

use gatehouse_core::SecretString;
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// Timeout for each network step when `timeout_seconds` is not set.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
/// The largest `timeout_seconds` accepted.
pub const MAX_TIMEOUT_SECONDS: u64 = 300;
/// A password file larger than this is refused (it is not a password file).
const MAX_PASSWORD_FILE_BYTES: u64 = 4096;
/// A CA file larger than this is refused.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP, no encryption (default port 25). Only for a relay on a trusted network;
    /// refused together with a username, since the password would cross the network in clear.
    None,
    /// Plain connection upgraded with STARTTLS before anything else is sent (default port
    /// 587). The upgrade is required: a server that does not offer it gets no mail.
    #[default]
    Starttls,
    /// Implicit TLS, also called SMTPS: TLS from the first byte (default port 465).
    Tls,
}

impl Security {
    /// The port used when the settings name none.
    pub fn default_port(self) -> u16 {
        match self {
            Security::None => 25,
            Security::Starttls => 587,
            Security::Tls => 465,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::Starttls => "starttls",
            Security::Tls => "tls",
        }
    }
}

/// The `mail` key of settings.json. See docs/notifications.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    /// The mail server's host name (or IP address); with TLS, the name its certificate carries.
    pub host: String,
    /// Defaults to the security mode's port (25, 587, 465).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    /// Set together with `password_file` to authenticate (SMTP AUTH PLAIN or LOGIN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// An absolute path to a file holding the SMTP password (one trailing newline is ignored).
    /// The file must not be readable by group or others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The sender, `gatehouse@example.com` or `Gatehouse <gatehouse@example.com>`.
    pub from: String,
    /// An absolute path to PEM certificates to trust instead of the built-in web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Bounds each network step (connect, TLS, each command); a whole delivery is abandoned
    /// after three times this. Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// The gateway's public base URL (`https://gatehouse.example.com`); when set, messages
    /// carry a link to the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
}

/// What is wrong with the mail settings. Messages quote the operator's input.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("mail setting `host` is empty")]
    EmptyHost,
    #[error(
        "mail setting `host` is `{host}`: expected a host name or IP address, without scheme, port or path"
    )]
    InvalidHost { host: String },
    #[error("mail setting `port` is 0")]
    PortZero,
    #[error(
        "mail setting `from` is `{from}`: expected an address like `gatehouse@example.com` or `Gatehouse <gatehouse@example.com>`"
    )]
    InvalidFrom { from: String },
    #[error("mail setting `username` is set without `password_file`")]
    UsernameWithoutPassword,
    #[error("mail setting `password_file` is set without `username`")]
    PasswordWithoutUsername,
    #[error("mail setting `username` is empty")]
    EmptyUsername,
    #[error(
        "mail settings name a `username` with `security` `none`: the password would cross the network unencrypted; use `starttls` or `tls`"
    )]
    CredentialsWithoutTls,
    #[error("mail setting `{setting}` is `{path}`: expected an absolute path")]
    RelativePath { setting: &'static str, path: String },
    #[error("mail setting `timeout_seconds` is {value}: expected 1 to {MAX_TIMEOUT_SECONDS}")]
    InvalidTimeout { value: u64 },
    #[error("mail setting `gateway_url` is `{url}`: {reason}")]
    InvalidGatewayUrl { url: String, reason: &'static str },
    #[error("cannot read the SMTP password file `{path}`: {source}")]
    PasswordFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the SMTP password file `{path}` {problem}")]
    PasswordFileRefused { path: String, problem: String },
    #[error("cannot read the mail CA file `{path}`: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the mail CA file `{path}` {problem}")]
    CaFileRefused { path: String, problem: String },
    #[error("cannot set up TLS for mail server `{host}`: {detail}")]
    Tls { host: String, detail: String },
}

impl MailSettings {
    /// The port in effect: the one set, or the security mode's default.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.security.default_port())
    }

    /// The timeout for each network step.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS))
    }

    /// Checks everything that can be checked without reading files, and returns the parsed
    /// sender.
    pub fn validate(&self) -> Result<Mailbox, SettingsError> {
        check_host(&self.host)?;
        if self.port == Some(0) {
            return Err(SettingsError::PortZero);
        }
        let from = self
            .from
            .parse::<Mailbox>()
            .map_err(|_| SettingsError::InvalidFrom {
                from: self.from.clone(),
            })?;
        match (&self.username, &self.password_file) {
            (Some(_), None) => return Err(SettingsError::UsernameWithoutPassword),
            (None, Some(_)) => return Err(SettingsError::PasswordWithoutUsername),
            (Some(username), Some(_)) => {
                if username.trim().is_empty() {
                    return Err(SettingsError::EmptyUsername);
                }
                if self.security == Security::None {
                    return Err(SettingsError::CredentialsWithoutTls);
                }
            }
            (None, None) => {}
        }
        if let Some(path) = &self.password_file {
            check_absolute("password_file", path)?;
        }
        if let Some(path) = &self.ca_file {
            check_absolute("ca_file", path)?;
        }
        if let Some(value) = self.timeout_seconds
            && !(1..=MAX_TIMEOUT_SECONDS).contains(&value)
        {
            return Err(SettingsError::InvalidTimeout { value });
        }
        if let Some(url) = &self.gateway_url {
            check_gateway_url(url)?;
        }
        Ok(from)
    }

    /// Reads the SMTP password from `password_file` (`None` when no credentials are set).
    pub fn read_password(&self) -> Result<Option<SecretString>, SettingsError> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let shown = path.display().to_string();
        let io_error = |source| SettingsError::PasswordFile {
            path: shown.clone(),
            source,
        };
        let refused = |problem: String| SettingsError::PasswordFileRefused {
            path: shown.clone(),
            problem,
        };
        let mut file = std::fs::File::open(path).map_err(io_error)?;
        let metadata = file.metadata().map_err(io_error)?;
        check_private(&metadata).map_err(refused)?;
        if metadata.len() > MAX_PASSWORD_FILE_BYTES {
            return Err(refused(format!(
                "is larger than {MAX_PASSWORD_FILE_BYTES} bytes"
            )));
        }
        // Sized up front so that reading leaves no reallocated copies behind; wiped on drop.
        let capacity = usize::try_from(metadata.len()).unwrap_or(0) + 1;
        let mut text = Zeroizing::new(String::with_capacity(capacity));
        match file.read_to_string(&mut text) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                return Err(refused("is not UTF-8 text".into()));
            }
            Err(error) => return Err(io_error(error)),
        }
        let trimmed = text
            .strip_suffix('\n')
            .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
            .unwrap_or(&text);
        if trimmed.is_empty() {
            return Err(refused("is empty".into()));
        }
        if trimmed.contains(['\r', '\n']) {
            return Err(refused("holds more than one line".into()));
        }
        Ok(Some(SecretString::new(trimmed.to_owned())))
    }

    /// Reads the PEM certificates of `ca_file` (`None` when it is not set). Each is checked to
    /// parse; at least one is required.
    pub(crate) fn read_ca_certificates(&self) -> Result<Option<Vec<Vec<u8>>>, SettingsError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;

        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let shown = path.display().to_string();
        let refused = |problem: String| SettingsError::CaFileRefused {
            path: shown.clone(),
            problem,
        };
        let metadata = std::fs::metadata(path).map_err(|source| SettingsError::CaFile {
            path: shown.clone(),
            source,
        })?;
        if metadata.len() > MAX_CA_FILE_BYTES {
            return Err(refused(format!("is larger than {MAX_CA_FILE_BYTES} bytes")));
        }
        let pem = std::fs::read(path).map_err(|source| SettingsError::CaFile {
            path: shown.clone(),
            source,
        })?;
        let mut certificates = Vec::new();
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            let certificate =
                certificate.map_err(|error| refused(format!("is not valid PEM: {error}")))?;
            let anchor = webpki_check(&certificate);
            if let Err(problem) = anchor {
                return Err(refused(format!(
                    "holds a certificate that cannot be used as a root: {problem}"
                )));
            }
            certificates.push(certificate.as_ref().to_vec());
        }
        if certificates.is_empty() {
            return Err(refused("holds no PEM certificate".into()));
        }
        Ok(Some(certificates))
    }
}

/// Whether rustls can use a certificate as a trust anchor.
fn webpki_check(certificate: &rustls::pki_types::CertificateDer<'_>) -> Result<(), String> {
    let mut store = rustls::RootCertStore::empty();
    store
        .add(certificate.clone().into_owned())
        .map_err(|error| match error {
            // Its `Display` speaks of a "peer" certificate, which this is not.
            rustls::Error::InvalidCertificate(problem) => format!("{problem:?}"),
            other => other.to_string(),
        })
}

fn check_host(host: &str) -> Result<(), SettingsError> {
    if host.trim().is_empty() {
        return Err(SettingsError::EmptyHost);
    }
    let bad_character = host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#'));
    // A colon is allowed only as part of an IPv6 address.
    let stray_colon = host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err();
    if bad_character || stray_colon {
        return Err(SettingsError::InvalidHost {
            host: host.to_owned(),
        });
    }
    Ok(())
}

fn check_absolute(setting: &'static str, path: &Path) -> Result<(), SettingsError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(SettingsError::RelativePath {
            setting,
            path: path.display().to_string(),
        })
    }
}

fn check_gateway_url(url: &str) -> Result<(), SettingsError> {
    let invalid = |reason| SettingsError::InvalidGatewayUrl {
        url: url.to_owned(),
        reason,
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("expected an `https://` or `http://` URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("the host is missing"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains white space"));
    }
    if url.contains(['?', '#']) {
        return Err(invalid("expected a base URL without query or fragment"));
    }
    Ok(())
}

#[cfg(unix)]
fn check_private(metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "has permissions {:o}, which are too open; run `chmod 600` on it",
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_metadata: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}
