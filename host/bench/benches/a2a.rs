//! A2A retrievals and access requests per second, on each store engine in one run:
//! `cargo bench -p gatehouse-bench --bench a2a`.
//!
//! Builds `gatehouse` (release). For each engine (`GATEHOUSE_BENCH_STORES`, default
//! `redb,postgres`; PostgreSQL is Debian's, started by the bench in a temporary directory as the
//! tests start it) it sets up a data directory with the CLI (an account with a vault password, a
//! registered application with an rcgen client certificate, an API key, a policy permitting the
//! retrieval, a requester and an approver), starts `gatehouse serve`, and drives it from this
//! process with `GATEHOUSE_BENCH_A2A_CONNECTIONS` keep-alive mutual-TLS connections (default 32),
//! each sending requests back to back. Three measures on the same server, alternated: the API's
//! health endpoint (TLS, HTTP and routing only: the floor), the A2A retrieval (key, pin, source,
//! Cedar, vault, durable audit) and an access request created and approved (two calls, two
//! decisions, a grant, three audit events). Writes `a2a.json` to `<target>/gatehouse-bench/`.

use anyhow::{Context, Result, bail};
use gatehouse_bench::{env_number, gatehouse_binary, percentile, results_dir};

/// A free port (the PostgreSQL starter's `super::free_port`).
fn free_port() -> u16 {
    gatehouse_bench::free_port().unwrap_or(0)
}
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tests' PostgreSQL starter (initdb and pg_ctl in a temporary directory). It names
/// `super::{free_port, poll, port_open}`: they follow.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]
#[path = "../../../tests/support/postgres.rs"]
mod postgres;

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(binary: &Path, data: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(text) = stdin
        && let Some(mut input) = child.stdin.take()
    {
        input.write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "gatehouse {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One keep-alive connection's loop: requests back to back until `until`; latencies in µs.
async fn drive(
    tls: Arc<rustls::ClientConfig>,
    port: u16,
    path: &'static str,
    key: Arc<String>,
    until: Instant,
) -> Result<Vec<f64>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::AUTHORIZATION, format!("A2A {key}"))
            .body(Empty::<Bytes>::new())?;
        let start = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(latencies)
}

struct Run {
    rate: f64,
    p50: f64,
    p99: f64,
    count: usize,
}

/// Every connection's latencies together: the rate since `started`, p50, p99 and the count.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<f64>>>>,
    started: Instant,
) -> Result<Run> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Run {
        rate: all.len() as f64 / elapsed,
        p50: percentile(&all, 50.0).unwrap_or(0.0),
        p99: percentile(&all, 99.0).unwrap_or(0.0),
        count: all.len(),
    })
}

async fn measure(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    path: &'static str,
    key: &Arc<String>,
    connections: u64,
    seconds: u64,
) -> Result<Run> {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(drive(
            tls.clone(),
            port,
            path,
            key.clone(),
            until,
        )));
    }
    gather(tasks, started).await
}

const PASSWORD: &str = "Bench-user-pw-8Kd";

const REQUEST_POLICY: &str = r#"
@id("app-reads")
permit (principal == Application::"app", action == Action::"a2a_retrieve", resource in Asset::"db1");

@id("requesters")
permit (principal in Group::"requesters", action == Action::"request_access", resource);

@id("approvers")
permit (principal in Group::"approvers", action in Action::"review", resource is AccessRequest);

@id("one-approval")
permit (principal, action == Action::"grant_request", resource is AccessRequest)
when { resource.requester == principal && context.approvals >= 1 };
"#;

/// One engine's gateway, set up and serving.
struct Gateway {
    _server: Server,
    api_port: u16,
    key: Arc<String>,
    tls: Arc<rustls::ClientConfig>,
}

