//! RFC 3161 timestamps on sealed recordings, from a time stamping authority (TSA) named in
//! settings.json (`recordings.timestamp_url`; off when absent).
//!
//! Once a recording is sealed (`seal.rs`), the SHA-256 of the exact bytes of its
//! `manifest.json` is sent to the TSA in a TimeStampReq (version 1, a random 64-bit nonce,
//! certReq true). The answer must be granted, its token's TSTInfo must carry the same imprint and
//! nonce, and the token's CMS signature must verify with the TSA certificate it carries (chained
//! to `recordings.timestamp_ca_file` when one is set). The token (DER, a CMS ContentInfo) is then
//! kept beside the manifest as `manifest.json.tsr` and a `recording_timestamped` audit event
//! names the session and the TSA's genTime. `openssl ts -verify -data manifest.json -in
//! manifest.json.tsr -token_in -CAfile tsa.pem` checks it with stock tools.
//!
//! The TSA is never in sealing's way: it runs beside the seal loop, picks up every sealed
//! recording without a token (also those sealed before a TSA was configured), and when the TSA
//! cannot be reached or answers wrongly it warns once per outage and retries with a backoff.
//!
//! [`Checker`] is what `gatehouse audit verify` runs on each sealed recording's token.
//!
//! The ASN.1: CMS from RustCrypto's `cms` and X.509 from `x509-cert` (the der 0.8 generation
//! the workspace already builds); the few RFC 3161 structures are declared below with der's
//! derive (`x509-tsp` 0.1 is still on der 0.7 / x509-cert 0.2). Signatures and the TSA's chain
//! are checked by rustls-webpki with aws-lc-rs.

use anyhow::{Context, Result, anyhow, bail};
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{Any, BitString, ObjectIdentifier, OctetString, Uint};
use der::{Decode, Encode, Sequence, Tag, Tagged};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::{AuditKind, SessionRecord};
use gatehouse_recording::manifest;
use gatehouse_store::{SESSIONS, Store};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectKeyIdentifier};
use x509_cert::spki::AlgorithmIdentifierOwned;

/// The token, beside the manifest it stamps.
pub const TIMESTAMP: &str = "manifest.json.tsr";
/// How often the stamping loop looks for sealed recordings without a token.
const SCAN_EVERY: Duration = Duration::from_secs(3);
/// Tokens asked for per scan at most (a first start with many old recordings catches up).
const PER_SCAN: usize = 50;
/// The longest wait between attempts while the TSA is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One request, connection to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from a TSA.
const MAX_REPLY: usize = 1 << 20;
/// How long after sealing `audit verify` accepts a missing token before it warns.
pub const OVERDUE: Duration = Duration::from_secs(10 * 60);

/// settings.json `recordings`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSettings {
    /// The TSA (`http://` or `https://`; https is checked against the public web roots). Sealed
    /// recordings are timestamped when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_url: Option<TsaUrl>,
    /// PEM: the TSA's certificate or the CA it chains to. The TSA's tokens are checked against
    /// it when they arrive and by `audit verify`. An absolute path.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "absolute_path"
    )]
    pub timestamp_ca_file: Option<PathBuf>,
    /// Encrypt recordings at rest when they are sealed, with the recording key
    /// (`recording_key.rs`). Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypt: bool,
}

fn absolute_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = Option::<PathBuf>::deserialize(d)?;
    if let Some(path) = &path
        && !path.is_absolute()
    {
        return Err(serde::de::Error::custom(format!(
            "timestamp_ca_file `{}` must be an absolute path",
            path.display()
        )));
    }
    Ok(path)
}

/// A TSA's address, checked when settings.json is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TsaUrl {
    text: String,
    https: bool,
    host: String,
    port: u16,
    /// Path and query.
    target: String,
}

impl TryFrom<String> for TsaUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let uri: hyper::Uri = text
            .parse()
            .map_err(|e| format!("timestamp_url `{text}`: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "timestamp_url `{text}`: give an http:// or https:// URL"
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("timestamp_url `{text}`: no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "timestamp_url `{text}`: credentials in the URL are not supported"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(format!("timestamp_url `{text}`: no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        Ok(TsaUrl {
            text,
            https,
            host,
            port,
            target,
        })
    }
}

impl From<TsaUrl> for String {
    fn from(url: TsaUrl) -> String {
        url.text
    }
}

impl std::fmt::Display for TsaUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The `recordings` settings of the data directory holding `recordings` (its parent).
pub fn settings_for(recordings: &Path) -> Result<RecordingSettings> {
    let root = recordings
        .parent()
        .ok_or_else(|| anyhow!("`{}` is not in a data directory", recordings.display()))?;
    Ok(crate::datadir::DataDir::new(root.to_path_buf())
        .load_settings()?
        .recordings
        .unwrap_or_default())
}

/// The certificates of a PEM file.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("timestamp_ca_file `{}`", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("timestamp_ca_file `{}`: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "timestamp_ca_file `{}` holds no PEM certificate",
            path.display()
        );
    }
    Ok(certs)
}

