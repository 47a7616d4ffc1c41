//! End to end: RFC 3161 timestamps on sealed recordings from a real time stamping authority,
//! OpenSSL's own (`openssl ts -reply`, behind tests/support/tsa_server.py), with a TSA
//! certificate made here by openssl and chained to a CA of its own. The stock tool checks the
//! stored token (`openssl ts -verify`), `gatehouse audit verify` checks it and names a manifest
//! that no longer matches it, and a TSA that is down at first delays only the timestamps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::ssh_client::assert_client_ok;
use support::world::{GATEWAY_USER, World};
use support::{OutputExt, free_port, json_id, poll, port_open};
use tempfile::TempDir;

const TSA_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/support/tsa_server.py"
);

/// Runs `program` with `args` (split at spaces) in `dir` (see [`support::tool`]).
fn tool(program: &str, args: &str, dir: &Path) -> String {
    let args: Vec<&str> = args.split_whitespace().collect();
    support::tool(program, &args, dir, &[])
}

/// A TSA's keys and `openssl ts` configuration: a CA (EC P-256) and the TSA's certificate (RSA
/// 2048, extendedKeyUsage critical timeStamping) issued by it.
struct TsaKeys {
    dir: TempDir,
}

impl TsaKeys {
    fn make() -> TsaKeys {
        tool("python3", "--version", Path::new("/"));
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-tsa-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        tool(
            "openssl",
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
             -out ca.pem -days 30 -subj /CN=gatehouse-test-tsa-ca \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
            d,
        );
        tool(
            "openssl",
            "req -new -newkey rsa:2048 -nodes -keyout tsa.key -out tsa.csr \
             -subj /CN=gatehouse-test-tsa",
            d,
        );
        std::fs::write(
            d.join("tsa.ext"),
            "basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature,nonRepudiation\n\
             extendedKeyUsage = critical,timeStamping\n\
             subjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n",
        )
        .unwrap();
        tool(
            "openssl",
            "x509 -req -in tsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tsa.pem -days 30 \
             -extfile tsa.ext",
            d,
        );
        std::fs::write(d.join("tsaserial"), "01\n").unwrap();
        // The `[ tsa ]` section of OpenSSL's example openssl.cnf, with this TSA's files.
        std::fs::write(
            d.join("tsa.cnf"),
            format!(
                "[ tsa ]\n\
                 default_tsa = tsa_config1\n\
                 [ tsa_config1 ]\n\
                 dir = {}\n\
                 serial = $dir/tsaserial\n\
                 crypto_device = builtin\n\
                 signer_cert = $dir/tsa.pem\n\
                 certs = $dir/ca.pem\n\
                 signer_key = $dir/tsa.key\n\
                 signer_digest = sha256\n\
                 default_policy = 1.3.6.1.4.1.55555.1.1\n\
                 digests = sha256, sha384, sha512\n\
                 accuracy = secs:1, millisecs:500, microsecs:100\n\
                 clock_precision_digits = 0\n\
                 ordering = yes\n\
                 tsa_name = yes\n\
                 ess_cert_id_chain = no\n\
                 ess_cert_id_alg = sha256\n",
                d.display()
            ),
        )
        .unwrap();
        TsaKeys { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The HTTP TSA on 127.0.0.1:`port`, up when this returns.
    fn serve(&self, port: u16) -> TsaServer {
        let d = self.dir.path();
        let child = Command::new("python3")
            .arg(TSA_SERVER)
            .arg(port.to_string())
            .arg(d.join("tsa.cnf"))
            .arg(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("server.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): these tests need python3"));
        let mut server = TsaServer {
            child,
            log: d.join("server.log"),
            requests: d.join("requests.log"),
        };
        let up = poll(Duration::from_secs(20), || {
            if port_open(port) {
                return Some(true);
            }
            server.child.try_wait().ok().flatten().map(|_| false)
        });
        assert_eq!(
            up,
            Some(true),
            "the TSA did not listen: {}",
            server.log_text()
        );
        server
    }
}

struct TsaServer {
    child: Child,
    log: PathBuf,
    requests: PathBuf,
}

impl TsaServer {
    fn log_text(&self) -> String {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(&self.requests).unwrap_or_default()
        )
    }
}

impl Drop for TsaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway whose settings name the TSA at `url` (and its CA).
fn world(tag: &str, url: String, ca: &Path) -> World {
    let ca = ca.to_str().unwrap().to_string();
    World::builder(tag)
        .setup(move |ctx| {
            ctx.gh.edit_settings(|settings| {
                settings["recordings"] = json!({
                    "timestamp_url": url,
                    "timestamp_ca_file": ca,
                });
            });
        })
        .start()
}

/// One recorded SSH session through the gateway; its id once sealed.
fn sealed_session(w: &World, marker: &str) -> String {
    let out = w.client().ssh(&format!("echo {marker}"));
    assert_client_ok("session to timestamp", &out);
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    let id = json_id(&sessions[0]["id"]);
    poll(Duration::from_secs(30), || {
        w.gh.audit_of("recording_sealed")
            .iter()
            .any(|e| e["session"] == id.as_str())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not sealed: {}", w.gh.log_tail(40)));
    id
}

/// Waits for the recording's token.
fn wait_for_token(w: &World, dir: &Path, within: Duration, tsa: &TsaServer) -> PathBuf {
    let token = dir.join("manifest.json.tsr");
    poll(within, || token.exists().then_some(())).unwrap_or_else(|| {
        panic!(
            "no manifest.json.tsr within {within:?}\n--- serve.log ---\n{}\n--- TSA ---\n{}",
            w.gh.log_tail(60),
            tsa.log_text()
        )
    });
    token
}

/// `openssl ts -verify -data manifest.json -in manifest.json.tsr -token_in -CAfile CA`.
fn openssl_verify(dir: &Path, ca: &Path) -> std::process::Output {
    Command::new("openssl")
        .args([
            "ts",
            "-verify",
            "-data",
            "manifest.json",
            "-in",
            "manifest.json.tsr",
        ])
        .args(["-token_in", "-CAfile"])
        .arg(ca)
        .current_dir(dir)
        .output()
        .expect("openssl")
}

/// (1) With a TSA configured, a sealed recording gets `manifest.json.tsr`; the stock tool
/// verifies it, `audit verify` checks it and says so, and the trail has the event.
#[test]
fn sealed_recordings_are_timestamped_and_openssl_agrees() {
    let keys = TsaKeys::make();
    let port = free_port();
    let tsa = keys.serve(port);
    let w = world("ts_ok", format!("http://127.0.0.1:{port}/tsa"), &keys.ca());
    let id = sealed_session(&w, "timestamped-1");
    let dir = w.gh.data_dir().join("recordings").join(&id);
    wait_for_token(&w, &dir, Duration::from_secs(30), &tsa);
    assert!(!dir.join("manifest.json.tsr.part").exists());

    let checked = openssl_verify(&dir, &keys.ca());
    assert!(
        checked.status.success() && checked.stdout_text().contains("Verification: OK"),
        "openssl ts -verify: {}",
        checked.describe()
    );

    let said = w.gh.cli_ok(&["audit", "verify"]);
    assert!(said.contains("1 sealed recordings intact"), "{said}");
    assert!(said.contains("1 sealed recordings timestamped"), "{said}");
    assert!(
        said.contains(&format!("chained to `{}`", keys.ca().display())),
        "{said}"
    );
    assert!(!said.contains("warning"), "{said}");

    let events = w.gh.audit_of("recording_timestamped");
    let event = events
        .iter()
        .find(|e| e["session"] == id.as_str())
        .unwrap_or_else(|| panic!("no recording_timestamped event: {events:#?}"));
    let gen_time = event["fields"]["gen_time"].as_str().unwrap().to_string();
    assert!(gen_time.ends_with('Z') && gen_time.len() >= 20, "{event}");
    let detail = event["detail"].as_str().unwrap();
    assert!(
        detail.contains(&id) && detail.contains(&gen_time),
        "{detail}"
    );
    assert_eq!(event["user"], GATEWAY_USER, "{event}");
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    assert_eq!(
        event["fields"]["manifest_sha256"],
        Value::String(support::sha256_file(&dir.join("manifest.json"))),
        "{event}"
    );
    assert!(!manifest.is_empty());
    // One token per recording: later scans leave it alone.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(w.gh.audit_of("recording_timestamped").len(), 1);

    // The CA check is real: another CA fails the token, the TSA's own certificate pinned passes.
    let set_ca = |ca: &Path| {
        w.gh.edit_settings(|settings| {
            settings["recordings"]["timestamp_ca_file"] = json!(ca.to_str().unwrap());
        })
    };
    let other = TsaKeys::make();
    set_ca(&other.ca());
    let out = w.gh.cli(&["audit", "verify"]);
    assert!(!out.status.success(), "{}", out.describe());
    let said = out.stderr_text();
    assert!(
        said.contains(&format!(
            "recording of session {id}: its timestamp `manifest.json.tsr` does not hold: its TSA \
             certificate (CN=gatehouse-test-tsa) does not chain to timestamp_ca_file"
        )),
        "{said}"
    );
    set_ca(&keys.dir.path().join("tsa.pem"));
    w.gh.cli_ok(&["audit", "verify"]);
    set_ca(&keys.ca());

    // A token whose signature changed (its last byte: openssl's tokens end with the signature).
    let path = dir.join("manifest.json.tsr");
    let mut token = std::fs::read(&path).unwrap();
    *token.last_mut().unwrap() ^= 1;
    std::fs::write(&path, &token).unwrap();
    let out = w.gh.cli(&["audit", "verify"]);
    assert!(!out.status.success(), "{}", out.describe());
    let said = out.stderr_text();
    assert!(
        said.contains(&format!(
            "recording of session {id}: its timestamp `manifest.json.tsr` does not hold: its \
             signature does not verify with the TSA certificate it carries"
        )),
        "{said}"
    );
    assert!(!openssl_verify(&dir, &keys.ca()).status.success());
}

/// (2) A manifest changed after its timestamp: `audit verify` fails and names it, as does the
/// stock tool.
#[test]
fn a_changed_manifest_no_longer_matches_its_timestamp() {
    let keys = TsaKeys::make();
    let port = free_port();
    let tsa = keys.serve(port);
    let w = world("ts_edit", format!("http://127.0.0.1:{port}/"), &keys.ca());
    let id = sealed_session(&w, "timestamped-2");
    let dir = w.gh.data_dir().join("recordings").join(&id);
    wait_for_token(&w, &dir, Duration::from_secs(30), &tsa);
    w.gh.cli_ok(&["audit", "verify"]);

    // One byte: a hex digit of a file's hash.
    let path = dir.join("manifest.json");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"\"sha256\": ")
        .expect("a sha256 in the manifest")
        + 11;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, &bytes).unwrap();

    let out = w.gh.cli(&["audit", "verify"]);
    assert!(!out.status.success(), "{}", out.describe());
    let said = out.stderr_text();
    assert!(
        said.contains(&format!(
            "recording of session {id}: `manifest.json` does not match its timestamp"
        )),
        "{said}"
    );
    let checked = openssl_verify(&dir, &keys.ca());
    assert!(!checked.status.success(), "{}", checked.describe());
}

/// (3) The TSA is down when the recording is sealed: sealing goes on, the log warns once, and
/// the token arrives once the TSA is up.
#[test]
fn a_tsa_that_is_down_delays_only_the_timestamp() {
    let keys = TsaKeys::make();
    // Nothing listens here yet.
    let port = free_port();
    let w = world("ts_down", format!("http://127.0.0.1:{port}/"), &keys.ca());
    let id = sealed_session(&w, "timestamped-3");
    let dir = w.gh.data_dir().join("recordings").join(&id);
    assert!(dir.join("manifest.json.sig").exists());
    const WARNING: &str = "recordings are not timestamped: the TSA failed";
    poll(Duration::from_secs(30), || {
        w.gh.log_text().contains(WARNING).then_some(())
    })
    .unwrap_or_else(|| panic!("no warning: {}", w.gh.log_tail(60)));
    assert!(!dir.join("manifest.json.tsr").exists());
    // Not timestamped yet is not a failure (nor, this soon after sealing, a warning).
    let said = w.gh.cli_ok(&["audit", "verify"]);
    assert!(said.contains("1 sealed recordings intact"), "{said}");
    assert!(said.contains("0 sealed recordings timestamped"), "{said}");
    assert!(!said.contains("warning"), "{said}");
    // A few more attempts fail quietly.
    std::thread::sleep(Duration::from_secs(8));

    let tsa = keys.serve(port);
    wait_for_token(&w, &dir, Duration::from_secs(45), &tsa);
    let checked = openssl_verify(&dir, &keys.ca());
    assert!(checked.status.success(), "{}", checked.describe());
    let log = w.gh.log_text();
    assert_eq!(
        log.matches(WARNING).count(),
        1,
        "warned more than once per outage:\n{}",
        w.gh.log_tail(60)
    );
    assert!(
        log.contains("timestamping resumes"),
        "{}",
        w.gh.log_tail(60)
    );
    assert!(
        w.gh.audit_of("recording_timestamped")
            .iter()
            .any(|e| e["session"] == id.as_str())
    );
    let said = w.gh.cli_ok(&["audit", "verify"]);
    assert!(said.contains("1 sealed recordings timestamped"), "{said}");
}
