//! The target leg: the gateway as a Telnet client to the target. It reports the user's
//! terminal, then logs in by answering the target's prompts with the vault's credential, and
//! decides from what the target says next whether the login worked.
//!
//! # The login rules ([`TargetSide::login`])
//! The target's data (Telnet removed, NULs dropped, decoded as lossy UTF-8) is collected into a
//! *text* that restarts at every step; patterns are checked after every read:
//! 1. *User prompt stage*: when `password_prompt` matches, the password is sent at once (targets
//!    that ask no user name); otherwise when `user_prompt` matches, the user name is sent.
//!    `failure` is not checked here: pre-login banners often say "unauthorized access denied".
//! 2. *Password prompt stage*: `failure` matching, or `user_prompt` matching again, is a refusal;
//!    `password_prompt` matching sends the password.
//! 3. *Verdict stage*: `failure` matching, or either prompt matching again, is a refusal. With a
//!    `success` pattern, only its match is a success. Without one, the login succeeded when the
//!    target wrote something other than white space and then stayed quiet for `quiet_period`:
//!    a target whose failure message comes after other text, or after a pause longer than
//!    `quiet_period`, needs a `success` pattern (a shell prompt).
//!
//! No answer within `timeout` in total is [`TargetError::Timeout`] with the stage; the target
//! closing is [`TargetError::Closed`]. Lines end with CR LF (RFC 854). The text of each stage is
//! bounded by [`LoginScript::max_output`].

use std::ops::Range;
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use zeroize::{Zeroize, Zeroizing};

use crate::codec;
use crate::error::{LoginStage, TargetError};
use crate::options::{NAWS, SGA, TERMINAL_TYPE};
use crate::peer::{Incoming, Peer, Role, Wish};
use crate::{SecretString, Terminal};

const READ_CHUNK: usize = 4096;

/// How a piece of the target's text is recognised.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// The text, trailing white space removed, ends with this (ASCII case-insensitive).
    Suffix(String),
    /// The text contains this (ASCII case-insensitive).
    Contains(String),
    /// The regular expression matches somewhere in the text (anchor with `$` for its end;
    /// the text's trailing white space is removed first).
    Regex(Regex),
}

impl Pattern {
    /// Where the pattern matches `text`.
    fn find(&self, text: &str) -> Option<Range<usize>> {
        let trimmed = text.trim_end();
        match self {
            Pattern::Suffix(suffix) => {
                let start = trimmed.len().checked_sub(suffix.len())?;
                let tail = trimmed.get(start..)?;
                tail.eq_ignore_ascii_case(suffix)
                    .then_some(start..trimmed.len())
            }
            Pattern::Contains(needle) => {
                let lower = trimmed.to_ascii_lowercase();
                let needle = needle.to_ascii_lowercase();
                lower.find(&needle).map(|start| start..start + needle.len())
            }
            Pattern::Regex(regex) => regex.find(trimmed).map(|found| found.range()),
        }
    }
}

/// How to log in to one asset: its prompts, its failure message, when to call it done.
#[derive(Debug, Clone)]
pub struct LoginScript {
    pub user_prompt: Pattern,
    pub password_prompt: Pattern,
    pub failure: Pattern,
    /// The shell prompt that proves the login; `None` uses the quiet period.
    pub success: Option<Pattern>,
    pub quiet_period: Duration,
    /// The whole login, from the first byte to the verdict.
    pub timeout: Duration,
    /// The most text one stage may collect.
    pub max_output: usize,
}

impl Default for LoginScript {
    /// `login:`, `password:`, the usual failure messages of login(1), PAM, sshd-like and
    /// network devices, no shell prompt, 1 s of quiet, 30 s in all.
    fn default() -> Self {
        Self {
            user_prompt: Pattern::Suffix("login:".into()),
            password_prompt: Pattern::Suffix("password:".into()),
            failure: default_failure(),
            success: None,
            quiet_period: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            max_output: 64 * 1024,
        }
    }
}

fn default_failure() -> Pattern {
    let pattern = r"(?i)login incorrect|authentication fail|access denied|permission denied|incorrect password|invalid (login|password)";
    match Regex::new(pattern) {
        Ok(regex) => Pattern::Regex(regex),
        Err(_) => Pattern::Contains("login incorrect".into()),
    }
}

