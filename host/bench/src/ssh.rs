//! SSH clients of the benchmarks: the OpenSSH client's options, and a russh client.

use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

/// OpenSSH client options shared by every path: no user config, no agent, no host-key prompts,
/// the same key exchange (the gateway's OpenSSH-compatible choice) and the given cipher.
pub fn client_options(cipher: &str) -> Vec<OsString> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
        "Compression=no",
        "-o",
        "KexAlgorithms=curve25519-sha256",
        "-o",
        "PreferredAuthentications=publickey",
        "-c",
    ]
    .into_iter()
    .map(OsString::from)
    .chain([OsString::from(cipher)])
    .collect()
}

/// A russh client handler that trusts every host key (loopback benchmarks only).
pub struct AcceptAnyHostKey;

impl russh::client::Handler for AcceptAnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Logs in to 127.0.0.1:`port` as `user` with the private key at `key`, with a russh client
/// (TCP_NODELAY, the given cipher, curve25519). `label` names the path in errors.
pub async fn russh_login(
    label: &str,
    port: u16,
    user: &str,
    key: &Path,
    cipher: &str,
) -> Result<russh::client::Handle<AcceptAnyHostKey>> {
    let cipher = match cipher {
        "aes256-gcm@openssh.com" => russh::cipher::AES_256_GCM,
        "aes128-gcm@openssh.com" => russh::cipher::AES_128_GCM,
        "chacha20-poly1305@openssh.com" => russh::cipher::CHACHA20_POLY1305,
        "aes256-ctr" => russh::cipher::AES_256_CTR,
        other => bail!("the russh client does not know cipher {other}"),
    };
    let config = russh::client::Config {
        nodelay: true,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Owned(vec![cipher]),
            kex: std::borrow::Cow::Borrowed(&[russh::kex::CURVE25519]),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut handle = russh::client::connect(
        Arc::new(config),
        (Ipv4Addr::LOCALHOST, port),
        AcceptAnyHostKey,
    )
    .await
    .with_context(|| format!("{label}: connecting"))?;
    let key = russh::keys::load_secret_key(key, None)?;
    let auth = handle
        .authenticate_publickey(
            user.to_string(),
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await?;
    if !auth.success() {
        bail!("{label}: publickey login refused");
    }
    Ok(handle)
}
