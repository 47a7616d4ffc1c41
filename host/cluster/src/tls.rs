//! rustls configurations of the cluster port: the control node serves with a certificate from
//! the cluster CA and asks for (does not require) a client certificate chained to it; nodes
//! verify the control node against the CA they pinned by thumbprint at the join, and present
//! their own certificate once they have one.

use crate::ClusterError;
use crate::pki::{IssuedKey, Thumbprint, certificate_names, public_key_thumbprint};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::sync::{Arc, Mutex};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_error(what: &str) -> impl Fn(rustls::Error) -> ClusterError + '_ {
    move |e| ClusterError::Tls(format!("{what}: {e}"))
}

fn builder_error(e: VerifierBuilderError) -> ClusterError {
    ClusterError::Tls(format!("certificate verifier: {e}"))
}

fn roots(ca_der: &[u8]) -> Result<Arc<RootCertStore>, ClusterError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(tls_error("cluster CA"))?;
    Ok(Arc::new(roots))
}

/// The control node's configuration of the cluster port.
pub fn server_config(ca_der: &[u8], issued: &IssuedKey) -> Result<Arc<ServerConfig>, ClusterError> {
    let provider = provider();
    let clients = WebPkiClientVerifier::builder_with_provider(roots(ca_der)?, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(builder_error)?;
    let chain = vec![
        CertificateDer::from(issued.cert_der.clone()),
        CertificateDer::from(ca_der.to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.expose().to_vec()));
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("protocol versions"))?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(tls_error("server certificate"))?;
    Ok(Arc::new(config))
}

/// What went wrong verifying the control node, in an operator's words (rustls only carries an
/// alert code back to the caller).
#[derive(Clone, Default)]
pub struct VerifyReport(Arc<Mutex<Option<String>>>);

impl VerifyReport {
    fn set(&self, message: String) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(message);
        }
    }

    /// The reason the last handshake failed, if the verifier refused it.
    pub fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Accepts the control node when the chain it sends holds the CA whose public key has the pinned
/// thumbprint and its certificate chains to that CA for the name dialled.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: Thumbprint,
    provider: Arc<CryptoProvider>,
    report: VerifyReport,
}

impl std::fmt::Debug for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyReport")
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fail = |message: String| {
            self.report.set(message);
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        };
        let presented: Vec<Thumbprint> = intermediates
            .iter()
            .filter_map(|c| public_key_thumbprint(c).ok())
            .collect();
        let Some(ca) = intermediates
            .iter()
            .find(|c| public_key_thumbprint(c).ok().as_ref() == Some(&self.pin))
        else {
            let found = presented
                .first()
                .map_or_else(|| "none".to_string(), |t| t.to_string());
            return Err(fail(format!(
                "the control node's cluster CA has thumbprint {found}, not the {} given: check the \
                 thumbprint `gatehouse node token` printed on the control node",
                self.pin
            )));
        };
        let roots = roots(ca).map_err(|e| fail(e.to_string()))?;
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .map_err(|e| fail(format!("certificate verifier: {e}")))?;
        webpki
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                ) => {
                    let names = certificate_names(end_entity);
                    fail(format!(
                        "the control node's certificate is for {}, not for `{}` as given: use \
                         one of those names in the URL, or add `{}` to the control node's \
                         cluster names (serve --cluster-name)",
                        names
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        server_name.to_str(),
                        server_name.to_str()
                    ))
                }
                other => fail(format!(
                    "the control node's certificate is not valid: {other}"
                )),
            })
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

/// A node's client configuration: the pinned CA, and the node's certificate once it has one.
pub fn client_config(
    pin: &Thumbprint,
    identity: Option<(&[u8], &[u8])>,
) -> Result<(Arc<ClientConfig>, VerifyReport), ClusterError> {
    let provider = provider();
    let report = VerifyReport::default();
    let verifier = Arc::new(PinnedCaVerifier {
        pin: pin.clone(),
        provider: provider.clone(),
        report: report.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("protocol versions"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_der, key_der)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert_der.to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec())),
            )
            .map_err(tls_error("node certificate"))?,
    };
    Ok((Arc::new(config), report))
}
