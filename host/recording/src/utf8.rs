//! Incremental UTF-8 decoding, because terminal bytes arrive in chunks that may split a character.

/// Decodes a byte stream chunk by chunk into text.
///
/// An incomplete sequence at the end of a chunk is held (at most 3 bytes) until the next chunk; invalid
/// bytes become U+FFFD exactly as [`String::from_utf8_lossy`] would replace them in the whole stream, so
/// the output does not depend on where the stream was split.
#[derive(Debug, Default, Clone)]
pub struct Utf8Decoder {
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8Decoder {
    /// A decoder with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of bytes held back waiting for the rest of a character (0 to 3).
    pub fn pending_len(&self) -> usize {
        self.pending_len
    }

    /// Decodes `input`, appending the text to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut String) {
        let input = self.complete_pending(input, out);
        self.decode_fresh(input, out);
    }

    /// Ends the stream: a held incomplete sequence becomes one U+FFFD.
    pub fn finish(&mut self, out: &mut String) {
        if self.pending_len > 0 {
            out.push(char::REPLACEMENT_CHARACTER);
            self.pending_len = 0;
        }
    }

    /// Joins the held bytes with the start of `input`; returns the part of `input` not yet consumed.
    fn complete_pending<'a>(&mut self, input: &'a [u8], out: &mut String) -> &'a [u8] {
        if self.pending_len == 0 || input.is_empty() {
            return input;
        }
        let held = self.pending_len;
        let taken = input.len().min(self.pending.len() - held);
        let mut joined = self.pending;
        joined[held..held + taken].copy_from_slice(&input[..taken]);
        let joined = &joined[..held + taken];
        self.pending_len = 0;
        let consumed = match std::str::from_utf8(joined) {
            Ok(text) => {
                out.push_str(text);
                taken
            }
            Err(error) if error.valid_up_to() > 0 => {
                // The held character is complete; anything after it is decoded from `input` again.
                let valid = error.valid_up_to();
                if let Ok(text) = std::str::from_utf8(&joined[..valid]) {
                    out.push_str(text);
                }
                valid.saturating_sub(held)
            }
            Err(error) => match error.error_len() {
                None => {
                    // Still incomplete: every byte of `input` was taken.
                    self.pending[..joined.len()].copy_from_slice(joined);
                    self.pending_len = joined.len();
                    taken
                }
                Some(invalid_len) => {
                    // The held bytes were a valid prefix, so the invalid part is exactly them.
                    out.push(char::REPLACEMENT_CHARACTER);
                    invalid_len.saturating_sub(held)
                }
            },
        };
        &input[consumed.min(input.len())..]
    }

    fn decode_fresh(&mut self, input: &[u8], out: &mut String) {
        // `utf8_chunks` splits at each maximal invalid sequence, as `from_utf8_lossy` does, in
        // one pass (binary data has an invalid byte every few bytes; restarting `from_utf8`
        // after each one cost a visible share of the gateway's CPU on exec uploads).
        let mut chunks = input.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            out.push_str(chunk.valid());
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            let incomplete =
                matches!(std::str::from_utf8(invalid), Err(e) if e.error_len().is_none());
            if chunks.peek().is_none() && incomplete && invalid.len() < self.pending.len() {
                // The start of a character whose rest is in the next chunk.
                self.pending[..invalid.len()].copy_from_slice(invalid);
                self.pending_len = invalid.len();
                return;
            }
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("ascii", b"hello, world\r\n".to_vec()),
            ("two-byte", "h\u{e9}llo".as_bytes().to_vec()),
            ("three-byte", "\u{20ac}\u{2500}\u{2502}".as_bytes().to_vec()),
            ("four-byte", "a\u{1f600}b\u{1f680}".as_bytes().to_vec()),
            (
                "mixed",
                "\x1b[31m\u{e9}\u{20ac}\u{1f600}\x1b[0m".as_bytes().to_vec(),
            ),
            ("lone continuation", b"a\x80b".to_vec()),
            ("bad lead", b"\xffa\xfe".to_vec()),
            ("truncated then ascii", b"\xe2\x82a\xf0\x9f\x98".to_vec()),
            ("overlong", b"\xc0\xaf\xe0\x80\xaf".to_vec()),
            ("surrogate", b"\xed\xa0\x80x".to_vec()),
            ("truncated at end", b"ok\xf0\x9f".to_vec()),
            ("bad second byte", b"\xe0\x41\xf0\x90\x41".to_vec()),
        ]
    }

    fn decode_in_pieces(pieces: &[&[u8]]) -> String {
        let mut decoder = Utf8Decoder::new();
        let mut out = String::new();
        for piece in pieces {
            decoder.decode(piece, &mut out);
            assert!(decoder.pending_len() <= 3);
        }
        decoder.finish(&mut out);
        out
    }

    #[test]
    fn one_split_anywhere_matches_lossy_decoding_of_the_whole() {
        for (name, bytes) in samples() {
            let expected = String::from_utf8_lossy(&bytes).into_owned();
            for split in 0..=bytes.len() {
                let (left, right) = bytes.split_at(split);
                assert_eq!(
                    decode_in_pieces(&[left, right]),
                    expected,
                    "{name} split at {split}"
                );
            }
        }
    }

    #[test]
    fn byte_by_byte_matches_lossy_decoding_of_the_whole() {
        for (name, bytes) in samples() {
            let expected = String::from_utf8_lossy(&bytes).into_owned();
            let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(decode_in_pieces(&pieces), expected, "{name}");
        }
    }

    #[test]
    fn two_splits_anywhere_match_lossy_decoding_of_the_whole() {
        for (name, bytes) in samples() {
            let expected = String::from_utf8_lossy(&bytes).into_owned();
            for first in 0..=bytes.len() {
                for second in first..=bytes.len() {
                    let pieces = [&bytes[..first], &bytes[first..second], &bytes[second..]];
                    assert_eq!(
                        decode_in_pieces(&pieces),
                        expected,
                        "{name} at {first},{second}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_incomplete_character_is_held_not_replaced() {
        let mut decoder = Utf8Decoder::new();
        let mut out = String::new();
        decoder.decode(b"x\xf0\x9f", &mut out);
        assert_eq!((out.as_str(), decoder.pending_len()), ("x", 2));
        decoder.decode(b"\x98\x80", &mut out);
        assert_eq!((out.as_str(), decoder.pending_len()), ("x\u{1f600}", 0));
    }
}
