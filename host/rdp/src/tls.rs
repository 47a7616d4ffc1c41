//! TLS on both legs, with rustls and aws-lc-rs: the gateway's certificate towards users, and
//! towards targets a verifier that pins the target's public key (trust on first use, then
//! enforced) while still checking the handshake signatures.

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use std::fmt;
use std::sync::{Arc, Mutex};
use x509_cert::der::{Decode, Encode};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("the gateway certificate chain is empty")]
    NoCertificate,
    #[error("the gateway certificate cannot be read: {0}")]
    BadCertificate(String),
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The parts of a certificate CredSSP and pinning need.
struct PublicKeyParts {
    /// The `subjectPublicKey` BIT STRING contents, which CredSSP binds to.
    subject_public_key: Vec<u8>,
    /// The DER `SubjectPublicKeyInfo`, which is pinned.
    spki_der: Vec<u8>,
}

fn public_key_parts(certificate: &CertificateDer<'_>) -> Result<PublicKeyParts, String> {
    let parsed = x509_cert::Certificate::from_der(certificate.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = parsed.tbs_certificate().subject_public_key_info();
    let subject_public_key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the subject public key is not a whole number of bytes")?
        .to_vec();
    let spki_der = spki
        .to_der()
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    Ok(PublicKeyParts {
        subject_public_key,
        spki_der,
    })
}

/// The gateway's TLS identity towards RDP clients, and the public key CredSSP binds to.
#[derive(Clone)]
pub struct GatewayTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) public_key: Vec<u8>,
    pin: CertificatePin,
}

impl GatewayTls {
    /// From a certificate chain (leaf first) and its private key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsSetupError> {
        let leaf = chain.first().ok_or(TlsSetupError::NoCertificate)?;
        let parts = public_key_parts(leaf).map_err(TlsSetupError::BadCertificate)?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(GatewayTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            public_key: parts.subject_public_key,
            pin: CertificatePin::of_spki(&parts.spki_der),
        })
    }

    /// The pin of the gateway's own public key (what a client could pin).
    pub fn pin(&self) -> &CertificatePin {
        &self.pin
    }
}

impl fmt::Debug for GatewayTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayTls")
            .field("pin", &self.pin)
            .finish()
    }
}

/// A pinned public key: `SHA256:` and the unpadded base64 of the SHA-256 of the certificate's
/// DER `SubjectPublicKeyInfo`. Pinning the key, not the certificate, survives the renewal of a
/// target's self-signed certificate with the same key; CredSSP binds to the key too.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CertificatePin(String);

impl CertificatePin {
    const PREFIX: &'static str = "SHA256:";

    fn of_spki(spki_der: &[u8]) -> Self {
        let digest = sha2::Sha256::digest(spki_der);
        CertificatePin(format!(
            "{}{}",
            Self::PREFIX,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        ))
    }

    /// The pin of a DER certificate's public key.
    pub fn of_certificate(certificate: &[u8]) -> Result<Self, String> {
        let parts = public_key_parts(&CertificateDer::from(certificate))?;
        Ok(Self::of_spki(&parts.spki_der))
    }

    /// Parses the text form (`SHA256:<base64>`), as stored beside an asset.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| format!("`{text}` does not start with `{}`", Self::PREFIX))?;
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| format!("`{text}` is not base64"))?;
        if decoded.len() != 32 {
            return Err(format!("`{text}` is not a SHA-256 digest"));
        }
        Ok(CertificatePin(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertificatePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CertificatePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the gateway verifies a target's TLS certificate (the RDP twin of SSH's host-key policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificatePolicy {
    /// Only this public key is accepted.
    Pinned(CertificatePin),
    /// The first key seen is recorded through [`PinRecorder`] and becomes pinned.
    TrustOnFirstUse,
}

/// What happened when a first-use pin was to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstUse {
    /// The presented key is now the asset's pin.
    Recorded,
    /// Another connection pinned a key first; the presented key must match it.
    AlreadyPinned(CertificatePin),
}

/// Records a trusted-on-first-use pin, atomically (the caller's store transaction): if the asset
/// was pinned meanwhile, it returns that pin instead of overwriting it.
pub trait PinRecorder: Send + Sync {
    /// Pins `presented` unless a key is pinned already (then says which); `Err` is why the pin
    /// could not be stored (the dial fails closed).
    fn record_first_use<'a>(&'a self, presented: &'a CertificatePin) -> PinFuture<'a>;
}

/// What [`PinRecorder::record_first_use`] returns (it may ask a control node).
pub type PinFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<FirstUse, String>> + Send + 'a>>;

/// Verifies the target's certificate against the pin in the handshake itself (a mismatch aborts
/// it), and the handshake signatures with the provider's algorithms (the target must hold the
/// key it presents). Chains and names are not checked: the pin is the trust anchor.
#[derive(Debug)]
pub(crate) struct PinningVerifier {
    expected: Option<CertificatePin>,
    provider: Arc<CryptoProvider>,
    presented: Mutex<Option<Result<CertificatePin, String>>>,
}

impl PinningVerifier {
    pub fn new(expected: Option<CertificatePin>) -> Self {
        PinningVerifier {
            expected,
            provider: provider(),
            presented: Mutex::new(None),
        }
    }

    /// The pin of the key the target presented (or why it could not be read).
    pub fn presented(&self) -> Option<Result<CertificatePin, String>> {
        self.presented.lock().ok().and_then(|slot| slot.clone())
    }

    pub fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, rustls::Error> {
        Ok(
            rustls::ClientConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(self.clone())
                .with_no_client_auth(),
        )
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = public_key_parts(end_entity).map(|p| CertificatePin::of_spki(&p.spki_der));
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(presented.clone());
        }
        match (presented, &self.expected) {
            (Err(_), _) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
            (Ok(presented), Some(expected)) if &presented != expected => {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            (Ok(_), _) => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The `subjectPublicKey` of a peer's leaf certificate, for CredSSP.
pub(crate) fn peer_public_key(
    certificates: Option<&[CertificateDer<'_>]>,
) -> Result<Vec<u8>, String> {
    let leaf = certificates
        .and_then(|c| c.first())
        .ok_or("the target presented no certificate")?;
    Ok(public_key_parts(leaf)?.subject_public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_round_trip_and_bad_pins_are_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["gw.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pin = CertificatePin::of_certificate(cert.der()).unwrap();
        assert!(pin.as_str().starts_with("SHA256:"));
        assert_eq!(CertificatePin::parse(pin.as_str()).unwrap(), pin);
        // A new certificate for the same key keeps the pin; another key changes it.
        let again = rcgen::CertificateParams::new(vec!["other.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(CertificatePin::of_certificate(again.der()).unwrap(), pin);
        let other_key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::CertificateParams::new(vec!["gw.test".into()])
            .unwrap()
            .self_signed(&other_key)
            .unwrap();
        assert_ne!(CertificatePin::of_certificate(other.der()).unwrap(), pin);

        for bad in ["", "sha1:abc", "SHA256:not base64!", "SHA256:AAAA"] {
            assert!(CertificatePin::parse(bad).is_err(), "{bad}");
        }
    }
}
