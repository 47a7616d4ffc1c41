//! The in-band login syntax: how an SSH username names the gateway user, the target and options.
//!
//! `[key=value@]...gatewayuser@account@asset`, for example `otp=123456@alice@root@db1`. OpenSSH
//! splits `user@host` at the last `@`, so `ssh alice@root@db1@gatehouse` passes the whole
//! `alice@root@db1` as the username.

use crate::names::{Name, NameError};
use std::fmt;

/// What the client asked for, parsed from the SSH username.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginSpec {
    /// The gateway user to authenticate.
    pub user: Name,
    /// The target, or why the target part could not be understood. A malformed target does not
    /// stop authentication: the user is told after logging in, which avoids an oracle and gives
    /// a clear message instead of a bare "Permission denied".
    pub target: Result<TargetSpec, LoginError>,
    /// `key=value` pairs given before the user name, in order.
    pub options: Vec<(String, String)>,
}

/// A target account on a target asset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetSpec {
    pub account: Name,
    pub asset: Name,
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.account, self.asset)
    }
}

impl std::str::FromStr for TargetSpec {
    type Err = LoginError;
    /// Parses `account@asset`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || LoginError::MalformedTarget(s.to_string());
        let (account, asset) = s.split_once('@').ok_or_else(malformed)?;
        Ok(TargetSpec {
            account: Name::new(account).map_err(|_| malformed())?,
            asset: Name::new(asset).map_err(|_| malformed())?,
        })
    }
}

/// Why a username could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("no gateway user in `{0}`")]
    NoUser(String),
    #[error("invalid gateway user in `{input}`: {reason}")]
    BadUser { input: String, reason: NameError },
    #[error("malformed target `{0}`: expected `user@account@asset`")]
    MalformedTarget(String),
    #[error("malformed option `{0}`: expected `key=value`")]
    MalformedOption(String),
    #[error("username is longer than {} bytes", LoginSpec::MAX_LEN)]
    TooLong,
    /// A sign-in to the gateway itself (portal, API) names no target.
    #[error("a sign-in to the gateway names no target")]
    NoTarget,
}

impl LoginSpec {
    pub const MAX_LEN: usize = 1024;
    pub const MAX_OPTIONS: usize = 16;

    /// `user` signing in to the gateway itself (portal, API): no target, no options.
    pub fn sign_in(user: Name) -> Self {
        LoginSpec {
            user,
            target: Err(LoginError::NoTarget),
            options: Vec::new(),
        }
    }

    /// Parses an SSH username. Fails only when no gateway user can be found; a malformed target
    /// is kept in [`LoginSpec::target`].
    pub fn parse(username: &str) -> Result<Self, LoginError> {
        if username.len() > Self::MAX_LEN {
            return Err(LoginError::TooLong);
        }
        let mut parts = username.split('@').peekable();
        let mut options = Vec::new();
        while let Some(part) = parts.peek() {
            let Some((key, value)) = part.split_once('=') else {
                break;
            };
            let key_ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !key_ok || options.len() >= Self::MAX_OPTIONS {
                return Err(LoginError::MalformedOption((*part).to_string()));
            }
            options.push((key.to_string(), value.to_string()));
            parts.next();
        }
        let rest: Vec<&str> = parts.collect();
        let Some(user) = rest.first() else {
            return Err(LoginError::NoUser(username.to_string()));
        };
        if user.is_empty() {
            return Err(LoginError::NoUser(username.to_string()));
        }
        let user = Name::new(*user).map_err(|reason| LoginError::BadUser {
            input: (*user).to_string(),
            reason,
        })?;
        let target_text = rest.get(1..).unwrap_or_default().join("@");
        let target = if rest.len() == 3 {
            target_text.parse::<TargetSpec>()
        } else {
            Err(LoginError::MalformedTarget(username.to_string()))
        };
        Ok(LoginSpec {
            user,
            target,
            options,
        })
    }

    /// Transparent mode: `username` completed with `asset`, the asset at the address the client
    /// connected to (`destination`, for messages): `alice@root` becomes `alice@root@<asset>`; a
    /// login that names that asset is kept; joins (`watch=`/`join=`) are kept. `Err`: the line
    /// the user reads (another asset named; no asset there reads like an unknown target).
    pub fn complete_transparent(
        username: &str,
        asset: Option<&Name>,
        destination: &str,
    ) -> Result<String, String> {
        let parts: Vec<&str> = username.split('@').collect();
        let options = parts.iter().take_while(|p| p.contains('=')).count();
        let (given, rest) = parts.split_at(options);
        if given
            .iter()
            .any(|p| p.starts_with("watch=") || p.starts_with("join="))
        {
            return Ok(username.to_string());
        }
        match (rest, asset) {
            ([_, _], Some(asset)) => Ok(format!("{username}@{asset}")),
            ([_, _, named], Some(asset)) if *named == asset.as_str() => Ok(username.to_string()),
            ([_, _, _], _) => Err(format!(
                "gatehouse: in transparent mode the target is the server you connected to ({destination}): log in as USER@ACCOUNT"
            )),
            ([_, account], None) => Err(format!(
                "gatehouse: target `{account}@{destination}` is unknown or you are not permitted to use it"
            )),
            _ => Err("gatehouse: in transparent mode log in as USER@ACCOUNT".into()),
        }
    }

