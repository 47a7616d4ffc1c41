//! The plugin manifest (`plugin.toml`, shipped beside `plugin.wasm`) and the configuration
//! schema it declares, with the validation of an operator's `config.toml` against it.

use crate::error::RegistryError;
use std::collections::BTreeMap;

/// The WIT contract versions this host binds.
pub const SUPPORTED_WIT_VERSIONS: &[&str] = &["0.1.0"];

/// What a plugin can be: each kind is one exported WIT interface.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Aa,
    CredentialStore,
    Ticketing,
}

impl PluginKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PluginKind::Aa => "aa",
            PluginKind::CredentialStore => "credential-store",
            PluginKind::Ticketing => "ticketing",
        }
    }
}

/// `plugin.toml`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub kinds: Vec<PluginKind>,
    /// The `gatehouse:plugin` version the component was built against.
    pub wit: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// The configuration schema: key → field.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigField>,
}

/// What a plugin asks for. Nothing is available unless requested here AND granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Capabilities {
    /// Outbound HTTP destinations: `host` (ports 80 and 443) or `host:port`; `*` declares
    /// that the operator chooses (plugins whose endpoint is configuration). Only granted
    /// destinations are ever reachable.
    #[serde(default)]
    pub http: Vec<String>,
    /// Secret names, or prefixes ending in `*` (`totp-seed/*`).
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// One configuration key.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigField {
    #[serde(rename = "type")]
    pub kind: ConfigType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub description: String,
    /// For integers.
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
    /// For strings: the longest accepted value in bytes.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// For strings: the accepted values, if limited.
    #[serde(default)]
    pub one_of: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigType {
    String,
    Integer,
    Boolean,
    StringList,
}

impl ConfigType {
    fn as_str(&self) -> &'static str {
        match self {
            ConfigType::String => "a string",
            ConfigType::Integer => "an integer",
            ConfigType::Boolean => "a boolean",
            ConfigType::StringList => "a list of strings",
        }
    }
}

/// A validated configuration value, as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Text(String),
    Integer(i64),
    Flag(bool),
    Texts(Vec<String>),
}

/// A configuration that matched its schema (defaults filled in).
pub type ValidConfig = BTreeMap<String, ConfigValue>;

