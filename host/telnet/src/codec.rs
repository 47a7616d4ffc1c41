//! The Telnet byte stream (RFC 854/855): a streaming decoder that splits data from commands,
//! and the encoders for data (with `IAC IAC` escaping), negotiation and subnegotiation.
//!
//! The decoder keeps its state between calls, so a command split across TCP reads decodes the
//! same as one read whole. Its memory is bounded: data is handed out per call, and a
//! subnegotiation longer than the limit is a [`ProtocolError::SubnegotiationTooLong`], never a
//! growing buffer. An `IAC` followed by a byte that is neither `SE` nor `IAC` inside a
//! subnegotiation aborts it (the partial payload is dropped) and the byte is read as the
//! command it names, as RFC 854 peers that forgot the `SE` expect.

use crate::error::ProtocolError;

/// Interpret As Command.
pub const IAC: u8 = 255;
pub const DONT: u8 = 254;
pub const DO: u8 = 253;
pub const WONT: u8 = 252;
pub const WILL: u8 = 251;
/// Subnegotiation begin.
pub const SB: u8 = 250;
/// Go ahead.
pub const GA: u8 = 249;
/// Erase line.
pub const EL: u8 = 248;
/// Erase character.
pub const EC: u8 = 247;
/// Are you there.
pub const AYT: u8 = 246;
/// Abort output.
pub const AO: u8 = 245;
/// Interrupt process.
pub const IP: u8 = 244;
/// Break.
pub const BRK: u8 = 243;
/// Data mark (the data part of a Synch).
pub const DM: u8 = 242;
/// No operation.
pub const NOP: u8 = 241;
/// Subnegotiation end.
pub const SE: u8 = 240;

/// The default bound of a subnegotiation's payload. Terminal type names are at most 40 bytes
/// (RFC 1091) and a window size is 4 (RFC 1073), 8 when every byte is escaped.
pub const DEFAULT_SUBNEGOTIATION_LIMIT: usize = 512;

/// A negotiation verb (RFC 855).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Will,
    Wont,
    Do,
    Dont,
}

impl Verb {
    pub fn byte(self) -> u8 {
        match self {
            Verb::Will => WILL,
            Verb::Wont => WONT,
            Verb::Do => DO,
            Verb::Dont => DONT,
        }
    }

    fn from_byte(byte: u8) -> Option<Verb> {
        match byte {
            WILL => Some(Verb::Will),
            WONT => Some(Verb::Wont),
            DO => Some(Verb::Do),
            DONT => Some(Verb::Dont),
            _ => None,
        }
    }
}

/// One decoded element of the stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Data bytes, `IAC IAC` already turned back into one `255`. Never empty.
    Data(Vec<u8>),
    /// A two-byte command other than negotiation and subnegotiation (`NOP`, `IP`, `AYT`, ...).
    Command(u8),
    /// `IAC WILL|WONT|DO|DONT option`.
    Negotiation(Verb, u8),
    /// `IAC SB option payload IAC SE`, payload unescaped.
    Subnegotiation(u8, Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Iac,
    Verb(Verb),
    SbOption,
    Sb(u8),
    SbIac(u8),
}

/// The streaming decoder of one direction.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    subnegotiation: Vec<u8>,
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_SUBNEGOTIATION_LIMIT)
    }
}

impl Decoder {
    /// A decoder that refuses subnegotiation payloads longer than `subnegotiation_limit`.
    pub fn new(subnegotiation_limit: usize) -> Self {
        Self {
            state: State::Data,
            subnegotiation: Vec::new(),
            limit: subnegotiation_limit,
        }
    }

    /// Decodes `input`, appending events to `events`. After an error the decoder is reset to
    /// plain data; callers end the connection.
    pub fn decode(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        let mut data: Vec<u8> = Vec::new();
        for &byte in input {
            match self.state {
                State::Data => {
                    if byte == IAC {
                        self.state = State::Iac;
                    } else {
                        data.push(byte);
                    }
                }
                State::Iac => {
                    self.state = State::Data;
                    if byte == IAC {
                        data.push(IAC);
                        continue;
                    }
                    flush_data(&mut data, events);
                    if let Some(verb) = Verb::from_byte(byte) {
                        self.state = State::Verb(verb);
                    } else if byte == SB {
                        self.state = State::SbOption;
                    } else {
                        events.push(Event::Command(byte));
                    }
                }
                State::Verb(verb) => {
                    self.state = State::Data;
                    events.push(Event::Negotiation(verb, byte));
                }
                State::SbOption => {
                    self.subnegotiation.clear();
                    self.state = State::Sb(byte);
                }
                State::Sb(option) => {
                    if byte == IAC {
                        self.state = State::SbIac(option);
                    } else {
                        self.push_subnegotiation(option, byte)?;
                    }
                }
                State::SbIac(option) => match byte {
                    IAC => {
                        self.state = State::Sb(option);
                        self.push_subnegotiation(option, IAC)?;
                    }
                    SE => {
                        self.state = State::Data;
                        let payload = std::mem::take(&mut self.subnegotiation);
                        events.push(Event::Subnegotiation(option, payload));
                    }
                    other => {
                        // An unterminated subnegotiation: drop it, read the command.
                        self.subnegotiation.clear();
                        self.state = State::Iac;
                        flush_data(&mut data, events);
                        self.decode(&[other], events)?;
                    }
                },
            }
        }
        flush_data(&mut data, events);
        Ok(())
    }

