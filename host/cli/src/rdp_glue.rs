//! `gatehouse serve`'s RDP listener: the glue between the RDP proxy core (`gatehouse-rdp`, which
//! knows nothing of the store, the vault or Cedar) and the rest of Gatehouse. Per connection:
//! NLA with the user's vault-sealed NT hash, the delegated password checked against the argon2id
//! hash, Cedar with `protocol: "rdp"`, the vault's password towards the target (its key pinned
//! or trusted on first use into the store), the relay recorded to `<session>/rdp.pdus`, and the
//! audit trail. See docs/rdp.md.

use crate::datadir::{DataDir, RdpSettings};
use anyhow::{Context, Result, bail};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_auth::{AuthError, Authenticator};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    AuditKind, LoginSpec, RdpCertificatePolicy, SecretString, SessionRecord, TargetSpec, User,
};
use gatehouse_policy::{Denied, PolicyEngine, SessionFacts, TargetAuthorization};
use gatehouse_rdp::{
    AcceptError, AcceptedClient, CertificatePin, CertificatePolicy, ClientLogin, DialOptions,
    Direction, FirstUse, GatewayTls, NtHash, PduKind, PinOutcome, PinRecorder, RecordError,
    RecordedPdu, Recorder, Refused, RelaySummary, TargetLogin, UserDirectory,
};
use gatehouse_recording::SessionRecording;
use gatehouse_store::{ASSETS, SESSIONS, Store, StoreError, USERS};
use gatehouse_vault::{UserSecretKind, Vault};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// The file in a session's recording directory that holds the relayed PDUs.
pub const PDU_FILE: &str = "rdp.pdus";
/// The first bytes of [`PDU_FILE`]; then records of: direction (1 byte: 0 client to target,
/// 1 target to client), framing (1 byte: 0 X.224, 1 fast-path, 2 undecodable), microseconds
/// since the relay started (u64 LE), length (u32 LE), the PDU.
pub const PDU_FILE_MAGIC: &[u8; 8] = b"GHRDP1\n\0";

/// Everything an RDP session needs from the rest of Gatehouse.
pub struct RdpServices {
    pub store: Arc<Store>,
    pub vault: Arc<Vault>,
    pub authenticator: Arc<Authenticator>,
    pub policy: Arc<PolicyEngine>,
    pub auditor: Auditor,
    pub recordings: PathBuf,
    pub tls: GatewayTls,
    /// Limit for a client's negotiation and authentication.
    pub handshake_timeout: Duration,
    /// Limit for connecting and logging in to a target.
    pub connect_timeout: Duration,
}

/// The gateway's TLS identity for RDP clients: `<data-dir>/tls/{cert.pem,key.pem}`.
pub fn load_tls(dir: &DataDir) -> Result<GatewayTls> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = dir.tls_dir().join("cert.pem");
    let key_path = dir.tls_dir().join("key.pem");
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading `{}`", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading `{}`", key_path.display()))?;
    GatewayTls::new(chain, key).context("the gateway's TLS certificate cannot serve RDP")
}

/// Binds the RDP listener: the explicit `--rdp-listen` address (failure is an error), else
/// settings.json `rdp` (when the default port cannot be bound, an error is logged and `serve`
/// goes on without RDP). `None` when RDP is off.
pub async fn bind(
    settings: &RdpSettings,
    explicit: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>> {
    if let Some(address) = explicit {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address} for RDP"))?;
        return Ok(Some(listener));
    }
    if !settings.enabled {
        tracing::info!("RDP disabled (settings.json rdp.enabled)");
        return Ok(None);
    }
    match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if settings.listen.port() == gatehouse_rdp::DEFAULT_PORT => {
            tracing::error!(
                address = %settings.listen,
                error = %e,
                "cannot listen for RDP on the default port; serving without RDP (set settings.json rdp.listen or --rdp-listen)"
            );
            Ok(None)
        }
        Err(e) => bail!("listening on {} for RDP: {e}", settings.listen),
    }
}

/// Accepts RDP clients until the listener fails; one task and one span per connection.
pub async fn serve(
    listener: tokio::net::TcpListener,
    services: Arc<RdpServices>,
) -> std::io::Result<()> {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                tracing::error!(error = %e, "accepting an RDP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let id = uuid::Uuid::now_v7().to_string();
        let span = tracing::info_span!(
            "rdp_session",
            id = %id,
            user = tracing::field::Empty,
            target = tracing::field::Empty,
            client = %peer,
        );
        let session = Session {
            id,
            client: peer,
            services: services.clone(),
            user: String::new(),
            target: String::new(),
        };
        tokio::spawn(session.run(socket).instrument(span));
    }
}

