//! What the operator granted a plugin (`grants.toml`): enabled or not, its place in the AA
//! order, HTTP destinations, secrets, a linked ticketing plugin and limits. A grant must be
//! something the manifest requested; the effective capability is the intersection.

use crate::error::RegistryError;
use crate::limits::Limits;
use crate::manifest::Manifest;

/// `grants.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Grants {
    /// Disabled plugins are never loaded.
    #[serde(default)]
    pub enabled: bool,
    /// AA plugins run in ascending `order`, then by name.
    #[serde(default = "default_order")]
    pub order: i32,
    /// HTTP destinations granted (each must be declared in the manifest).
    #[serde(default)]
    pub http: Vec<String>,
    /// Secret names or `prefix*` patterns granted (each must be declared in the manifest).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// For AA plugins: the ticketing plugin that validates the tickets this plugin accepts with.
    #[serde(default)]
    pub ticketing: Option<String>,
    #[serde(default)]
    pub limits: Limits,
}

fn default_order() -> i32 {
    100
}

impl Grants {
    /// Checks every grant against what the manifest requested.
    pub fn check(&self, manifest: &Manifest) -> Result<(), RegistryError> {
        let fail = |message: String| RegistryError::Grants {
            plugin: manifest.name.clone(),
            message,
        };
        for host in &self.http {
            HttpDestination::parse(host).map_err(fail)?;
            let declared = &manifest.capabilities.http;
            if !declared.contains(host) && !declared.iter().any(|d| d == "*") {
                return Err(fail(format!(
                    "http destination `{host}` is not declared in the manifest"
                )));
            }
        }
        for secret in &self.secrets {
            if !manifest.capabilities.secrets.contains(secret) {
                return Err(fail(format!(
                    "secret `{secret}` is not declared in the manifest"
                )));
            }
        }
        if self.limits.memory_mib == 0 || self.limits.cpu_ms == 0 || self.limits.timeout_ms == 0 {
            return Err(fail("limits must be greater than zero".into()));
        }
        Ok(())
    }

    /// Whether the secret `name` is covered by a granted name or `prefix*` pattern.
    pub fn allows_secret(&self, name: &str) -> bool {
        self.secrets
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => pattern == name,
            })
    }
}

/// An HTTP destination: a host and an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDestination {
    host: String,
    port: Option<u16>,
}

impl HttpDestination {
    /// Parses `host` or `host:port` (no scheme, no path).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("http destination `{text}`: expected `host` or `host:port`");
        if text.is_empty() || text.contains(['/', '@', ' ', '?', '#']) {
            return Err(bad());
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                (host, Some(port.parse::<u16>().map_err(|_| bad())?))
            }
            _ => (text, None),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request to `host` on `port` is covered: same host (case-insensitive) and the
    /// same port, or ports 80/443 when the grant names no port.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.host.eq_ignore_ascii_case(host)
            && match self.port {
                Some(granted) => granted == port,
                None => port == 80 || port == 443,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_destinations_match_host_and_port() {
        let cases = [
            ("vault.example:8200", "vault.example", 8200, true),
            ("vault.example:8200", "VAULT.example", 8200, true),
            ("vault.example:8200", "vault.example", 8201, false),
            ("vault.example", "vault.example", 443, true),
            ("vault.example", "vault.example", 8200, false),
            ("vault.example", "evil.example", 443, false),
            ("vault.example", "vault.example.evil", 443, false),
            ("127.0.0.1:9", "127.0.0.1", 9, true),
        ];
        for (grant, host, port, expected) in cases {
            let destination = HttpDestination::parse(grant).unwrap();
            assert_eq!(
                destination.allows(host, port),
                expected,
                "{grant} vs {host}:{port}"
            );
        }
        for bad in ["", "http://x", "x:port", "x/y", ":80"] {
            assert!(HttpDestination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_patterns() {
        let grants = Grants {
            secrets: vec!["totp-seed/*".into(), "api-token".into()],
            ..Grants::default()
        };
        assert!(grants.allows_secret("totp-seed/alice"));
        assert!(grants.allows_secret("api-token"));
        assert!(!grants.allows_secret("api-token-2"));
        assert!(!grants.allows_secret("other/alice"));
    }
}