/// The account to log in with.
#[derive(Debug)]
pub struct Credential<'a> {
    pub username: &'a str,
    pub password: &'a SecretString,
}

/// The proof of a login: what the target wrote after the password (its banner, the shell
/// prompt), which the relay shows first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// Bytes of the target's output after the password, echo of the password removed.
    pub banner_len: usize,
}

/// The target's connection, with the gateway as Telnet client.
#[derive(Debug)]
pub struct TargetSide<S> {
    pub(crate) stream: S,
    pub(crate) peer: Peer,
    /// Output held back for the relay to show first (after a login: the post-password part).
    pub(crate) held_output: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TargetSide<S> {
    /// Starts Telnet on a connected stream: offers the terminal type and window size (sent when
    /// the target asks) and asks the target to suppress go-ahead. Does not wait for answers.
    pub async fn connect(stream: S, terminal: &Terminal) -> Result<Self, TargetError> {
        let mut peer = Peer::new(Role::Client);
        peer.terminal_type = terminal.terminal_type.clone();
        peer.window = terminal.window;
        let mut offers = Vec::new();
        if peer.terminal_type.is_some() {
            peer.request(Wish::EnableLocal, TERMINAL_TYPE, &mut offers);
        }
        if peer.window.is_some() {
            peer.request(Wish::EnableLocal, NAWS, &mut offers);
        }
        peer.request(Wish::EnableRemote, SGA, &mut offers);
        let mut target = Self {
            stream,
            peer,
            held_output: Vec::new(),
        };
        target.write(&offers).await?;
        Ok(target)
    }

    /// Logs in with `credential` by the rules of `script` (see the module documentation).
    pub async fn login(
        &mut self,
        credential: &Credential<'_>,
        script: &LoginScript,
    ) -> Result<LoggedIn, TargetError> {
        if credential.username.chars().any(char::is_control) {
            return Err(TargetError::BadUsername);
        }
        self.held_output.clear();
        let deadline = Instant::now() + script.timeout;
        let mut stage = LoginStage::UserPrompt;
        let mut raw = Vec::new();
        let mut text = String::new();
        let mut quiet_since: Option<Instant> = None;
        loop {
            match stage {
                LoginStage::UserPrompt => {
                    if script.password_prompt.find(&text).is_some() {
                        self.send_password(credential.password).await?;
                        stage = LoginStage::Verdict;
                        raw.clear();
                        text.clear();
                        quiet_since = None;
                    } else if script.user_prompt.find(&text).is_some() {
                        let mut line = Vec::new();
                        codec::escape_data(credential.username.as_bytes(), &mut line);
                        line.extend_from_slice(b"\r\n");
                        self.write(&line).await?;
                        stage = LoginStage::PasswordPrompt;
                        raw.clear();
                        text.clear();
                        quiet_since = None;
                    }
                }
                LoginStage::PasswordPrompt => {
                    if let Some(found) = script.failure.find(&text) {
                        return Err(refused(&text, found));
                    }
                    if script.password_prompt.find(&text).is_some() {
                        self.send_password(credential.password).await?;
                        stage = LoginStage::Verdict;
                        raw.clear();
                        text.clear();
                        quiet_since = None;
                    } else if let Some(found) = script.user_prompt.find(&text) {
                        return Err(refused(&text, found));
                    }
                }
                LoginStage::Verdict => {
                    if let Some(found) = script.failure.find(&text) {
                        return Err(refused(&text, found));
                    }
                    let again = script
                        .user_prompt
                        .find(&text)
                        .or_else(|| script.password_prompt.find(&text));
                    if let Some(found) = again {
                        return Err(refused(&text, found));
                    }
                    let proved = match &script.success {
                        Some(pattern) => pattern.find(&text).is_some(),
                        None => {
                            quiet_since.is_some_and(|since| since.elapsed() >= script.quiet_period)
                        }
                    };
                    if proved {
                        self.held_output = scrub(raw, credential.password.expose().as_bytes());
                        return Ok(LoggedIn {
                            banner_len: self.held_output.len(),
                        });
                    }
                }
            }
            let mut wake = deadline;
            if stage == LoginStage::Verdict
                && script.success.is_none()
                && let Some(since) = quiet_since
            {
                wake = wake.min(since + script.quiet_period);
            }
            match tokio::time::timeout_at(wake, self.read_data(&mut raw, &mut text)).await {
                Ok(Ok(true)) => {
                    if raw.len() > script.max_output {
                        return Err(TargetError::TooMuchOutput {
                            limit: script.max_output,
                        });
                    }
                    if !text.trim().is_empty() {
                        quiet_since = Some(Instant::now());
                    }
                }
                Ok(Ok(false)) => return Err(TargetError::Closed { stage }),
                Ok(Err(error)) => return Err(error),
                Err(_) if Instant::now() >= deadline => return Err(TargetError::Timeout { stage }),
                Err(_) => {}
            }
        }
    }

    async fn send_password(&mut self, password: &SecretString) -> Result<(), TargetError> {
        let mut line = Zeroizing::new(Vec::new());
        codec::escape_data(password.expose().as_bytes(), &mut line);
        line.extend_from_slice(b"\r\n");
        self.write(&line).await
    }

    /// One read: negotiation answered, data appended. False when the target closed.
    async fn read_data(
        &mut self,
        raw: &mut Vec<u8>,
        text: &mut String,
    ) -> Result<bool, TargetError> {
        let mut buffer = [0u8; READ_CHUNK];
        let count = self.stream.read(&mut buffer).await?;
        if count == 0 {
            return Ok(false);
        }
        let mut replies = Vec::new();
        let mut incoming = Vec::new();
        let decoded = self
            .peer
            .receive(&buffer[..count], &mut replies, &mut incoming);
        buffer.zeroize();
        self.write(&replies).await?;
        decoded?;
        for event in incoming {
            if let Incoming::Data(data) = event {
                raw.extend_from_slice(&data);
                let visible: Vec<u8> = data.into_iter().filter(|&byte| byte != 0).collect();
                text.push_str(&String::from_utf8_lossy(&visible));
            }
        }
        Ok(true)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), TargetError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }
}