// ---------------------------------------------------------------------------------------------
// RFC 3161 structures (der derive)
// ---------------------------------------------------------------------------------------------

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_CERTIFICATE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");
const ID_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
/// id-kp-timeStamping's DER value, for rustls-webpki's EKU check.
const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

/// ```text
/// MessageImprint ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, hashedMessage OCTET STRING }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct MessageImprint {
    hash_algorithm: AlgorithmIdentifierOwned,
    hashed_message: OctetString,
}

/// What is sent (reqPolicy and extensions are not used).
///
/// ```text
/// TimeStampReq ::= SEQUENCE { version INTEGER { v1(1) }, messageImprint MessageImprint,
///   reqPolicy TSAPolicyId OPTIONAL, nonce INTEGER OPTIONAL, certReq BOOLEAN DEFAULT FALSE,
///   extensions [0] IMPLICIT Extensions OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TimeStampReq {
    version: u8,
    message_imprint: MessageImprint,
    #[asn1(optional = "true")]
    nonce: Option<Uint>,
    #[asn1(default = "Default::default")]
    cert_req: bool,
}

/// ```text
/// TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken TimeStampToken OPTIONAL }
/// ```
/// The token is kept as it came (its exact bytes are stored).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TimeStampResp {
    status: PkiStatusInfo,
    #[asn1(optional = "true")]
    time_stamp_token: Option<Any>,
}

/// ```text
/// PKIStatusInfo ::= SEQUENCE { status PKIStatus, statusString PKIFreeText OPTIONAL,
///   failInfo PKIFailureInfo OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct PkiStatusInfo {
    status: u32,
    #[asn1(optional = "true")]
    status_string: Option<Vec<String>>,
    #[asn1(optional = "true")]
    fail_info: Option<BitString>,
}

/// ```text
/// TSTInfo ::= SEQUENCE { version INTEGER { v1(1) }, policy TSAPolicyId,
///   messageImprint MessageImprint, serialNumber INTEGER, genTime GeneralizedTime,
///   accuracy Accuracy OPTIONAL, ordering BOOLEAN DEFAULT FALSE, nonce INTEGER OPTIONAL,
///   tsa [0] GeneralName OPTIONAL, extensions [1] IMPLICIT Extensions OPTIONAL }
/// ```
/// genTime is read as it is: TSAs may give fractions of a second, which der's
/// `GeneralizedTime` does not take.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TstInfo {
    version: u8,
    policy: ObjectIdentifier,
    message_imprint: MessageImprint,
    serial_number: Uint,
    gen_time: Any,
    #[asn1(optional = "true")]
    accuracy: Option<Accuracy>,
    #[asn1(default = "Default::default")]
    ordering: bool,
    #[asn1(optional = "true")]
    nonce: Option<Uint>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    tsa: Option<Any>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    extensions: Option<x509_cert::ext::Extensions>,
}

/// ```text
/// Accuracy ::= SEQUENCE { seconds INTEGER OPTIONAL, millis [0] INTEGER (1..999) OPTIONAL,
///   micros [1] INTEGER (1..999) OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct Accuracy {
    #[asn1(optional = "true")]
    seconds: Option<u64>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    millis: Option<u16>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    micros: Option<u16>,
}

/// RFC 5035: `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies
/// SEQUENCE OF PolicyInformation OPTIONAL }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

/// `ESSCertIDv2 ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier DEFAULT {algorithm
/// id-sha256}, certHash OCTET STRING, issuerSerial IssuerSerial OPTIONAL }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

/// RFC 2634: `SigningCertificate ::= SEQUENCE { certs SEQUENCE OF ESSCertID, policies ...
/// OPTIONAL }`, `ESSCertID ::= SEQUENCE { certHash OCTET STRING (SHA-1), issuerSerial
/// IssuerSerial OPTIONAL }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertId {
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: &ObjectIdentifier) -> Option<Hash> {
        match *oid {
            ID_SHA1 => Some(Hash::Sha1),
            ID_SHA256 => Some(Hash::Sha256),
            ID_SHA384 => Some(Hash::Sha384),
            ID_SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn digest(self, bytes: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            Hash::Sha1 => {
                use sha1::Digest as _;
                sha1::Sha1::digest(bytes).to_vec()
            }
            Hash::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(bytes).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(bytes).to_vec(),
        }
    }
}

fn sha256_imprint(data: &[u8]) -> Result<MessageImprint> {
    Ok(MessageImprint {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: ID_SHA256,
            parameters: None,
        },
        hashed_message: OctetString::new(Hash::Sha256.digest(data))?,
    })
}

