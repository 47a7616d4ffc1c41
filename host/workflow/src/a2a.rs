//! Application-to-application (A2A) credential retrieval: a registered application presents its
//! client certificate (pinned by SHA-256) and an API key bound to one account, from an allowed
//! source address, and the policy engine decides `a2a_retrieve`. Brokers file access requests
//! for users.

use crate::requests::{Actor, NewRequest};
use crate::{Workflow, WorkflowError, constant_time_eq, sha256_hex};
use gatehouse_audit::Entry;
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    A2aKey, A2aScope, AccessKind, AccessRequest, Application, AuditKind, SecretString, TargetSpec,
};
use gatehouse_store::{A2A_KEYS, ACCOUNTS, APPLICATIONS, USERS, account_key};
use gatehouse_vault::SecretKind;
use std::net::{IpAddr, SocketAddr};

/// Who is calling, as the TLS layer saw it.
#[derive(Debug, Clone)]
pub struct A2aPeer {
    pub addr: SocketAddr,
    /// SHA-256 (lowercase hex) of the client certificate the peer proved it holds.
    pub cert_sha256: Option<String>,
}

/// A retrieved credential. Zeroized, redacted in `Debug`.
#[derive(Debug)]
pub struct A2aCredential {
    pub target: TargetSpec,
    pub kind: AccessKind,
    pub secret: SecretString,
}

/// Parsed source restrictions: addresses and networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceList(Vec<ipnet::IpNet>);

