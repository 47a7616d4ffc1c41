//! A small HTTPS client for the gateway's own API (HTTP/1.1 over rustls), used by
//! `gatehouse login`, `gatehouse request ...` and `gatehouse a2a retrieve|request`.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the API is and how to trust it.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct ApiArgs {
    /// The gateway's API (default: $GATEHOUSE_API, else https://127.0.0.1:8443).
    #[arg(long)]
    pub api: Option<String>,
    /// PEM certificate(s) to trust for the API (default: the data directory's tls/cert.pem when
    /// it exists, else the public web roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// An answer: the status and the JSON body (`null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Answer {
    /// The body of a 2xx answer; the API's error message otherwise.
    pub fn ok(self) -> Result<serde_json::Value> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let message = self.body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.body.to_string());
        bail!("{message} (HTTP {})", self.status)
    }
}

pub struct ApiClient {
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("`{}`: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("`{}` holds no PEM certificate", path.display());
    }
    Ok(certs)
}

impl ApiClient {
    /// `data_dir_cert` is the local gateway's certificate, trusted when no `--ca` is given.
    pub fn new(
        args: &ApiArgs,
        data_dir_cert: Option<PathBuf>,
        client_identity: Option<(&Path, &Path)>,
    ) -> Result<Self> {
        let url = args
            .api
            .clone()
            .or_else(|| std::env::var("GATEHOUSE_API").ok())
            .unwrap_or_else(|| "https://127.0.0.1:8443".into());
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("the API address must start with https:// (got `{url}`)"))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            bail!("give the API as https://host:port, without a path (got `{url}`)");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>()
                    .map_err(|_| anyhow!("bad port in `{url}`"))?,
            ),
            _ => (authority.to_string(), 443),
        };
        let mut roots = rustls::RootCertStore::empty();
        let ca = args
            .ca
            .clone()
            .or_else(|| data_dir_cert.filter(|p| p.exists()));
        match ca {
            Some(path) => {
                for cert in read_certs(&path)? {
                    roots
                        .add(cert)
                        .map_err(|e| anyhow!("`{}`: {e}", path.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match client_identity {
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let pem =
                    std::fs::read(key).with_context(|| format!("reading `{}`", key.display()))?;
                let key = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| anyhow!("`{}`: {e}", key.display()))?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            host,
            port,
            tls: Arc::new(config),
        })
    }

    /// One request on a fresh connection.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to the API at {}:{}", self.host, self.port))?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| anyhow!("`{}` is not a valid server name", self.host))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .context("TLS with the API")?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let payload = match body {
            Some(v) => serde_json::to_vec(v)?,
            None => Vec::new(),
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(a) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, a);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(payload)))?)
            .await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into())
            })
        };
        Ok(Answer { status, body })
    }
}

/// Where `gatehouse login` keeps the token: $GATEHOUSE_TOKEN_FILE, else
/// $XDG_CONFIG_HOME/gatehouse/token, else ~/.config/gatehouse/token.
pub fn token_file() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("GATEHOUSE_TOKEN_FILE") {
        return Ok(PathBuf::from(path));
    }
    let base = std::env::var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map_err(|_| anyhow!("set GATEHOUSE_TOKEN_FILE or HOME to keep the login token"))?;
    Ok(base.join("gatehouse").join("token"))
}

/// The bearer token: $GATEHOUSE_TOKEN, else the token file.
pub fn bearer() -> Result<String> {
    if let Ok(token) = std::env::var("GATEHOUSE_TOKEN") {
        return Ok(format!("Bearer {}", token.trim()));
    }
    let path = token_file()?;
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no login token at `{}`; run `gatehouse login` first",
            path.display()
        )
    })?;
    Ok(format!("Bearer {}", token.trim()))
}
