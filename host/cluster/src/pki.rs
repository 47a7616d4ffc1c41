//! The cluster's certificates: the CA a control node makes once, the serving certificate a
//! control node issues itself at every start, the certificates it issues to nodes at a join, and
//! the thumbprints operators compare.

use crate::ClusterError;
use base64::Engine;
use gatehouse_core::SecretString;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm,
};
use sha2::Digest;
use std::fmt;

const CA_COMMON_NAME: &str = "Gatehouse cluster CA";

/// `SHA256:` and the unpadded base64 of a SHA-256: of a CA's public key (what `node token`
/// shows and `join --thumbprint` pins) or of a node's certificate (its identity).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Thumbprint(String);

impl Thumbprint {
    const PREFIX: &'static str = "SHA256:";

    fn of(data: &[u8]) -> Self {
        let digest = sha2::Sha256::digest(data);
        Thumbprint(format!(
            "{}{}",
            Self::PREFIX,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        ))
    }

    /// The thumbprint of a whole DER certificate (a node's identity).
    pub fn of_certificate(der: &[u8]) -> Self {
        Self::of(der)
    }

    /// Parses what an operator typed: `SHA256:` and 43 characters of base64.
    pub fn parse(text: &str) -> Result<Self, ClusterError> {
        let bad = |why: &str| ClusterError::BadThumbprint(format!("`{text}` {why}"));
        let encoded = text
            .trim()
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| bad("does not start with `SHA256:`"))?;
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| bad("is not base64 after `SHA256:`"))?;
        if decoded.len() != 32 {
            return Err(bad("is not a SHA-256 thumbprint (43 base64 characters)"));
        }
        Ok(Thumbprint(format!("{}{encoded}", Self::PREFIX)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 thumbprint of a certificate's public key (its DER `SubjectPublicKeyInfo`), read
/// from the DER certificate. This is what pins the cluster CA: it survives re-issuing the CA
/// certificate with the same key.
pub fn public_key_thumbprint(certificate_der: &[u8]) -> Result<Thumbprint, ClusterError> {
    let spki = spki_of(certificate_der)
        .ok_or_else(|| ClusterError::Certificate("cannot read the certificate's key".into()))?;
    Ok(Thumbprint::of(&spki))
}

fn spki_of(certificate: &[u8]) -> Option<Vec<u8>> {
    use x509_cert::der::{Decode, Encode};
    let parsed = x509_cert::Certificate::from_der(certificate).ok()?;
    parsed
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()
}

/// The names (DNS names and IP addresses) a DER certificate is valid for.
pub fn certificate_names(certificate: &[u8]) -> Vec<String> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let Ok(parsed) = x509_cert::Certificate::from_der(certificate) else {
        return Vec::new();
    };
    let Ok(Some((_, san))) = parsed.tbs_certificate().get_extension::<SubjectAltName>() else {
        return Vec::new();
    };
    san.0
        .iter()
        .filter_map(|name| match name {
            GeneralName::DnsName(dns) => Some(dns.as_str().to_string()),
            GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                4 => <[u8; 4]>::try_from(ip.as_bytes())
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(ip.as_bytes())
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> ClusterError + '_ {
    move |e| ClusterError::Certificate(format!("{what}: {e}"))
}

fn ca_params() -> Result<CertificateParams, ClusterError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(rcgen_error("CA certificate parameters"))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// The cluster's certificate authority, held by control nodes (its key sealed by the vault at
/// rest; the binary does the sealing).
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: SecretString,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("thumbprint", &self.thumbprint().ok())
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Makes a new CA (ECDSA P-256).
    pub fn generate() -> Result<Self, ClusterError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(rcgen_error("CA key generation"))?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(rcgen_error("CA certificate"))?;
        let key_pem = SecretString::new(key.serialize_pem());
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(ca_params()?, key),
            key_pem,
        })
    }

    /// The CA from its certificate and key, as [`ClusterCa::cert_pem`] and
    /// [`ClusterCa::key_pem`] gave them.
    pub fn from_pem(cert_pem: &str, key_pem: &SecretString) -> Result<Self, ClusterError> {
        let key = KeyPair::from_pem(key_pem.expose()).map_err(rcgen_error("CA key"))?;
        let cert_der = pem_certificates(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| ClusterError::Certificate("no CA certificate in the PEM".into()))?;
        Ok(Self {
            issuer: Issuer::new(ca_params()?, key),
            cert_pem: cert_pem.to_string(),
            cert_der,
            key_pem: SecretString::new(key_pem.expose().to_string()),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key in PEM, for the caller to seal.
    pub fn key_pem(&self) -> &SecretString {
        &self.key_pem
    }

    /// What operators pin at a join.
    pub fn thumbprint(&self) -> Result<Thumbprint, ClusterError> {
        public_key_thumbprint(&self.cert_der)
    }

    /// A serving certificate for a control node's cluster port, for `names` (host names and IP
    /// addresses), with a fresh key that is never stored.
    pub fn issue_server(&self, names: &[String]) -> Result<IssuedKey, ClusterError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(rcgen_error("server key generation"))?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(rcgen_error("server names"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Gatehouse control node");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_error("server certificate"))?;
        Ok(IssuedKey {
            cert_der: cert.der().to_vec(),
            key_der: SecretBytesDer(key.serialize_der()),
        })
    }

    /// A client certificate for node `node_id` over the node's public key (an uncompressed
    /// P-256 point, as [`NodeKey::public_key`] gives it).
    pub fn issue_node(&self, node_id: &str, public_key: &[u8]) -> Result<Vec<u8>, ClusterError> {
        if public_key.len() != 65 || public_key.first() != Some(&4) {
            return Err(ClusterError::Certificate(
                "the node's public key is not an uncompressed P-256 point".into(),
            ));
        }
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(rcgen_error("node certificate parameters"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, "Gatehouse session node");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&RawP256(public_key.to_vec()), &self.issuer)
            .map_err(rcgen_error("node certificate"))?;
        Ok(cert.der().to_vec())
    }
}

/// A key the caller must keep private (DER PKCS#8), wiped when dropped.
pub struct SecretBytesDer(Vec<u8>);

impl SecretBytesDer {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytesDer {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}

impl fmt::Debug for SecretBytesDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A certificate with its private key.
#[derive(Debug)]
pub struct IssuedKey {
    pub cert_der: Vec<u8>,
    pub key_der: SecretBytesDer,
}

/// A node's public key as the CA signs it.
struct RawP256(Vec<u8>);

impl PublicKeyData for RawP256 {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// A node's own key pair, made when it joins and kept in its data directory (0600).
pub struct NodeKey {
    key: KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey([redacted])")
    }
}

impl NodeKey {
    pub fn generate() -> Result<Self, ClusterError> {
        Ok(Self {
            key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(rcgen_error("node key generation"))?,
        })
    }

    pub fn from_pem(pem: &SecretString) -> Result<Self, ClusterError> {
        Ok(Self {
            key: KeyPair::from_pem(pem.expose()).map_err(rcgen_error("node key"))?,
        })
    }

    pub fn to_pem(&self) -> SecretString {
        SecretString::new(self.key.serialize_pem())
    }

    pub fn to_der(&self) -> SecretBytesDer {
        SecretBytesDer(self.key.serialize_der())
    }

    /// The public key the CA certifies.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key_raw().to_vec()
    }
}

/// The DER certificates in a PEM text.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, ClusterError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| {
            c.map(|c| c.to_vec())
                .map_err(|e| ClusterError::Certificate(format!("bad PEM certificate: {e}")))
        })
        .collect()
}

