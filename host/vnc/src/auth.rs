//! Secrets and VNC Authentication (RFC 6143 section 7.2.2).
//!
//! [`Password`] holds a password (the vault's, towards the target; the user's gateway
//! password, from VeNCrypt Plain) in memory that is zeroed when dropped, with a `Debug` that
//! never shows it. [`vnc_auth_response`] is the classic challenge response: DES (the `des`
//! crate) of the 16-byte challenge, in two ECB blocks, keyed with the password's first 8
//! bytes, zero-padded, each byte's bits reversed (the reference implementation's key schedule
//! reads bits the other way round).

use des::Des;
use des::cipher::{Array, BlockCipherEncrypt, KeyInit};
use zeroize::{Zeroize, Zeroizing};

/// A password, zeroed on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(password: impl Into<String>) -> Password {
        Password(Zeroizing::new(password.into()))
    }

    /// The password itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl PartialEq for Password {
    /// Constant-time in the common length, so that comparing does not leak a prefix.
    fn eq(&self, other: &Password) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for Password {}

/// The 16-byte response to a VNC Authentication challenge. Only the password's first 8
/// bytes count (longer passwords are truncated, as every VNC server does).
pub fn vnc_auth_response(password: &Password, challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = Zeroizing::new([0u8; 8]);
    for (slot, byte) in key.iter_mut().zip(password.expose().as_bytes()) {
        *slot = byte.reverse_bits();
    }
    let cipher = Des::new(&Array::from(*key));
    let mut response = [0u8; 16];
    for (out, block) in response.chunks_exact_mut(8).zip(challenge.chunks_exact(8)) {
        let mut array = Array::<u8, _>::default();
        array.copy_from_slice(block);
        cipher.encrypt_block(&mut array);
        out.copy_from_slice(&array);
        array.zeroize();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with OpenSSL:
    /// `openssl enc -des-ecb -nopad -K <bit-reversed key> -provider legacy -provider default`.
    #[test]
    fn response_matches_an_independent_des() {
        let challenge: [u8; 16] = std::array::from_fn(|i| i as u8);
        let cases: [(&str, &str); 3] = [
            ("password", RESPONSE_PASSWORD),
            ("secret", RESPONSE_SECRET),
            ("longer than eight", RESPONSE_LONGER),
        ];
        for (password, expected) in cases {
            let response = vnc_auth_response(&Password::new(password), &challenge);
            let hex: String = response.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, expected, "password {password:?}");
        }
    }

    const RESPONSE_PASSWORD: &str = "b866924125c8eebb9debc1db61c538e2";
    const RESPONSE_SECRET: &str = "ee22539f33a5983ec12f9c2edbc995dd";
    const RESPONSE_LONGER: &str = "2b8dd6089fd1e9844f2889eeecc374d9";

    #[test]
    fn debug_is_redacted() {
        let shown = format!("{:?}", Password::new("hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
