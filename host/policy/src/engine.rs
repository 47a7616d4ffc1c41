//! The policy set in force and the gateway's decision points. A reload (file change, SIGHUP, CLI)
//! builds a new bundle beside the old one and swaps it in only when it validated; a broken file
//! leaves the previous decisions in force.

use crate::context::{self, ChannelRequest, Clock, ContextRefs, SessionFacts};
use crate::entities::EntityBuilder;
use crate::load::{self, PolicyBundle};
use crate::schema::{Kind, uid};
use crate::{Decision, PolicyError, Query};
use cedar_policy::{Entities, EntityUid};
use gatehouse_core::{AccessRequest, Account, Asset, Grant, TargetSpec, User};
use gatehouse_store::{GRANTS, REQUESTS, ReadTxn, Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// How the engine is set up (from settings.json).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub policy_dir: PathBuf,
    /// The `Gateway` entity's id.
    pub gateway: String,
    /// IANA time zone for `context.time`; `None` is the system zone.
    pub time_zone: Option<String>,
}

/// What a successful reload loaded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    pub files: usize,
    pub policies: usize,
    pub templates: usize,
    pub grant_links: usize,
}

/// What the watcher compares to notice a change: file names, sizes and times, and grant ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Fingerprint {
    files: Vec<(String, u64, Option<SystemTime>)>,
    grants: Vec<String>,
    /// Granted access requests whose window lasts (their `approved:<id>` links).
    approved: Vec<String>,
}

/// The policy set in force and the decisions made with it.
pub struct PolicyEngine {
    settings: EngineSettings,
    clock: Clock,
    store: Arc<Store>,
    current: RwLock<Arc<PolicyBundle>>,
    fingerprint: Mutex<Fingerprint>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policy_dir", &self.settings.policy_dir)
            .finish()
    }
}

/// Proof that a user may open a session to an account: only [`PolicyEngine`] creates it, and the
/// SSH dialer requires it, so a target cannot be dialed without a permit decision.
#[derive(Debug, Clone)]
pub struct TargetAuthorization {
    user: User,
    asset: Asset,
    account: Account,
    decision: Decision,
    facts: SessionFacts,
    refs: ContextRefs,
    principal: EntityUid,
    resource: EntityUid,
    entities: Arc<Entities>,
    idle_timeout: Option<(std::time::Duration, String)>,
}

impl TargetAuthorization {
    /// How long the session may go without input from the user, and the policy that says so
    /// (the shortest `@idle_timeout` of the policies that permitted it).
    pub fn idle_timeout(&self) -> Option<(std::time::Duration, &str)> {
        self.idle_timeout.as_ref().map(|(d, p)| (*d, p.as_str()))
    }
    pub fn user(&self) -> &User {
        &self.user
    }
    pub fn asset(&self) -> &Asset {
        &self.asset
    }
    pub fn account(&self) -> &Account {
        &self.account
    }
    /// The ids of the policies that permitted the session.
    pub fn reasons(&self) -> &[String] {
        &self.decision.policies
    }
}

/// Why a session was refused. `Display` is for the audit trail; the user sees the same message
/// for every variant but `Policy`/`Store` (no existence oracle).
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("asset `{0}` does not exist")]
    NoSuchAsset(String),
    #[error("account `{0}` does not exist")]
    NoSuchAccount(String),
    #[error("policy denies `{user}` a session on `{target}` ({})", .decision.reasons().join(", "))]
    NotPermitted {
        user: String,
        target: String,
        decision: Decision,
    },
    #[error("{0}")]
    Policy(#[from] PolicyError),
}

impl From<gatehouse_store::StoreError> for Denied {
    fn from(e: gatehouse_store::StoreError) -> Self {
        Denied::Policy(e.into())
    }
}

struct SessionEntities {
    asset: Asset,
    account: Account,
    entities: Entities,
    principal: EntityUid,
    resource: EntityUid,
    refs: ContextRefs,
}