/// A TimeStampReq for `data` (its SHA-256) with `nonce`, certReq set.
fn request(data: &[u8], nonce: u64) -> Result<Vec<u8>> {
    Ok(TimeStampReq {
        version: 1,
        message_imprint: sha256_imprint(data)?,
        nonce: Some(Uint::new(&nonce.to_be_bytes())?),
        cert_req: true,
    }
    .to_der()?)
}

/// Big-endian bytes without leading zeros.
fn trimmed(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// genTime as RFC 3339 (`2026-12-07T10:12:13.25Z`) and as a time.
fn gen_time(value: &Any) -> Result<(String, SystemTime), String> {
    if value.tag() != Tag::GeneralizedTime {
        return Err(format!(
            "its genTime is a {}, not a GeneralizedTime",
            value.tag()
        ));
    }
    let text = std::str::from_utf8(value.value()).map_err(|_| "its genTime is not text")?;
    let bad = || format!("its genTime `{text}` is not YYYYMMDDHHMMSS[.f]Z");
    let body = text.strip_suffix('Z').ok_or_else(bad)?;
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() != 14 || !digits(whole) || fraction.is_some_and(|f| !digits(f) || f.len() > 9) {
        return Err(bad());
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}{}Z",
        &whole[0..4],
        &whole[4..6],
        &whole[6..8],
        &whole[8..10],
        &whole[10..12],
        &whole[12..14],
        fraction.map(|f| format!(".{f}")).unwrap_or_default()
    );
    let at = humantime::parse_rfc3339(&rfc3339).map_err(|_| bad())?;
    Ok((rfc3339, at))
}

// ---------------------------------------------------------------------------------------------
// Checking a token
// ---------------------------------------------------------------------------------------------

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// The TSA's genTime, RFC 3339.
    pub gen_time: String,
    pub gen_time_at: SystemTime,
    /// The token's serial number, hex.
    pub serial: String,
    /// The TSA's policy OID.
    pub policy: String,
    /// The signer's certificate subject.
    pub tsa: String,
    /// Whether the signer's certificate was checked against CA certificates.
    pub chained: bool,
    nonce: Option<Vec<u8>>,
}

/// Why a token does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The token is sound but stamps other data (its imprint is not this data's hash).
    Mismatch,
    /// The token is damaged, or its signature or its TSA certificate do not hold.
    Invalid(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Mismatch => f.write_str("its imprint is not the data's hash"),
            TokenError::Invalid(why) => f.write_str(why),
        }
    }
}

fn invalid(why: impl Into<String>) -> TokenError {
    TokenError::Invalid(why.into())
}

/// The signature algorithms a SignerInfo may mean, tried in turn against the certificate's key.
fn signature_algorithms(
    signature: &ObjectIdentifier,
    digest: Hash,
) -> Vec<&'static dyn rustls::pki_types::SignatureVerificationAlgorithm> {
    use webpki::aws_lc_rs as alg;
    let rsa = |hash| match hash {
        Hash::Sha256 => vec![alg::RSA_PKCS1_2048_8192_SHA256],
        Hash::Sha384 => vec![alg::RSA_PKCS1_2048_8192_SHA384],
        Hash::Sha512 => vec![alg::RSA_PKCS1_2048_8192_SHA512],
        Hash::Sha1 => vec![],
    };
    let ecdsa = |hash| match hash {
        Hash::Sha256 => vec![
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P521_SHA256,
        ],
        Hash::Sha384 => vec![
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA384,
            alg::ECDSA_P521_SHA384,
        ],
        Hash::Sha512 => vec![
            alg::ECDSA_P256_SHA512,
            alg::ECDSA_P384_SHA512,
            alg::ECDSA_P521_SHA512,
        ],
        Hash::Sha1 => vec![],
    };
    match *signature {
        RSA_ENCRYPTION => rsa(digest),
        SHA256_WITH_RSA => rsa(Hash::Sha256),
        SHA384_WITH_RSA => rsa(Hash::Sha384),
        SHA512_WITH_RSA => rsa(Hash::Sha512),
        EC_PUBLIC_KEY => ecdsa(digest),
        ECDSA_WITH_SHA256 => ecdsa(Hash::Sha256),
        ECDSA_WITH_SHA384 => ecdsa(Hash::Sha384),
        ECDSA_WITH_SHA512 => ecdsa(Hash::Sha512),
        ID_ED25519 => vec![alg::ED25519],
        _ => vec![],
    }
}

