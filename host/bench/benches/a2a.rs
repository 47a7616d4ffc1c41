//! A2A retrievals per second and their latency: `cargo bench -p gatehouse-bench --bench a2a`.
//!
//! Builds `gatehouse` (release), sets up a data directory with the CLI (an account with a vault
//! password, a registered application with an rcgen client certificate, an API key, a policy
//! permitting the retrieval), starts `gatehouse serve`, and drives it from this process with
//! `GATEHOUSE_BENCH_A2A_CONNECTIONS` keep-alive mutual-TLS connections (default 32), each sending
//! requests back to back. Two routes on the same server, alternated: the API's health endpoint
//! (TLS, HTTP and routing only: the floor) and the A2A retrieval (key, pin, source, Cedar,
//! vault, durable audit). Writes `a2a.json` to `<target>/gatehouse-bench/`.

use anyhow::{Context, Result, bail};
use gatehouse_bench::{free_port, gatehouse_binary, percentile, results_dir};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
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
    let binary = gatehouse_binary()?;
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let data_s = data.to_str().context("utf-8 path")?;
    cli(&binary, &data, &["init"], None)?;
    cli(
        &binary,
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
        &binary,
        &data,
        &["account", "add", "svc@db1", "--password-stdin"],
        Some("bench-vault-password\n"),
    )?;
    std::fs::write(
        data.join("policies/a2a.cedar"),
        "@id(\"app-reads\")\npermit (principal == Application::\"app\", action == Action::\"a2a_retrieve\", resource in Asset::\"db1\");\n",
    )?;
    let identity = rcgen::generate_simple_self_signed(vec!["app".to_string()])?;
    let cert_path = work.path().join("app.pem");
    std::fs::write(&cert_path, identity.cert.pem())?;
    cli(
        &binary,
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
    let key_text = cli(&binary, &data, &["a2a", "key-add", "app", "svc@db1"], None)?;
    let key = Arc::new(key_text.lines().next().unwrap_or("").trim().to_string());

    let ssh_port = free_port()?;
    let api_port = free_port()?;
    let log = std::fs::File::create(work.path().join("serve.log"))?;
    let server = Server {
        child: Command::new(&binary)
            .args(["--data-dir", data_s, "serve"])
            .arg("--ssh-listen")
            .arg(format!("127.0.0.1:{ssh_port}"))
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{api_port}"))
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    println!(
        "A2A bench: {connections} keep-alive mTLS connections, {seconds} s per run, {rounds} rounds"
    );
    let mut results = Vec::new();
    runtime.block_on(async {
        // Warm up both paths.
        measure(&tls, api_port, "/api/v1/health", &key, connections, 2).await?;
        measure(&tls, api_port, "/api/v1/a2a/credential", &key, connections, 2).await?;
        for round in 1..=rounds {
            for (name, path) in [
                ("health (TLS + HTTP floor)", "/api/v1/health"),
                ("a2a retrieval", "/api/v1/a2a/credential"),
            ] {
                let run = measure(&tls, api_port, path, &key, connections, seconds).await?;
                println!(
                    "round {round}  {name:<26} {:>8.0}/s  p50 {:>7.0} µs  p99 {:>7.0} µs  ({} requests)",
                    run.rate, run.p50, run.p99, run.count
                );
                results.push(json!({
                    "round": round, "route": name, "per_second": run.rate,
                    "p50_us": run.p50, "p99_us": run.p99, "requests": run.count,
                }));
            }
        }
        anyhow::Ok(())
    })?;
    drop(server);
    let a2a: Vec<&serde_json::Value> = results
        .iter()
        .filter(|r| r["route"] == "a2a retrieval")
        .collect();
    let health: Vec<&serde_json::Value> = results
        .iter()
        .filter(|r| r["route"] != "a2a retrieval")
        .collect();
    let median = |rows: &[&serde_json::Value], key: &str| {
        let values: Vec<f64> = rows.iter().filter_map(|r| r[key].as_f64()).collect();
        gatehouse_bench::median(&values).unwrap_or(0.0)
    };
    let summary = json!({
        "connections": connections,
        "seconds_per_run": seconds,
        "a2a_per_second_median": median(&a2a, "per_second"),
        "a2a_p99_us_median": median(&a2a, "p99_us"),
        "health_per_second_median": median(&health, "per_second"),
        "ratio_a2a_to_health": median(&a2a, "per_second") / median(&health, "per_second").max(1.0),
        "runs": results,
    });
    println!(
        "median: a2a {:.0}/s (p99 {:.0} µs), health {:.0}/s, ratio {:.2}",
        summary["a2a_per_second_median"].as_f64().unwrap_or(0.0),
        summary["a2a_p99_us_median"].as_f64().unwrap_or(0.0),
        summary["health_per_second_median"].as_f64().unwrap_or(0.0),
        summary["ratio_a2a_to_health"].as_f64().unwrap_or(0.0)
    );
    let dir = results_dir(&binary);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("a2a.json"), serde_json::to_vec_pretty(&summary)?)?;
    println!("wrote {}", dir.join("a2a.json").display());
    Ok(())
}
