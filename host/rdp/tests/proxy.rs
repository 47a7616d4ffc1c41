//! The proxy between real FreeRDP peers: `xfreerdp` connects to the gateway as the gateway user
//! `alice` (the username names the target, `alice@target1@win1`), the gateway authorizes the
//! session with the real policy engine and logs in to `freerdp-shadow-cli` (NLA only, SAM file)
//! as `target1` with the vault's password, which the client never sees. Bad input is refused
//! with a proper RDP failure and a reason for the audit trail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_core::{LoginSpec, SecretString};
use gatehouse_policy::{PolicyEngine, SessionFacts};
use gatehouse_rdp::{
    CertificatePin, CertificatePolicy, ClientLogin, DialOptions, Direction, FirstUse, GatewayTls,
    NtHash, PduKind, PinRecorder, RecordError, RecordedPdu, Recorder, Refused, RelayOptions,
    RelaySummary, TargetLogin, UserDirectory,
};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Client, ShadowTarget, World, text};

const GATEWAY_USER: &str = "alice";
const GATEWAY_PASSWORD: &str = "Gateway-Pass-1";
const TARGET_ACCOUNT: &str = "target1";
const VAULT_PASSWORD: &str = "Vault-Pass-1";
const ASSET: &str = "win1";

fn login_name() -> String {
    format!("{GATEWAY_USER}@{TARGET_ACCOUNT}@{ASSET}")
}

/// The gateway users' NT hashes (the glue reads them from the vault-sealed RDP secret).
struct Users;

impl UserDirectory for Users {
    fn nt_hash(&self, login: &ClientLogin) -> Result<NtHash, Refused> {
        let spec =
            LoginSpec::parse(&login.user).map_err(|e| Refused(format!("malformed login: {e}")))?;
        if spec.user.as_str() == GATEWAY_USER {
            Ok(NtHash::from_password(GATEWAY_PASSWORD))
        } else {
            Err(Refused(format!("unknown gateway user `{}`", spec.user)))
        }
    }
}

/// Records first-use pins in memory (the glue writes them to the asset in a store transaction).
#[derive(Default)]
struct Pins {
    recorded: Mutex<Option<CertificatePin>>,
}

impl PinRecorder for Pins {
    fn record_first_use<'a>(
        &'a self,
        presented: &'a CertificatePin,
    ) -> gatehouse_rdp::PinFuture<'a> {
        let mut slot = self.recorded.lock().unwrap();
        let outcome = match &*slot {
            Some(pinned) => FirstUse::AlreadyPinned(pinned.clone()),
            None => {
                *slot = Some(presented.clone());
                FirstUse::Recorded
            }
        };
        Box::pin(std::future::ready(Ok(outcome)))
    }
}

/// One recorded PDU: direction, framing, time since the relay started, bytes.
type Kept = (Direction, PduKind, Duration, Vec<u8>);

/// Keeps every recorded PDU in memory.
#[derive(Default)]
struct MemoryRecorder {
    pdus: Mutex<Vec<Kept>>,
}

impl Recorder for MemoryRecorder {
    fn record(&self, pdu: &RecordedPdu<'_>) -> Result<(), RecordError> {
        self.pdus
            .lock()
            .unwrap()
            .push((pdu.direction, pdu.kind, pdu.at, pdu.bytes.to_vec()));
        Ok(())
    }
}

/// What happened to one connection, step by step (the audit trail's view).
#[derive(Debug, Default)]
struct Outcome {
    accepted: Option<Result<String, String>>,
    authorized: Option<Result<Vec<String>, String>>,
    dialed: Option<Result<String, String>>,
    relayed: Option<Relayed>,
}

/// How the relay ended: what flowed (also on an error), the error, whether the stop ended it.
#[derive(Debug, Clone)]
struct Relayed {
    summary: RelaySummary,
    error: Option<String>,
    stopped: bool,
}

struct GatewayConfig {
    tls: GatewayTls,
    world: World,
    certificate: CertificatePolicy,
    vault_login: TargetLogin,
    target_port: u16,
    pins: Pins,
    recorder: MemoryRecorder,
    options: RelayOptions,
    /// Ends a running session (the glue's revocation signal).
    stop: tokio::sync::Notify,
}