/// Whether `cert` is the one `sid` names.
fn identifies(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    let tbs = cert.tbs_certificate();
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => {
            tbs.issuer() == &id.issuer && tbs.serial_number() == &id.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(id) => tbs
            .get_extension::<SubjectKeyIdentifier>()
            .ok()
            .flatten()
            .is_some_and(|(_, ski)| ski.0 == id.0),
    }
}

/// The one value of signed attribute `oid`.
fn attribute(info: &SignerInfo, oid: ObjectIdentifier) -> Result<&Any, TokenError> {
    let attrs = info
        .signed_attrs
        .as_ref()
        .ok_or_else(|| invalid("its signature has no signed attributes"))?;
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    let (Some(attr), None) = (found.next(), found.next()) else {
        return Err(invalid(format!("its signed attributes lack one `{oid}`")));
    };
    let mut values = attr.values.iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value),
        _ => Err(invalid(format!(
            "its signed attribute `{oid}` is not one value"
        ))),
    }
}

fn decode_any<T: for<'a> Decode<'a>>(value: &Any, what: &str) -> Result<T, TokenError> {
    value
        .to_der()
        .ok()
        .and_then(|der| T::from_der(&der).ok())
        .ok_or_else(|| invalid(format!("its {what} is unreadable")))
}

