//! Where the store lives: an embedded redb file, or a PostgreSQL database shared by several
//! control nodes. A database URL can carry a password: it is redacted in `Debug` and `Display`.

use crate::StoreError;
use std::path::PathBuf;

/// A store location as an operator writes it: `redb:PATH`, a plain path, or a
/// `postgres://` / `postgresql://` URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Redb(PathBuf),
    Postgres(PostgresUrl),
}

impl StoreLocation {
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(StoreError::Location("the store location is empty".into()));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(PostgresUrl::parse(text)?));
        }
        if let Some(path) = text.strip_prefix("redb:") {
            if path.is_empty() {
                return Err(StoreError::Location("`redb:` needs a file path".into()));
            }
            return Ok(StoreLocation::Redb(PathBuf::from(path)));
        }
        if text.contains("://") {
            return Err(StoreError::Location(format!(
                "unknown store engine in `{}` (use postgres://… or redb:PATH)",
                redact(text)
            )));
        }
        Ok(StoreLocation::Redb(PathBuf::from(text)))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Redb(path) => write!(f, "redb:{}", path.display()),
            StoreLocation::Postgres(url) => url.fmt(f),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A PostgreSQL URL. The password in it never reaches a log or a message.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    pub(crate) url: String,
}

impl PostgresUrl {
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        // The driver parses the rest (and says what is wrong); here only what it cannot say
        // without showing the password.
        let url = PostgresUrl {
            url: text.to_string(),
        };
        crate::postgres::parse_config(&url)?;
        Ok(url)
    }

    /// The URL with its password, for the driver only.
    pub(crate) fn expose(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`, and `password=…` query values.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map(|i| rest_start + i)
            .unwrap_or(out.len());
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

/// Written as the operator wrote it (settings.json keeps the URL with its password; the file is
/// private to the gateway's user).
impl serde::Serialize for StoreLocation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StoreLocation::Redb(path) => {
                serializer.serialize_str(&format!("redb:{}", path.display()))
            }
            StoreLocation::Postgres(url) => serializer.serialize_str(url.expose()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for StoreLocation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        StoreLocation::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_hide_passwords() {
        let pg = StoreLocation::parse("postgres://gh:s3cret@db.example:5432/gatehouse").unwrap();
        assert!(pg.is_postgres());
        assert_eq!(
            pg.to_string(),
            "postgres://gh:***@db.example:5432/gatehouse"
        );
        assert!(!format!("{pg:?}").contains("s3cret"));
        let q =
            StoreLocation::parse("postgresql://gh@db/g?password=hunter2&sslmode=require").unwrap();
        assert_eq!(
            q.to_string(),
            "postgresql://gh@db/g?password=***&sslmode=require"
        );
        assert_eq!(
            StoreLocation::parse("redb:/var/lib/g/s.redb").unwrap(),
            StoreLocation::Redb("/var/lib/g/s.redb".into())
        );
        assert_eq!(
            StoreLocation::parse("/var/lib/g/s.redb").unwrap(),
            StoreLocation::Redb("/var/lib/g/s.redb".into())
        );
        let unknown = StoreLocation::parse("mysql://root:pw@db/g")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown store engine"), "{unknown}");
        assert!(!unknown.contains("pw@"), "{unknown}");
        let bad = StoreLocation::parse("postgres://gh:pw@db/g?frobnicate=1")
            .unwrap_err()
            .to_string();
        assert!(!bad.contains(":pw@"), "{bad}");
        assert!(StoreLocation::parse("").is_err());
        assert!(StoreLocation::parse("redb:").is_err());
    }
}