/// Gateway users' NT hashes from their vault-sealed RDP secret.
struct StoreUsers<'a> {
    store: &'a Store,
    vault: &'a Vault,
}

impl UserDirectory for StoreUsers<'_> {
    fn nt_hash(&self, login: &ClientLogin) -> Result<NtHash, Refused> {
        let spec =
            LoginSpec::parse(&login.user).map_err(|e| Refused(format!("malformed login: {e}")))?;
        let user: Option<User> = self
            .store
            .get(&USERS, spec.user.as_str())
            .map_err(|e| Refused(format!("store: {e}")))?;
        let Some(user) = user else {
            return Err(Refused(format!("unknown gateway user `{}`", spec.user)));
        };
        let Some(sealed) = &user.rdp_secret else {
            return Err(Refused(format!(
                "user `{}` has no RDP secret (set the password again to enable RDP)",
                user.name
            )));
        };
        let opened = self
            .vault
            .open_user_secret(user.name.as_str(), UserSecretKind::RdpNtHash, sealed)
            .map_err(|e| Refused(format!("the RDP secret of `{}`: {e}", user.name)))?;
        let bytes: [u8; 16] = opened.expose().try_into().map_err(|_| {
            Refused(format!(
                "the RDP secret of `{}` is not an NT hash",
                user.name
            ))
        })?;
        Ok(NtHash::from_bytes(bytes))
    }
}

/// Records a first-use pin into the asset, in one store transaction, and audits it.
struct StorePins<'a> {
    session: &'a Session,
    asset: String,
}

impl PinRecorder for StorePins<'_> {
    fn record_first_use(&self, presented: &CertificatePin) -> Result<FirstUse, String> {
        let outcome = self
            .session
            .services
            .store
            .write(|txn| -> Result<Result<FirstUse, String>, StoreError> {
                let Some(mut asset) = txn.get(&ASSETS, &self.asset)? else {
                    return Ok(Err(format!("asset `{}` no longer exists", self.asset)));
                };
                let Some(endpoint) = asset.rdp.as_mut() else {
                    return Ok(Err(format!("asset `{}` no longer has RDP", self.asset)));
                };
                match &endpoint.certificate {
                    RdpCertificatePolicy::Pinned { pin } => {
                        Ok(CertificatePin::parse(pin).map(FirstUse::AlreadyPinned))
                    }
                    RdpCertificatePolicy::TrustOnFirstUse => {
                        endpoint.certificate = RdpCertificatePolicy::Pinned {
                            pin: presented.to_string(),
                        };
                        txn.put(&ASSETS, &self.asset, &asset)?;
                        Ok(Ok(FirstUse::Recorded))
                    }
                }
            })
            .map_err(|e| e.to_string())??;
        if outcome == FirstUse::Recorded {
            self.session.audit(
                AuditKind::HostKeyRecorded,
                format!(
                    "trusted the RDP certificate key of `{}` on first use: {presented}",
                    self.asset
                ),
                &[
                    ("protocol", "rdp".into()),
                    ("pin", presented.to_string().into()),
                ],
            );
        }
        Ok(outcome)
    }
}

/// Appends every relayed PDU to [`PDU_FILE`] through a bounded buffer.
struct PduFile {
    path: PathBuf,
    out: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl PduFile {
    fn create(recording: &SessionRecording) -> std::io::Result<Self> {
        let path = recording.dir().join(PDU_FILE);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
        out.write_all(PDU_FILE_MAGIC)?;
        Ok(Self {
            path,
            out: Mutex::new(out),
        })
    }

    fn finish(&self) -> std::io::Result<()> {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        out.flush()?;
        out.get_ref().sync_all()
    }
}

impl Recorder for PduFile {
    fn record(&self, pdu: &RecordedPdu<'_>) -> Result<(), RecordError> {
        let direction: u8 = match pdu.direction {
            Direction::ClientToTarget => 0,
            Direction::TargetToClient => 1,
        };
        let kind: u8 = match pdu.kind {
            PduKind::X224 => 0,
            PduKind::FastPath => 1,
            PduKind::Undecodable => 2,
        };
        let micros = u64::try_from(pdu.at.as_micros()).unwrap_or(u64::MAX);
        let length = u32::try_from(pdu.bytes.len())
            .map_err(|_| RecordError(format!("a PDU of {} bytes", pdu.bytes.len())))?;
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut header = [0u8; 14];
        header[0] = direction;
        header[1] = kind;
        header[2..10].copy_from_slice(&micros.to_le_bytes());
        header[10..14].copy_from_slice(&length.to_le_bytes());
        out.write_all(&header)
            .and_then(|()| out.write_all(pdu.bytes))
            .map_err(|e| RecordError(format!("writing `{}`: {e}", self.path.display())))
    }
}

/// One RDP connection.
struct Session {
    id: String,
    client: SocketAddr,
    services: Arc<RdpServices>,
    /// Known once the client authenticated.
    user: String,
    target: String,
}

/// How far a session got, for its record.
struct Opened {
    account: String,
    asset: String,
    started: Timestamp,
}

impl Session {
    fn entry(&self, kind: AuditKind, detail: impl Into<String>) -> Entry {
        Entry::new(kind, detail)
            .session(self.id.clone())
            .user(self.user.clone())
            .target(self.target.clone())
            .client(self.client.to_string())
    }

