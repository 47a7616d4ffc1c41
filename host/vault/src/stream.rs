//! Authenticated encryption of long byte streams, a frame at a time: XChaCha20-Poly1305 in the
//! STREAM construction (a 19-byte random nonce prefix, a big-endian 32-bit frame counter and a
//! last-frame flag in each nonce), so frames cannot be reordered, dropped or cut off at the end
//! without the opener noticing. The recordings encrypted at rest use it
//! (`gatehouse_recording::crypt`); the key and the framing of the file are theirs.

use crate::VaultError;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, Payload};

/// Bytes of the nonce prefix each stream starts with (random, stored beside the frames).
pub const NONCE_PREFIX: usize = 19;
/// Bytes of authentication tag each frame adds.
pub const TAG: usize = 16;

/// Seals the frames of one stream, in order.
pub struct FrameSealer {
    inner: EncryptorBE32<XChaCha20Poly1305>,
}

impl FrameSealer {
    /// A stream under `key` starting with the nonce `prefix` (never reuse a prefix with a key).
    pub fn new(key: &[u8; 32], prefix: &[u8; NONCE_PREFIX]) -> Self {
        let cipher = XChaCha20Poly1305::new(key.into());
        Self {
            inner: EncryptorBE32::from_aead(cipher, prefix.into()),
        }
    }

    /// Seals the next frame (not the last).
    pub fn seal_next(&mut self, aad: &[u8], frame: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.inner
            .encrypt_next(Payload { msg: frame, aad })
            .map_err(|_| VaultError::SealFailed)
    }

    /// Seals the last frame, which ends the stream.
    pub fn seal_last(self, aad: &[u8], frame: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.inner
            .encrypt_last(Payload { msg: frame, aad })
            .map_err(|_| VaultError::SealFailed)
    }
}

/// Opens the frames of one stream, in order.
pub struct FrameOpener {
    inner: DecryptorBE32<XChaCha20Poly1305>,
}

impl FrameOpener {
    /// The opener of the stream sealed under `key` with nonce `prefix`.
    pub fn new(key: &[u8; 32], prefix: &[u8; NONCE_PREFIX]) -> Self {
        let cipher = XChaCha20Poly1305::new(key.into());
        Self {
            inner: DecryptorBE32::from_aead(cipher, prefix.into()),
        }
    }

    /// Opens the next frame (not the last); fails unless it is that frame, untouched.
    pub fn open_next(&mut self, aad: &[u8], frame: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.inner
            .decrypt_next(Payload { msg: frame, aad })
            .map_err(|_| VaultError::OpenFailed)
    }

    /// Opens the last frame; fails unless it is the stream's last, untouched.
    pub fn open_last(self, aad: &[u8], frame: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.inner
            .decrypt_last(Payload { msg: frame, aad })
            .map_err(|_| VaultError::OpenFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_open_in_order_only() {
        let key = [7u8; 32];
        let prefix = [1u8; NONCE_PREFIX];
        let mut sealer = FrameSealer::new(&key, &prefix);
        let a = sealer.seal_next(b"ad", b"first").unwrap();
        let b = sealer.seal_next(b"ad", b"second").unwrap();
        let c = sealer.seal_last(b"ad", b"last").unwrap();
        assert_eq!(a.len(), 5 + TAG);
        let mut opener = FrameOpener::new(&key, &prefix);
        assert_eq!(opener.open_next(b"ad", &a).unwrap(), b"first");
        // Out of order, as the last, or with other associated data: refused.
        assert!(
            FrameOpener::new(&key, &prefix)
                .open_next(b"ad", &b)
                .is_err()
        );
        assert!(
            FrameOpener::new(&key, &prefix)
                .open_last(b"ad", &a)
                .is_err()
        );
        assert!(
            FrameOpener::new(&key, &prefix)
                .open_next(b"xx", &a)
                .is_err()
        );
        assert_eq!(opener.open_next(b"ad", &b).unwrap(), b"second");
        assert_eq!(opener.open_last(b"ad", &c).unwrap(), b"last");
    }
}
