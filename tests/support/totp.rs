//! RFC 6238 codes for the TOTP plugin's tests: the seed given to the plugin and the code for now.

use sha1::{Digest, Sha1};
use std::time::{SystemTime, UNIX_EPOCH};

/// alice's TOTP seed, base32 ("12345678901234567890", the RFC 6238 test key).
pub const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
pub const KEY: &[u8] = b"12345678901234567890";

fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x36)
        .chain(message.iter().copied())
        .collect();
    let inner_hash = Sha1::digest(&inner);
    let outer: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(inner_hash.iter().copied())
        .collect();
    Sha1::digest(&outer).to_vec()
}

/// The RFC 6238 code for now (6 digits, 30 s steps).
pub fn totp_now() -> String {
    let step = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30;
    let mac = hmac_sha1(KEY, &step.to_be_bytes());
    let offset = (mac[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    format!("{:06}", value % 1_000_000)
}
