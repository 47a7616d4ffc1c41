//! Test support: finding the built plugin packages, a registry in a temporary directory, a
//! fixed clock, the setups several test files share (TOTP for alice, the hostile plugin in a
//! mode), and a tiny HTTP server.

use gatehouse_core::secret::SecretString;
use gatehouse_plugin_host::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// RFC 6238 appendix B seed ("12345678901234567890") in base32.
pub const RFC_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// The directory `scripts/build-plugins.sh` fills: `$GATEHOUSE_PLUGINS_DIR`, or
/// `<cargo target dir>/gatehouse-plugins` found from this test binary's path.
pub fn plugins_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GATEHOUSE_PLUGINS_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/<profile>/deps/<binary>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary inside a cargo target directory");
    target.join("gatehouse-plugins")
}

/// The package directory of a built reference plugin. Fails loudly when it was not built.
pub fn package(name: &str) -> PathBuf {
    let dir = plugins_dir().join(name);
    assert!(
        dir.join("plugin.wasm").is_file() && dir.join("plugin.toml").is_file(),
        "plugin `{name}` is not built in {}: run `bash scripts/build-plugins.sh` first \
         (or set GATEHOUSE_PLUGINS_DIR)",
        dir.display()
    );
    dir
}

/// A registry in a temporary directory, with a fixed clock and in-memory secrets.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub registry: Registry,
    pub clock: Clock,
    pub secrets: StaticSecrets,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::open(dir.path().join("plugins")).expect("registry");
        Self {
            dir,
            registry,
            clock: Clock::fixed(59_000),
            secrets: StaticSecrets::new(),
        }
    }

    /// Installs a reference plugin, configures, grants and enables it.
    pub fn install(&self, name: &str, grants: Grants, config: &str) -> InstalledPlugin {
        self.registry.install(&package(name)).expect("install");
        self.registry.set_config(name, config).expect("config");
        self.registry
            .set_grants(
                name,
                &Grants {
                    enabled: true,
                    ..grants
                },
            )
            .expect("grants")
    }

    /// `totp-mfa` enabled with [`totp_grants`] and alice's seed ([`RFC_SEED`]) in the secrets.
    pub fn with_totp() -> Self {
        let mut env = Self::new();
        env.secret("totp-mfa", "totp-seed/alice", RFC_SEED);
        env.install("totp-mfa", totp_grants(), "");
        env
    }

    /// Installs the hostile plugin in `mode`; `extra_config` is appended to its config.
    pub fn install_hostile(
        &self,
        mode: &str,
        grants: Grants,
        extra_config: &str,
    ) -> InstalledPlugin {
        self.install(
            "hostile",
            grants,
            &format!("mode = \"{mode}\"\n{extra_config}"),
        )
    }

    pub fn secret(&mut self, plugin: &str, name: &str, value: &str) {
        self.secrets
            .insert(plugin, name, SecretString::new(value.to_owned()));
    }

    pub fn options(&self) -> HostOptions {
        HostOptions {
            compile_cache_dir: Some(compile_cache()),
            secrets: Arc::new(self.secrets.clone()),
            clock: self.clock.clone(),
            ..HostOptions::default()
        }
    }

    pub fn host(&self) -> PluginHost {
        let host = PluginHost::start(&self.registry, self.options()).expect("host starts");
        for plugin in host.plugins() {
            assert_eq!(
                plugin.load_error, None,
                "plugin `{}` did not load",
                plugin.name
            );
        }
        host
    }
}

/// One compile cache for the whole test run (compiling is the slow part of starting a host).
pub fn compile_cache() -> PathBuf {
    plugins_dir().join(".test-compile-cache")
}

pub fn grants() -> Grants {
    Grants::default()
}

/// What `totp-mfa` needs: every TOTP seed.
pub fn totp_grants() -> Grants {
    Grants {
        secrets: vec!["totp-seed/*".into()],
        ..grants()
    }
}

/// No capability, only these limits.
pub fn limited(limits: Limits) -> Grants {
    Grants { limits, ..grants() }
}

/// A host whose hostile plugin (mode `http`, `timeout_ms` of wall clock) calls a server that
/// accepts and never answers. The environment must outlive the host.
pub async fn hostile_waiting_on_a_silent_server(timeout_ms: u64) -> TestEnv {
    let port = silent_server().await;
    let env = TestEnv::new();
    env.install_hostile(
        "http",
        Grants {
            http: vec![format!("127.0.0.1:{port}")],
            ..limited(Limits {
                timeout_ms,
                ..Limits::default()
            })
        },
        &format!("url = \"http://127.0.0.1:{port}/\""),
    );
    env
}

pub fn connection(user: &str) -> ConnectionInfo {
    ConnectionInfo {
        session_id: "0190b1e2-0000-7000-8000-000000000001".into(),
        protocol: Protocol::Ssh,
        client_address: "192.0.2.7".into(),
        client_port: 50_000,
        gateway_user: user.into(),
        groups: vec!["ops".into()],
        target_asset: "db1".into(),
        target_address: "10.0.0.5".into(),
        target_port: 22,
        target_account: "root".into(),
        options: Vec::new(),
    }
}

/// `connection(user)` with one in-band option (`otp=...`, `ticket=...`).
pub fn connection_with(user: &str, key: &str, value: &str) -> ConnectionInfo {
    let mut conn = connection(user);
    conn.options.push((key.into(), value.into()));
    conn
}

/// One `authenticate` call in a session of its own (fresh cookies, no answers).
pub async fn authenticate_once(
    host: &PluginHost,
    conn: &ConnectionInfo,
) -> Result<AaVerdict, PluginFailure> {
    host.authenticate(conn, &mut SessionCookies::default(), &[])
        .await
}

/// One request the test server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

type Handler = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// A tiny HTTP/1 server on 127.0.0.1; returns its port and the requests it saw.
pub async fn http_server(
    handler: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Arc<Handler> = Arc::new(handler);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let handler = handler.clone();
                        let log = log.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect(),
                                body: String::from_utf8_lossy(&body).into_owned(),
                            };
                            let (status, text) = handler(&seen);
                            log.lock().unwrap().push(seen);
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(text)))
                        }
                    });
                let io = wasmtime_wasi_http::io::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (port, seen)
}

/// A TCP listener that accepts connections and never answers.
pub async fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    port
}