/// The gateway under test: the crate's API glued the way `gatehouse serve` will glue it.
struct Gateway {
    port: u16,
    config: Arc<GatewayConfig>,
    outcomes: Receiver<Outcome>,
    _runtime: tokio::runtime::Runtime,
}

fn gateway_tls() -> GatewayTls {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .or_else(|_| rcgen::KeyPair::generate())
        .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gatehouse.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    GatewayTls::new(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap()
}

impl Gateway {
    fn start(certificate: CertificatePolicy, vault_password: &str, target_port: u16) -> Gateway {
        Gateway::start_with(
            certificate,
            vault_password,
            target_port,
            RelayOptions::default(),
        )
    }

    fn start_with(
        certificate: CertificatePolicy,
        vault_password: &str,
        target_port: u16,
        options: RelayOptions,
    ) -> Gateway {
        let world = World::new(GATEWAY_USER, TARGET_ACCOUNT, ASSET, target_port);
        let config = Arc::new(GatewayConfig {
            tls: gateway_tls(),
            world,
            certificate,
            vault_login: TargetLogin {
                username: TARGET_ACCOUNT.into(),
                domain: None,
                password: SecretString::new(vault_password.into()),
            },
            target_port,
            pins: Pins::default(),
            recorder: MemoryRecorder::default(),
            options,
            stop: tokio::sync::Notify::new(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, outcomes) = sync_channel(16);
        runtime.spawn(accept_loop(listener, config.clone(), sender));
        Gateway {
            port,
            config,
            outcomes,
            _runtime: runtime,
        }
    }

    fn next_outcome(&self) -> Outcome {
        self.outcomes
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway reported no connection outcome")
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    config: Arc<GatewayConfig>,
    outcomes: SyncSender<Outcome>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let config = config.clone();
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            let outcome = handle(stream, &config).await;
            let _ = outcomes.send(outcome);
        });
    }
}

async fn handle(stream: tokio::net::TcpStream, config: &GatewayConfig) -> Outcome {
    let mut outcome = Outcome::default();
    let client =
        match gatehouse_rdp::accept(&config.tls, &Users, stream, Duration::from_secs(30)).await {
            Ok(client) => client,
            Err(e) => {
                outcome.accepted = Some(Err(e.to_string()));
                return outcome;
            }
        };
    outcome.accepted = Some(Ok(client.login().to_string()));
    // Stand-in for the argon2id check of the delegated password against the user's hash.
    assert_eq!(client.delegated_password().expose(), GATEWAY_PASSWORD);

    let spec = LoginSpec::parse(&client.login().user).unwrap();
    let target = spec.target.unwrap();
    let engine: &PolicyEngine = &config.world.engine;
    let facts = SessionFacts {
        session_id: "rdp-test".into(),
        protocol: "rdp".into(),
        client: client.peer(),
        pairs: vec![],
        authenticated_with: vec!["password".into()],
        ticket_verified: false,
        time: engine.clock().now(),
        node: None,
        destination: None,
    };
    let authorization =
        match engine.authorize_session(&World::user_record(spec.user.as_str()), &target, facts) {
            Ok(a) => a,
            Err(e) => {
                outcome.authorized = Some(Err(e.to_string()));
                client.refuse(gatehouse_rdp::Refusal::Denied).await;
                return outcome;
            }
        };
    outcome.authorized = Some(Ok(authorization.reasons().to_vec()));

    let options = DialOptions {
        source: None,
        port: config.target_port,
        timeout: Duration::from_secs(30),
        certificate: config.certificate.clone(),
        pins: &config.pins,
    };
    let target =
        match gatehouse_rdp::dial(&authorization, &client, &config.vault_login, options).await {
            Ok(target) => target,
            Err(e) => {
                outcome.dialed = Some(Err(e.to_string()));
                client.refuse(gatehouse_rdp::Refusal::from(&e)).await;
                return outcome;
            }
        };
    outcome.dialed = Some(Ok(format!("{:?}", target.pin())));
    let relayed = gatehouse_rdp::relay(
        client,
        target,
        &config.recorder,
        config.options,
        config.stop.notified(),
    )
    .await;
    outcome.relayed = Some(Relayed {
        summary: relayed.summary,
        error: relayed.error.map(|e| e.to_string()),
        stopped: relayed.stopped,
    });
    outcome
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn auth_only_client_is_authenticated_by_the_gateway_and_the_target_takes_the_vault_credential() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(dir.path(), TARGET_ACCOUNT, VAULT_PASSWORD);
    let gateway = Gateway::start(
        CertificatePolicy::TrustOnFirstUse,
        VAULT_PASSWORD,
        shadow.port,
    );
    let client = Client::new(dir.path());
    let command = client.command(
        gateway.port,
        &login_name(),
        GATEWAY_PASSWORD,
        &["+auth-only", "/sec:nla"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(60));
    assert!(!killed, "xfreerdp hung:\n{}", text(&output));
    assert!(
        output.status.success(),
        "xfreerdp +auth-only failed through the gateway:\n{}",
        text(&output)
    );
    let outcome = gateway.next_outcome();
    assert_eq!(outcome.accepted, Some(Ok(login_name())), "{outcome:?}");
    assert_eq!(
        outcome.authorized,
        Some(Ok(vec!["grant:g-rdp".to_string()])),
        "{outcome:?}"
    );
    let shadow_pin = CertificatePin::of_certificate(&shadow.certificate()).unwrap();
    assert_eq!(
        outcome.dialed,
        Some(Ok(format!("Recorded({shadow_pin})"))),
        "the target must accept the vault credential, its key pinned on first use: {outcome:?}\nshadow log:\n{}",
        shadow.process.log_text()
    );
    assert_eq!(
        gateway.config.pins.recorded.lock().unwrap().clone(),
        Some(shadow_pin)
    );
}

#[test]
fn a_real_session_flows_frames_and_keeps_the_gateway_password_from_target_and_recording() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(dir.path(), TARGET_ACCOUNT, VAULT_PASSWORD);
    let pin = CertificatePin::of_certificate(&shadow.certificate()).unwrap();
    let gateway = Gateway::start(
        CertificatePolicy::Pinned(pin.clone()),
        VAULT_PASSWORD,
        shadow.port,
    );
    let client = Client::on_display(dir.path(), &shadow.display);
    let command = client.command(
        gateway.port,
        &login_name(),
        GATEWAY_PASSWORD,
        &["/sec:nla", "/size:800x600", "-clipboard", "/audio-mode:2"],
    );
    // A session stays up until the user ends it: hold it for a few seconds while the target's
    // screen changes, then end it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wiggler = support::move_client_window(&shadow.display, stop.clone());
    let (output, killed) = client.run(command, Duration::from_secs(8));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    wiggler.join().unwrap();
    assert!(
        killed,
        "xfreerdp ended on its own instead of holding the session:\n{}",
        text(&output)
    );
    let outcome = gateway.next_outcome();
    // Each failure below shows both peers' logs: this test runs beside many others in CI.
    let logs = || {
        format!(
            "client:\n{}\nshadow:\n{}",
            text(&output),
            shadow.process.log_text()
        )
    };
    assert_eq!(
        outcome.dialed,
        Some(Ok(format!("Matched({pin})"))),
        "{outcome:?}\n{}",
        logs()
    );
    let summary = match &outcome.relayed {
        Some(Relayed {
            summary,
            error: None,
            stopped: false,
        }) => summary.clone(),
        other => panic!("relay failed: {other:?}\n{}", logs()),
    };
    assert!(summary.client_info_rewritten, "{summary:?}\n{}", logs());
    assert!(!summary.undecodable, "{summary:?}\n{}", logs());
    // Steering is on by default: the client's Confirm Active was rewritten and decoded fine.
    assert!(
        summary.confirm_actives_steered >= 1,
        "{summary:?}\n{}",
        logs()
    );
    assert_eq!(
        summary.confirm_actives_unsteered,
        0,
        "{summary:?}\n{}",
        logs()
    );

    let pdus = gateway.config.recorder.pdus.lock().unwrap();
    // The first recorded PDU is the client's MCS Connect Initial: nothing from CredSSP.
    let (direction, kind, _, first) = &pdus[0];
    assert_eq!(
        (*direction, *kind),
        (Direction::ClientToTarget, PduKind::X224)
    );
    assert_eq!(first[0], 3, "a TPKT header");
    // Graphics flowed from the target, with timing: updates come as fast-path PDUs or, with
    // the graphics pipeline, as virtual-channel data; either way, PDUs of some size. The shared
    // screen is mostly still, so this is the first screen and a few updates, not a stream.
    let graphics: Vec<_> = pdus
        .iter()
        .filter(|(d, _, _, b)| *d == Direction::TargetToClient && b.len() >= 256)
        .collect();
    let graphics_bytes: usize = graphics.iter().map(|(_, _, _, b)| b.len()).sum();
    assert!(
        graphics.len() >= 3 && graphics_bytes >= 8_000,
        "only {} PDUs of graphics ({graphics_bytes} bytes) from the target; summary {summary:?}\n{}",
        graphics.len(),
        logs()
    );
    let first_at = pdus.first().map(|(_, _, at, _)| *at).unwrap();
    let last_at = pdus.last().map(|(_, _, at, _)| *at).unwrap();
    assert!(
        last_at > first_at + Duration::from_millis(500),
        "timing: {first_at:?} .. {last_at:?}\n{}",
        logs()
    );
    let from_target = pdus
        .iter()
        .filter(|(d, _, _, _)| *d == Direction::TargetToClient)
        .count();
    assert_eq!(
        summary.pdus_from_target,
        from_target as u64,
        "{summary:?}\n{}",
        logs()
    );

    // The gateway user's password is in no recorded byte (the Client Info carried it), and
    // the Client Info the target got names the target account.
    let client_bytes: Vec<u8> = pdus
        .iter()
        .filter(|(d, _, _, _)| *d == Direction::ClientToTarget)
        .flat_map(|(_, _, _, b)| b.clone())
        .collect();
    let all_bytes: Vec<u8> = pdus.iter().flat_map(|(_, _, _, b)| b.clone()).collect();
    for secret in [GATEWAY_PASSWORD, VAULT_PASSWORD] {
        assert!(
            !contains(&all_bytes, secret.as_bytes()),
            "`{secret}` recorded"
        );
        assert!(
            !contains(&all_bytes, &utf16(secret)),
            "`{secret}` recorded as UTF-16"
        );
    }
    assert!(
        contains(&client_bytes, &utf16(TARGET_ACCOUNT)),
        "the client info sent to the target names `{TARGET_ACCOUNT}`"
    );
    assert!(
        !contains(&client_bytes, &utf16(&login_name())),
        "the gateway login reached the target"
    );
}

#[test]
fn a_client_without_nla_is_refused_with_hybrid_required_by_server() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        CertificatePolicy::TrustOnFirstUse,
        VAULT_PASSWORD,
        support::free_port(),
    );
    let client = Client::new(dir.path());
    let command = client.command(
        gateway.port,
        &login_name(),
        GATEWAY_PASSWORD,
        &["+auth-only", "/sec:tls"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(60));
    assert!(!killed, "xfreerdp hung:\n{}", text(&output));
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("HYBRID_REQUIRED_BY_SERVER"),
        "the client must be told NLA is required:\n{}",
        text(&output)
    );
    let outcome = gateway.next_outcome();
    assert_eq!(
        outcome.accepted,
        Some(Err(
            "the client does not offer NLA (offered SSL); refused with HYBRID_REQUIRED_BY_SERVER"
                .into()
        )),
        "{outcome:?}"
    );
}

