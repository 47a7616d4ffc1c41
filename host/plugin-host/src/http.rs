//! Outbound HTTP for plugins (`wasi:http/outgoing-handler`): requests go out only to the
//! destinations the manifest declares and the operator grants; everything else is refused
//! with `HTTP-request-denied` and recorded for the audit trail. TLS uses rustls with aws-lc-rs
//! and the webpki roots.

use crate::grants::HttpDestination;
use http::uri::Scheme;
use http_body_util::{BodyExt, Limited};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
)>;

/// The `WasiHttpHooks` of one call.
pub(crate) struct HttpGate {
    pub(crate) allowed: Arc<[HttpDestination]>,
    pub(crate) denied: Arc<Mutex<Vec<String>>>,
    pub(crate) body_limit: usize,
    pub(crate) tls: Arc<tokio_rustls::TlsConnector>,
}

pub(crate) fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let use_tls = request.uri().scheme() == Some(&Scheme::HTTPS);
        let host = request.uri().host().unwrap_or_default().to_owned();
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if use_tls { 443 } else { 80 });
        if !self.allowed.iter().any(|d| d.allows(&host, port)) {
            if let Ok(mut denied) = self.denied.lock() {
                // Each refusal becomes a log line: as bounded as the plugin's own logging.
                let what = format!("http destination `{host}:{port}` is not granted");
                if denied.len() < crate::limits::caps::LOG_LINES && !denied.contains(&what) {
                    denied.push(what);
                }
            }
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let body_limit = self.body_limit;
        let tls = self.tls.clone();
        Box::new(send(request, host, port, use_tls, options, body_limit, tls))
    }
}

async fn send(
    mut request: http::Request<WasiBody>,
    host: String,
    port: u16,
    use_tls: bool,
    options: Option<RequestOptions>,
    body_limit: usize,
    tls: Arc<tokio_rustls::TlsConnector>,
) -> SendResult {
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(Duration::from_secs(10));
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(|_| HttpError::ConnectionRefused)?;
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let response = if use_tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let stream = tls
            .connect(name, stream)
            .await
            .map_err(|_| HttpError::TlsProtocolError)?;
        exchange(TokioIo::new(stream), request).await?
    } else {
        exchange(TokioIo::new(stream), request).await?
    };
    let response = response.map(|body| {
        Limited::new(body, body_limit)
            .map_err(|_| HttpError::HttpResponseBodySize(None))
            .boxed_unsync()
    });
    let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(async { Ok(()) });
    Ok((response, done))
}

async fn exchange<S>(
    io: TokioIo<S>,
    request: http::Request<WasiBody>,
) -> Result<http::Response<hyper::body::Incoming>, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(HttpError::from)?;
    // The connection task ends when the response body and the sender are dropped, at the
    // latest when the call's store goes away.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await.map_err(HttpError::from)
}