    /// Whether the stream may end here: `Err(Truncated)` when it stopped inside a command.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        match self.state {
            State::Data => Ok(()),
            _ => Err(ProtocolError::Truncated),
        }
    }

    fn push_subnegotiation(&mut self, option: u8, byte: u8) -> Result<(), ProtocolError> {
        if self.subnegotiation.len() >= self.limit {
            self.subnegotiation = Vec::new();
            self.state = State::Data;
            return Err(ProtocolError::SubnegotiationTooLong {
                option,
                limit: self.limit,
            });
        }
        self.subnegotiation.push(byte);
        Ok(())
    }
}

fn flush_data(data: &mut Vec<u8>, events: &mut Vec<Event>) {
    if !data.is_empty() {
        events.push(Event::Data(std::mem::take(data)));
    }
}

/// Appends `data` to `out` with every `255` doubled.
pub fn escape_data(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len());
    for &byte in data {
        if byte == IAC {
            out.push(IAC);
        }
        out.push(byte);
    }
}

/// Appends `text` as NVT data: a bare `\n` becomes `\r\n`, a bare `\r` becomes `\r\0`
/// (RFC 854), and `255` is escaped.
pub fn escape_text(text: &[u8], out: &mut Vec<u8>) {
    let mut previous = 0u8;
    for (index, &byte) in text.iter().enumerate() {
        match byte {
            b'\n' if previous != b'\r' => out.extend_from_slice(b"\r\n"),
            b'\r' if text.get(index + 1) != Some(&b'\n') => out.extend_from_slice(b"\r\0"),
            IAC => out.extend_from_slice(&[IAC, IAC]),
            other => out.push(other),
        }
        previous = byte;
    }
}

/// Appends `IAC verb option`.
pub fn encode_negotiation(verb: Verb, option: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[IAC, verb.byte(), option]);
}

/// Appends `IAC command`.
pub fn encode_command(command: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[IAC, command]);
}

