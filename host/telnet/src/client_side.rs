//! The client leg: the gateway as a Telnet server to the user's client. It negotiates, learns
//! the terminal, and holds the in-band login conversation (prompts, a small line editor,
//! refusals) before the daemon connects the target.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use zeroize::{Zeroize, Zeroizing};

use crate::codec::{self, AO, AYT, EC, EL, IP};
use crate::error::ClientError;
use crate::options::{ECHO, NAWS, SGA, TERMINAL_TYPE};
use crate::peer::{Incoming, Peer, Role, Wish};
use crate::{SecretString, Terminal};

const CTRL_C: u8 = 0x03;
const CTRL_D: u8 = 0x04;
const BACKSPACE: u8 = 0x08;
const CTRL_U: u8 = 0x15;
const DEL: u8 = 0x7f;
const READ_CHUNK: usize = 1024;

/// Bounds and waits of the client leg.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long [`ClientSide::accept`] waits for the client's terminal type and window size.
    pub negotiation_timeout: Duration,
    /// How long one [`ClientSide::ask`] waits for the whole answer.
    pub answer_timeout: Duration,
    /// The longest answer, in bytes.
    pub max_answer: usize,
    /// The most bytes the client may type ahead of the questions.
    pub max_typeahead: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            negotiation_timeout: Duration::from_secs(3),
            answer_timeout: Duration::from_secs(120),
            max_answer: 256,
            max_typeahead: 4096,
        }
    }
}

/// The user's connection, with the gateway as Telnet server.
pub struct ClientSide<S> {
    pub(crate) stream: S,
    pub(crate) peer: Peer,
    config: ClientConfig,
    /// Data received and not yet consumed by a question; commands folded into control bytes.
    pub(crate) typeahead: Zeroizing<Vec<u8>>,
    /// The previous answer ended with CR: a LF or NUL right after it belongs to that CR.
    pub(crate) after_cr: bool,
    /// The client closed its side; what it sent before is still answered from the type-ahead.
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientSide<S> {
    /// Negotiates with a freshly accepted client and learns its terminal (or gives up waiting
    /// after [`ClientConfig::negotiation_timeout`]; a client without Telnet is still served).
    pub async fn accept(stream: S, config: ClientConfig) -> Result<Self, ClientError> {
        let mut client = Self {
            stream,
            peer: Peer::new(Role::Server),
            config,
            typeahead: Zeroizing::new(Vec::new()),
            after_cr: false,
            closed: false,
        };
        let mut offers = Vec::new();
        client.peer.request(Wish::EnableLocal, ECHO, &mut offers);
        client.peer.request(Wish::EnableLocal, SGA, &mut offers);
        client
            .peer
            .request(Wish::EnableRemote, TERMINAL_TYPE, &mut offers);
        client.peer.request(Wish::EnableRemote, NAWS, &mut offers);
        client.write(&offers).await?;
        let deadline = Instant::now() + client.config.negotiation_timeout;
        while !client.terminal_settled() {
            match tokio::time::timeout_at(deadline, client.read_some()).await {
                Ok(Ok(())) => {}
                // Lines typed before the close are still answers; the next read reports it.
                Ok(Err(ClientError::Closed)) => break,
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    tracing::debug!("client negotiation incomplete; going on with what is known");
                    break;
                }
            }
        }
        Ok(client)
    }

    /// What the client told us about its terminal so far.
    pub fn terminal(&self) -> Terminal {
        Terminal {
            terminal_type: self.peer.terminal_type.clone(),
            window: self.peer.window,
        }
    }

    /// Whether the gateway echoes for the client (the client accepted `WILL ECHO`). When false
    /// the client echoes locally, and a secret answer is visible on the user's own screen.
    pub fn gateway_echoes(&self) -> bool {
        self.peer.options.local_enabled(ECHO)
    }

    /// Shows `prompt` and returns the line typed, echoed as it is typed.
    pub async fn ask(&mut self, prompt: &str) -> Result<String, ClientError> {
        let mut line = self.read_answer(prompt, true).await?;
        let text =
            String::from_utf8(std::mem::take(&mut line)).map_err(|_| ClientError::NotUtf8)?;
        Ok(text)
    }

    /// Shows `prompt` and returns the line typed, not echoed.
    pub async fn ask_secret(&mut self, prompt: &str) -> Result<SecretString, ClientError> {
        let mut line = self.read_answer(prompt, false).await?;
        match String::from_utf8(std::mem::take(&mut line)) {
            Ok(text) => Ok(SecretString::new(text)),
            Err(error) => {
                error.into_bytes().zeroize();
                Err(ClientError::NotUtf8)
            }
        }
    }

    /// Writes one line (a refusal, a notice) followed by CR LF.
    pub async fn say(&mut self, line: &str) -> Result<(), ClientError> {
        let mut out = Vec::new();
        codec::escape_text(line.as_bytes(), &mut out);
        out.extend_from_slice(b"\r\n");
        self.write(&out).await
    }