impl SourceList {
    /// Parses `10.0.0.0/8`, `192.0.2.7`, `::1`, ...
    pub fn parse(items: &[String]) -> Result<Self, String> {
        items
            .iter()
            .map(|item| {
                item.parse::<ipnet::IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("`{item}` is not an IP address or network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(SourceList)
    }

    /// Empty allows every address.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.is_empty() || self.0.iter().any(|net| net.contains(&ip))
    }
}

/// A new API key: the record to store under `hash`, and the key to show once.
pub struct A2aRegistration {
    pub record: A2aKey,
    pub hash: String,
    pub key: SecretString,
}

impl A2aRegistration {
    pub fn new(application: &Application, scope: A2aScope) -> Self {
        let key = format!("gha2a_{}", crate::random_hex(24));
        let hash = sha256_hex(key.as_bytes());
        let record = A2aKey {
            id: hash[..10].to_string(),
            application: application.name.clone(),
            scope,
            created: Timestamp::now(),
        };
        Self {
            record,
            hash,
            key: SecretString::new(key),
        }
    }
}

/// SHA-256 of a DER certificate, lowercase hex: the pin an application is registered with.
pub fn cert_thumbprint(der: &[u8]) -> String {
    sha256_hex(der)
}

impl Workflow {
    /// Checks the key, the certificate pin and the source address; returns the key and its
    /// application. Every refusal is audited with the reason; the caller gets one message.
    fn a2a_caller(
        &self,
        peer: &A2aPeer,
        api_key: &str,
    ) -> Result<(A2aKey, Application), WorkflowError> {
        let services = self.store.services()?;
        if !services.a2a {
            return Err(WorkflowError::ServiceDisabled("a2a"));
        }
        let hash = sha256_hex(api_key.as_bytes());
        let found = self.store.read(|txn| {
            let Some(key) = txn.get(&A2A_KEYS, &hash)? else {
                return Ok::<_, WorkflowError>(None);
            };
            let app = txn.get(&APPLICATIONS, key.application.as_str())?;
            Ok(app.map(|a| (key, a)))
        })?;
        let refuse = |why: String, app: Option<&Application>| {
            let mut entry = Entry::new(AuditKind::A2aRefused, why).client(peer.addr.to_string());
            if let Some(app) = app {
                entry = entry.field("application", app.name.to_string());
            }
            self.audit(entry);
            WorkflowError::Unauthorized(
                "A2A authentication failed (API key, client certificate or source address)".into(),
            )
        };
        let Some((key, app)) = found else {
            return Err(refuse("unknown A2A API key".into(), None));
        };
        if app.disabled {
            return Err(refuse("the application is disabled".into(), Some(&app)));
        }
        match &peer.cert_sha256 {
            None => {
                return Err(refuse("no client certificate presented".into(), Some(&app)));
            }
            Some(presented) if !constant_time_eq(presented, &app.cert_sha256) => {
                return Err(refuse(
                    format!("client certificate {presented} does not match the registration"),
                    Some(&app),
                ));
            }
            Some(_) => {}
        }
        let sources = SourceList::parse(&app.allowed_sources)
            .map_err(|e| WorkflowError::Internal(format!("application sources: {e}")))?;
        if !sources.allows(peer.addr.ip()) {
            return Err(refuse(
                format!("source address {} is not allowed", peer.addr.ip()),
                Some(&app),
            ));
        }
        Ok((key, app))
    }

    /// Retrieves the credential an API key is bound to: the password, or the private key when
    /// `want` says so (or the account holds only a key).
    pub async fn a2a_retrieve(
        &self,
        peer: &A2aPeer,
        api_key: &str,
        want: Option<AccessKind>,
    ) -> Result<A2aCredential, WorkflowError> {
        let (key, app) = self.a2a_caller(peer, api_key)?;
        let A2aScope::Credential { asset, account } = &key.scope else {
            return Err(WorkflowError::Forbidden(
                "this API key files requests; it retrieves no credential".into(),
            ));
        };
        let target = TargetSpec {
            account: account.clone(),
            asset: asset.clone(),
        };
        let groups: Vec<String> = app.groups.iter().map(|g| g.to_string()).collect();
        let decision = self
            .policy
            .authorize_a2a(app.name.as_str(), &groups, &target, peer.addr)
            .map_err(|e| WorkflowError::Internal(e.to_string()))?;
        let base = || {
            Entry::new(AuditKind::A2aRefused, String::new())
                .target(target.to_string())
                .client(peer.addr.to_string())
                .field("application", app.name.to_string())
                .field("key", key.id.clone())
        };
        if !decision.allowed {
            self.audit(
                crate::with_refusal(base(), &decision).detail("policy denies the retrieval"),
            );
            return Err(WorkflowError::Forbidden(format!(
                "policy denies application `{}` the credential of `{target}`",
                app.name
            )));
        }
        let stored = self
            .store
            .get(&ACCOUNTS, &account_key(asset.as_str(), account.as_str()))?
            .ok_or_else(|| WorkflowError::Forbidden(format!("`{target}` no longer exists")))?;
        let kind = match want {
            Some(AccessKind::Session) => {
                return Err(WorkflowError::BadInput(
                    "A2A retrieves a password or a private key".into(),
                ));
            }
            Some(k) => k,
            None if stored.password.is_none() && stored.private_key.is_some() => {
                AccessKind::PrivateKey
            }
            None => AccessKind::Password,
        };
        let (sealed, slot) = match kind {
            AccessKind::PrivateKey => (stored.private_key.as_ref(), SecretKind::PrivateKey),
            _ => (stored.password.as_ref(), SecretKind::Password),
        };
        let Some(sealed) = sealed else {
            return Err(WorkflowError::Forbidden(format!(
                "the vault holds no {kind} for `{target}`"
            )));
        };
        let secret = self.vault.open_text(&stored.id, slot, sealed)?;
        // Fail closed: the secret leaves only once its retrieval is on disk in the audit trail.
        self.auditor
            .record_durable(
                base()
                    .kind(AuditKind::A2aRetrieved)
                    .detail(format!("application `{}` retrieved the {kind}", app.name))
                    .field("policies", serde_json::json!(decision.policies)),
            )
            .await?;
        Ok(A2aCredential {
            target,
            kind,
            secret,
        })
    }

    /// The access-request broker: a registered broker application files a request on a user's
    /// behalf. The user's own `request_access` decision applies.
    pub async fn a2a_broker_request(
        &self,
        peer: &A2aPeer,
        api_key: &str,
        on_behalf_of: &str,
        new: NewRequest,
    ) -> Result<AccessRequest, WorkflowError> {
        let (key, app) = self.a2a_caller(peer, api_key)?;
        if !matches!(key.scope, A2aScope::Broker) || !app.broker {
            return Err(WorkflowError::Forbidden(format!(
                "application `{}` is not registered as a request broker",
                app.name
            )));
        }
        let user = match gatehouse_core::Name::new(on_behalf_of) {
            Ok(name) => self.store.get(&USERS, name.as_str())?,
            Err(_) => None,
        }
        .ok_or_else(|| WorkflowError::BadInput(format!("no user `{on_behalf_of}`")))?;
        let actor = Actor {
            user,
            client: peer.addr,
            via: format!("broker:{}", app.name),
            session_id: format!("a2a-{}", key.id),
            authenticated_with: vec![format!("a2a:{}", app.name)],
        };
        let origin = format!("broker:{}", app.name);
        self.create(&actor, new, &origin).await
    }
}
