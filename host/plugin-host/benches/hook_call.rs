//! One hook call on a fresh pooled instance: instantiate the component from the pool, run
//! `authenticate`, check the answer, drop the instance. Prints p50/p90/p99 from raw samples,
//! then runs the same through criterion. docs/BENCHMARKS.md, "Plugin hook call".
//!
//!     bash scripts/build-plugins.sh && cargo bench -p gatehouse-plugin-host --bench hook_call

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_core::secret::SecretString;
use gatehouse_plugin_host::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn package(name: &str) -> PathBuf {
    let dir = std::env::var_os("GATEHOUSE_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap_or_default();
            exe.ancestors()
                .nth(3)
                .map(|target| target.join("gatehouse-plugins"))
                .unwrap_or_default()
        })
        .join(name);
    assert!(
        dir.join("plugin.wasm").is_file(),
        "plugin `{name}` is not built in {}: run `bash scripts/build-plugins.sh` first",
        dir.display()
    );
    dir
}

struct Setup {
    _dir: tempfile::TempDir,
    host: PluginHost,
}

fn setup(plugin: &str, grants: Grants) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().join("plugins")).unwrap();
    registry.install(&package(plugin)).unwrap();
    registry
        .set_grants(
            plugin,
            &Grants {
                enabled: true,
                ..grants
            },
        )
        .unwrap();
    let mut secrets = StaticSecrets::new();
    secrets.insert(
        "totp-mfa",
        "totp-seed/alice",
        SecretString::new("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".into()),
    );
    let clock = Clock::fixed(59_000);
    let host = PluginHost::start(
        &registry,
        HostOptions {
            compile_cache_dir: Some(dir.path().join("cache")),
            secrets: Arc::new(secrets),
            clock: clock.clone(),
            ..HostOptions::default()
        },
    )
    .unwrap();
    Setup { _dir: dir, host }
}

fn connection() -> ConnectionInfo {
    ConnectionInfo {
        session_id: "0190b1e2-0000-7000-8000-000000000001".into(),
        protocol: Protocol::Ssh,
        client_address: "192.0.2.7".into(),
        client_port: 50_000,
        gateway_user: "alice".into(),
        groups: vec!["ops".into()],
        target_asset: "db1".into(),
        target_address: "10.0.0.5".into(),
        target_port: 22,
        target_account: "root".into(),
        options: vec![("ticket".into(), "CHG123456".into())],
    }
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{label}: n={} p50={:.1}µs p90={:.1}µs p99={:.1}µs max={:.1}µs",
        samples.len(),
        at(0.50).as_secs_f64() * 1e6,
        at(0.90).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        samples[samples.len() - 1].as_secs_f64() * 1e6,
    );
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = connection();
    let minimal = setup("ticket-required", Grants::default());
    let totp = setup(
        "totp-mfa",
        Grants {
            secrets: vec!["totp-seed/*".into()],
            ..Grants::default()
        },
    );
    let totp_conn = {
        let mut conn = connection();
        conn.options = vec![("otp".into(), "287082".into())];
        conn
    };

    let call_minimal = || {
        runtime.block_on(async {
            let verdict = minimal
                .host
                .authenticate(&conn, &mut SessionCookies::default(), &[])
                .await;
            assert!(matches!(verdict, Ok(AaVerdict::Accept(_))));
        })
    };
    // totp-mfa with the RFC 6238 code for t=59 s and the clock held there: the secret read,
    // HMAC-SHA1 over the skew window, and the cache's insert-new. The first call accepts;
    // every later one is the same work ending in the replay refusal.
    let call_totp = || {
        runtime.block_on(async {
            let verdict = totp
                .host
                .authenticate(&totp_conn, &mut SessionCookies::default(), &[])
                .await;
            assert!(matches!(
                verdict,
                Ok(AaVerdict::Deny { .. } | AaVerdict::Accept(_))
            ));
        })
    };

    let benchmarking = std::env::args().any(|a| a == "--bench");
    if benchmarking {
        for _ in 0..2_000 {
            call_minimal();
            call_totp();
        }
        let samples = |f: &mut dyn FnMut()| -> Vec<Duration> {
            (0..20_000)
                .map(|_| {
                    let started = Instant::now();
                    f();
                    started.elapsed()
                })
                .collect()
        };
        percentiles(
            "hook call, ticket-required authenticate (minimal)",
            samples(&mut || call_minimal()),
        );
        percentiles(
            "hook call, totp-mfa authenticate (secret + HMAC + cache)",
            samples(&mut || call_totp()),
        );
    }
    c.bench_function("hook_call/minimal", |b| b.iter(call_minimal));
    c.bench_function("hook_call/totp", |b| b.iter(call_totp));
}

criterion_group!(benches, bench);
criterion_main!(benches);
