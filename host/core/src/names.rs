//! Validated names for users, groups, assets and accounts, so that bad input is refused at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A name of a gateway user, group, asset or target account.
///
/// Names are 1 to 64 characters of ASCII letters, digits, `.`, `_` and `-`, and do not start with
/// `-` or `.`. This keeps them safe in the in-band username (no `@`), in file names and in logs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name `{0}` is longer than 64 characters")]
    TooLong(String),
    #[error(
        "name `{0}` may only contain letters, digits, `.`, `_` and `-`, and may not start with `-` or `.`"
    )]
    BadCharacter(String),
}

impl Name {
    pub const MAX_LEN: usize = 64;

    pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
        let value = value.into();
        if value.is_empty() {
            return Err(NameError::Empty);
        }
        if value.len() > Self::MAX_LEN {
            return Err(NameError::TooLong(value));
        }
        let valid_chars = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_chars || value.starts_with('-') || value.starts_with('.') {
            return Err(NameError::BadCharacter(value));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        let cases = [
            ("alice", true),
            ("db-1.prod_eu", true),
            ("", false),
            ("-x", false),
            (".hidden", false),
            ("a@b", false),
            ("a b", false),
            ("ü", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ];
        for (input, ok) in cases {
            assert_eq!(Name::new(input).is_ok(), ok, "{input:?}");
        }
    }
}
