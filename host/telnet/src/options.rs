//! Option negotiation by the Q method of RFC 1143, so that neither peer can make us loop.
//!
//! Each option has two independent states: *us* (do we perform it: `WILL`/`WONT` from us,
//! `DO`/`DONT` from the peer) and *him* (does the peer perform it). Each state is `No`, `Yes`,
//! `WantNo` or `WantYes`, the last two with a one-slot queue for the opposite request. The rules:
//! - we answer a request only when it would change the state, so a repeated `WILL` to an
//!   option already on, or a `WONT` to one already off, gets no answer at all;
//! - an answer to our own request is never answered again;
//! - we answer at most one command for each command received, so a peer flipping `WILL`/`WONT`
//!   forever gets at most as many bytes back as it sends, and two Q-method peers settle.
//!
//! What we accept is a [`Policy`]: an option is enabled on a side only when the policy allows it
//! on that side; everything else is refused (`DONT`/`WONT`) the first time and ignored after.

use crate::codec::Verb;

/// ECHO (RFC 857).
pub const ECHO: u8 = 1;
/// SUPPRESS-GO-AHEAD (RFC 858).
pub const SGA: u8 = 3;
/// TERMINAL-TYPE (RFC 1091).
pub const TERMINAL_TYPE: u8 = 24;
/// NAWS, negotiate about window size (RFC 1073).
pub const NAWS: u8 = 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Q {
    #[default]
    No,
    Yes,
    WantNo {
        opposite: bool,
    },
    WantYes {
        opposite: bool,
    },
}

/// Which options we perform and which we let the peer perform.
#[derive(Debug, Clone)]
pub struct Policy {
    local: [bool; 256],
    remote: [bool; 256],
}

impl Policy {
    /// Refuses every option.
    pub fn refuse_all() -> Self {
        Self {
            local: [false; 256],
            remote: [false; 256],
        }
    }

    /// Also lets us perform `option` when the peer asks (`DO` answered by `WILL`).
    pub fn allow_local(mut self, option: u8) -> Self {
        self.local[usize::from(option)] = true;
        self
    }

    /// Also lets the peer perform `option` when it offers (`WILL` answered by `DO`).
    pub fn allow_remote(mut self, option: u8) -> Self {
        self.remote[usize::from(option)] = true;
        self
    }
}

/// An option that became enabled or disabled on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// We now perform the option (or stopped, when `enabled` is false).
    Local { option: u8, enabled: bool },
    /// The peer now performs the option (or stopped).
    Remote { option: u8, enabled: bool },
}

/// What to do after a received negotiation: at most one reply and at most one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reaction {
    pub reply: Option<(Verb, u8)>,
    pub change: Option<Change>,
}

/// The negotiation state of every option on one connection.
#[derive(Debug, Clone)]
pub struct Options {
    policy: Policy,
    us: [Q; 256],
    him: [Q; 256],
}