#[test]
fn a_wrong_gateway_password_or_an_unknown_user_is_refused_before_any_target_is_dialed() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        CertificatePolicy::TrustOnFirstUse,
        VAULT_PASSWORD,
        support::free_port(),
    );
    let client = Client::new(dir.path());
    let cases = [
        (
            login_name(),
            "wrong-password",
            format!(
                "authentication of `{}` failed: wrong password",
                login_name()
            ),
        ),
        (
            format!("mallory@{TARGET_ACCOUNT}@{ASSET}"),
            GATEWAY_PASSWORD,
            format!(
                "authentication of `mallory@{TARGET_ACCOUNT}@{ASSET}` failed: unknown gateway user `mallory`"
            ),
        ),
    ];
    for (user, password, expected) in cases {
        let command = client.command(gateway.port, &user, password, &["+auth-only", "/sec:nla"]);
        let (output, killed) = client.run(command, Duration::from_secs(60));
        assert!(!killed, "xfreerdp hung:\n{}", text(&output));
        assert!(!output.status.success(), "{user}: {}", text(&output));
        // The same RDP failure for both: no oracle for which users exist.
        assert!(
            text(&output).contains("ERRCONNECT_LOGON_FAILURE"),
            "{user}: the client must be told the logon failed:\n{}",
            text(&output)
        );
        let outcome = gateway.next_outcome();
        let accepted = outcome.accepted.clone().unwrap();
        let reason = accepted.expect_err("authentication must fail");
        assert!(reason.starts_with(&expected), "{user}: {reason}");
        assert!(outcome.dialed.is_none(), "{outcome:?}");
    }
}

