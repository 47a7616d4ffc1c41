//! Authentication and authorization plugins in the SSH login: after the gateway password or key
//! was accepted, every enabled AA plugin's `authenticate` and then `authorize` hook runs before
//! the target is dialed. A plugin's question is asked through keyboard-interactive (echo off
//! unless the plugin says otherwise) and the hook runs again with the answer. Any deny or plugin
//! failure refuses the login; the audit trail gets the plugin and its reason.

use crate::session::SessionShared;
use gatehouse_core::{AuditKind, LoginSpec, Name, User};
use gatehouse_plugin_host::{
    AaVerdict, Answer, ConnectionInfo, PluginHost, Protocol, Question, SessionCookies,
};
use gatehouse_store::{ASSETS, USERS};
use std::sync::Arc;

/// The login step plugins are working on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Authenticate,
    Authorize,
}

/// A login whose first factor succeeded and whose plugins are still running.
pub(crate) struct PendingLogin {
    user: User,
    login: LoginSpec,
    method: String,
    step: Step,
    answers: Vec<Answer>,
    question: Option<Question>,
    accepted_by: Vec<String>,
    audit_notes: Vec<(String, String, String)>,
}

/// A login every plugin accepted.
pub(crate) struct Completed {
    pub user: User,
    pub login: LoginSpec,
    pub method: String,
    pub accepted_by: Vec<String>,
    /// (plugin, key, value) for the audit trail.
    pub audit_notes: Vec<(String, String, String)>,
}

/// What the handler does next.
pub(crate) enum Next {
    /// Every plugin accepted: the login is complete.
    Accept,
    /// Ask this question through keyboard-interactive.
    Ask(Question),
    /// Refused (already audited).
    Deny,
}

/// Bound on questions per login, so a plugin cannot keep a client in a loop.
const MAX_QUESTIONS: usize = 8;
/// Bound on one answer's length.
const MAX_ANSWER: usize = 1024;

impl PendingLogin {
    pub(crate) fn new(user: User, login: LoginSpec, method: &str) -> Self {
        PendingLogin {
            user,
            login,
            method: method.to_string(),
            step: Step::Authenticate,
            answers: Vec::new(),
            question: None,
            accepted_by: Vec::new(),
            audit_notes: Vec::new(),
        }
    }

    pub(crate) fn question(&self) -> Option<&Question> {
        self.question.as_ref()
    }

    /// Records the answer to the pending question.
    pub(crate) fn answer(&mut self, value: String) {
        if let Some(q) = self.question.take() {
            let value: String = value.chars().take(MAX_ANSWER).collect();
            self.answers.push(Answer::new(q.key, value));
        }
    }

    pub(crate) fn into_parts(self) -> Completed {
        Completed {
            user: self.user,
            login: self.login,
            method: self.method,
            accepted_by: self.accepted_by,
            audit_notes: self.audit_notes,
        }
    }
}

/// What plugins are told about a connection. `target` is (address, port) when known.
pub(crate) fn connection_info(
    shared: &SessionShared,
    user: &User,
    login: &LoginSpec,
    target: (String, u16),
) -> ConnectionInfo {
    let (asset, account) = match &login.target {
        Ok(t) => (t.asset.to_string(), t.account.to_string()),
        Err(_) => (String::new(), String::new()),
    };
    ConnectionInfo {
        session_id: shared.id.clone(),
        protocol: Protocol::Ssh,
        client_address: shared.client.ip().to_string(),
        client_port: shared.client.port(),
        gateway_user: user.name.to_string(),
        groups: user.groups.iter().map(|g| g.to_string()).collect(),
        target_asset: asset,
        target_address: target.0,
        target_port: target.1,
        target_account: account,
        options: login.options.clone(),
    }
}

