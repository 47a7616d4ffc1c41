//! Secret holders: zeroized on drop and redacted in `Debug`, so a secret never reaches a log by accident.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret string (a password). `Debug` prints `[redacted]`; memory is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

/// Secret bytes (a private key, a master key). `Debug` prints `[redacted]`; memory is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(value: Vec<u8>) -> Self {
        Self(value)
    }

    /// The secret itself. Callers must not log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let password = SecretString::new("hunter2".into());
        let key = SecretBytes::new(b"-----BEGIN".to_vec());
        assert_eq!(format!("{password:?}"), "SecretString([redacted])");
        assert_eq!(format!("{key:?}"), "SecretBytes([redacted; 10 bytes])");
        assert_eq!(password.expose(), "hunter2");
    }
}