/// A channel decision with the policy ids that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDecision {
    pub permitted: bool,
    pub reasons: Vec<String>,
    pub errors: Vec<String>,
}

fn file_fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cedar"))
        .map(|e| {
            let meta = e.metadata().ok();
            (
                e.path().display().to_string(),
                meta.as_ref().map(|m| m.len()).unwrap_or(0),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    files.sort();
    files
}

impl PolicyEngine {
    /// Loads the policy directory and the grants; fails if they do not validate.
    pub fn open(settings: EngineSettings, store: Arc<Store>) -> Result<Self, PolicyError> {
        let clock = Clock::new(settings.time_zone.as_deref())?;
        let (bundle, fingerprint) = Self::compile(&settings.policy_dir, &store)?;
        Ok(PolicyEngine {
            settings,
            clock,
            store,
            current: RwLock::new(Arc::new(bundle)),
            fingerprint: Mutex::new(fingerprint),
        })
    }

    fn compile(dir: &Path, store: &Store) -> Result<(PolicyBundle, Fingerprint), PolicyError> {
        let (grants, approved) = store.read(|txn| -> Result<_, PolicyError> {
            Ok((txn.list(&GRANTS)?, approved_requests(txn)?))
        })?;
        let files = file_fingerprint(dir);
        let sources = load::read_dir(dir)?;
        let mut links = grants
            .iter()
            .map(load::grant_link)
            .collect::<Result<Vec<_>, _>>()?;
        for request in &approved {
            links.push(load::approved_link(request)?);
        }
        let bundle = load::compile(&sources, &links)?;
        let fingerprint = Fingerprint {
            files,
            grants: grants.iter().map(|g: &Grant| g.id.clone()).collect(),
            approved: approved.iter().map(|r| r.id.clone()).collect(),
        };
        Ok((bundle, fingerprint))
    }

    /// Reloads now. On error the previous set stays in force and the error says where.
    pub fn reload(&self) -> Result<ReloadReport, PolicyError> {
        let compiled = Self::compile(&self.settings.policy_dir, &self.store);
        let (bundle, fingerprint) = match compiled {
            Ok(ok) => ok,
            Err(e) => {
                // Remember what failed so the watcher does not report it again every poll.
                if let Ok(mut fp) = self.fingerprint.lock() {
                    *fp = self.current_fingerprint();
                }
                tracing::error!(error = %e, "policy reload failed; the previous policies stay in force");
                return Err(e);
            }
        };
        let report = ReloadReport {
            files: bundle.files().len(),
            policies: bundle.policy_count() - bundle.link_count(),
            templates: bundle.template_count(),
            grant_links: bundle.link_count(),
        };
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(bundle);
        }
        if let Ok(mut fp) = self.fingerprint.lock() {
            *fp = fingerprint;
        }
        tracing::info!(?report, "policies loaded");
        Ok(report)
    }

    fn current_fingerprint(&self) -> Fingerprint {
        let (grants, approved) = self
            .store
            .read(|txn| -> Result<_, StoreError> {
                Ok((
                    txn.list(&GRANTS)?.into_iter().map(|g| g.id).collect(),
                    approved_requests(txn)?.into_iter().map(|r| r.id).collect(),
                ))
            })
            .unwrap_or_default();
        Fingerprint {
            files: file_fingerprint(&self.settings.policy_dir),
            grants,
            approved,
        }
    }

    /// Reloads when a policy file or the grants changed since the last load attempt.
    pub fn reload_if_changed(&self) -> Option<Result<ReloadReport, PolicyError>> {
        let now = self.current_fingerprint();
        let changed = self
            .fingerprint
            .lock()
            .map(|fp| *fp != now)
            .unwrap_or(false);
        changed.then(|| self.reload())
    }

    /// The bundle in force.
    pub fn bundle(&self) -> Arc<PolicyBundle> {
        match self.current.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Reads the asset and account and builds the entities for `user` acting on them, with the
    /// access request in play (and its requester) when there is one.
    fn session_entities(
        &self,
        user: &User,
        target: &TargetSpec,
        facts: &SessionFacts,
        request: Option<&crate::entities::RequestFacts>,
    ) -> Result<SessionEntities, Denied> {
        self.store.read(|txn| -> Result<_, Denied> {
            let asset = crate::entities::Directory::asset(txn, target.asset.as_str())?
                .ok_or_else(|| Denied::NoSuchAsset(target.asset.to_string()))?;
            let account = crate::entities::Directory::account(
                txn,
                target.asset.as_str(),
                target.account.as_str(),
            )?
            .ok_or_else(|| Denied::NoSuchAccount(target.to_string()))?;
            let mut builder = EntityBuilder::new();
            let principal = builder.user(txn, user)?;
            let resource = builder.account(txn, &asset, &account)?;
            let request = match request {
                Some(request) => {
                    if let Some(requester) =
                        crate::entities::Directory::user(txn, &request.requester)?
                    {
                        builder.user(txn, &requester)?;
                    }
                    Some(builder.request(request)?)
                }
                None => None,
            };
            let node = match &facts.node {
                Some(node) => Some(builder.node(&node.id, &node.networks)?),
                None => None,
            };
            let refs = ContextRefs {
                gateway: builder.gateway(&self.settings.gateway)?,
                session: builder.session(&facts.session_id, &facts.pairs)?,
                request,
                node,
            };
            let entities = builder.build()?;
            Ok(SessionEntities {
                asset,
                account,
                entities,
                principal,
                resource,
                refs,
            })
        })
    }

    /// Decides whether `user` may open a session to `target`.
    pub fn authorize_session(
        &self,
        user: &User,
        target: &TargetSpec,
        facts: SessionFacts,
    ) -> Result<TargetAuthorization, Denied> {
        self.authorize_session_with(user, target, facts, None)
    }

    /// Decides whether `user` may open a session to `target` with an access request in play
    /// (`context.request`): the approved request's link can then permit it.
    pub fn authorize_session_with(
        &self,
        user: &User,
        target: &TargetSpec,
        facts: SessionFacts,
        request: Option<&crate::entities::RequestFacts>,
    ) -> Result<TargetAuthorization, Denied> {
        let built = self.session_entities(user, target, &facts, request)?;
        let action = action_uid(session_action(&facts.protocol)?)?;
        let context = context::context(context::access_value(&facts, &built.refs), &action)?;
        let bundle = self.bundle();
        let decision = bundle.decide(Query {
            principal: &built.principal,
            action: &action,
            resource: &built.resource,
            context,
            entities: &built.entities,
        })?;
        let idle_timeout = bundle.idle_timeout(&decision.policies);
        if !decision.allowed {
            return Err(Denied::NotPermitted {
                user: user.name.to_string(),
                target: target.to_string(),
                decision,
            });
        }
        Ok(TargetAuthorization {
            user: user.clone(),
            asset: built.asset,
            account: built.account,
            decision,
            facts,
            refs: built.refs,
            principal: built.principal,
            resource: built.resource,
            entities: Arc::new(built.entities),
            idle_timeout,
        })
    }

    /// Decides one action of `user` on an account, for `policy explain` and `policy who-can`:
    /// session actions, channel actions (with `channel`) and release actions. Never dials.
    pub fn decide_as(
        &self,
        user: &User,
        target: &TargetSpec,
        action: &str,
        facts: &SessionFacts,
        channel: Option<&ChannelRequest>,
    ) -> Result<Decision, Denied> {
        let built = self.session_entities(user, target, facts, None)?;
        let action_uid = action_uid(action)?;
        let value = match (action, channel) {
            (
                "ssh_session" | "rdp_session" | "telnet_session" | "vnc_session"
                | "release_password" | "release_key" | "request_access",
                _,
            ) => context::access_value(facts, &built.refs),
            (_, Some(channel)) if action.starts_with("ssh_") => {
                context::channel_value(facts, &built.refs, channel)
            }
            _ => {
                return Err(Denied::Policy(PolicyError::Config(format!(
                    "`{action}` cannot be explained from the store: use a session, channel or release action, or a scenario file"
                ))));
            }
        };
        let context = context::context(value, &action_uid)?;
        Ok(self.bundle().decide(Query {
            principal: &built.principal,
            action: &action_uid,
            resource: &built.resource,
            context,
            entities: &built.entities,
        })?)
    }

    /// Every user in the store for whom `action` on `target` is permitted, with the policies
    /// that permit it. Evaluates each user concretely: exact for the given context.
    pub fn who_can(
        &self,
        target: &TargetSpec,
        action: &str,
        facts: &SessionFacts,
        channel: Option<&ChannelRequest>,
    ) -> Result<Vec<(String, Decision)>, Denied> {
        let users: Vec<User> = self.store.list(&gatehouse_store::USERS)?;
        let mut allowed = Vec::new();
        for user in users {
            let decision = self.decide_as(&user, target, action, facts, channel)?;
            if decision.allowed {
                allowed.push((user.name.to_string(), decision));
            }
        }
        Ok(allowed)
    }

    /// Decides a channel or channel request inside an authorized session. Errors deny.
    pub fn authorize_channel(
        &self,
        session: &TargetAuthorization,
        channel: &ChannelRequest,
    ) -> ChannelDecision {
        let decided = action_uid(channel.action()).and_then(|action| {
            let context = context::context(
                context::channel_value(&session.facts, &session.refs, channel),
                &action,
            )?;
            self.bundle().decide(Query {
                principal: &session.principal,
                action: &action,
                resource: &session.resource,
                context,
                entities: &session.entities,
            })
        });
        match decided {
            Ok(d) => ChannelDecision {
                permitted: d.allowed,
                reasons: d.reasons(),
                errors: d.errors,
            },
            Err(e) => ChannelDecision {
                permitted: false,
                reasons: vec!["error".to_string()],
                errors: vec![e.to_string()],
            },
        }
    }
}

/// How many approvals [`PolicyEngine::required_approvals`] tries before giving up.
pub const MAX_APPROVALS: i64 = 16;

/// The Cedar action that opens a session over `protocol`. An unknown protocol is a
/// configuration error, never another protocol's action.
pub fn session_action(protocol: &str) -> Result<&'static str, Denied> {
    match protocol {
        "ssh" => Ok("ssh_session"),
        "rdp" => Ok("rdp_session"),
        "telnet" => Ok("telnet_session"),
        "vnc" => Ok("vnc_session"),
        other => Err(Denied::Policy(PolicyError::Config(format!(
            "no session action for protocol `{other}`"
        )))),
    }
}

/// What an administrator asks to do over the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// See the cluster's nodes and managed networks.
    ViewCluster,
    /// Change them (edit, delete, networks).
    ManageCluster,
    /// See the policies and explain decisions with them.
    ViewPolicies,
    /// Turn the vault's services on and off.
    ManageServices,
    /// Enable and disable the installed plugins.
    ManagePlugins,
}

