//! A session node's logins and session decisions, asked of the control node.

use crate::messages::Refusal;
use crate::permit::Permit;
use crate::session::SessionShared;
use gatehouse_cluster::wire::{Authorize, Held, LoginProof, LoginQuestion};
use gatehouse_cluster::{
    Authorized, ClusterError, ControlClient, LoginAnswer, LoginAttempt, RefusalKind, RemotePermit,
};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditKind, LoginSpec, Name, SecretString, TargetSpec, User};
use std::sync::Arc;

/// Why a login at a session node failed.
pub(crate) enum LoginRefused {
    /// Wrong password or key, or unknown user (the same answer).
    Rejected(String),
    /// The control node refused for another reason the user may read, or cannot be reached.
    Unavailable { audit: String, user_line: String },
}

/// The in-band login as the user typed it, rebuilt from its parts.
pub(crate) fn render_login(login: &LoginSpec) -> String {
    let mut out = String::new();
    for (key, value) in &login.options {
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        out.push('@');
    }
    out.push_str(login.user.as_str());
    if let Ok(target) = &login.target {
        out.push('@');
        out.push_str(&target.to_string());
    }
    out
}

/// A login the control node checked.
pub(crate) enum RemoteLogin {
    /// Complete: the user (name and groups only), the control node's login plugins that
    /// accepted and their notes.
    Done {
        user: User,
        plugins: Vec<String>,
        notes: Vec<serde_json::Value>,
        ticket_verified: bool,
    },
    /// A login plugin on the control node asks the user something.
    Question(LoginQuestion),
}

impl SessionShared {
    /// Checks the user's password or key on the control node, whose login plugins then have
    /// their say. The user the gateway then knows has only a name and groups (no hash or key
    /// ever reaches a node).
    pub(crate) async fn authenticate_remote(
        &self,
        control: &ControlClient,
        login: &LoginSpec,
        proof: LoginProof,
    ) -> Result<RemoteLogin, LoginRefused> {
        let client = self.client.to_string();
        let rendered = render_login(login);
        let attempt = LoginAttempt {
            session: &self.id,
            client: &client,
            user: login.user.as_str(),
            login: &rendered,
            protocol: "ssh",
        };
        let answer = control.authenticate(attempt, proof).await;
        self.remote_login(answer)
    }

    /// The user's answer to a control node plugin's question.
    pub(crate) async fn answer_remote(
        &self,
        control: &ControlClient,
        question: &LoginQuestion,
        answer: String,
    ) -> Result<RemoteLogin, LoginRefused> {
        let answered = control
            .answer_question(question, SecretString::new(answer))
            .await;
        self.remote_login(answered)
    }

    fn remote_login(
        &self,
        answer: Result<LoginAnswer, ClusterError>,
    ) -> Result<RemoteLogin, LoginRefused> {
        match answer {
            Ok(LoginAnswer::Authenticated(authenticated)) => {
                let Ok(name) = Name::new(authenticated.user.clone()) else {
                    return Err(LoginRefused::Unavailable {
                        audit: format!(
                            "the control node named an invalid user `{}`",
                            authenticated.user
                        ),
                        user_line: Refusal::Internal {
                            session: self.id.clone(),
                        }
                        .user_message(),
                    });
                };
                self.set_control_ticket(authenticated.ticket);
                Ok(RemoteLogin::Done {
                    user: User {
                        name,
                        password_hash: None,
                        public_keys: vec![],
                        groups: authenticated
                            .groups
                            .iter()
                            .filter_map(|g| Name::new(g.clone()).ok())
                            .collect(),
                        email: None,
                        rdp_secret: None,
                        created: Timestamp(0),
                    },
                    plugins: authenticated.plugins,
                    notes: authenticated.plugin_notes,
                    ticket_verified: authenticated.ticket_verified,
                })
            }
            Ok(LoginAnswer::Question(question)) => Ok(RemoteLogin::Question(question)),
            Err(ClusterError::Refused(refusal)) if refusal.kind == RefusalKind::LoginFailed => Err(
                LoginRefused::Rejected(format!("control node: {}", refusal.message)),
            ),
            Err(ClusterError::Refused(refusal)) if refusal.kind == RefusalKind::PluginRefused => {
                Err(LoginRefused::Unavailable {
                    audit: format!("control node: {}", refusal.message),
                    user_line: format!("gatehouse: {}", refusal.message),
                })
            }
            Err(ClusterError::Refused(refusal)) => Err(LoginRefused::Unavailable {
                audit: format!("control node refused the login: {}", refusal.message),
                user_line: format!("gatehouse: {}", refusal.message),
            }),
            Err(e) => Err(LoginRefused::Unavailable {
                audit: format!("control node unreachable at login: {e}"),
                user_line: Refusal::ControlUnreachable.user_message(),
            }),
        }
    }