/// Checks an RFC 3161 token (a DER CMS ContentInfo) for `data`: the imprint is the data's hash,
/// the CMS signature verifies with the signer certificate the token carries (its content type
/// and message digest attributes match the TSTInfo, its ESS signing-certificate attribute names
/// that certificate), the certificate is for time stamping (extended key usage timeStamping,
/// critical, alone) and valid at genTime, and, with `anchors`, it is one of them or chains to
/// them at genTime (rustls-webpki). Revocation is not checked.
pub fn verify_token(
    token: &[u8],
    data: &[u8],
    anchors: Option<&[CertificateDer<'static>]>,
) -> Result<TokenInfo, TokenError> {
    let content =
        ContentInfo::from_der(token).map_err(|e| invalid(format!("it is not a CMS token: {e}")))?;
    if content.content_type != ID_SIGNED_DATA {
        return Err(invalid("it is not CMS signed data"));
    }
    let signed: SignedData = decode_any(&content.content, "signed data")?;
    if signed.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(invalid("it does not hold a TSTInfo"));
    }
    let econtent = signed
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| invalid("its TSTInfo is missing"))?;
    let tst_der: OctetString = decode_any(econtent, "TSTInfo")?;
    let tst_der = tst_der.as_bytes();
    let tst = TstInfo::from_der(tst_der)
        .map_err(|e| invalid(format!("its TSTInfo is unreadable: {e}")))?;
    if tst.version != 1 {
        return Err(invalid(format!("its TSTInfo is version {}", tst.version)));
    }
    let (gen_time, gen_time_at) = gen_time(&tst.gen_time).map_err(TokenError::Invalid)?;

    // The imprint: the data as it is now.
    let imprint_hash = Hash::from_oid(&tst.message_imprint.hash_algorithm.oid)
        .filter(|h| *h != Hash::Sha1)
        .ok_or_else(|| {
            invalid(format!(
                "its imprint's hash `{}` is not SHA-256, -384 or -512",
                tst.message_imprint.hash_algorithm.oid
            ))
        })?;
    if imprint_hash.digest(data) != tst.message_imprint.hashed_message.as_bytes() {
        return Err(TokenError::Mismatch);
    }

    // The signer and its certificate.
    let mut infos = signed.signer_infos.0.iter();
    let (Some(info), None) = (infos.next(), infos.next()) else {
        return Err(invalid("it does not have exactly one signer"));
    };
    let certs: Vec<&Certificate> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect();
    let signer = certs
        .iter()
        .find(|cert| identifies(&info.sid, cert))
        .ok_or_else(|| invalid("it does not carry its signer's certificate"))?;
    let signer_der = signer
        .to_der()
        .map_err(|e| invalid(format!("its signer's certificate: {e}")))?;
    let digest = Hash::from_oid(&info.digest_alg.oid).ok_or_else(|| {
        invalid(format!(
            "its signer's digest algorithm `{}` is not supported",
            info.digest_alg.oid
        ))
    })?;

    // Signed attributes: content type, message digest, the signing certificate (RFC 3161 2.4.1).
    let content_type: ObjectIdentifier =
        decode_any(attribute(info, ID_CONTENT_TYPE)?, "content type attribute")?;
    if content_type != ID_CT_TST_INFO {
        return Err(invalid("its signed content type is not TSTInfo"));
    }
    let message_digest: OctetString = decode_any(
        attribute(info, ID_MESSAGE_DIGEST)?,
        "message digest attribute",
    )?;
    if message_digest.as_bytes() != digest.digest(tst_der) {
        return Err(invalid(
            "its signed message digest is not the TSTInfo's (the TSTInfo was changed)",
        ));
    }
    let names_signer = match attribute(info, ID_SIGNING_CERTIFICATE_V2) {
        Ok(value) => {
            let v2: SigningCertificateV2 = decode_any(value, "signing certificate attribute")?;
            let first = v2
                .certs
                .first()
                .ok_or_else(|| invalid("its signing certificate attribute is empty"))?;
            let hash = match &first.hash_algorithm {
                None => Hash::Sha256,
                Some(alg) => Hash::from_oid(&alg.oid).ok_or_else(|| {
                    invalid(format!(
                        "its signing certificate attribute's hash `{}` is not supported",
                        alg.oid
                    ))
                })?,
            };
            hash.digest(&signer_der) == first.cert_hash.as_bytes()
        }
        Err(_) => {
            let v1: SigningCertificate = decode_any(
                attribute(info, ID_SIGNING_CERTIFICATE).map_err(|_| {
                    invalid("it has no signing certificate attribute (RFC 3161 2.4.1)")
                })?,
                "signing certificate attribute",
            )?;
            let first = v1
                .certs
                .first()
                .ok_or_else(|| invalid("its signing certificate attribute is empty"))?;
            Hash::Sha1.digest(&signer_der) == first.cert_hash.as_bytes()
        }
    };
    if !names_signer {
        return Err(invalid(
            "its signing certificate attribute does not name the certificate that signed it",
        ));
    }

    // The signature over the signed attributes (DER, as a SET OF).
    let signed_attrs = info
        .signed_attrs
        .as_ref()
        .ok_or_else(|| invalid("its signature has no signed attributes"))?
        .to_der()
        .map_err(|e| invalid(format!("its signed attributes: {e}")))?;
    let signer_cert = CertificateDer::from(signer_der.clone());
    let end_entity = webpki::EndEntityCert::try_from(&signer_cert)
        .map_err(|e| invalid(format!("its signer's certificate is unreadable: {e}")))?;
    let algorithms = signature_algorithms(&info.signature_algorithm.oid, digest);
    if algorithms.is_empty() {
        return Err(invalid(format!(
            "its signature algorithm `{}` is not supported",
            info.signature_algorithm.oid
        )));
    }
    let signature_holds = algorithms.iter().any(|alg| {
        end_entity
            .verify_signature(*alg, &signed_attrs, info.signature.as_bytes())
            .is_ok()
    });
    if !signature_holds {
        return Err(invalid(
            "its signature does not verify with the TSA certificate it carries",
        ));
    }

    // The certificate: for time stamping, valid at genTime, and (with anchors) trusted.
    let tbs = signer.tbs_certificate();
    match tbs.get_extension::<ExtendedKeyUsage>() {
        Ok(Some((true, eku))) if eku.0 == [ID_KP_TIME_STAMPING] => {}
        _ => {
            return Err(invalid(
                "its TSA certificate's extended key usage is not timeStamping alone, critical",
            ));
        }
    }
    let validity = tbs.validity();
    if gen_time_at < validity.not_before.to_system_time()
        || gen_time_at > validity.not_after.to_system_time()
    {
        return Err(invalid(format!(
            "its TSA certificate was not valid at its genTime {gen_time}"
        )));
    }
    let chained = match anchors {
        None => false,
        Some(anchors) => {
            if !anchors.iter().any(|a| a.as_ref() == signer_der.as_slice()) {
                let trusted = anchors
                    .iter()
                    .filter_map(|a| webpki::anchor_from_trusted_cert(a).ok())
                    .collect::<Vec<_>>();
                let intermediates = certs
                    .iter()
                    .filter_map(|c| c.to_der().ok())
                    .filter(|der| der != &signer_der)
                    .map(CertificateDer::from)
                    .collect::<Vec<_>>();
                let at = gen_time_at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                end_entity
                    .verify_for_usage(
                        webpki::ALL_VERIFICATION_ALGS,
                        &trusted,
                        &intermediates,
                        UnixTime::since_unix_epoch(at),
                        webpki::KeyUsage::required(EKU_TIME_STAMPING),
                        None,
                        None,
                    )
                    .map_err(|e| {
                        invalid(format!(
                            "its TSA certificate ({}) does not chain to timestamp_ca_file: {e}",
                            tbs.subject()
                        ))
                    })?;
            }
            true
        }
    };
    Ok(TokenInfo {
        gen_time,
        gen_time_at,
        serial: hex(tst.serial_number.as_bytes()),
        policy: tst.policy.to_string(),
        tsa: tbs.subject().to_string(),
        chained,
        nonce: tst.nonce.map(|n| trimmed(n.as_bytes()).to_vec()),
    })
}