impl AdminAction {
    /// The Cedar action's name.
    pub fn name(self) -> &'static str {
        match self {
            AdminAction::ViewCluster => "view_cluster",
            AdminAction::ManageCluster => "manage_cluster",
            AdminAction::ViewPolicies => "view_policies",
            AdminAction::ManageServices => "manage_services",
            AdminAction::ManagePlugins => "manage_plugins",
        }
    }
}

/// What a release shows the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseKind {
    Password,
    PrivateKey,
}

impl PolicyEngine {
    /// Entities for a decision about an access request: the requester, the account with its
    /// asset groups, the gateway, the request, and `principal` (approver or requester).
    fn request_entities(
        &self,
        principal: &User,
        request: &crate::entities::RequestFacts,
    ) -> Result<(Entities, EntityUid, EntityUid, EntityUid), Denied> {
        self.store.read(|txn| -> Result<_, Denied> {
            use crate::entities::Directory;
            let asset = txn
                .asset(&request.asset)?
                .ok_or_else(|| Denied::NoSuchAsset(request.asset.clone()))?;
            let account = txn
                .account(&request.asset, &request.account)?
                .ok_or_else(|| {
                    Denied::NoSuchAccount(format!("{}@{}", request.account, request.asset))
                })?;
            let requester = txn.user(&request.requester)?.ok_or_else(|| {
                Denied::Policy(PolicyError::Config(format!(
                    "requester `{}` does not exist",
                    request.requester
                )))
            })?;
            let mut builder = EntityBuilder::new();
            let principal_uid = builder.user(txn, principal)?;
            builder.user(txn, &requester)?;
            builder.account(txn, &asset, &account)?;
            let request_uid = builder.request(request)?;
            let gateway = builder.gateway(&self.settings.gateway)?;
            Ok((builder.build()?, principal_uid, request_uid, gateway))
        })
    }