#[test]
fn a_target_certificate_that_does_not_match_the_pin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(dir.path(), TARGET_ACCOUNT, VAULT_PASSWORD);
    let shadow_pin = CertificatePin::of_certificate(&shadow.certificate()).unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec!["win1".into()])
        .unwrap()
        .self_signed(&other_key)
        .unwrap();
    let wrong_pin = CertificatePin::of_certificate(other.der()).unwrap();
    let gateway = Gateway::start(
        CertificatePolicy::Pinned(wrong_pin.clone()),
        VAULT_PASSWORD,
        shadow.port,
    );
    let client = Client::new(dir.path());
    let command = client.command(gateway.port, &login_name(), GATEWAY_PASSWORD, &["/sec:nla"]);
    let (output, killed) = client.run(command, Duration::from_secs(60));
    assert!(!killed, "xfreerdp hung:\n{}", text(&output));
    assert!(!output.status.success(), "{}", text(&output));
    let outcome = gateway.next_outcome();
    assert_eq!(
        outcome.dialed,
        Some(Err(format!(
            "certificate mismatch: pinned {wrong_pin}, presented {shadow_pin}"
        ))),
        "{outcome:?}"
    );
    assert!(outcome.relayed.is_none());
}

#[test]
fn a_target_refusing_the_vault_credential_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(dir.path(), TARGET_ACCOUNT, VAULT_PASSWORD);
    let gateway = Gateway::start(
        CertificatePolicy::TrustOnFirstUse,
        "not-the-target-password",
        shadow.port,
    );
    let client = Client::new(dir.path());
    let command = client.command(gateway.port, &login_name(), GATEWAY_PASSWORD, &["/sec:nla"]);
    let (output, killed) = client.run(command, Duration::from_secs(60));
    assert!(!killed, "xfreerdp hung:\n{}", text(&output));
    assert!(!output.status.success(), "{}", text(&output));
    let outcome = gateway.next_outcome();
    let dialed = outcome.dialed.clone().unwrap();
    let reason = dialed.expect_err("the target must refuse the credential");
    assert!(
        reason.starts_with("the target refused the vault credential"),
        "{reason}"
    );
}

