//! One end of a Telnet connection without I/O: the decoder, the option states, and the two
//! subnegotiations the gateway speaks (TERMINAL-TYPE and NAWS) for the role it plays on that
//! connection. The client leg, the target leg and the relay all drive one of these.

use crate::WindowSize;
use crate::codec::{self, Decoder, Event};
use crate::error::ProtocolError;
use crate::options::{Change, ECHO, NAWS, Options, Policy, SGA, TERMINAL_TYPE};

/// RFC 1091 subcommands.
const TTYPE_IS: u8 = 0;
const TTYPE_SEND: u8 = 1;
/// RFC 1091: a terminal type name is at most 40 characters.
pub(crate) const TERMINAL_TYPE_MAX: usize = 40;

/// Which end the gateway is on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Towards the user's client: the gateway is the server; it echoes and learns the terminal.
    Server,
    /// Towards the target: the gateway is the client; it reports the user's terminal.
    Client,
}

/// What the peer told us, in order, with Telnet already taken care of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    Data(Vec<u8>),
    Command(u8),
    /// Server role: the client's window size (NAWS).
    Resize(WindowSize),
    /// Server role: the client's terminal type.
    TerminalType(String),
    Changed(Change),
}

#[derive(Debug)]
pub(crate) struct Peer {
    role: Role,
    decoder: Decoder,
    pub(crate) options: Options,
    /// Client role: what we report. Server role: what the client reported.
    pub(crate) terminal_type: Option<String>,
    pub(crate) window: Option<WindowSize>,
}

impl Peer {
    pub(crate) fn new(role: Role) -> Self {
        let policy = match role {
            // We echo and suppress go-ahead; the client tells its terminal and window size.
            Role::Server => Policy::refuse_all()
                .allow_local(ECHO)
                .allow_local(SGA)
                .allow_remote(SGA)
                .allow_remote(TERMINAL_TYPE)
                .allow_remote(NAWS),
            // The target echoes and suppresses go-ahead; we tell the terminal and window size.
            Role::Client => Policy::refuse_all()
                .allow_remote(ECHO)
                .allow_remote(SGA)
                .allow_local(SGA)
                .allow_local(TERMINAL_TYPE)
                .allow_local(NAWS),
        };
        Self {
            role,
            decoder: Decoder::default(),
            options: Options::new(policy),
            terminal_type: None,
            window: None,
        }
    }

    /// Decodes `input`; protocol answers go to `replies` (bytes for the same peer), the rest to
    /// `incoming`.
    pub(crate) fn receive(
        &mut self,
        input: &[u8],
        replies: &mut Vec<u8>,
        incoming: &mut Vec<Incoming>,
    ) -> Result<(), ProtocolError> {
        let mut events = Vec::new();
        let decoded = self.decoder.decode(input, &mut events);
        for event in events {
            match event {
                Event::Data(data) => incoming.push(Incoming::Data(data)),
                Event::Command(command) => incoming.push(Incoming::Command(command)),
                Event::Negotiation(verb, option) => {
                    let reaction = self.options.receive(verb, option);
                    if let Some((verb, option)) = reaction.reply {
                        codec::encode_negotiation(verb, option, replies);
                    }
                    if let Some(change) = reaction.change {
                        self.on_change(change, replies);
                        incoming.push(Incoming::Changed(change));
                    }
                }
                Event::Subnegotiation(option, payload) => {
                    self.on_subnegotiation(option, &payload, replies, incoming);
                }
            }
        }
        decoded
    }

    /// Whether the stream may end here.
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        self.decoder.finish()
    }

    /// Appends the `IAC verb option` for our wish, if one is needed.
    pub(crate) fn request(&mut self, wish: Wish, option: u8, out: &mut Vec<u8>) {
        let command = match wish {
            Wish::EnableLocal => self.options.enable_local(option),
            Wish::DisableLocal => self.options.disable_local(option),
            Wish::EnableRemote => self.options.enable_remote(option),
        };
        if let Some((verb, option)) = command {
            codec::encode_negotiation(verb, option, out);
        }
    }

    /// Client role: a new window size, sent at once when NAWS is on and kept for when it is.
    pub(crate) fn set_window(&mut self, size: WindowSize, out: &mut Vec<u8>) {
        self.window = Some(size);
        if self.role == Role::Client && self.options.local_enabled(NAWS) {
            encode_naws(size, out);
        }
    }

    fn on_change(&mut self, change: Change, replies: &mut Vec<u8>) {
        match (self.role, change) {
            (
                Role::Server,
                Change::Remote {
                    option: TERMINAL_TYPE,
                    enabled: true,
                },
            ) => {
                codec::encode_subnegotiation(TERMINAL_TYPE, &[TTYPE_SEND], replies);
            }
            (
                Role::Client,
                Change::Local {
                    option: NAWS,
                    enabled: true,
                },
            ) => {
                if let Some(size) = self.window {
                    encode_naws(size, replies);
                }
            }
            _ => {}
        }
    }

    fn on_subnegotiation(
        &mut self,
        option: u8,
        payload: &[u8],
        replies: &mut Vec<u8>,
        incoming: &mut Vec<Incoming>,
    ) {
        match (self.role, option, payload) {
            (Role::Client, TERMINAL_TYPE, [TTYPE_SEND])
                if self.options.local_enabled(TERMINAL_TYPE) =>
            {
                // One name only: repeating it tells a cycling server the list has ended.
                let name = self.terminal_type.as_deref().unwrap_or("UNKNOWN");
                let mut answer = vec![TTYPE_IS];
                answer.extend_from_slice(name.as_bytes());
                codec::encode_subnegotiation(TERMINAL_TYPE, &answer, replies);
            }
            (Role::Server, TERMINAL_TYPE, [TTYPE_IS, name @ ..])
                if self.options.remote_enabled(TERMINAL_TYPE) =>
            {
                match terminal_type_name(name) {
                    Some(name) => {
                        self.terminal_type = Some(name.clone());
                        incoming.push(Incoming::TerminalType(name));
                    }
                    None => tracing::debug!(length = name.len(), "unusable terminal type ignored"),
                }
            }
            (Role::Server, NAWS, &[w1, w0, h1, h0]) if self.options.remote_enabled(NAWS) => {
                let size = WindowSize {
                    columns: u16::from_be_bytes([w1, w0]),
                    rows: u16::from_be_bytes([h1, h0]),
                };
                self.window = Some(size);
                incoming.push(Incoming::Resize(size));
            }
            _ => tracing::debug!(option, length = payload.len(), "subnegotiation ignored"),
        }
    }
}