    fn audit(
        &self,
        kind: AuditKind,
        detail: impl Into<String>,
        fields: &[(&str, serde_json::Value)],
    ) {
        let mut entry = self.entry(kind, detail);
        for (k, v) in fields {
            entry = entry.field(k, v.clone());
        }
        self.services.auditor.record_best_effort(entry);
    }

    async fn run(mut self, socket: tokio::net::TcpStream) {
        tracing::debug!("RDP connection accepted");
        let services = self.services.clone();
        let users = StoreUsers {
            store: &services.store,
            vault: &services.vault,
        };
        let accepted =
            gatehouse_rdp::accept(&services.tls, &users, socket, services.handshake_timeout).await;
        let client = match accepted {
            Ok(client) => client,
            Err(e) => {
                self.refused_before_login(e);
                return;
            }
        };
        let Some((user, spec)) = self.login(&client).await else {
            client.refuse().await;
            return;
        };
        let target = match &spec.target {
            Ok(target) => target.clone(),
            Err(e) => {
                self.audit(
                    AuditKind::AccessDenied,
                    e.to_string(),
                    &[("protocol", "rdp".into())],
                );
                client.refuse().await;
                return;
            }
        };
        let Some(authorization) = self.authorize(&user, &spec, &target) else {
            client.refuse().await;
            return;
        };
        self.connect(client, authorization).await;
    }

    /// Audits a client that did not get as far as a login (failed authentication is a
    /// failed login; scanners and clients without NLA only reach the log).
    fn refused_before_login(&self, e: AcceptError) {
        match &e {
            AcceptError::AuthenticationFailed { login, .. } => {
                let user = LoginSpec::parse(login)
                    .map(|s| s.user.to_string())
                    .unwrap_or_else(|_| login.chars().take(LoginSpec::MAX_LEN).collect());
                self.services.auditor.record_best_effort(
                    Entry::new(AuditKind::LoginFailed, e.to_string())
                        .session(self.id.clone())
                        .user(user)
                        .client(self.client.to_string())
                        .field("protocol", "rdp"),
                );
            }
            AcceptError::NoDelegatedPassword => self.services.auditor.record_best_effort(
                Entry::new(AuditKind::LoginFailed, e.to_string())
                    .session(self.id.clone())
                    .client(self.client.to_string())
                    .field("protocol", "rdp"),
            ),
            _ => tracing::info!(error = %e, "RDP client not accepted"),
        }
    }

    /// Checks the delegated password against the user's argon2id hash (so the NT hash alone
    /// logs no one in) and audits the login.
    async fn login(&mut self, client: &AcceptedClient) -> Option<(User, LoginSpec)> {
        let login = client.login().user.clone();
        let spec = match LoginSpec::parse(&login) {
            Ok(spec) => spec,
            Err(e) => {
                self.audit(
                    AuditKind::LoginFailed,
                    format!("malformed login `{login}`: {e}"),
                    &[("protocol", "rdp".into())],
                );
                return None;
            }
        };
        self.user = spec.user.to_string();
        let span = tracing::Span::current();
        span.record("user", spec.user.as_str());
        if let Ok(target) = &spec.target {
            self.target = target.to_string();
            span.record("target", tracing::field::display(target));
        }
        let authenticator = self.services.authenticator.clone();
        let name = spec.user.clone();
        let password = SecretString::new(client.delegated_password().expose().to_string());
        let verified = tokio::task::spawn_blocking(move || {
            authenticator.verify_password(&name, password.expose())
        })
        .await;
        let user = match verified {
            Ok(Ok(user)) => user,
            Ok(Err(e)) => {
                let detail = match &e {
                    AuthError::WrongPassword(_) => format!(
                        "the password delegated over RDP does not match the password of `{}`",
                        spec.user
                    ),
                    _ => e.to_string(),
                };
                self.audit(
                    AuditKind::LoginFailed,
                    detail,
                    &[("protocol", "rdp".into())],
                );
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "verifying the password");
                return None;
            }
        };
        self.audit(
            AuditKind::LoginOk,
            format!("`{}` logged in over RDP with password", user.name),
            &[("protocol", "rdp".into()), ("method", "password".into())],
        );
        Some((user, spec))
    }