impl Options {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            us: [Q::No; 256],
            him: [Q::No; 256],
        }
    }

    /// Whether we perform `option` now.
    pub fn local_enabled(&self, option: u8) -> bool {
        self.us[usize::from(option)] == Q::Yes
    }

    /// Whether the peer performs `option` now.
    pub fn remote_enabled(&self, option: u8) -> bool {
        self.him[usize::from(option)] == Q::Yes
    }

    /// Whether a request of ours about `option` on our side is still unanswered.
    pub fn local_pending(&self, option: u8) -> bool {
        matches!(
            self.us[usize::from(option)],
            Q::WantNo { .. } | Q::WantYes { .. }
        )
    }

    /// Whether a request of ours about `option` on the peer's side is still unanswered.
    pub fn remote_pending(&self, option: u8) -> bool {
        matches!(
            self.him[usize::from(option)],
            Q::WantNo { .. } | Q::WantYes { .. }
        )
    }

    /// We want to perform `option`: the `WILL` to send, if any is needed now.
    pub fn enable_local(&mut self, option: u8) -> Option<(Verb, u8)> {
        request(&mut self.us[usize::from(option)], true)
            .map(|on| (verb(on, Verb::Will, Verb::Wont), option))
    }

    /// We want to stop performing `option`: the `WONT` to send, if any is needed now.
    pub fn disable_local(&mut self, option: u8) -> Option<(Verb, u8)> {
        request(&mut self.us[usize::from(option)], false)
            .map(|on| (verb(on, Verb::Will, Verb::Wont), option))
    }

    /// We want the peer to perform `option`: the `DO` to send, if any is needed now.
    pub fn enable_remote(&mut self, option: u8) -> Option<(Verb, u8)> {
        request(&mut self.him[usize::from(option)], true)
            .map(|on| (verb(on, Verb::Do, Verb::Dont), option))
    }

    /// We want the peer to stop performing `option`: the `DONT` to send, if any is needed now.
    pub fn disable_remote(&mut self, option: u8) -> Option<(Verb, u8)> {
        request(&mut self.him[usize::from(option)], false)
            .map(|on| (verb(on, Verb::Do, Verb::Dont), option))
    }

    /// Applies a received `IAC verb option`.
    pub fn receive(&mut self, received: Verb, option: u8) -> Reaction {
        let index = usize::from(option);
        let (state, allowed, positive, negative, offered) = match received {
            Verb::Will | Verb::Wont => (
                &mut self.him[index],
                self.policy.remote[index],
                Verb::Do,
                Verb::Dont,
                received == Verb::Will,
            ),
            Verb::Do | Verb::Dont => (
                &mut self.us[index],
                self.policy.local[index],
                Verb::Will,
                Verb::Wont,
                received == Verb::Do,
            ),
        };
        let before = *state == Q::Yes;
        let reply =
            answer(state, offered, allowed).map(|on| (verb(on, positive, negative), option));
        let after = *state == Q::Yes;
        let change = (before != after).then_some(match received {
            Verb::Will | Verb::Wont => Change::Remote {
                option,
                enabled: after,
            },
            Verb::Do | Verb::Dont => Change::Local {
                option,
                enabled: after,
            },
        });
        Reaction { reply, change }
    }
}

fn verb(on: bool, positive: Verb, negative: Verb) -> Verb {
    if on { positive } else { negative }
}

/// RFC 1143 section 7, for a received `WILL` (`offered`) or `WONT` (and `DO`/`DONT` alike).
/// Returns the reply to send: `Some(true)` agree/ask, `Some(false)` refuse/stop.
fn answer(state: &mut Q, offered: bool, allowed: bool) -> Option<bool> {
    match (*state, offered) {
        (Q::No, true) => {
            if allowed {
                *state = Q::Yes;
                Some(true)
            } else {
                Some(false)
            }
        }
        (Q::No, false) | (Q::Yes, true) => None,
        (Q::Yes, false) => {
            *state = Q::No;
            Some(false)
        }
        // Our DONT was answered by WILL: the peer is in error; RFC 1143 settles.
        (Q::WantNo { opposite: false }, true) => {
            *state = Q::No;
            None
        }
        (Q::WantNo { opposite: true }, true) => {
            *state = Q::Yes;
            None
        }
        (Q::WantNo { opposite: false }, false) => {
            *state = Q::No;
            None
        }
        (Q::WantNo { opposite: true }, false) => {
            *state = Q::WantYes { opposite: false };
            Some(true)
        }
        (Q::WantYes { opposite: false }, true) => {
            *state = Q::Yes;
            None
        }
        (Q::WantYes { opposite: true }, true) => {
            *state = Q::WantNo { opposite: false };
            Some(false)
        }
        (Q::WantYes { .. }, false) => {
            *state = Q::No;
            None
        }
    }
}