fn toml_kind(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

impl ConfigField {
    fn check(&self, key: &str, value: &toml::Value) -> Result<ConfigValue, String> {
        let mismatch = || {
            format!(
                "key `{key}`: expected {}, found {}",
                self.kind.as_str(),
                toml_kind(value)
            )
        };
        match (self.kind, value) {
            (ConfigType::String, toml::Value::String(text)) => {
                if let Some(max) = self.max_length
                    && text.len() > max
                {
                    return Err(format!("key `{key}`: longer than {max} bytes"));
                }
                if let Some(allowed) = &self.one_of
                    && !allowed.iter().any(|a| a == text)
                {
                    return Err(format!(
                        "key `{key}`: `{text}` is not one of {}",
                        allowed.join(", ")
                    ));
                }
                Ok(ConfigValue::Text(text.clone()))
            }
            (ConfigType::Integer, toml::Value::Integer(number)) => {
                if let Some(min) = self.min
                    && *number < min
                {
                    return Err(format!("key `{key}`: {number} is less than {min}"));
                }
                if let Some(max) = self.max
                    && *number > max
                {
                    return Err(format!("key `{key}`: {number} is more than {max}"));
                }
                Ok(ConfigValue::Integer(*number))
            }
            (ConfigType::Boolean, toml::Value::Boolean(flag)) => Ok(ConfigValue::Flag(*flag)),
            (ConfigType::StringList, toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text.clone()),
                    _ => Err(mismatch()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(ConfigValue::Texts),
            _ => Err(mismatch()),
        }
    }
}

impl Manifest {
    /// Parses and checks `plugin.toml` text.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| RegistryError::Manifest(e.message().to_owned()))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), RegistryError> {
        let bad = |m: String| Err(RegistryError::Manifest(m));
        if gatehouse_core::Name::new(self.name.clone()).is_err() {
            return bad(format!(
                "name `{}`: use 1-64 letters, digits, `.`, `_`, `-`",
                self.name
            ));
        }
        if self.kinds.is_empty() {
            return bad("`kinds` is empty".into());
        }
        if !SUPPORTED_WIT_VERSIONS.contains(&self.wit.as_str()) {
            return bad(format!(
                "wit version `{}` is not supported by this gateway (supported: {})",
                self.wit,
                SUPPORTED_WIT_VERSIONS.join(", ")
            ));
        }
        for host in self.capabilities.http.iter().filter(|h| *h != "*") {
            crate::grants::HttpDestination::parse(host).map_err(RegistryError::Manifest)?;
        }
        for (key, field) in &self.config {
            if let Some(default) = &field.default {
                field
                    .check(key, default)
                    .map_err(|m| RegistryError::Manifest(format!("config default: {m}")))?;
            }
        }
        Ok(())
    }

    /// Validates an operator's configuration against this manifest's schema: unknown keys,
    /// wrong types, out-of-range values and missing required keys are errors.
    pub fn validate_config(&self, config: &toml::Table) -> Result<ValidConfig, RegistryError> {
        let fail = |message: String| RegistryError::Config {
            plugin: self.name.clone(),
            message,
        };
        if let Some(unknown) = config.keys().find(|k| !self.config.contains_key(*k)) {
            return Err(fail(format!("unknown key `{unknown}`")));
        }
        let mut valid = ValidConfig::new();
        for (key, field) in &self.config {
            match config.get(key).or(field.default.as_ref()) {
                Some(value) => {
                    valid.insert(key.clone(), field.check(key, value).map_err(fail)?);
                }
                None if field.required => {
                    return Err(fail(format!("missing required key `{key}`")));
                }
                None => {}
            }
        }
        Ok(valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
        name = "demo"
        version = "1.0.0"
        kinds = ["aa"]
        wit = "0.1.0"
        [config.digits]
        type = "integer"
        default = 6
        min = 6
        max = 8
        [config.pattern]
        type = "string"
        required = true
        one-of = ["a", "b"]
    "#;

    fn check(config: &str) -> String {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        let table: toml::Table = toml::from_str(config).unwrap();
        match manifest.validate_config(&table) {
            Ok(valid) => format!("ok {}", serde_json::to_string(&valid).unwrap()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn config_is_validated_against_the_schema() {
        let cases = [
            (r#"pattern = "a""#, r#"ok {"digits":6,"pattern":"a"}"#),
            (
                r#"pattern = "b"
                   digits = 8"#,
                r#"ok {"digits":8,"pattern":"b"}"#,
            ),
            (
                "",
                "invalid config for plugin `demo`: missing required key `pattern`",
            ),
            (
                r#"pattern = "c""#,
                "invalid config for plugin `demo`: key `pattern`: `c` is not one of a, b",
            ),
            (
                r#"pattern = "a"
                   digits = "six""#,
                "invalid config for plugin `demo`: key `digits`: expected an integer, found a string",
            ),
            (
                r#"pattern = "a"
                   digits = 9"#,
                "invalid config for plugin `demo`: key `digits`: 9 is more than 8",
            ),
            (
                r#"pattern = "a"
                   colour = 1"#,
                "invalid config for plugin `demo`: unknown key `colour`",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(check(config), expected, "config: {config}");
        }
    }

    #[test]
    fn manifests_are_checked() {
        let cases = [
            (
                MANIFEST.replace("0.1.0", "9.0.0"),
                "invalid manifest: wit version `9.0.0` is not supported by this gateway (supported: 0.1.0)",
            ),
            (
                MANIFEST.replace("\"demo\"", "\"de mo\""),
                "invalid manifest: name `de mo`: use 1-64 letters, digits, `.`, `_`, `-`",
            ),
            (
                MANIFEST.replace("[\"aa\"]", "[]"),
                "invalid manifest: `kinds` is empty",
            ),
            (
                MANIFEST.replace("default = 6", "default = 5"),
                "invalid manifest: config default: key `digits`: 5 is less than 6",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Manifest::parse(&text).unwrap_err().to_string(), expected);
        }
    }
}