/// The checkerboard painted on the target's screen for the recording tests (and the fixture).
const SQUARE: u32 = 32;
const FG: [u8; 3] = [0xff, 0x00, 0xff];
const BG: [u8; 3] = [0x00, 0xc0, 0x00];
/// What `xdotool` types into the client, and what the recording's events must show. It starts
/// lowercase: on a loaded machine xdotool can lose the Shift of the very first key (seen once in
/// CI as `hello, World!`); the `W` and `!` still need Shift. (The committed rdp-replay fixture
/// was recorded with "Hello, World!"; regenerating it changes what its test expects.)
const TYPED: &str = "hello, World!";

/// Runs one real session between `xfreerdp` (on its own display) and the shadow target (its
/// screen painted with the checkerboard) through a gateway with `options`; `during` runs on
/// another thread once graphics flow, then the gateway's stop signal ends the session.
fn recorded_session(
    options: RelayOptions,
    client_args: &[&str],
    during: impl FnOnce(&Client) + Send,
) -> (Relayed, Vec<Kept>) {
    let dir = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(dir.path(), TARGET_ACCOUNT, VAULT_PASSWORD);
    support::paint_checkerboard(
        &shadow.display,
        dir.path(),
        SQUARE,
        &format!("#{:02x}{:02x}{:02x}", FG[0], FG[1], FG[2]),
        &format!("#{:02x}{:02x}{:02x}", BG[0], BG[1], BG[2]),
    );
    let gateway = Gateway::start_with(
        CertificatePolicy::TrustOnFirstUse,
        VAULT_PASSWORD,
        shadow.port,
        options,
    );
    let client = Client::new(dir.path());
    let mut args = vec!["/sec:nla", "-clipboard", "/audio-mode:2"];
    args.extend_from_slice(client_args);
    let command = client.command(gateway.port, &login_name(), GATEWAY_PASSWORD, &args);
    let (output, _killed) = std::thread::scope(|scope| {
        let driver = scope.spawn(|| {
            // Graphics flow once the target has sent some fast-path PDUs.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let flowing = gateway
                    .config
                    .recorder
                    .pdus
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(d, k, _, _)| {
                        *d == Direction::TargetToClient && *k == PduKind::FastPath
                    })
                    .count()
                    >= 3;
                if flowing || std::time::Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_millis(1500));
            during(&client);
            std::thread::sleep(Duration::from_millis(1500));
            gateway.config.stop.notify_one();
        });
        let result = client.run(command, Duration::from_secs(45));
        driver.join().unwrap();
        result
    });
    let outcome = gateway.next_outcome();
    let relayed = outcome.relayed.clone().unwrap_or_else(|| {
        panic!(
            "no relay: {outcome:?}\nclient:\n{}\nshadow:\n{}",
            text(&output),
            shadow.process.log_text()
        )
    });
    let pdus = gateway.config.recorder.pdus.lock().unwrap().clone();
    (relayed, pdus)
}