/// The refusal, quoting the line of `text` that holds the match.
fn refused(text: &str, found: Range<usize>) -> TargetError {
    let start = text[..found.start]
        .rfind(['\r', '\n'])
        .map_or(0, |at| at + 1);
    let end = text[found.end..]
        .find(['\r', '\n'])
        .map_or(text.len(), |at| found.end + at);
    let line: String = text[start..end]
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    TargetError::Refused { message: line }
}

/// `output` with every occurrence of `secret` removed (and the original wiped).
fn scrub(mut output: Vec<u8>, secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() {
        return output;
    }
    let mut kept = Vec::with_capacity(output.len());
    let mut index = 0;
    while index < output.len() {
        if output[index..].starts_with(secret) {
            index += secret.len();
        } else {
            kept.push(output[index]);
            index += 1;
        }
    }
    output.zeroize();
    kept
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        let cases: Vec<(Pattern, &str, bool)> = vec![
            (
                Pattern::Suffix("login:".into()),
                "Debian GNU/Linux\r\nhost LOGIN: ",
                true,
            ),
            (
                Pattern::Suffix("login:".into()),
                "Last login: Mon\r\n$ ",
                false,
            ),
            (Pattern::Suffix("password:".into()), "Password:", true),
            (
                Pattern::Contains("login incorrect".into()),
                "\r\nLogin incorrect\r\nlogin: ",
                true,
            ),
            (
                Pattern::Regex(Regex::new(r"[$#] ?$").unwrap()),
                "motd\r\nbob@h:~$ ",
                true,
            ),
            (
                Pattern::Regex(Regex::new(r"[$#] ?$").unwrap()),
                "$5 fee\r\n",
                false,
            ),
            (
                default_failure(),
                "Permission denied, please try again.",
                true,
            ),
            (default_failure(), "Welcome", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                pattern.find(text).is_some(),
                expected,
                "{pattern:?} on {text:?}"
            );
        }
    }

    #[test]
    fn a_refusal_quotes_the_matching_line_only() {
        let text = "\r\nsecret-banner\r\nLogin incorrect\r\nlogin: ";
        let found = default_failure().find(text).unwrap();
        match refused(text, found) {
            TargetError::Refused { message } => assert_eq!(message, "Login incorrect"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_password_is_cut_out_of_the_banner() {
        assert_eq!(
            scrub(b"\r\nhunter2\r\n$ hunter2".to_vec(), b"hunter2"),
            b"\r\n\r\n$ "
        );
        assert_eq!(scrub(b"abc".to_vec(), b""), b"abc");
    }
}