/// Reads a TimeStampResp: granted (or granted with modifications), with a token for `data`
/// carrying `nonce` that verifies (with `anchors` when set). The token's bytes and what it says.
fn accept_reply(
    reply: &[u8],
    data: &[u8],
    nonce: u64,
    anchors: Option<&[CertificateDer<'static>]>,
) -> Result<(Vec<u8>, TokenInfo)> {
    let resp = TimeStampResp::from_der(reply)
        .map_err(|e| anyhow!("the TSA's answer is unreadable: {e}"))?;
    if resp.status.status > 1 {
        let text = resp
            .status
            .status_string
            .map(|s| s.join("; "))
            .filter(|s| !s.is_empty())
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        let fail = resp
            .status
            .fail_info
            .map(|bits| format!(" (failInfo bits {})", hex(bits.raw_bytes())))
            .unwrap_or_default();
        bail!(
            "the TSA refused (status {}){text}{fail}",
            resp.status.status
        );
    }
    let token = resp
        .time_stamp_token
        .ok_or_else(|| anyhow!("the TSA granted the request but sent no token"))?
        .to_der()?;
    let info = verify_token(&token, data, anchors).map_err(|e| match e {
        TokenError::Mismatch => anyhow!("the TSA's token stamps another hash than the one sent"),
        TokenError::Invalid(why) => anyhow!("the TSA's token does not hold: {why}"),
    })?;
    if info.nonce.as_deref() != Some(trimmed(&nonce.to_be_bytes())) {
        bail!("the TSA's token does not carry the nonce sent");
    }
    Ok((token, info))
}

// ---------------------------------------------------------------------------------------------
// Asking the TSA
// ---------------------------------------------------------------------------------------------

/// Aborts a spawned task when dropped (the connection driver of a request that timed out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One POST of a TimeStampReq; the answer's bytes.
async fn post(url: &TsaUrl, tls: &Arc<rustls::ClientConfig>, query: Vec<u8>) -> Result<Vec<u8>> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .with_context(|| format!("connecting to {}:{}", url.host, url.port))?;
        if url.https {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| anyhow!("`{}` is not a valid server name", url.host))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .context("TLS with the TSA")?;
            exchange(url, hyper_util::rt::TokioIo::new(stream), query).await
        } else {
            exchange(url, hyper_util::rt::TokioIo::new(tcp), query).await
        }
    })
    .await
    .map_err(|_| anyhow!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))?
}

async fn exchange<T>(url: &TsaUrl, io: T, query: Vec<u8>) -> Result<Vec<u8>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let default_port = if url.https { 443 } else { 80 };
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let host = if url.port == default_port {
        host
    } else {
        format!("{host}:{}", url.port)
    };
    let request = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(url.target.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/timestamp-query")
        .header(hyper::header::ACCEPT, "application/timestamp-reply")
        .header(hyper::header::USER_AGENT, "gatehouse")
        .body(Full::new(Bytes::from(query)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = Limited::new(response.into_body(), MAX_REPLY)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the TSA's answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        bail!(
            "the TSA answered HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
        );
    }
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/timestamp-reply" {
        bail!("the TSA answered `{content_type}`, not application/timestamp-reply");
    }
    Ok(body.to_vec())
}

/// Timestamps one manifest: the token's bytes and what it says.
async fn stamp(
    url: &TsaUrl,
    tls: &Arc<rustls::ClientConfig>,
    anchors: Option<&[CertificateDer<'static>]>,
    manifest_bytes: &[u8],
) -> Result<(Vec<u8>, TokenInfo)> {
    let nonce: u64 = rand::random();
    let query = request(manifest_bytes, nonce)?;
    let reply = post(url, tls, query).await?;
    accept_reply(&reply, manifest_bytes, nonce, anchors)
}

// ---------------------------------------------------------------------------------------------
// The stamping loop
// ---------------------------------------------------------------------------------------------

/// Sealed recordings (a manifest) without a token, up to `limit`, skipping those in `done`.
fn unstamped(
    recordings: &Path,
    done: &mut HashSet<String>,
    limit: usize,
) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(recordings) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut due = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if done.contains(&id) || !entry.file_type()?.is_dir() {
            continue;
        }
        let dir = entry.path();
        if !dir.join(manifest::MANIFEST).exists() {
            continue;
        }
        if dir.join(TIMESTAMP).exists() {
            done.insert(id);
            continue;
        }
        due.push(id);
        if due.len() >= limit {
            break;
        }
    }
    Ok(due)
}

