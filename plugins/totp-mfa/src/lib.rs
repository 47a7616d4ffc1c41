//! `totp-mfa`: an RFC 6238 second factor. The user's seed (base32) comes from the host secret
//! `<seed-prefix><gateway user>`; the code from the `otp=` pair of the in-band username or
//! from a question. A code that was already used is refused while it could still be valid.

use hmac::{Hmac, Mac};
use sha1::Sha1;

wit_bindgen::generate!({
    path: "../../wit",
    world: "gatehouse:plugin/aa-plugin@0.1.0",
});

use exports::gatehouse::plugin::aa::{Acceptance, Guest, Question, Verdict};
use gatehouse::plugin::types::{Connection, HostError, Pair, SessionEnd};
use gatehouse::plugin::{cache, clock, config, log, secrets};

struct TotpMfa;

fn config_integer(key: &str, default: i64) -> i64 {
    match config::get(key) {
        Some(config::Value::Integer(value)) => value,
        _ => default,
    }
}

fn config_text(key: &str, default: &str) -> String {
    match config::get(key) {
        Some(config::Value::Text(value)) => value,
        _ => default.to_owned(),
    }
}

/// RFC 4648 base32 (upper or lower case, padding and spaces ignored).
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u64 = 0;
    let mut bits = 0u32;
    for c in text.chars().filter(|c| *c != '=' && !c.is_whitespace()) {
        let value = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u64 - 'A' as u64,
            c @ '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// RFC 4226 HOTP.
fn hotp(key: &[u8], counter: u64, digits: u32) -> Option<String> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).ok()?;
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[hash.len() - 1] & 0x0f) as usize;
    let binary = (u32::from(hash[offset] & 0x7f) << 24)
        | (u32::from(hash[offset + 1]) << 16)
        | (u32::from(hash[offset + 2]) << 8)
        | u32::from(hash[offset + 3]);
    let code = binary % 10u32.pow(digits);
    Some(format!("{code:0width$}", width = digits as usize))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn find<'a>(pairs: &'a [Pair], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

fn deny(reason: String) -> Verdict {
    log::log(log::Level::Warn, &reason);
    Verdict::Deny(reason)
}

fn check(conn: Connection) -> Verdict {
    let digits = config_integer("digits", 6).clamp(6, 8) as u32;
    let period = config_integer("period", 30).clamp(15, 120) as u64;
    let skew = config_integer("skew", 1).clamp(0, 3) as u64;
    let prefix = config_text("seed-prefix", "totp-seed/");
    let user = conn.gateway_user.clone();

    let seed = match secrets::get(&format!("{prefix}{user}")) {
        Ok(seed) => seed,
        Err(HostError::NotFound(_)) => return deny(format!("no TOTP seed enrolled for `{user}`")),
        Err(error) => return deny(format!("cannot read the TOTP seed: {error:?}")),
    };
    let Some(key) = base32_decode(&seed) else {
        return deny(format!("the TOTP seed of `{user}` is not base32"));
    };

    let code = find(&conn.options, "otp").or_else(|| find(&conn.answers, "otp"));
    let Some(code) = code else {
        return Verdict::NeedInfo(Question {
            key: "otp".into(),
            prompt: config_text("prompt", "One-time code: "),
            echo: false,
        });
    };
    let code = code.trim();

    let now_step = clock::now_unix_ms() / 1000 / period;
    let matched = (now_step.saturating_sub(skew)..=now_step + skew).find(|step| {
        hotp(&key, *step, digits).is_some_and(|expected| constant_time_eq(&expected, code))
    });
    let Some(step) = matched else {
        return deny("wrong one-time code".into());
    };
    // Refuse a replay for as long as the code could still be accepted.
    let ttl = (period * (2 * skew + 2)) as u32;
    match cache::insert_new(&format!("used/{user}/{step}"), b"1", ttl) {
        Ok(true) => Verdict::Accept(Acceptance {
            rename_user: None,
            set_groups: None,
            audit: vec![Pair {
                key: "mfa".into(),
                value: "totp".into(),
            }],
            ticket: None,
        }),
        Ok(false) => deny("one-time code already used".into()),
        Err(error) => deny(format!("cannot record the used code: {error:?}")),
    }
}

impl Guest for TotpMfa {
    fn authenticate(conn: Connection) -> Verdict {
        check(conn)
    }

    fn authorize(_conn: Connection) -> Verdict {
        Verdict::Accept(Acceptance {
            rename_user: None,
            set_groups: None,
            audit: Vec::new(),
            ticket: None,
        })
    }

    fn session_ended(_conn: Connection, _end: SessionEnd) {}
}

export!(TotpMfa);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vectors() {
        // RFC 6238 appendix B, SHA-1, 8 digits.
        let key = b"12345678901234567890";
        for (time, expected) in [
            (59u64, "94287082"),
            (1111111109, "07081804"),
            (2000000000, "69279037"),
        ] {
            assert_eq!(hotp(key, time / 30, 8).as_deref(), Some(expected));
        }
        assert_eq!(
            base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").as_deref(),
            Some(&key[..])
        );
    }
}