/// One DER certificate as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_and_refuse() {
        let ca = ClusterCa::generate().unwrap();
        let pin = ca.thumbprint().unwrap();
        assert_eq!(Thumbprint::parse(pin.as_str()).unwrap(), pin);
        for bad in ["", "sha1:abc", "SHA256:not base64!", "SHA256:AAAA"] {
            assert!(Thumbprint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ca_reloads_from_pem_and_keeps_its_thumbprint() {
        let ca = ClusterCa::generate().unwrap();
        let again = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(ca.thumbprint().unwrap(), again.thumbprint().unwrap());
        // A node certificate issued by the reloaded CA names the node.
        let node = NodeKey::generate().unwrap();
        let cert = again.issue_node("sess-a", &node.public_key()).unwrap();
        assert!(cert.windows(6).any(|w| w == b"sess-a"));
        assert!(again.issue_node("sess-a", &[4; 10]).is_err());
    }

    #[test]
    fn pem_round_trip() {
        let ca = ClusterCa::generate().unwrap();
        let pem = certificate_pem(ca.cert_der());
        assert_eq!(
            pem_certificates(&pem).unwrap(),
            vec![ca.cert_der().to_vec()]
        );
    }

    #[test]
    fn server_certificates_carry_their_names() {
        let ca = ClusterCa::generate().unwrap();
        let issued = ca
            .issue_server(&["control.example".into(), "127.0.0.1".into()])
            .unwrap();
        assert_eq!(
            certificate_names(&issued.cert_der),
            vec!["control.example".to_string(), "127.0.0.1".to_string()]
        );
    }
}