/// Writes the token beside the manifest (a `.part` file renamed into place), then audits it.
fn keep(
    store: &Store,
    auditor: &Auditor,
    url: &TsaUrl,
    dir: &Path,
    session: &str,
    manifest_bytes: &[u8],
    (token, info): &(Vec<u8>, TokenInfo),
) -> Result<()> {
    let partial = dir.join(format!("{TIMESTAMP}.part"));
    std::fs::write(&partial, token)?;
    std::fs::rename(&partial, dir.join(TIMESTAMP))?;
    let record: Option<SessionRecord> = store.get(&SESSIONS, session)?;
    let mut entry = Entry::new(
        AuditKind::RecordingTimestamped,
        format!(
            "recording of session {session} timestamped by {url}: genTime {}",
            info.gen_time
        ),
    )
    .session(session.to_string())
    .field("gen_time", info.gen_time.clone())
    .field("tsa", url.to_string())
    .field("tsa_certificate", info.tsa.clone())
    .field("serial", info.serial.clone())
    .field("policy", info.policy.clone())
    .field("manifest_sha256", manifest::sha256_hex(manifest_bytes))
    .field("token_sha256", manifest::sha256_hex(token));
    if let Some(record) = record {
        entry = entry.user(record.user.clone());
    }
    auditor.record(entry)?;
    Ok(())
}