    fn authorize(
        &self,
        user: &User,
        spec: &LoginSpec,
        target: &TargetSpec,
    ) -> Option<TargetAuthorization> {
        let engine = &self.services.policy;
        let facts = SessionFacts {
            session_id: self.id.clone(),
            protocol: "rdp".into(),
            client: self.client,
            pairs: spec.options.clone(),
            authenticated_with: vec!["password".into()],
            ticket_verified: false,
            time: engine.clock().now(),
        };
        match engine.authorize_session(user, target, facts) {
            Ok(authorization) => Some(authorization),
            Err(Denied::NotPermitted { decision, .. }) => {
                let mut fields = vec![
                    ("protocol", "rdp".into()),
                    ("policies", serde_json::json!(decision.reasons())),
                ];
                if !decision.errors.is_empty() {
                    fields.push(("policy_errors", serde_json::json!(decision.errors)));
                }
                self.audit(
                    AuditKind::AccessDenied,
                    format!("policy denies an RDP session on `{target}`"),
                    &fields,
                );
                None
            }
            Err(other) => {
                self.audit(
                    AuditKind::AccessDenied,
                    other.to_string(),
                    &[("protocol", "rdp".into())],
                );
                None
            }
        }
    }

    /// Dials the target with the vault's password, then relays and records the session.
    async fn connect(&self, client: AcceptedClient, authorization: TargetAuthorization) {
        let reasons = serde_json::json!(authorization.reasons());
        let failed = |detail: String| {
            self.audit(
                AuditKind::TargetConnectFailed,
                detail,
                &[("protocol", "rdp".into()), ("policies", reasons.clone())],
            );
        };
        let asset = authorization.asset().clone();
        let account = authorization.account().clone();
        let Some(endpoint) = asset.rdp.clone() else {
            failed(format!("asset `{}` has no RDP endpoint", asset.name));
            client.refuse().await;
            return;
        };
        let certificate = match &endpoint.certificate {
            RdpCertificatePolicy::TrustOnFirstUse => CertificatePolicy::TrustOnFirstUse,
            RdpCertificatePolicy::Pinned { pin } => match CertificatePin::parse(pin) {
                Ok(pin) => CertificatePolicy::Pinned(pin),
                Err(e) => {
                    failed(format!("the RDP certificate pin of `{}`: {e}", asset.name));
                    client.refuse().await;
                    return;
                }
            },
        };
        if let Some(plugin) = &account.credential_plugin {
            failed(format!(
                "the credential of `{}` comes from plugin `{plugin}`, which RDP does not use yet",
                account.name
            ));
            client.refuse().await;
            return;
        }
        let password = match self.services.vault.credential(&account) {
            Ok(credential) => credential.password,
            Err(e) => {
                failed(format!("vault: {e}"));
                client.refuse().await;
                return;
            }
        };
        let Some(password) = password else {
            failed(format!("account `{}` holds no password", account.name));
            client.refuse().await;
            return;
        };
        let login = TargetLogin {
            username: account.name.to_string(),
            domain: None,
            password,
        };
        let pins = StorePins {
            session: self,
            asset: asset.name.to_string(),
        };
        let options = DialOptions {
            port: endpoint.port,
            timeout: self.services.connect_timeout,
            certificate,
            pins: &pins,
        };
        let target = match gatehouse_rdp::dial(&authorization, &client, &login, options).await {
            Ok(target) => target,
            Err(e) => {
                failed(e.to_string());
                client.refuse().await;
                return;
            }
        };
        drop(login);
        let pin = match target.pin() {
            PinOutcome::Matched(pin) | PinOutcome::Recorded(pin) => pin.to_string(),
        };
        let recording = SessionRecording::create(&self.services.recordings, &self.id)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                PduFile::create(&r)
                    .map(|f| (r, f))
                    .map_err(|e| e.to_string())
            });
        let (recording, pdus) = match recording {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(error = %e, "cannot record the session; closing");
                failed(format!("cannot record the session: {e}"));
                client.refuse().await;
                return;
            }
        };
        let opened = Opened {
            account: account.name.to_string(),
            asset: asset.name.to_string(),
            started: Timestamp::now(),
        };
        // Fail closed: a session that cannot be audited is not opened.
        let audited = self.services.auditor.record(
            self.entry(
                AuditKind::TargetConnectOk,
                format!(
                    "connected over RDP to `{}` as `{}`",
                    self.target, account.name
                ),
            )
            .field("protocol", "rdp")
            .field("policies", reasons.clone())
            .field("certificate", pin),
        );
        if let Err(e) = audited.and_then(|_| self.store_record(&opened, None, None, None)) {
            tracing::error!(error = %e, "cannot audit the session start; closing");
            return;
        }
        let relayed = gatehouse_rdp::relay(
            client,
            target,
            &pdus,
            gatehouse_rdp::RelayOptions::default(),
            std::future::pending(),
        )
        .await;
        if let Err(e) = pdus.finish() {
            tracing::error!(error = %e, "cannot close the PDU recording");
        }
        if let Err(e) = recording.finish() {
            tracing::error!(error = %e, "cannot close the recording");
        }
        let (summary, error) = match relayed.error {
            None => (relayed.summary, None),
            Some(e) => {
                tracing::info!(error = %e, "the RDP relay ended with an error");
                (relayed.summary, Some(e.to_string()))
            }
        };
        if let Err(e) = self.store_record(
            &opened,
            Some(Timestamp::now()),
            Some(&summary),
            error.clone(),
        ) {
            tracing::error!(error = %e, "cannot store the session record");
        }
        let (up, down) = (summary.bytes_from_client, summary.bytes_from_target);
        let mut fields = vec![
            ("protocol", "rdp".into()),
            ("bytes_up", up.into()),
            ("bytes_down", down.into()),
            ("pdus_up", summary.pdus_from_client.into()),
            ("pdus_down", summary.pdus_from_target.into()),
        ];
        if let Some(error) = &error {
            fields.push(("error", error.clone().into()));
        }
        self.audit(
            AuditKind::SessionEnded,
            format!("session ended: {up} bytes up, {down} bytes down"),
            &fields,
        );
    }

    fn store_record(
        &self,
        opened: &Opened,
        ended: Option<Timestamp>,
        summary: Option<&RelaySummary>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let record = SessionRecord {
            id: self.id.clone(),
            user: self.user.clone(),
            account: opened.account.clone(),
            asset: opened.asset.clone(),
            client: self.client.to_string(),
            protocol: "rdp".into(),
            started: opened.started,
            ended,
            bytes_up: summary.map(|s| s.bytes_from_client).unwrap_or(0),
            bytes_down: summary.map(|s| s.bytes_from_target).unwrap_or(0),
            channels: vec![],
            error,
        };
        self.services
            .store
            .write(|txn| txn.put(&SESSIONS, &self.id, &record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pdu_file_is_the_magic_then_direction_framing_time_length_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let recording = SessionRecording::create(dir.path(), "s1").unwrap();
        let file = PduFile::create(&recording).unwrap();
        for (direction, kind, at, bytes) in [
            (
                Direction::ClientToTarget,
                PduKind::X224,
                1_000u64,
                &b"\x03\x00"[..],
            ),
            (
                Direction::TargetToClient,
                PduKind::FastPath,
                2_500_000,
                &b"abc"[..],
            ),
        ] {
            file.record(&RecordedPdu {
                direction,
                at: Duration::from_micros(at),
                kind,
                bytes,
            })
            .unwrap();
        }
        file.finish().unwrap();
        let written = std::fs::read(dir.path().join("s1").join(PDU_FILE)).unwrap();
        let mut expected = PDU_FILE_MAGIC.to_vec();
        expected.extend([0, 0]);
        expected.extend(1_000u64.to_le_bytes());
        expected.extend(2u32.to_le_bytes());
        expected.extend(b"\x03\x00");
        expected.extend([1, 1]);
        expected.extend(2_500_000u64.to_le_bytes());
        expected.extend(3u32.to_le_bytes());
        expected.extend(b"abc");
        assert_eq!(written, expected);
    }
}