    /// The value of an option given as `key=value@` in the username.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A login that joins a running session instead of opening one: `watch=<session>@user`
    /// (read-only) or `join=<session>@user` (with the keyboard, where policy allows). No target
    /// is named.
    pub fn join(&self) -> Option<JoinSpec> {
        let (session, keyboard) = match (self.option("join"), self.option("watch")) {
            (Some(id), _) => (id, true),
            (None, Some(id)) => (id, false),
            (None, None) => return None,
        };
        Some(JoinSpec {
            session: session.to_string(),
            keyboard,
        })
    }
}

/// Joining a running session (see [`LoginSpec::join`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinSpec {
    /// The session's id.
    pub session: String,
    /// With the keyboard (`join=`), or only watching (`watch=`).
    pub keyboard: bool,
}

impl JoinSpec {
    /// The Cedar action that decides it.
    pub fn action(&self) -> &'static str {
        if self.keyboard {
            "join_session"
        } else {
            "watch_session"
        }
    }

    /// How it is described to people.
    pub fn mode(&self) -> &'static str {
        if self.keyboard {
            "keyboard"
        } else {
            "read-only"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(input: &str) -> String {
        match LoginSpec::parse(input) {
            Err(e) => format!("error: {e}"),
            Ok(spec) => {
                let target = match &spec.target {
                    Ok(t) => t.to_string(),
                    Err(e) => format!("<{e}>"),
                };
                let options: Vec<String> = spec
                    .options
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!(
                    "user={} target={} options=[{}]",
                    spec.user,
                    target,
                    options.join(",")
                )
            }
        }
    }

    #[test]
    fn parses_the_in_band_syntax() {
        let cases = [
            ("alice@root@db1", "user=alice target=root@db1 options=[]"),
            (
                "otp=123456@alice@root@db1",
                "user=alice target=root@db1 options=[otp=123456]",
            ),
            (
                "ticket=CHG-1@reason=a b@alice@root@db1",
                "user=alice target=root@db1 options=[ticket=CHG-1,reason=a b]",
            ),
            (
                "alice@root",
                "user=alice target=<malformed target `alice@root`: expected `user@account@asset`> options=[]",
            ),
            (
                "alice@@db1",
                "user=alice target=<malformed target `@db1`: expected `user@account@asset`> options=[]",
            ),
            (
                "alice",
                "user=alice target=<malformed target `alice`: expected `user@account@asset`> options=[]",
            ),
            (
                "alice@root@db1@extra",
                "user=alice target=<malformed target `alice@root@db1@extra`: expected `user@account@asset`> options=[]",
            ),
            ("", "error: no gateway user in ``"),
            ("@root@db1", "error: no gateway user in `@root@db1`"),
            ("otp=1@", "error: no gateway user in `otp=1@`"),
            (
                "=1@alice@root@db1",
                "error: malformed option `=1`: expected `key=value`",
            ),
            (
                "al ice@root@db1",
                "error: invalid gateway user in `al ice`: name `al ice` may only contain letters, digits, `.`, `_` and `-`, and may not start with `-` or `.`",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(show(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn refuses_huge_usernames() {
        let long = "a".repeat(LoginSpec::MAX_LEN + 1);
        assert_eq!(LoginSpec::parse(&long), Err(LoginError::TooLong));
    }

    #[test]
    fn joining_a_session_names_it_and_no_target() {
        let watch = LoginSpec::parse("watch=0190-abc@sam").unwrap();
        assert_eq!(
            watch.join(),
            Some(JoinSpec {
                session: "0190-abc".into(),
                keyboard: false
            })
        );
        assert_eq!(watch.join().unwrap().action(), "watch_session");
        let join = LoginSpec::parse("join=0190-abc@sam").unwrap();
        assert!(join.join().unwrap().keyboard);
        assert_eq!(join.join().unwrap().action(), "join_session");
        assert_eq!(LoginSpec::parse("sam@root@db1").unwrap().join(), None);
    }

    #[test]
    fn option_lookup() {
        let spec = LoginSpec::parse("otp=1@x=2@alice@root@db1").unwrap();
        assert_eq!(spec.option("x"), Some("2"));
        assert_eq!(spec.option("y"), None);
    }
}