fn write_recording(pdus: &[Kept], path: &std::path::Path) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut writer = gatehouse_rdp_replay::PduWriter::new(file).unwrap();
    for (direction, kind, at, bytes) in pdus {
        writer
            .write(&gatehouse_rdp_replay::Pdu {
                direction: match direction {
                    Direction::ClientToTarget => gatehouse_rdp_replay::Direction::ClientToTarget,
                    Direction::TargetToClient => gatehouse_rdp_replay::Direction::TargetToClient,
                },
                framing: match kind {
                    PduKind::X224 => gatehouse_rdp_replay::Framing::X224,
                    PduKind::FastPath => gatehouse_rdp_replay::Framing::FastPath,
                    PduKind::Undecodable => gatehouse_rdp_replay::Framing::Undecodable,
                },
                at: *at,
                bytes,
            })
            .unwrap();
    }
    writer.finish().unwrap();
}

/// The colour the checkerboard has at (x, y).
fn board(x: usize, y: usize) -> [u8; 3] {
    let square = SQUARE as usize;
    if (x / square + y / square).is_multiple_of(2) {
        FG
    } else {
        BG
    }
}

fn assert_checkerboard(frame: &gatehouse_rdp_replay::Frame<'_>) {
    let width = usize::from(frame.width);
    let height = usize::from(frame.height);
    let mut checked = 0;
    for y in (SQUARE as usize / 2..height).step_by(SQUARE as usize * 3) {
        for x in (SQUARE as usize / 2..width).step_by(SQUARE as usize * 5) {
            let at = (y * width + x) * 4;
            let pixel = &frame.rgba[at..at + 3];
            assert_eq!(pixel, board(x, y), "pixel at ({x}, {y})");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} pixels checked");
}

/// A real session, steered (the default), recorded while the target shows a checkerboard and
/// the user types: the recording decodes to that checkerboard and the typing is one text run.
/// The session is ended by the gateway's stop signal, and the relay still reports its counts.
///
/// With `GATEHOUSE_RDP_FIXTURES=<dir>` set, the recording is also written to
/// `<dir>/checkerboard-typing.pdus` (how host/rdp-replay/tests/fixtures is regenerated).
#[test]
fn a_steered_recording_decodes_to_the_target_screen_and_its_typing_is_searchable() {
    let (relayed, pdus) = recorded_session(RelayOptions::default(), &[], |client| {
        support::type_into_client(client.display_env(), TYPED);
    });
    assert!(relayed.stopped, "{relayed:?}");
    assert_eq!(relayed.error, None, "{relayed:?}");
    let summary = &relayed.summary;
    assert!(summary.confirm_actives_steered >= 1, "{summary:?}");
    assert!(
        summary.pdus_from_target >= 3 && summary.bytes_from_target > 0,
        "the stopped relay keeps its counts: {summary:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rdp.pdus");
    write_recording(&pdus, &path);
    if let Some(fixtures) = std::env::var_os("GATEHOUSE_RDP_FIXTURES") {
        std::fs::copy(
            &path,
            std::path::Path::new(&fixtures).join("checkerboard-typing.pdus"),
        )
        .unwrap();
    }

    let mut reader = gatehouse_rdp_replay::pdus::open(&path).unwrap();
    let replayer = gatehouse_rdp_replay::Replayer::replay(&mut reader).unwrap();
    assert_eq!(
        replayer.verdict(),
        gatehouse_rdp_replay::Verdict::Decodable,
        "{:?}",
        replayer.stats()
    );
    let frame = replayer.frame().unwrap();
    assert_eq!((frame.width, frame.height), (1024, 768));
    assert_checkerboard(&frame);

    let mut tracker = gatehouse_rdp_replay::InputTracker::new();
    let mut events = Vec::new();
    let mut reader = gatehouse_rdp_replay::pdus::open(&path).unwrap();
    while let Some(pdu) = reader.next_pdu().unwrap() {
        tracker.observe(&pdu, &mut events);
    }
    tracker.finish(&mut events);
    let runs: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            gatehouse_rdp_replay::EventKind::Keys { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        runs.contains(&format!("{TYPED}<Enter>").as_str()),
        "typed text not found as one run: {runs:?}"
    );
}

/// The client's capability sets from the (first) Confirm Active in a recording, and the
/// early capability flags of its Connect Initial.
fn client_capabilities(
    pdus: &[Kept],
) -> (
    ironrdp_pdu::gcc::ClientEarlyCapabilityFlags,
    Vec<ironrdp_pdu::rdp::capability_sets::CapabilitySet>,
) {
    use ironrdp_pdu::mcs::{ConnectInitial, SendDataRequest};
    use ironrdp_pdu::rdp::headers::{ShareControlHeader, ShareControlPdu};
    use ironrdp_pdu::x224::{X224, X224Data};
    let initial = &pdus[0].3;
    let data = ironrdp_pdu::decode::<X224<X224Data<'_>>>(initial)
        .unwrap()
        .0;
    let initial: ConnectInitial = ironrdp_pdu::decode(data.data.as_ref()).unwrap();
    let flags = initial
        .conference_create_request
        .gcc_blocks()
        .core
        .optional_data
        .early_capability_flags
        .unwrap();
    let sets = pdus
        .iter()
        .filter(|(d, k, _, _)| *d == Direction::ClientToTarget && *k == PduKind::X224)
        .find_map(|(_, _, _, bytes)| {
            let request = ironrdp_pdu::decode::<X224<SendDataRequest<'_>>>(bytes)
                .ok()?
                .0;
            let header: ShareControlHeader =
                ironrdp_pdu::decode(request.user_data.as_ref()).ok()?;
            match header.share_control_pdu {
                ShareControlPdu::ClientConfirmActive(confirm) => Some(confirm.pdu.capability_sets),
                _ => None,
            }
        })
        .expect("no Confirm Active recorded");
    (flags, sets)
}

fn orders_on(sets: &[ironrdp_pdu::rdp::capability_sets::CapabilitySet]) -> usize {
    use ironrdp_pdu::rdp::capability_sets::{CapabilitySet, OrderSupportIndex as O};
    let mut order = sets
        .iter()
        .find_map(|s| match s {
            CapabilitySet::Order(order) => Some(order.clone()),
            _ => None,
        })
        .expect("no Order capability set");
    [
        O::DstBlt,
        O::PatBlt,
        O::ScrBlt,
        O::MemBlt,
        O::Mem3Blt,
        O::LineTo,
        O::MultiDstBlt,
        O::MultiPatBlt,
        O::MultiScrBlt,
        O::MultiOpaqueRect,
        O::Fast,
        O::PolygonSC,
        O::PolygonCB,
        O::Polyline,
        O::FastGlyph,
        O::EllipseSC,
        O::EllipseCB,
        O::Index,
        O::SaveBitmap,
    ]
    .into_iter()
    .filter(|&i| order.get_support_flag(i))
    .count()
}

fn codecs(sets: &[ironrdp_pdu::rdp::capability_sets::CapabilitySet]) -> Option<usize> {
    use ironrdp_pdu::rdp::capability_sets::CapabilitySet;
    sets.iter().find_map(|s| match s {
        CapabilitySet::BitmapCodecs(codecs) => Some(codecs.0.len()),
        _ => None,
    })
}

/// The same real client (asking for the graphics pipeline and RemoteFX) through a gateway
/// without steering and one with: the recorded Connect Initial and Confirm Active are the
/// client's own without, and steered with (no GFX flag, every drawing order off, no codecs),
/// and only the steered recording decodes.
#[test]
fn steering_changes_what_the_target_is_offered_and_makes_the_recording_decodable() {
    use ironrdp_pdu::gcc::ClientEarlyCapabilityFlags as Early;
    let client_args = ["/gfx", "/rfx"];
    let (plain, plain_pdus) = recorded_session(
        RelayOptions {
            steer_for_recording: false,
        },
        &client_args,
        |_| {},
    );
    assert_eq!(plain.summary.confirm_actives_steered, 0, "{plain:?}");
    let (steered, steered_pdus) = recorded_session(RelayOptions::default(), &client_args, |_| {});
    assert!(steered.summary.confirm_actives_steered >= 1, "{steered:?}");
    assert_eq!(steered.summary.confirm_actives_unsteered, 0, "{steered:?}");

    let (plain_flags, plain_sets) = client_capabilities(&plain_pdus);
    let (steered_flags, steered_sets) = client_capabilities(&steered_pdus);
    assert!(plain_flags.contains(Early::SUPPORT_DYN_VC_GFX_PROTOCOL));
    assert!(!steered_flags.contains(Early::SUPPORT_DYN_VC_GFX_PROTOCOL));
    // Everything else in the early flags is the client's.
    assert_eq!(
        plain_flags - Early::SUPPORT_DYN_VC_GFX_PROTOCOL,
        steered_flags
    );
    assert!(
        orders_on(&plain_sets) > 0,
        "the client offers drawing orders"
    );
    assert_eq!(orders_on(&steered_sets), 0);
    assert!(codecs(&plain_sets).unwrap() > 0, "the client offers codecs");
    assert_eq!(codecs(&steered_sets), Some(0));
    // The other capability sets are the same kinds, in the same order.
    let kinds = |sets: &[ironrdp_pdu::rdp::capability_sets::CapabilitySet]| {
        sets.iter().map(std::mem::discriminant).collect::<Vec<_>>()
    };
    assert_eq!(kinds(&plain_sets), kinds(&steered_sets));

    let replay = |pdus: &[Kept]| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rdp.pdus");
        write_recording(pdus, &path);
        let mut reader = gatehouse_rdp_replay::pdus::open(&path).unwrap();
        gatehouse_rdp_replay::Replayer::replay(&mut reader).unwrap()
    };
    let steered_replay = replay(&steered_pdus);
    assert_eq!(
        steered_replay.verdict(),
        gatehouse_rdp_replay::Verdict::Decodable,
        "{:?}",
        steered_replay.stats()
    );
    assert_checkerboard(&steered_replay.frame().unwrap());
    // Without steering FreeRDP's shadow server draws through EGFX: flagged, not garbage.
    let plain_replay = replay(&plain_pdus);
    assert!(
        matches!(
            plain_replay.verdict(),
            gatehouse_rdp_replay::Verdict::NotDecodable(_)
        ),
        "{:?} {:?}",
        plain_replay.verdict(),
        plain_replay.stats()
    );
    assert!(
        plain_replay.stats().gfx_opened,
        "{:?}",
        plain_replay.stats()
    );
}