    /// Decides a review-type action on an access request: `approve` and `reject` (principal: the
    /// approver), `grant_request` and `auto_approve` (principal: the requester). `approvals` is
    /// the count the workflow keeps.
    pub fn decide_request(
        &self,
        principal: &User,
        action: &str,
        request: &crate::entities::RequestFacts,
        approvals: i64,
    ) -> Result<Decision, Denied> {
        if !matches!(
            action,
            "approve" | "reject" | "grant_request" | "auto_approve"
        ) {
            return Err(Denied::Policy(PolicyError::Config(format!(
                "`{action}` is not a decision about an access request"
            ))));
        }
        let (entities, principal_uid, request_uid, gateway) =
            self.request_entities(principal, request)?;
        let action_uid = action_uid(action)?;
        let time = self.clock.now();
        let value = serde_json::json!({
            "time": context::time_value(&time),
            "gateway": { "__entity": { "type": "Gateway", "id": gateway.id().unescaped() } },
            "approvals": approvals,
        });
        let context = context::context(value, &action_uid)?;
        Ok(self.bundle().decide(Query {
            principal: &principal_uid,
            action: &action_uid,
            resource: &request_uid,
            context,
            entities: &entities,
        })?)
    }

    /// The fewest approvals with which `grant_request` permits the request (0: none needed),
    /// or `None` when no count up to [`MAX_APPROVALS`] does.
    pub fn required_approvals(
        &self,
        requester: &User,
        request: &crate::entities::RequestFacts,
    ) -> Result<Option<i64>, Denied> {
        for n in 0..=MAX_APPROVALS {
            if self
                .decide_request(requester, "grant_request", request, n)?
                .allowed
            {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    /// Decides whether `user` may see an account's password or private key. `request` is the
    /// approved access request in play, if any (its grant link must be loaded).
    pub fn authorize_release(
        &self,
        user: &User,
        target: &TargetSpec,
        kind: ReleaseKind,
        facts: &SessionFacts,
        request: Option<&crate::entities::RequestFacts>,
    ) -> Result<Decision, Denied> {
        let action = match kind {
            ReleaseKind::Password => "release_password",
            ReleaseKind::PrivateKey => "release_key",
        };
        self.decide_access(user, target, action, facts, request)
    }

    /// Decides an action whose context is an `AccessContext` (`ssh_session`, `rdp_session`,
    /// `release_password`, `release_key`, `request_access`) with an access request in play.
    /// For `request_access` the request is the one being filed, so policies can require a
    /// reason, a ticket or a maximum duration.
    pub fn decide_access(
        &self,
        user: &User,
        target: &TargetSpec,
        action: &str,
        facts: &SessionFacts,
        request: Option<&crate::entities::RequestFacts>,
    ) -> Result<Decision, Denied> {
        if !matches!(
            action,
            "ssh_session"
                | "rdp_session"
                | "telnet_session"
                | "vnc_session"
                | "release_password"
                | "release_key"
                | "request_access"
                | "view_recording"
                | "terminate_session"
                | "watch_session"
                | "join_session"
        ) {
            return Err(Denied::Policy(PolicyError::Config(format!(
                "`{action}` is not decided with an access context"
            ))));
        }
        let built = self.session_entities(user, target, facts, request)?;
        let action = action_uid(action)?;
        let context = context::context(context::access_value(facts, &built.refs), &action)?;
        Ok(self.bundle().decide(Query {
            principal: &built.principal,
            action: &action,
            resource: &built.resource,
            context,
            entities: &built.entities,
        })?)
    }

    /// Decides whether `user` may do an administrative `action` (the resource is this gateway).
    pub fn authorize_admin(
        &self,
        user: &User,
        action: AdminAction,
        client: std::net::SocketAddr,
    ) -> Result<Decision, Denied> {
        let (entities, principal, gateway) = self.store.read(|txn| -> Result<_, Denied> {
            let mut builder = EntityBuilder::new();
            let principal = builder.user(txn, user)?;
            let gateway = builder.gateway(&self.settings.gateway)?;
            Ok((builder.build()?, principal, gateway))
        })?;
        let action = action_uid(action.name())?;
        let value = serde_json::json!({
            "client": context::client_value(&client),
            "time": context::time_value(&self.clock.now()),
        });
        let context = context::context(value, &action)?;
        Ok(self.bundle().decide(Query {
            principal: &principal,
            action: &action,
            resource: &gateway,
            context,
            entities: &entities,
        })?)
    }

    /// Decides whether application `name` (in `groups`) may retrieve an account's credential.
    pub fn authorize_a2a(
        &self,
        name: &str,
        groups: &[String],
        target: &TargetSpec,
        client: std::net::SocketAddr,
    ) -> Result<Decision, Denied> {
        let (entities, principal, resource, gateway) =
            self.store.read(|txn| -> Result<_, Denied> {
                use crate::entities::Directory;
                let asset = txn
                    .asset(target.asset.as_str())?
                    .ok_or_else(|| Denied::NoSuchAsset(target.asset.to_string()))?;
                let account = txn
                    .account(target.asset.as_str(), target.account.as_str())?
                    .ok_or_else(|| Denied::NoSuchAccount(target.to_string()))?;
                let mut builder = EntityBuilder::new();
                let principal = builder.application(txn, name, groups)?;
                let resource = builder.account(txn, &asset, &account)?;
                let gateway = builder.gateway(&self.settings.gateway)?;
                Ok((builder.build()?, principal, resource, gateway))
            })?;
        let action = action_uid("a2a_retrieve")?;
        let time = self.clock.now();
        let value = serde_json::json!({
            "client": context::client_value(&client),
            "time": context::time_value(&time),
            "gateway": { "__entity": { "type": "Gateway", "id": gateway.id().unescaped() } },
        });
        let context = context::context(value, &action)?;
        Ok(self.bundle().decide(Query {
            principal: &principal,
            action: &action,
            resource: &resource,
            context,
            entities: &entities,
        })?)
    }
}

/// Granted requests whose window has not ended: each is linked as `approved:<id>`.
fn approved_requests(txn: &ReadTxn) -> Result<Vec<AccessRequest>, StoreError> {
    let now = gatehouse_core::time::Timestamp::now();
    Ok(txn
        .list(&REQUESTS)?
        .into_iter()
        .filter(|r| r.state.is_granted() && r.window_end.is_some_and(|end| now < end))
        .collect())
}

/// `Action::"<name>"`.
pub fn action_uid(name: &str) -> Result<EntityUid, PolicyError> {
    uid(Kind::Action, name)
}