/// Timestamps sealed recordings as they appear, until the process stops; returns at once when
/// no TSA is configured.
pub async fn stamp_loop(store: Arc<Store>, auditor: Auditor, recordings: PathBuf) {
    let settings = match settings_for(&recordings) {
        Ok(settings) => settings,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "recordings are not timestamped: settings.json");
            return;
        }
    };
    let Some(url) = settings.timestamp_url else {
        return;
    };
    let anchors = match settings.timestamp_ca_file.as_deref().map(read_ca_file) {
        None => None,
        Some(Ok(certs)) => Some(certs),
        Some(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "recordings are not timestamped");
            return;
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => Arc::new(builder.with_root_certificates(roots).with_no_client_auth()),
        Err(e) => {
            tracing::error!(error = %e, "recordings are not timestamped: TLS");
            return;
        }
    };
    tracing::info!(tsa = %url, "sealed recordings are timestamped (RFC 3161)");
    let mut done = HashSet::new();
    // While the TSA is down: when to try next, and the wait after that.
    let mut retry_at: Option<Instant> = None;
    let mut backoff = SCAN_EVERY;
    let mut outage = false;
    loop {
        tokio::time::sleep(SCAN_EVERY).await;
        if retry_at.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        let (scan_dir, mut scan_done) = (recordings.clone(), std::mem::take(&mut done));
        let listed = tokio::task::spawn_blocking(move || {
            let due = unstamped(&scan_dir, &mut scan_done, PER_SCAN);
            (due, scan_done)
        })
        .await;
        let due = match listed {
            Ok((due, scanned)) => {
                done = scanned;
                match due {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!(error = %e, "listing recordings to timestamp");
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the timestamp task failed");
                continue;
            }
        };
        for session in due {
            let dir = recordings.join(&session);
            let manifest_bytes = match tokio::fs::read(dir.join(manifest::MANIFEST)).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(session, error = %e, "reading a manifest to timestamp");
                    done.insert(session);
                    continue;
                }
            };
            match stamp(&url, &tls, anchors.as_deref(), &manifest_bytes).await {
                Ok(stamped) => {
                    if outage {
                        tracing::info!(tsa = %url, "the TSA answers again: timestamping resumes");
                        outage = false;
                    }
                    retry_at = None;
                    backoff = SCAN_EVERY;
                    let (store, auditor, url, id) =
                        (store.clone(), auditor.clone(), url.clone(), session.clone());
                    let kept = tokio::task::spawn_blocking(move || {
                        keep(&store, &auditor, &url, &dir, &id, &manifest_bytes, &stamped)
                    })
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|kept| kept);
                    if let Err(e) = kept {
                        tracing::warn!(session, error = %format!("{e:#}"), "keeping a recording's timestamp");
                    }
                    done.insert(session);
                }
                Err(e) => {
                    if outage {
                        tracing::debug!(tsa = %url, session, error = %format!("{e:#}"), "the TSA still fails");
                    } else {
                        tracing::warn!(
                            tsa = %url,
                            session,
                            error = %format!("{e:#}"),
                            "recordings are not timestamped: the TSA failed; sealing goes on, and \
                             timestamps are asked for again with a backoff (this warning once \
                             per outage)"
                        );
                        outage = true;
                    }
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// audit verify
// ---------------------------------------------------------------------------------------------

/// What `audit verify` finds about one sealed recording's token.
#[derive(Debug)]
pub enum Stamp {
    /// It verifies.
    Verified(TokenInfo),
    /// Something is wrong (a line for the report).
    Problem(String),
    /// No token; `overdue` when a TSA is configured and the recording was sealed more than
    /// [`OVERDUE`] ago.
    Missing { overdue: bool },
}

/// Checks sealed recordings' tokens for `audit verify`.
pub struct Checker {
    /// The configured TSA (tokens are expected).
    pub url: Option<TsaUrl>,
    pub ca_file: Option<PathBuf>,
    anchors: Option<Vec<CertificateDer<'static>>>,
    /// Why the CA file could not be used (reported once; tokens are then checked without it).
    pub ca_problem: Option<String>,
}

impl Checker {
    /// With the data directory's `recordings` settings.
    pub fn for_recordings(recordings: &Path) -> Result<Checker> {
        let settings = settings_for(recordings)?;
        let (anchors, ca_problem) = match settings.timestamp_ca_file.as_deref().map(read_ca_file) {
            None => (None, None),
            Some(Ok(certs)) => (Some(certs), None),
            Some(Err(e)) => (None, Some(format!("{e:#}"))),
        };
        Ok(Checker {
            url: settings.timestamp_url,
            ca_file: settings.timestamp_ca_file,
            anchors,
            ca_problem,
        })
    }

    /// The token of the recording of `session`, sealed at `sealed`.
    pub fn check(&self, recordings: &Path, session: &str, sealed: SystemTime) -> Stamp {
        let dir = recordings.join(session);
        let token = match std::fs::read(dir.join(TIMESTAMP)) {
            Ok(token) => token,
            Err(_) => {
                let overdue = self.url.is_some()
                    && dir.join(manifest::MANIFEST).exists()
                    && sealed.elapsed().is_ok_and(|age| age > OVERDUE);
                return Stamp::Missing { overdue };
            }
        };
        let Ok(bytes) = std::fs::read(dir.join(manifest::MANIFEST)) else {
            // Named by the manifest check already.
            return Stamp::Problem(format!(
                "`{TIMESTAMP}` has no `{}` to stamp",
                manifest::MANIFEST
            ));
        };
        match verify_token(&token, &bytes, self.anchors.as_deref()) {
            Ok(info) => Stamp::Verified(info),
            Err(TokenError::Mismatch) => Stamp::Problem(format!(
                "`{}` does not match its timestamp (`{TIMESTAMP}` stamps another manifest)",
                manifest::MANIFEST
            )),
            Err(TokenError::Invalid(why)) => {
                Stamp::Problem(format!("its timestamp `{TIMESTAMP}` does not hold: {why}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tsa_urls_are_checked() {
        let url = TsaUrl::try_from("https://tsa.example/ts?x=1".to_string()).unwrap();
        assert!(url.https);
        assert_eq!((url.host.as_str(), url.port), ("tsa.example", 443));
        assert_eq!(url.target, "/ts?x=1");
        let url = TsaUrl::try_from("http://[::1]:3180".to_string()).unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 3180));
        assert_eq!(url.target, "/");
        for bad in [
            "ftp://tsa.example/",
            "tsa.example",
            "http://u:p@tsa.example/",
        ] {
            assert!(TsaUrl::try_from(bad.to_string()).is_err(), "{bad}");
        }
        let settings: RecordingSettings =
            serde_json::from_str(r#"{"timestamp_url": "http://127.0.0.1:1/"}"#).unwrap();
        assert_eq!(
            String::from(settings.timestamp_url.unwrap()),
            "http://127.0.0.1:1/"
        );
        assert!(
            serde_json::from_str::<RecordingSettings>(r#"{"timestamp_ca_file": "tsa.pem"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<RecordingSettings>(r#"{"timestamp": "x"}"#).is_err());
    }

    #[test]
    fn gen_time_takes_fractions() {
        let time = |text: &str| {
            gen_time(&Any::new(Tag::GeneralizedTime, text.as_bytes().to_vec()).unwrap())
                .map(|(text, _)| text)
        };
        assert_eq!(time("20261207101213Z").unwrap(), "2026-12-07T10:12:13Z");
        assert_eq!(
            time("20261207101213.25Z").unwrap(),
            "2026-12-07T10:12:13.25Z"
        );
        assert!(time("20261207101213").is_err());
        assert!(time("2026120710121Z").is_err());
    }

    #[test]
    fn a_request_is_der_with_nonce_and_cert_req() {
        let query = request(b"manifest", 0x0102).unwrap();
        let parsed = TimeStampReq::from_der(&query).unwrap();
        assert_eq!(parsed.version, 1);
        assert!(parsed.cert_req);
        assert_eq!(parsed.nonce.unwrap().as_bytes(), [1, 2]);
        assert_eq!(
            parsed.message_imprint.hashed_message.as_bytes(),
            Hash::Sha256.digest(b"manifest")
        );
        // A random nonce with its top bit set is a positive INTEGER.
        let query = request(b"m", u64::MAX).unwrap();
        let parsed = TimeStampReq::from_der(&query).unwrap();
        assert_eq!(parsed.nonce.unwrap().as_bytes(), u64::MAX.to_be_bytes());
    }
}
