//! SSH to a target for the lifecycle: connect through `gatehouse_ssh::target::connect_verified`
//! (the pinned host key is verified exactly as for sessions), log in with one credential, run a
//! command with data on its standard input, and collect its output in bounded memory.

use crate::Lifecycle;
use gatehouse_core::{Asset, SecretString};
use gatehouse_ssh::target::{DialError, TargetHandler, authenticate, connect_verified};
use gatehouse_vault::TargetCredential;
use russh::ChannelMsg;
use russh::client::Handle;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The most output kept from one command (per stream).
const MAX_OUTPUT: usize = 4 * 1024 * 1024;

/// One credential to log in with.
pub(crate) enum Login<'a> {
    Password(&'a SecretString),
    PrivateKey(&'a SecretString),
}

impl Login<'_> {
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Login::Password(_) => "password",
            Login::PrivateKey(_) => "publickey",
        }
    }

    fn credential(&self) -> TargetCredential {
        match self {
            Login::Password(p) => TargetCredential {
                password: Some((*p).clone()),
                private_key: None,
            },
            Login::PrivateKey(k) => TargetCredential {
                password: None,
                private_key: Some((*k).clone()),
            },
        }
    }
}

/// A logged-in SSH connection to a target.
pub(crate) struct Remote {
    handle: Handle<TargetHandler>,
}

/// What a command printed and how it ended. Zeroized on drop (it may echo what it was fed).
pub(crate) struct Output {
    pub status: Option<u32>,
    pub stdout: Zeroizing<Vec<u8>>,
    pub stderr: Zeroizing<Vec<u8>>,
}

impl Output {
    pub(crate) fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The last lines of standard error (or output), for an error message.
    pub(crate) fn complaint(&self) -> String {
        let text = if self.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            String::from_utf8_lossy(&self.stderr).into_owned()
        } else {
            String::from_utf8_lossy(&self.stdout).into_owned()
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join("; ");
        match self.status {
            Some(code) => format!("exit status {code}: {tail}"),
            None => format!("no exit status: {tail}"),
        }
    }
}

impl Remote {
    /// Connects (verifying the host key) and logs in as `user`.
    pub(crate) async fn login(
        lc: &Lifecycle,
        asset: &Asset,
        user: &str,
        login: &Login<'_>,
    ) -> Result<Remote, DialError> {
        let timeout = lc.settings.connect_timeout;
        let config = Arc::new(russh::client::Config {
            inactivity_timeout: Some(lc.settings.command_timeout),
            ..Default::default()
        });
        let work = async {
            let mut handle =
                connect_verified(&lc.store, &lc.auditor, asset, config, timeout, None).await?;
            authenticate(&mut handle, user, &login.credential()).await?;
            Ok(Remote { handle })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(DialError::Timeout(format!(
                "{}:{}",
                asset.address, asset.port
            ))),
        }
    }

    /// Runs `command` with `stdin` on its standard input (then end of file) and waits, bounded
    /// by the command timeout, for it to exit.
    pub(crate) async fn exec(
        &self,
        lc: &Lifecycle,
        command: &str,
        stdin: &[u8],
    ) -> Result<Output, String> {
        let work = async {
            let channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| format!("opening a channel: {e}"))?;
            channel
                .exec(true, command)
                .await
                .map_err(|e| format!("starting `{}`: {e}", first_word(command)))?;
            if !stdin.is_empty() {
                channel
                    .data(stdin)
                    .await
                    .map_err(|e| format!("writing to `{}`: {e}", first_word(command)))?;
            }
            channel
                .eof()
                .await
                .map_err(|e| format!("closing input of `{}`: {e}", first_word(command)))?;
            let mut channel = channel;
            let mut out = Output {
                status: None,
                stdout: Zeroizing::new(Vec::new()),
                stderr: Zeroizing::new(Vec::new()),
            };
            while let Some(message) = channel.wait().await {
                match message {
                    ChannelMsg::Data { data } => append(&mut out.stdout, &data),
                    ChannelMsg::ExtendedData { data, .. } => append(&mut out.stderr, &data),
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    ChannelMsg::Failure => {
                        return Err(format!(
                            "the target refused to run `{}`",
                            first_word(command)
                        ));
                    }
                    _ => {}
                }
            }
            Ok(out)
        };
        tokio::time::timeout(lc.settings.command_timeout, work)
            .await
            .map_err(|_| {
                format!(
                    "`{}` did not finish within {:?}",
                    first_word(command),
                    lc.settings.command_timeout
                )
            })?
    }

    pub(crate) async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

fn append(buffer: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

fn first_word(command: &str) -> &str {
    command.split_whitespace().next().unwrap_or(command)
}

/// Quotes `text` for a POSIX shell (single quotes).
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