    /// Reads one line with the editor, the typed bytes kept in a buffer wiped on every path.
    async fn read_answer(&mut self, prompt: &str, echo: bool) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        codec::escape_text(prompt.as_bytes(), &mut out);
        self.write(&out).await?;
        let deadline = Instant::now() + self.config.answer_timeout;
        let mut line = Vec::with_capacity(self.config.max_answer);
        let result = self.edit_line(&mut line, echo, deadline).await;
        match result {
            Ok(()) => Ok(line),
            Err(error) => {
                line.zeroize();
                Err(error)
            }
        }
    }

    async fn edit_line(
        &mut self,
        line: &mut Vec<u8>,
        echo: bool,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let echo = echo && self.gateway_echoes();
        loop {
            let mut consumed = 0;
            let mut echoed = Vec::new();
            let mut outcome = None;
            while consumed < self.typeahead.len() {
                let byte = self.typeahead[consumed];
                consumed += 1;
                if self.after_cr {
                    self.after_cr = false;
                    if byte == b'\n' || byte == 0 {
                        continue;
                    }
                }
                match byte {
                    b'\r' | b'\n' => {
                        // The LF or NUL of a CR LF / CR NUL belongs to this line.
                        let next = self.typeahead.get(consumed).copied();
                        if byte == b'\r' && matches!(next, Some(b'\n' | 0)) {
                            consumed += 1;
                        }
                        self.after_cr = byte == b'\r' && next.is_none();
                        echoed.extend_from_slice(b"\r\n");
                        outcome = Some(Ok(()));
                        break;
                    }
                    CTRL_C | CTRL_D => {
                        echoed.extend_from_slice(b"\r\n");
                        outcome = Some(Err(ClientError::Aborted));
                        break;
                    }
                    BACKSPACE | DEL if erase_char(line) && echo => {
                        echoed.extend_from_slice(b"\x08 \x08");
                    }
                    BACKSPACE | DEL => {}
                    CTRL_U => {
                        while erase_char(line) {
                            if echo {
                                echoed.extend_from_slice(b"\x08 \x08");
                            }
                        }
                    }
                    byte if byte >= 0x20 => {
                        if line.len() >= self.config.max_answer {
                            let limit = self.config.max_answer;
                            outcome = Some(Err(ClientError::LineTooLong { limit }));
                            break;
                        }
                        line.push(byte);
                        if echo {
                            codec::escape_data(&[byte], &mut echoed);
                        }
                    }
                    _ => {}
                }
            }
            self.consume_typeahead(consumed);
            self.write(&echoed).await?;
            if let Some(outcome) = outcome {
                return outcome;
            }
            match tokio::time::timeout_at(deadline, self.read_some()).await {
                Ok(result) => result?,
                Err(_) => return Err(ClientError::Timeout(self.config.answer_timeout)),
            }
        }
    }

    /// Drops the first `count` type-ahead bytes and wipes the space they leave.
    fn consume_typeahead(&mut self, count: usize) {
        let remaining = self.typeahead.len() - count;
        self.typeahead.copy_within(count.., 0);
        self.typeahead[remaining..].zeroize();
        self.typeahead.truncate(remaining);
    }

    /// One read from the client: negotiation answered, data and commands into the type-ahead.
    async fn read_some(&mut self) -> Result<(), ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let mut buffer = [0u8; READ_CHUNK];
        let read = self.stream.read(&mut buffer).await;
        let count = match read {
            Ok(0) => {
                self.closed = true;
                return Err(ClientError::Closed);
            }
            Ok(count) => count,
            Err(error) if crate::relay::gone(&error) => {
                self.closed = true;
                return Err(ClientError::Closed);
            }
            Err(error) => return Err(ClientError::Io(error)),
        };
        let mut replies = Vec::new();
        let mut incoming = Vec::new();
        let decoded = self
            .peer
            .receive(&buffer[..count], &mut replies, &mut incoming);
        buffer.zeroize();
        decoded?;
        for event in incoming {
            match event {
                Incoming::Data(mut data) => {
                    let room = self
                        .config
                        .max_typeahead
                        .saturating_sub(self.typeahead.len());
                    if data.len() > room {
                        data.zeroize();
                        return Err(ClientError::TooMuchInput {
                            limit: self.config.max_typeahead,
                        });
                    }
                    self.typeahead.extend_from_slice(&data);
                    data.zeroize();
                }
                Incoming::Command(IP) => self.push_control(CTRL_C)?,
                Incoming::Command(EC) => self.push_control(DEL)?,
                Incoming::Command(EL) => self.push_control(CTRL_U)?,
                Incoming::Command(AYT) => {
                    codec::escape_text(b"\r\n[gatehouse: yes]\r\n", &mut replies)
                }
                Incoming::Command(AO) | Incoming::Command(_) => {}
                Incoming::Resize(_) | Incoming::TerminalType(_) | Incoming::Changed(_) => {}
            }
        }
        self.write(&replies).await
    }

    fn push_control(&mut self, byte: u8) -> Result<(), ClientError> {
        if self.typeahead.len() >= self.config.max_typeahead {
            return Err(ClientError::TooMuchInput {
                limit: self.config.max_typeahead,
            });
        }
        self.typeahead.push(byte);
        Ok(())
    }

    fn terminal_settled(&self) -> bool {
        let options = &self.peer.options;
        let type_known = !options.remote_pending(TERMINAL_TYPE)
            && (!options.remote_enabled(TERMINAL_TYPE) || self.peer.terminal_type.is_some());
        let size_known = !options.remote_pending(NAWS)
            && (!options.remote_enabled(NAWS) || self.peer.window.is_some());
        type_known && size_known
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }
}

impl<S> std::fmt::Debug for ClientSide<S> {
    /// The type-ahead may hold a password typed early: only its length is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSide")
            .field("terminal_type", &self.peer.terminal_type)
            .field("window", &self.peer.window)
            .field("typeahead_len", &self.typeahead.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Removes the last character (a whole UTF-8 sequence); false when the line was empty.
fn erase_char(line: &mut Vec<u8>) -> bool {
    let Some(mut byte) = line.pop() else {
        return false;
    };
    while byte & 0b1100_0000 == 0b1000_0000 {
        match line.pop() {
            Some(previous) => byte = previous,
            None => break,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn erasing_takes_whole_characters() {
        let mut line = "aé".as_bytes().to_vec();
        assert!(erase_char(&mut line));
        assert_eq!(line, b"a");
        assert!(erase_char(&mut line));
        assert!(!erase_char(&mut line));
    }
}
