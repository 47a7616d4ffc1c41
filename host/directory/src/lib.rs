//! Gateway users from an LDAP directory or Active Directory: the password is checked by a bind
//! as the user's own entry (over LDAPS or StartTLS, with the directory's CA pinned), groups are
//! looked up with their nesting (a group in a group counts), and the gateway mirrors what it
//! learns into its store so Cedar sees directory users and groups like local ones. Only this
//! crate knows ldap3.
//!
//! A plain `ldap://` URL without StartTLS is refused: passwords would cross the network in the
//! clear. An empty password is refused before any bind (LDAP treats it as an anonymous bind,
//! which succeeds).

use gatehouse_core::SecretString;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How deep group nesting is followed.
const MAX_NESTING: usize = 10;
/// Members named in one group search.
const MEMBERS_PER_SEARCH: usize = 50;

/// Which kind of directory: it sets the defaults of the filters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryKind {
    /// OpenLDAP and friends: users by `uid`, groups with `member` or `uniqueMember`.
    #[default]
    Ldap,
    /// Active Directory: users by `sAMAccountName`, groups with `member`.
    ActiveDirectory,
}

/// settings.json `directory`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySettings {
    /// `ldaps://host:636`, or `ldap://host:389` with `starttls`.
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// PEM of the CA (or certificate) the directory's certificate must chain to; without it,
    /// the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub kind: DirectoryKind,
    /// The gateway's own entry, for searching.
    pub bind_dn: String,
    /// A file holding its password (mode 0600), or an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password_env: Option<String>,
    /// Where users are searched, and how (`{user}` is the login name, escaped).
    pub user_base: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_filter: Option<String>,
    /// Where groups are searched, and how (`{dn}` is a member's DN, escaped).
    pub group_base: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_filter: Option<String>,
    /// The attribute that names a group (`cn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name_attribute: Option<String>,
    /// How long looked-up groups are used before a login looks them up again (`5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<String>,
    /// How often every directory user is synced (`15m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_every: Option<String>,
    /// Limit of each directory operation (`10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Why the directory could not answer, or said no.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("the directory at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the directory refused the gateway's own bind as `{dn}`: {reason}")]
    ServiceBind { dn: String, reason: String },
    #[error("`{0}` is not in the directory")]
    NoSuchUser(String),
    #[error("wrong directory password for `{0}`")]
    WrongPassword(String),
    #[error("the directory refused `{user}`: {reason}")]
    Refused { user: String, reason: String },
    #[error("`{0}` matches more than one directory entry")]
    Ambiguous(String),
    #[error("directory settings: {0}")]
    Config(String),
    #[error("the directory's answer: {0}")]
    Protocol(String),
}

impl DirectoryError {
    /// The directory (or the gateway's access to it) is not working: nothing is known about the
    /// user.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DirectoryError::Unreachable { .. }
                | DirectoryError::ServiceBind { .. }
                | DirectoryError::Protocol(_)
                | DirectoryError::Config(_)
        )
    }
}

/// A user as the directory knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub name: String,
    pub dn: String,
    pub email: Option<String>,
    /// The groups that list the user directly.
    pub groups: Vec<String>,
    /// Nesting among the groups found: (group, group it is a member of).
    pub nesting: Vec<(String, String)>,
}

impl DirectoryUser {
    /// Every group the user is in, directly or through nesting.
    pub fn all_groups(&self) -> Vec<String> {
        let mut all = self.groups.clone();
        let mut i = 0;
        while i < all.len() {
            let group = all[i].clone();
            for (child, parent) in &self.nesting {
                if *child == group && !all.contains(parent) {
                    all.push(parent.clone());
                }
            }
            i += 1;
        }
        all.sort();
        all
    }
}

/// A configured directory.
pub struct Directory {
    url: String,
    starttls: bool,
    tls: Arc<rustls::ClientConfig>,
    bind_dn: String,
    bind_password: SecretString,
    user_base: String,
    user_filter: String,
    group_base: String,
    group_filter: String,
    group_name: String,
    timeout: Duration,
    cache_ttl: Duration,
    sync_every: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .finish_non_exhaustive()
    }
}