    /// Asks the control node for the session: a permit with the credential, or the reason.
    /// The control node audits its decision; the node audits only what the control node could
    /// not (an unreachable control node).
    pub(crate) async fn authorize_remote(
        self: &Arc<Self>,
        control: &ControlClient,
        login: &LoginSpec,
        target: &TargetSpec,
    ) -> Result<(Permit, Option<String>), Refusal> {
        let internal = || Refusal::Internal {
            session: self.id.clone(),
        };
        let Some(ticket) = self.control_ticket() else {
            return Err(internal());
        };
        let method = self
            .authenticated_with()
            .first()
            .cloned()
            .unwrap_or_default();
        let call = Authorize {
            session: self.id.clone(),
            client: self.client.to_string(),
            protocol: "ssh".into(),
            login: render_login(login),
            ticket: SecretString::new(ticket.expose().to_string()),
            method,
        };
        let answer = match control.authorize(call).await {
            Ok(Authorized::Permit(permit)) => Ok(*permit),
            Ok(Authorized::Held(held)) => self.wait_for_approval(control, held).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(permit) => {
                let request = permit.request().map(str::to_string);
                Ok((Permit::Remote(Arc::new(permit)), request))
            }
            Err(ClusterError::Refused(refusal)) => Err(match refusal.kind {
                RefusalKind::NotPermitted => Refusal::not_permitted(target),
                RefusalKind::AccessToken => Refusal::AccessToken,
                RefusalKind::OutsideNetworks
                | RefusalKind::NotServed
                | RefusalKind::CredentialStore
                | RefusalKind::RequestNotGranted => Refusal::Cluster(refusal.message),
                _ => {
                    self.audit(
                        AuditKind::AccessDenied,
                        format!("control node refused: {}", refusal.message),
                        &[],
                    );
                    internal()
                }
            }),
            Err(e) => {
                self.audit(
                    AuditKind::AccessDenied,
                    format!("control node unreachable: {e}"),
                    &[],
                );
                Err(Refusal::ControlUnreachable)
            }
        }
    }

    /// Holds the connection while the access request the control node filed is decided,
    /// telling the user, as a single gateway does.
    async fn wait_for_approval(
        self: &Arc<Self>,
        control: &ControlClient,
        held: Held,
    ) -> Result<RemotePermit, ClusterError> {
        let needed = held.approvals_needed;
        self.notice(format!(
            "gatehouse: access request {} needs {} approval{}; waiting up to {} (Ctrl-C to stop; an approval later still lets you connect)",
            held.request,
            needed,
            if needed == 1 { "" } else { "s" },
            crate::access::minutes_text(std::time::Duration::from_secs(held.wait_seconds))
        ));
        loop {
            let asked = tokio::select! {
                asked = control.await_decision(&held) => asked,
                () = self.closed() => {
                    return Err(ClusterError::Refused(gatehouse_cluster::Refusal::new(
                        RefusalKind::RequestNotGranted,
                        format!("access request {} was not granted: the connection closed while waiting", held.request),
                    )));
                }
            };
            if let Some(permit) = asked? {
                self.notice(format!(
                    "gatehouse: access request {} approved; connecting",
                    held.request
                ));
                return Ok(permit);
            }
        }
    }
}