fn connection(shared: &SessionShared, pending: &PendingLogin) -> ConnectionInfo {
    // The plugin sees the target's address only when the asset exists; an unknown asset looks
    // like an empty address, never like an error.
    let address = match &pending.login.target {
        Ok(t) => shared
            .services
            .store
            .get(&ASSETS, t.asset.as_str())
            .ok()
            .flatten()
            .map(|a| (a.address, a.port))
            .unwrap_or_default(),
        Err(_) => Default::default(),
    };
    connection_info(shared, &pending.user, &pending.login, address)
}

/// Runs the plugins until they accept, ask, or refuse.
pub(crate) async fn run(
    shared: &Arc<SessionShared>,
    plugins: &PluginHost,
    pending: &mut PendingLogin,
    cookies: &mut SessionCookies,
) -> Next {
    loop {
        if pending.answers.len() > MAX_QUESTIONS {
            refuse(shared, pending, "too many plugin questions".into());
            return Next::Deny;
        }
        let conn = connection(shared, pending);
        let verdict = match pending.step {
            Step::Authenticate => plugins.authenticate(&conn, cookies, &pending.answers).await,
            Step::Authorize => plugins.authorize(&conn, cookies, &pending.answers).await,
        };
        match verdict {
            Ok(AaVerdict::Accept(accepted)) => {
                if accepted.gateway_user != pending.user.name.as_str() {
                    // A plugin mapped the login to another gateway user (an external identity
                    // to a local one): that user must exist, and policies see that user.
                    let renamed = shared
                        .services
                        .store
                        .get(&USERS, &accepted.gateway_user)
                        .ok()
                        .flatten();
                    let Some(renamed) = renamed else {
                        refuse(
                            shared,
                            pending,
                            format!(
                                "a plugin renamed the user to `{}`, who does not exist",
                                accepted.gateway_user
                            ),
                        );
                        return Next::Deny;
                    };
                    pending.audit_notes.push((
                        "gateway".into(),
                        "renamed".into(),
                        format!("{} -> {}", pending.user.name, renamed.name),
                    ));
                    pending.user = renamed;
                }
                let groups: Vec<Name> = accepted
                    .groups
                    .iter()
                    .filter_map(|g| Name::new(g).ok())
                    .collect();
                if groups != pending.user.groups {
                    pending.audit_notes.push((
                        "gateway".into(),
                        "groups".into(),
                        groups
                            .iter()
                            .map(|g| g.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    ));
                    pending.user.groups = groups;
                }
                for plugin in accepted.plugins {
                    if !pending.accepted_by.contains(&plugin) {
                        pending.accepted_by.push(plugin);
                    }
                }
                pending.audit_notes.extend(
                    accepted
                        .audit
                        .into_iter()
                        .map(|n| (n.plugin, n.key, n.value)),
                );
                match pending.step {
                    Step::Authenticate => pending.step = Step::Authorize,
                    Step::Authorize => return Next::Accept,
                }
            }
            Ok(AaVerdict::NeedInfo { plugin, question }) => {
                tracing::debug!(plugin = %plugin, key = %question.key, "plugin asks a question");
                pending.question = Some(question.clone());
                return Next::Ask(question);
            }
            Ok(AaVerdict::Deny { plugin, reason }) => {
                refuse(
                    shared,
                    pending,
                    format!("plugin `{plugin}` denied: {reason}"),
                );
                return Next::Deny;
            }
            Err(failure) => {
                let mut detail = failure.to_string();
                if !failure.denied.is_empty() {
                    detail.push_str(&format!(
                        " (refused capabilities: {})",
                        failure.denied.join(", ")
                    ));
                }
                refuse(shared, pending, detail);
                return Next::Deny;
            }
        }
    }
}

fn refuse(shared: &SessionShared, pending: &PendingLogin, detail: String) {
    shared.services.auditor.record_best_effort(
        gatehouse_audit::Entry::new(AuditKind::LoginFailed, detail)
            .session(shared.id.clone())
            .user(pending.user.name.to_string())
            .client(shared.client.to_string()),
    );
}