fn duration(
    value: Option<&str>,
    default: Duration,
    what: &str,
) -> Result<Duration, DirectoryError> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|e| DirectoryError::Config(format!("{what} `{text}`: {e}"))),
    }
}

/// Lower-cased, without spaces around separators: DNs compared as the directory means them.
fn normal_dn(dn: &str) -> String {
    dn.split(',')
        .map(|part| part.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

impl Directory {
    /// Checks the settings, reads the CA and the bind password.
    pub fn new(settings: &DirectorySettings) -> Result<Self, DirectoryError> {
        let config = |m: String| DirectoryError::Config(m);
        let url = settings.url.trim().to_string();
        let secure = url.starts_with("ldaps://");
        if !secure && !url.starts_with("ldap://") {
            return Err(config(format!(
                "url `{url}`: give ldaps://host:636, or ldap://host:389 with \"starttls\": true"
            )));
        }
        if !secure && !settings.starttls {
            return Err(config(format!(
                "url `{url}` without \"starttls\": true would send passwords in the clear; use ldaps:// or StartTLS"
            )));
        }
        let mut roots = rustls::RootCertStore::empty();
        match &settings.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| config(format!("ca_file `{}`: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(config(format!(
                        "ca_file `{}` holds no certificate",
                        path.display()
                    )));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| config(format!("ca_file `{}`: {e}", path.display())))?;
                }
            }
            // A directory with a publicly issued certificate.
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let bind_password = match (&settings.bind_password_file, &settings.bind_password_env) {
            (Some(path), None) => std::fs::read_to_string(path)
                .map(|s| SecretString::new(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| config(format!("bind_password_file `{}`: {e}", path.display())))?,
            (None, Some(var)) => std::env::var(var)
                .map(SecretString::new)
                .map_err(|_| config(format!("bind_password_env: `{var}` is not set")))?,
            _ => {
                return Err(config(
                    "give one of bind_password_file and bind_password_env".into(),
                ));
            }
        };
        let (user_filter, group_filter) = match settings.kind {
            DirectoryKind::Ldap => ("(uid={user})", "(|(member={dn})(uniqueMember={dn}))"),
            DirectoryKind::ActiveDirectory => (
                "(&(objectClass=user)(sAMAccountName={user}))",
                "(&(objectClass=group)(member={dn}))",
            ),
        };
        let user_filter = settings
            .user_filter
            .clone()
            .unwrap_or_else(|| user_filter.into());
        if !user_filter.contains("{user}") {
            return Err(config(format!(
                "user_filter `{user_filter}` does not name {{user}}"
            )));
        }
        let group_filter = settings
            .group_filter
            .clone()
            .unwrap_or_else(|| group_filter.into());
        if !group_filter.contains("{dn}") {
            return Err(config(format!(
                "group_filter `{group_filter}` does not name {{dn}}"
            )));
        }
        Ok(Self {
            url,
            starttls: !secure,
            tls: Arc::new(tls),
            bind_dn: settings.bind_dn.clone(),
            bind_password,
            user_base: settings.user_base.clone(),
            user_filter,
            group_base: settings.group_base.clone(),
            group_filter,
            group_name: settings
                .group_name_attribute
                .clone()
                .unwrap_or_else(|| "cn".into()),
            timeout: duration(
                settings.timeout.as_deref(),
                Duration::from_secs(10),
                "timeout",
            )?,
            cache_ttl: duration(
                settings.cache_ttl.as_deref(),
                Duration::from_secs(300),
                "cache_ttl",
            )?,
            sync_every: duration(
                settings.sync_every.as_deref(),
                Duration::from_secs(900),
                "sync_every",
            )?,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long looked-up groups are used before a login looks them up again.
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    /// How often every directory user is synced.
    pub fn sync_every(&self) -> Duration {
        self.sync_every
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> DirectoryError {
        DirectoryError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.starttls)
            .set_config(self.tls.clone());
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        Ok(ldap)
    }

    async fn service_bind(&self, ldap: &mut Ldap) -> Result<(), DirectoryError> {
        let result = ldap
            .with_timeout(self.timeout)
            .simple_bind(&self.bind_dn, self.bind_password.expose())
            .await
            .map_err(|e| self.unreachable(e))?;
        result
            .success()
            .map(drop)
            .map_err(|e| DirectoryError::ServiceBind {
                dn: self.bind_dn.clone(),
                reason: e.to_string(),
            })
    }

    async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        attrs: Vec<&str>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let (entries, _) = ldap
            .with_timeout(self.timeout)
            .search(base, Scope::Subtree, filter, attrs)
            .await
            .map_err(|e| self.unreachable(e))?
            .success()
            .map_err(|e| DirectoryError::Protocol(format!("searching `{base}`: {e}")))?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// The user's entry: DN and mail.
    async fn find_user(
        &self,
        ldap: &mut Ldap,
        name: &str,
    ) -> Result<Option<(String, Option<String>)>, DirectoryError> {
        let filter = self
            .user_filter
            .replace("{user}", &ldap3::ldap_escape(name));
        let mut found = self
            .search(ldap, &self.user_base, &filter, vec!["mail"])
            .await?;
        match found.len() {
            0 => Ok(None),
            1 => {
                let entry = found.remove(0);
                let mail = entry.attrs.get("mail").and_then(|m| m.first().cloned());
                Ok(Some((entry.dn, mail)))
            }
            _ => Err(DirectoryError::Ambiguous(name.to_string())),
        }
    }

    /// The groups that list `user_dn`, and the groups those are in, up to [`MAX_NESTING`]
    /// levels: (direct groups, nesting).
    async fn groups(
        &self,
        ldap: &mut Ldap,
        user_dn: &str,
    ) -> Result<(Vec<String>, Vec<(String, String)>), DirectoryError> {
        let mut direct = Vec::new();
        let mut nesting = Vec::new();
        // Members whose groups are looked up next: normalised DN -> group name (None: the user).
        let mut frontier: HashMap<String, Option<String>> =
            HashMap::from([(normal_dn(user_dn), None)]);
        let mut seen: HashMap<String, String> = HashMap::new();
        let member_attrs = ["member", "uniqueMember"];
        for _ in 0..MAX_NESTING {
            if frontier.is_empty() {
                break;
            }
            let mut next = HashMap::new();
            let members: Vec<&String> = frontier.keys().collect();
            for chunk in members.chunks(MEMBERS_PER_SEARCH) {
                let parts: Vec<String> = chunk
                    .iter()
                    .map(|dn| {
                        self.group_filter
                            .replace("{dn}", &ldap3::ldap_escape(dn.as_str()))
                    })
                    .collect();
                let filter = if parts.len() == 1 {
                    parts[0].clone()
                } else {
                    format!("(|{})", parts.concat())
                };
                let mut attrs = vec![self.group_name.as_str()];
                attrs.extend(member_attrs);
                for group in self.search(ldap, &self.group_base, &filter, attrs).await? {
                    let Some(name) = group
                        .attrs
                        .get(&self.group_name)
                        .and_then(|v| v.first())
                        .cloned()
                    else {
                        continue;
                    };
                    let listed: Vec<String> = member_attrs
                        .iter()
                        .filter_map(|a| group.attrs.get(*a))
                        .flatten()
                        .map(|m| normal_dn(m))
                        .collect();
                    for member in listed {
                        match frontier.get(&member) {
                            Some(None) if !direct.contains(&name) => direct.push(name.clone()),
                            Some(Some(child)) => {
                                let edge = (child.clone(), name.clone());
                                if child != &name && !nesting.contains(&edge) {
                                    nesting.push(edge);
                                }
                            }
                            _ => {}
                        }
                    }
                    let key = normal_dn(&group.dn);
                    if !seen.contains_key(&key) {
                        seen.insert(key.clone(), name.clone());
                        next.insert(key, Some(name));
                    }
                }
            }
            frontier = next;
        }
        direct.sort();
        nesting.sort();
        Ok((direct, nesting))
    }

    /// Checks `password` by binding as the user's entry, then looks up their groups (unless
    /// `with_groups` is false: the caller's copy is fresh).
    pub async fn authenticate(
        &self,
        name: &str,
        password: &str,
        with_groups: bool,
    ) -> Result<DirectoryUser, DirectoryError> {
        // LDAP takes a bind with an empty password for an anonymous one, which succeeds.
        if password.is_empty() {
            return Err(DirectoryError::WrongPassword(name.to_string()));
        }
        let mut ldap = self.connect().await?;
        self.service_bind(&mut ldap).await?;
        let Some((dn, email)) = self.find_user(&mut ldap, name).await? else {
            let _ = ldap.unbind().await;
            return Err(DirectoryError::NoSuchUser(name.to_string()));
        };
        let bound = ldap
            .with_timeout(self.timeout)
            .simple_bind(&dn, password)
            .await
            .map_err(|e| self.unreachable(e))?;
        match bound.rc {
            0 => {}
            49 => {
                let _ = ldap.unbind().await;
                return Err(DirectoryError::WrongPassword(name.to_string()));
            }
            _ => {
                let _ = ldap.unbind().await;
                return Err(DirectoryError::Refused {
                    user: name.to_string(),
                    reason: bound.to_string(),
                });
            }
        }
        let (groups, nesting) = if with_groups {
            self.service_bind(&mut ldap).await?;
            self.groups(&mut ldap, &dn).await?
        } else {
            (Vec::new(), Vec::new())
        };
        let _ = ldap.unbind().await;
        Ok(DirectoryUser {
            name: name.to_string(),
            dn,
            email,
            groups,
            nesting,
        })
    }

    /// The user and their groups as the directory has them now; `None` when the directory has
    /// no such user (for syncing: no password is checked).
    pub async fn lookup(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        let mut ldap = self.connect().await?;
        self.service_bind(&mut ldap).await?;
        let Some((dn, email)) = self.find_user(&mut ldap, name).await? else {
            let _ = ldap.unbind().await;
            return Ok(None);
        };
        let (groups, nesting) = self.groups(&mut ldap, &dn).await?;
        let _ = ldap.unbind().await;
        Ok(Some(DirectoryUser {
            name: name.to_string(),
            dn,
            email,
            groups,
            nesting,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_compare_as_the_directory_means_them() {
        assert_eq!(
            normal_dn("CN=Dana, OU=People ,DC=example,DC=org"),
            "cn=dana,ou=people,dc=example,dc=org"
        );
    }

    #[test]
    fn nested_groups_are_all_counted_once() {
        let user = DirectoryUser {
            name: "dana".into(),
            dn: "uid=dana".into(),
            email: None,
            groups: vec!["dbas".into()],
            nesting: vec![
                ("dbas".into(), "ops".into()),
                ("ops".into(), "staff".into()),
                ("staff".into(), "ops".into()),
            ],
        };
        assert_eq!(user.all_groups(), ["dbas", "ops", "staff"]);
    }

    fn settings(url: &str, starttls: bool) -> DirectorySettings {
        DirectorySettings {
            url: url.into(),
            starttls,
            ca_file: None,
            kind: DirectoryKind::Ldap,
            bind_dn: "cn=gw".into(),
            bind_password_file: None,
            bind_password_env: Some("GATEHOUSE_TEST_UNSET_VARIABLE_X".into()),
            user_base: "dc=x".into(),
            user_filter: None,
            group_base: "dc=x".into(),
            group_filter: None,
            group_name_attribute: None,
            cache_ttl: None,
            sync_every: None,
            timeout: None,
        }
    }

    #[test]
    fn passwords_never_go_in_the_clear_and_settings_errors_are_clear() {
        let err = Directory::new(&settings("ldap://ldap.example:389", false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("would send passwords in the clear"), "{err}");
        let err = Directory::new(&settings("http://x", false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("give ldaps://"), "{err}");
        let err = Directory::new(&settings("ldaps://ldap.example", false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("GATEHOUSE_TEST_UNSET_VARIABLE_X"), "{err}");
    }
}