/// What we want changed about an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wish {
    EnableLocal,
    DisableLocal,
    EnableRemote,
}

fn encode_naws(size: WindowSize, out: &mut Vec<u8>) {
    let [w1, w0] = size.columns.to_be_bytes();
    let [h1, h0] = size.rows.to_be_bytes();
    codec::encode_subnegotiation(NAWS, &[w1, w0, h1, h0], out);
}

/// A terminal type as RFC 1091 allows it: 1 to 40 printable ASCII characters, no space.
pub(crate) fn terminal_type_name(name: &[u8]) -> Option<String> {
    let usable = !name.is_empty()
        && name.len() <= TERMINAL_TYPE_MAX
        && name.iter().all(|byte| byte.is_ascii_graphic());
    usable.then(|| String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::codec::{DO, IAC, SB, SE, WILL};

    /// Wires a server-role and a client-role peer together and pumps until both are quiet.
    #[test]
    fn server_and_client_roles_agree_on_terminal_and_window() {
        let mut server = Peer::new(Role::Server);
        let mut client = Peer::new(Role::Client);
        client.terminal_type = Some("XTERM-256COLOR".into());
        client.window = Some(WindowSize {
            columns: 132,
            rows: 255,
        });
        let mut to_client = Vec::new();
        server.request(Wish::EnableRemote, TERMINAL_TYPE, &mut to_client);
        server.request(Wish::EnableRemote, NAWS, &mut to_client);
        server.request(Wish::EnableLocal, ECHO, &mut to_client);
        let mut seen = Vec::new();
        for _ in 0..10 {
            let mut to_server = Vec::new();
            let mut ignored = Vec::new();
            client
                .receive(
                    &std::mem::take(&mut to_client),
                    &mut to_server,
                    &mut ignored,
                )
                .unwrap();
            server
                .receive(&to_server, &mut to_client, &mut seen)
                .unwrap();
        }
        assert!(seen.contains(&Incoming::TerminalType("XTERM-256COLOR".into())));
        // 255 rows travels escaped (IAC IAC) and comes back whole.
        assert!(seen.contains(&Incoming::Resize(WindowSize {
            columns: 132,
            rows: 255
        })));
        assert!(
            client.options.remote_enabled(ECHO),
            "the client role lets the server echo"
        );
    }

    #[test]
    fn subnegotiations_for_options_not_enabled_are_ignored() {
        let mut server = Peer::new(Role::Server);
        let mut replies = Vec::new();
        let mut incoming = Vec::new();
        let input = [
            IAC,
            SB,
            NAWS,
            0,
            80,
            0,
            24,
            IAC,
            SE,
            IAC,
            SB,
            TERMINAL_TYPE,
            0,
            b'X',
            IAC,
            SE,
        ];
        server.receive(&input, &mut replies, &mut incoming).unwrap();
        assert!(incoming.is_empty() && replies.is_empty());
        // Once enabled, a resize is reported; a bad terminal name is not.
        server
            .receive(
                &[IAC, WILL, NAWS, IAC, WILL, TERMINAL_TYPE],
                &mut replies,
                &mut incoming,
            )
            .unwrap();
        assert_eq!(replies[..6], [IAC, DO, NAWS, IAC, DO, TERMINAL_TYPE]);
        incoming.clear();
        let input = [
            IAC,
            SB,
            NAWS,
            0,
            80,
            0,
            24,
            IAC,
            SE,
            IAC,
            SB,
            TERMINAL_TYPE,
            0,
            b'a',
            b' ',
            IAC,
            SE,
        ];
        server.receive(&input, &mut replies, &mut incoming).unwrap();
        assert_eq!(
            incoming,
            vec![Incoming::Resize(WindowSize {
                columns: 80,
                rows: 24
            })]
        );
    }
}
