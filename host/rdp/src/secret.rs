//! The two secrets this crate handles: a gateway user's NT hash (what NTLM needs to check the
//! user) and the target account's login (what the gateway presents to the target). Both are
//! zeroized on drop and redacted in `Debug`.

use gatehouse_core::SecretString;
use md4::Digest;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// An NT hash: MD4 of the UTF-16LE password. NTLM treats it as password-equivalent, so it is held
/// like a password: sealed at rest by the caller, zeroized here, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct NtHash([u8; 16]);

impl NtHash {
    /// The NT hash of `password`.
    pub fn from_password(password: &str) -> Self {
        let utf16: Zeroizing<Vec<u8>> = Zeroizing::new(
            password
                .encode_utf16()
                .flat_map(|unit| unit.to_le_bytes())
                .collect(),
        );
        let digest = md4::Md4::digest(utf16.as_slice());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest);
        NtHash(bytes)
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        NtHash(bytes)
    }

    /// The hash itself, for sealing. Callers must not log it.
    pub fn expose(&self) -> &[u8; 16] {
        &self.0
    }

    /// The form sspi's NTLM accepts in place of a password (`$NTLM$:<hex>`).
    pub(crate) fn sspi_password(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(sspi::NTLM_HASH_PREFIX.len() + 32));
        text.push_str(sspi::NTLM_HASH_PREFIX);
        for byte in self.0 {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        text
    }
}

impl fmt::Debug for NtHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NtHash([redacted])")
    }
}

/// The account the gateway logs in to the target with: the vault's credential.
pub struct TargetLogin {
    /// The account name (`Administrator`, `alice`).
    pub username: String,
    /// The Windows domain, if the account is a domain account.
    pub domain: Option<String>,
    pub password: SecretString,
}

impl fmt::Debug for TargetLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetLogin")
            .field("username", &self.username)
            .field("domain", &self.domain)
            .field("password", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nt_hash_matches_the_published_vector() {
        // MS-NLMP 4.2.2.1.2: NTOWFv1("Password").
        let hash = NtHash::from_password("Password");
        let hex: String = hash.expose().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "a4f49c406510bdcab6824ee7c30fd852");
        assert_eq!(
            hash.sspi_password().as_str(),
            "$NTLM$:a4f49c406510bdcab6824ee7c30fd852"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let hash = NtHash::from_password("hunter2");
        assert_eq!(format!("{hash:?}"), "NtHash([redacted])");
        let login = TargetLogin {
            username: "Administrator".into(),
            domain: None,
            password: SecretString::new("hunter2".into()),
        };
        let shown = format!("{login:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Administrator"), "{shown}");
    }
}