/// Appends `IAC SB option payload IAC SE`, escaping `255` in the payload.
pub fn encode_subnegotiation(option: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[IAC, SB, option]);
    escape_data(payload, out);
    out.extend_from_slice(&[IAC, SE]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Event> {
        let mut decoder = Decoder::default();
        let mut events = Vec::new();
        decoder.decode(input, &mut events).unwrap();
        merge(events)
    }

    /// Adjacent data events joined, so split and whole inputs compare equal.
    fn merge(events: Vec<Event>) -> Vec<Event> {
        let mut merged: Vec<Event> = Vec::new();
        for event in events {
            match (merged.last_mut(), event) {
                (Some(Event::Data(previous)), Event::Data(more)) => previous.extend(more),
                (_, event) => merged.push(event),
            }
        }
        merged
    }

    #[test]
    fn decodes_data_commands_negotiation_and_subnegotiation() {
        let cases: Vec<(&[u8], Vec<Event>)> = vec![
            (b"plain", vec![Event::Data(b"plain".to_vec())]),
            (
                &[b'a', IAC, IAC, b'b'],
                vec![Event::Data(vec![b'a', 255, b'b'])],
            ),
            (
                &[b'x', IAC, WILL, 24, b'y'],
                vec![
                    Event::Data(b"x".to_vec()),
                    Event::Negotiation(Verb::Will, 24),
                    Event::Data(b"y".to_vec()),
                ],
            ),
            (&[IAC, DONT, 34], vec![Event::Negotiation(Verb::Dont, 34)]),
            (&[IAC, IP], vec![Event::Command(IP)]),
            (
                &[IAC, SB, 24, 1, IAC, SE],
                vec![Event::Subnegotiation(24, vec![1])],
            ),
            (
                &[IAC, SB, 31, 0, 80, IAC, IAC, 0, 24, IAC, SE],
                vec![Event::Subnegotiation(31, vec![0, 80, 255, 0, 24])],
            ),
            // An SB cut short by another command: the SB is dropped, the command kept.
            (
                &[IAC, SB, 24, 0, b'x', IAC, WILL, 1],
                vec![Event::Negotiation(Verb::Will, 1)],
            ),
            (&[IAC, SE], vec![Event::Command(SE)]),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_all(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn a_split_anywhere_decodes_the_same() {
        let input: &[u8] = &[
            b'a', IAC, IAC, IAC, WILL, 1, IAC, SB, 24, 0, b'v', IAC, IAC, IAC, SE, b'z', IAC, NOP,
        ];
        let whole = decode_all(input);
        for cut in 0..=input.len() {
            let mut decoder = Decoder::default();
            let mut events = Vec::new();
            decoder.decode(&input[..cut], &mut events).unwrap();
            decoder.decode(&input[cut..], &mut events).unwrap();
            assert_eq!(merge(events), whole, "cut at {cut}");
            decoder.finish().unwrap();
        }
    }

    #[test]
    fn a_stream_ending_inside_a_command_is_truncated() {
        for input in [
            &[IAC][..],
            &[IAC, WILL],
            &[IAC, SB],
            &[IAC, SB, 24, 1],
            &[IAC, SB, 24, IAC],
        ] {
            let mut decoder = Decoder::default();
            decoder.decode(input, &mut Vec::new()).unwrap();
            assert_eq!(
                decoder.finish(),
                Err(ProtocolError::Truncated),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn a_subnegotiation_without_end_stops_at_the_bound() {
        let mut decoder = Decoder::new(16);
        let mut events = Vec::new();
        decoder.decode(&[IAC, SB, 24], &mut events).unwrap();
        // Fed a byte at a time, forever: the error comes at the bound, memory stays small.
        let mut error = None;
        for round in 0..1000 {
            if let Err(found) = decoder.decode(b"A", &mut events) {
                error = Some((round, found));
                break;
            }
        }
        assert_eq!(
            error,
            Some((
                16,
                ProtocolError::SubnegotiationTooLong {
                    option: 24,
                    limit: 16
                }
            ))
        );
        assert!(events.is_empty());
        // Escaped bytes count once each: 16 escaped 255s fit.
        let mut input = vec![IAC, SB, 31];
        input.extend(std::iter::repeat_n([IAC, IAC], 16).flatten());
        input.extend([IAC, SE]);
        let mut decoder = Decoder::new(16);
        let mut events = Vec::new();
        decoder.decode(&input, &mut events).unwrap();
        assert_eq!(events, vec![Event::Subnegotiation(31, vec![255; 16])]);
    }

    #[test]
    fn escaping_round_trips() {
        let data: Vec<u8> = (0..=255).chain([255, 255, 0, 255]).collect();
        let mut wire = Vec::new();
        escape_data(&data, &mut wire);
        assert_eq!(
            wire.len(),
            data.len() + data.iter().filter(|&&b| b == IAC).count()
        );
        assert_eq!(decode_all(&wire), vec![Event::Data(data)]);

        let payload = [255u8, 0, 255, 255, 7];
        let mut wire = Vec::new();
        encode_subnegotiation(31, &payload, &mut wire);
        assert_eq!(
            decode_all(&wire),
            vec![Event::Subnegotiation(31, payload.to_vec())]
        );
    }

    #[test]
    fn text_follows_the_nvt_end_of_line() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"a\nb", b"a\r\nb"),
            (b"a\r\nb", b"a\r\nb"),
            (b"a\rb", b"a\r\0b"),
            (&[b'x', 255], &[b'x', 255, 255]),
        ];
        for (text, wire) in cases {
            let mut out = Vec::new();
            escape_text(text, &mut out);
            assert_eq!(out, wire, "text {text:?}");
        }
    }

    /// A small deterministic generator (xorshift), so the property test needs no dependency.
    struct Random(u64);
    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn byte(&mut self) -> u8 {
            // Bias towards the interesting bytes.
            match self.next() % 4 {
                0 => IAC,
                1 => 240 + (self.next() % 16) as u8,
                _ => self.next() as u8,
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_and_memory_stays_bounded() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let length = (random.next() % 300) as usize;
            let input: Vec<u8> = (0..length).map(|_| random.byte()).collect();
            let mut decoder = Decoder::new(32);
            let mut events = Vec::new();
            let mut offset = 0;
            while offset < input.len() {
                let step = 1 + (random.next() % 17) as usize;
                let end = (offset + step).min(input.len());
                if decoder.decode(&input[offset..end], &mut events).is_err() {
                    break;
                }
                assert!(decoder.subnegotiation.len() <= 32);
                offset = end;
            }
            let _ = decoder.finish();
            for event in &events {
                if let Event::Subnegotiation(_, payload) = event {
                    assert!(payload.len() <= 32);
                }
            }
        }
    }

    #[test]
    fn random_data_round_trips_through_escape_and_decode() {
        let mut random = Random(12345);
        for _ in 0..2000 {
            let length = (random.next() % 200) as usize;
            let data: Vec<u8> = (0..length).map(|_| random.byte()).collect();
            let mut wire = Vec::new();
            escape_data(&data, &mut wire);
            let mut decoder = Decoder::default();
            let mut events = Vec::new();
            let mut offset = 0;
            while offset < wire.len() {
                let end = (offset + 1 + (random.next() % 9) as usize).min(wire.len());
                decoder.decode(&wire[offset..end], &mut events).unwrap();
                offset = end;
            }
            decoder.finish().unwrap();
            let decoded: Vec<u8> = events
                .into_iter()
                .flat_map(|event| match event {
                    Event::Data(bytes) => bytes,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(decoded, data);
        }
    }
}
