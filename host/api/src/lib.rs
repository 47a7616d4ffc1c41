//! The HTTPS API (axum over rustls): versioned JSON under `/api/v1`, bearer tokens for people,
//! A2A retrieval with mutual TLS, the OpenAPI document generated from the handlers, and a docs
//! page rendered from it on the server (no script from elsewhere, so it works air-gapped).
//!
//! Entry points: [`tls_config`] builds the TLS server configuration from the gateway's PEM key
//! pair (client certificates are requested, not required: the A2A endpoints pin them by
//! SHA-256); [`serve`] accepts connections with a connection limit and a handshake timeout.

mod admin_pages;
mod auth;
mod control;
mod docs;
mod error;
mod live;
mod nodes;
mod portal;
mod routes;
mod search;
mod sessions;
mod sign_in;

pub use admin_pages::{PluginAdmin, PluginAdminError, PluginView};
pub use auth::TokenKeys;
pub use control::{SessionControl, Terminated};
pub use docs::openapi;
pub use error::{ApiError, ErrorBody};
pub use live::{LiveChunk, LiveFeed, LiveView};
pub use sessions::{Recordings, VideoRenderer};
pub use sign_in::{QuestionView, SignInPlugins, SignInVerdict};

use axum::Router;
use gatehouse_audit::Auditor;
use gatehouse_auth::Authenticator;
use gatehouse_store::Store;
use gatehouse_workflow::Workflow;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The TLS peer of a connection, as handlers see it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// SHA-256 (lowercase hex) of the client certificate, when one was presented (and its key
    /// proven by the handshake).
    pub cert_sha256: Option<String>,
}

/// Settings of the API (settings.json `api`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Lifetime of people's tokens.
    pub token_seconds: u64,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// A portal (browser) session ends after this long without a request.
    pub portal_idle_seconds: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            token_seconds: 900,
            max_connections: 1024,
            portal_idle_seconds: 900,
        }
    }
}

/// Why the API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    #[error("TLS certificate: {0}")]
    Certificate(String),
    #[error("TLS private key: {0}")]
    Key(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Shared by every handler.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    workflow: Arc<Workflow>,
    store: Arc<Store>,
    authenticator: Arc<Authenticator>,
    auditor: Auditor,
    tokens: TokenKeys,
    limiter: auth::LoginLimiter,
    /// argon2 is slow on purpose: at most this many checks run at once.
    password_checks: tokio::sync::Semaphore,
    recordings: Recordings,
    /// Video renderings run one at a time.
    renders: tokio::sync::Semaphore,
    /// Set when the gateway starts its graceful shutdown.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// Ends running sessions (`POST /api/v1/sessions/{id}/terminate`); `None`: not offered.
    control: Option<Arc<dyn SessionControl>>,
    /// Shows running sessions (`GET /api/v1/sessions/{id}/live`); `None`: not offered.
    live: Option<Arc<dyn LiveView>>,
    /// The portal's cookie sessions.
    portal: portal::PortalSessions,
    /// Lists and switches this gateway's plugins (`/api/v1/plugins`); `None`: not offered.
    plugins: Option<Arc<dyn PluginAdmin>>,
    /// Second factors at sign-in (the AA plugins); `None`: the password alone.
    sign_in: Option<Arc<dyn SignInPlugins>>,
}

impl ApiState {
    pub fn new(
        workflow: Arc<Workflow>,
        store: Arc<Store>,
        authenticator: Arc<Authenticator>,
        auditor: Auditor,
        tokens: TokenKeys,
        recordings: Recordings,
    ) -> Self {
        let store_for_portal = store.clone();
        Self {
            inner: Arc::new(Inner {
                workflow,
                store,
                authenticator,
                auditor,
                tokens,
                limiter: auth::LoginLimiter::default(),
                password_checks: tokio::sync::Semaphore::new(2),
                recordings,
                renders: tokio::sync::Semaphore::new(1),
                draining: Arc::default(),
                control: None,
                live: None,
                plugins: None,
                sign_in: None,
                portal: portal::PortalSessions::new(
                    store_for_portal,
                    std::time::Duration::from_secs(900),
                ),
            }),
        }
    }

    /// The same state, able to end running sessions with `control`. Called right after
    /// [`ApiState::new`], before the state is shared.
    pub fn with_session_control(mut self, control: Arc<dyn SessionControl>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.control = Some(control);
        }
        self
    }

    /// The same state, ending portal sessions after `idle` without a request. Called right
    /// after [`ApiState::new`], before the state is shared.
    pub fn with_portal_idle(mut self, idle: std::time::Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.portal = portal::PortalSessions::new(inner.store.clone(), idle);
        }
        self
    }

    /// The same state, able to show running sessions with `live`. Called right after
    /// [`ApiState::new`], before the state is shared.
    pub fn with_live_view(mut self, live: Arc<dyn LiveView>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.live = Some(live);
        }
        self
    }

    /// The same state, listing and switching plugins with `plugins`. Called right after
    /// [`ApiState::new`], before the state is shared.
    pub fn with_plugin_admin(mut self, plugins: Arc<dyn PluginAdmin>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.plugins = Some(plugins);
        }
        self
    }

    /// The same state, running `plugins` after the password at every sign-in. Called right
    /// after [`ApiState::new`], before the state is shared.
    pub fn with_sign_in_plugins(mut self, plugins: Arc<dyn SignInPlugins>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.sign_in = Some(plugins);
        }
        self
    }

    /// The flag the gateway sets when its graceful shutdown starts (health then says
    /// `draining`).
    pub fn draining_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.inner.draining.clone()
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The router: every route of the API.
pub fn router(state: ApiState) -> Router {
    routes::router(state)
}

/// Accepts every client certificate whose handshake signature verifies; the A2A endpoints
/// compare its SHA-256 with the application's registration (pinning, not a CA).
#[derive(Debug)]
struct PinnedClientCerts {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for PinnedClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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

/// The TLS server configuration from PEM files: the gateway's certificate chain and key.
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, ApiSetupError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiSetupError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(ApiSetupError::Certificate(
            "no certificate in the file".into(),
        ));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ApiSetupError::Key(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(PinnedClientCerts { provider }))
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: ApiState,
    max_connections: usize,
) -> std::io::Result<()> {
    use tower::ServiceExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    loop {
        let permit = match slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return Ok(()),
        };
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(client = %addr, error = %e, "API TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %addr, "API TLS handshake timed out");
                    return;
                }
            };
            let cert_sha256 = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| gatehouse_workflow::cert_thumbprint(der.as_ref()));
            let peer = Peer { addr, cert_sha256 };
            let service = app.map_request(move |mut request: axum::http::Request<_>| {
                request.extensions_mut().insert(peer.clone());
                request
            });
            let service = hyper_util::service::TowerToHyperService::new(service);
            let io = hyper_util::rt::TokioIo::new(tls);
            let builder = hyper::server::conn::http1::Builder::new();
            if let Err(e) = builder.serve_connection(io, service).await {
                tracing::debug!(client = %addr, error = %e, "API connection ended with an error");
            }
        });
    }
}