fn start_gateway(binary: &Path, work: &Path, store: Option<&str>) -> Result<Gateway> {
    let data = work.join(if store.is_some() {
        "data-postgres"
    } else {
        "data-redb"
    });
    let data_s = data.to_str().context("utf-8 path")?;
    let mut init = vec!["init"];
    if let Some(url) = store {
        init.extend(["--store", url]);
    }
    cli(binary, &data, &init, None)?;
    cli(
        binary,
        &data,
        &[
            "asset",
            "add",
            "db1",
            "--address",
            "127.0.0.1",
            "--port",
            "22",
            "--tofu",
        ],
        None,
    )?;
    cli(
        binary,
        &data,
        &["account", "add", "svc@db1", "--password-stdin"],
        Some("bench-vault-password\n"),
    )?;
    cli(binary, &data, &["group", "add", "requesters"], None)?;
    cli(binary, &data, &["group", "add", "approvers"], None)?;
    for (user, group) in [("req", "requesters"), ("apr", "approvers")] {
        cli(
            binary,
            &data,
            &["user", "add", user, "--password-stdin", "--group", group],
            Some(&format!("{PASSWORD}\n")),
        )?;
    }
    std::fs::write(data.join("policies/bench.cedar"), REQUEST_POLICY)?;
    let identity = rcgen::generate_simple_self_signed(vec!["app".to_string()])?;
    let cert_path = work.join("app.pem");
    std::fs::write(&cert_path, identity.cert.pem())?;
    cli(
        binary,
        &data,
        &[
            "a2a",
            "register",
            "app",
            "--cert-file",
            cert_path.to_str().context("path")?,
        ],
        None,
    )?;
    let key_text = cli(binary, &data, &["a2a", "key-add", "app", "svc@db1"], None)?;
    let key = Arc::new(key_text.lines().next().unwrap_or("").trim().to_string());

    let ssh_port = free_port();
    let api_port = free_port();
    let log = std::fs::File::create(data.join("serve.log"))?;
    let server = Server {
        child: Command::new(binary)
            .args(["--data-dir", data_s, "serve"])
            .arg("--ssh-listen")
            .arg(format!("127.0.0.1:{ssh_port}"))
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--rdp-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
        if Instant::now() > deadline {
            bail!("gatehouse serve did not open its API port");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(data.join("tls/cert.pem"))? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![identity.cert.der().clone()],
                PrivateKeyDer::from_pem_slice(identity.signing_key.serialize_pem().as_bytes())?,
            )?,
    );
    Ok(Gateway {
        _server: server,
        api_port,
        key,
        tls,
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(tls: &Arc<rustls::ClientConfig>, port: u16) -> Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `POST path` with a JSON body as `bearer`: the answer's JSON, or an error naming the status.
async fn post(
    sender: &mut Sender,
    path: &str,
    bearer: Option<&str>,
    body: serde_json::Value,
) -> Result<serde_json::Value> {
    let mut request = hyper::Request::post(path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(b) = bearer {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {b}"));
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body.to_string())))?)
        .await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

async fn login(tls: &Arc<rustls::ClientConfig>, port: u16, user: &str) -> Result<Arc<String>> {
    let mut sender = connect(tls, port).await?;
    let answer = post(
        &mut sender,
        "/api/v1/login",
        None,
        json!({"user": user, "password": PASSWORD}),
    )
    .await?;
    Ok(Arc::new(
        answer["token"].as_str().context("no token")?.to_string(),
    ))
}

/// One connection's loop: a request created, then approved, until `until`; latencies of the
/// pair in µs.
async fn drive_requests(
    tls: Arc<rustls::ClientConfig>,
    port: u16,
    requester: Arc<String>,
    approver: Arc<String>,
    until: Instant,
) -> Result<Vec<f64>> {
    let mut sender = connect(&tls, port).await?;
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let start = Instant::now();
        let created = post(
            &mut sender,
            "/api/v1/requests",
            Some(&requester),
            json!({"target": "svc@db1", "access": "password", "reason": "bench"}),
        )
        .await?;
        let id = created["id"].as_str().context("no request id")?;
        post(
            &mut sender,
            &format!("/api/v1/requests/{id}/approve"),
            Some(&approver),
            json!({"comment": "ok"}),
        )
        .await?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(latencies)
}

async fn measure_requests(
    gateway: &Gateway,
    tokens: (&Arc<String>, &Arc<String>),
    connections: u64,
    seconds: u64,
) -> Result<Run> {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(drive_requests(
            gateway.tls.clone(),
            gateway.api_port,
            tokens.0.clone(),
            tokens.1.clone(),
            until,
        )));
    }
    gather(tasks, started).await
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "gatehouse a2a bench: run it with `cargo bench -p gatehouse-bench --bench a2a`; skipping."
        );
        return Ok(());
    }
    let connections = env_number("GATEHOUSE_BENCH_A2A_CONNECTIONS", 32)?;
    let seconds = env_number("GATEHOUSE_BENCH_A2A_SECONDS", 10)?;
    let rounds = env_number("GATEHOUSE_BENCH_A2A_ROUNDS", 3)?;
    let engines: Vec<String> = std::env::var("GATEHOUSE_BENCH_STORES")
        .unwrap_or_else(|_| "redb,postgres".into())
        .split(',')
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let binary = gatehouse_binary()?;
    let work = tempfile::tempdir()?;
    // PostgreSQL with the same durability as redb (fsync on): what a deployment runs.
    let pg = if engines.iter().any(|e| e == "postgres") {
        let pg = postgres::Postgres::start();
        pg.psql("gatehouse", "ALTER SYSTEM SET fsync = on");
        pg.psql("gatehouse", "ALTER SYSTEM SET synchronous_commit = on");
        pg.psql("gatehouse", "ALTER SYSTEM SET full_page_writes = on");
        pg.psql("gatehouse", "SELECT pg_reload_conf()");
        Some(pg)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    println!(
        "A2A and request bench: {connections} keep-alive mTLS connections, {seconds} s per run, {rounds} rounds, stores {}",
        engines.join(", ")
    );
    let mut results = Vec::new();
    for engine in &engines {
        let url = match (engine.as_str(), &pg) {
            ("redb", _) => None,
            ("postgres", Some(pg)) => Some(pg.url("gatehouse")),
            (other, _) => bail!("GATEHOUSE_BENCH_STORES: unknown store `{other}`"),
        };
        let gateway = start_gateway(&binary, work.path(), url.as_deref())?;
        let tls = &gateway.tls;
        let port = gateway.api_port;
        let key = &gateway.key;
        runtime.block_on(async {
            let requester = login(tls, port, "req").await?;
            let approver = login(tls, port, "apr").await?;
            // Warm up every path.
            measure(tls, port, "/api/v1/health", key, connections, 2).await?;
            measure(tls, port, "/api/v1/a2a/credential", key, connections, 2).await?;
            measure_requests(&gateway, (&requester, &approver), connections, 2).await?;
            for round in 1..=rounds {
                for name in ["health (TLS + HTTP floor)", "a2a retrieval", "request created + approved"] {
                    let run = match name {
                        "a2a retrieval" => {
                            measure(tls, port, "/api/v1/a2a/credential", key, connections, seconds).await?
                        }
                        "request created + approved" => {
                            measure_requests(&gateway, (&requester, &approver), connections, seconds).await?
                        }
                        _ => measure(tls, port, "/api/v1/health", key, connections, seconds).await?,
                    };
                    println!(
                        "{engine:<8} round {round}  {name:<27} {:>8.0}/s  p50 {:>7.0} µs  p99 {:>7.0} µs  ({} done)",
                        run.rate, run.p50, run.p99, run.count
                    );
                    results.push(json!({
                        "store": engine, "round": round, "route": name, "per_second": run.rate,
                        "p50_us": run.p50, "p99_us": run.p99, "requests": run.count,
                    }));
                }
            }
            anyhow::Ok(())
        })?;
    }
    drop(pg);
    let median = |store: &str, route: &str, key: &str| {
        let values: Vec<f64> = results
            .iter()
            .filter(|r| r["store"] == store && r["route"] == route)
            .filter_map(|r| r[key].as_f64())
            .collect();
        gatehouse_bench::median(&values).unwrap_or(0.0)
    };
    let mut stores = serde_json::Map::new();
    for engine in &engines {
        let health = median(engine, "health (TLS + HTTP floor)", "per_second");
        let a2a = median(engine, "a2a retrieval", "per_second");
        let requests = median(engine, "request created + approved", "per_second");
        println!(
            "median {engine}: a2a {a2a:.0}/s (p99 {:.0} µs), requests {requests:.0}/s (p99 {:.0} µs), health {health:.0}/s",
            median(engine, "a2a retrieval", "p99_us"),
            median(engine, "request created + approved", "p99_us"),
        );
        stores.insert(
            engine.clone(),
            json!({
                "a2a_per_second_median": a2a,
                "a2a_p99_us_median": median(engine, "a2a retrieval", "p99_us"),
                "requests_per_second_median": requests,
                "requests_p99_us_median": median(engine, "request created + approved", "p99_us"),
                "health_per_second_median": health,
                "ratio_a2a_to_health": a2a / health.max(1.0),
            }),
        );
    }
    let ratio = |key: &str| {
        let redb = median(
            "redb",
            if key == "a2a" {
                "a2a retrieval"
            } else {
                "request created + approved"
            },
            "per_second",
        );
        let pg = median(
            "postgres",
            if key == "a2a" {
                "a2a retrieval"
            } else {
                "request created + approved"
            },
            "per_second",
        );
        if redb > 0.0 { pg / redb } else { 0.0 }
    };
    if engines.len() == 2 {
        println!(
            "postgres / redb: a2a {:.2}, requests {:.2}",
            ratio("a2a"),
            ratio("requests")
        );
    }
    let summary = json!({
        "connections": connections,
        "seconds_per_run": seconds,
        "stores": stores,
        "ratio_postgres_to_redb_a2a": ratio("a2a"),
        "ratio_postgres_to_redb_requests": ratio("requests"),
        "runs": results,
    });
    let dir = results_dir(&binary);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("a2a.json"), serde_json::to_vec_pretty(&summary)?)?;
    println!("wrote {}", dir.join("a2a.json").display());
    Ok(())
}