/// RFC 1143 section 7, for our own wish to enable (`on`) or disable an option.
fn request(state: &mut Q, on: bool) -> Option<bool> {
    match (*state, on) {
        (Q::No, true) => {
            *state = Q::WantYes { opposite: false };
            Some(true)
        }
        (Q::Yes, false) => {
            *state = Q::WantNo { opposite: false };
            Some(false)
        }
        (Q::No, false) | (Q::Yes, true) => None,
        (Q::WantNo { .. }, true) => {
            *state = Q::WantNo { opposite: true };
            None
        }
        (Q::WantNo { .. }, false) => {
            *state = Q::WantNo { opposite: false };
            None
        }
        (Q::WantYes { .. }, true) => {
            *state = Q::WantYes { opposite: false };
            None
        }
        (Q::WantYes { .. }, false) => {
            *state = Q::WantYes { opposite: true };
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn accepting() -> Options {
        Options::new(
            Policy::refuse_all()
                .allow_remote(ECHO)
                .allow_local(NAWS)
                .allow_remote(SGA),
        )
    }

    #[test]
    fn received_negotiation_follows_the_q_table() {
        type Case = (&'static str, Vec<(Verb, u8)>, Vec<Option<(Verb, u8)>>);
        // (name, sequence received, replies expected)
        let cases: Vec<Case> = vec![
            (
                "offer accepted once",
                vec![(Verb::Will, ECHO), (Verb::Will, ECHO)],
                vec![Some((Verb::Do, ECHO)), None],
            ),
            (
                "offer refused once",
                vec![(Verb::Will, 34), (Verb::Wont, 34), (Verb::Will, 34)],
                vec![Some((Verb::Dont, 34)), None, Some((Verb::Dont, 34))],
            ),
            (
                "request refused",
                vec![(Verb::Do, 39), (Verb::Dont, 39)],
                vec![Some((Verb::Wont, 39)), None],
            ),
            (
                "request accepted then withdrawn",
                vec![(Verb::Do, NAWS), (Verb::Dont, NAWS), (Verb::Dont, NAWS)],
                vec![Some((Verb::Will, NAWS)), Some((Verb::Wont, NAWS)), None],
            ),
            (
                "wont to an off option",
                vec![(Verb::Wont, ECHO)],
                vec![None],
            ),
        ];
        for (name, received, expected) in cases {
            let mut options = accepting();
            let replies: Vec<_> = received
                .iter()
                .map(|&(v, o)| options.receive(v, o).reply)
                .collect();
            assert_eq!(replies, expected, "{name}");
        }
    }

    #[test]
    fn answers_to_our_requests_are_not_answered() {
        let mut options = accepting();
        assert_eq!(options.enable_remote(ECHO), Some((Verb::Do, ECHO)));
        assert_eq!(options.enable_remote(ECHO), None);
        let reaction = options.receive(Verb::Will, ECHO);
        assert_eq!(reaction.reply, None);
        assert_eq!(
            reaction.change,
            Some(Change::Remote {
                option: ECHO,
                enabled: true
            })
        );
        assert!(options.remote_enabled(ECHO));
        // Refused request: the WONT is not answered and the option stays off.
        assert_eq!(
            options.enable_local(TERMINAL_TYPE),
            Some((Verb::Will, TERMINAL_TYPE))
        );
        let reaction = options.receive(Verb::Dont, TERMINAL_TYPE);
        assert_eq!(reaction, Reaction::default());
        assert!(!options.local_enabled(TERMINAL_TYPE));
    }

    #[test]
    fn a_flipping_peer_gets_at_most_one_reply_per_command() {
        let mut options = accepting();
        let mut replies = 0;
        for round in 0..10_000 {
            let verb = if round % 2 == 0 {
                Verb::Will
            } else {
                Verb::Wont
            };
            if options.receive(verb, ECHO).reply.is_some() {
                replies += 1;
            }
            if options.receive(verb, 200).reply.is_some() {
                replies += 1;
            }
        }
        // ECHO: DO/DONT for each flip; option 200 (refused): DONT for each WILL only.
        assert_eq!(replies, 10_000 + 5_000);
    }

    #[test]
    fn two_q_method_peers_settle_even_when_both_change_their_mind() {
        let mut left = Options::new(Policy::refuse_all().allow_local(ECHO).allow_remote(ECHO));
        let mut right = Options::new(Policy::refuse_all().allow_local(ECHO).allow_remote(ECHO));
        let mut to_right: Vec<(Verb, u8)> = Vec::new();
        let mut to_left: Vec<(Verb, u8)> = Vec::new();
        to_right.extend(left.enable_remote(ECHO));
        to_right.extend(left.disable_remote(ECHO));
        to_right.extend(left.enable_remote(ECHO));
        to_left.extend(right.enable_local(ECHO));
        to_left.extend(right.disable_local(ECHO));
        let mut exchanged = 0;
        while !(to_right.is_empty() && to_left.is_empty()) {
            exchanged += 1;
            assert!(exchanged < 100, "negotiation did not settle");
            for (v, o) in std::mem::take(&mut to_right) {
                to_left.extend(right.receive(v, o).reply);
            }
            for (v, o) in std::mem::take(&mut to_left) {
                to_right.extend(left.receive(v, o).reply);
            }
        }
        assert_eq!(left.remote_enabled(ECHO), right.local_enabled(ECHO));
        assert!(!left.remote_pending(ECHO) && !right.local_pending(ECHO));
    }
}
