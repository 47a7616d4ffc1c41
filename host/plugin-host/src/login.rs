//! The AA conversation of one login, protocol-neutral: after the gateway password or key was
//! accepted, every enabled AA plugin's `authenticate` and then `authorize` hook runs before the
//! target is dialed. A plugin's question goes back to the protocol, which asks it (SSH: through
//! keyboard-interactive) or answers it from what the user already gave (RDP: `key=value@`
//! login options), and the hook runs again with the answer. Any deny or plugin failure refuses
//! the login; the protocol's [`LoginContext`] audits it.

use crate::{AaVerdict, Answer, ConnectionInfo, PluginHost, Question, SessionCookies};
use gatehouse_core::{LoginSpec, Name, User};

/// What the conversation needs from the protocol that runs it.
pub trait LoginContext {
    /// What plugins are told about the connection of `user` logging in with `login`.
    fn connection(&self, user: &User, login: &LoginSpec) -> ConnectionInfo;
    /// A gateway user by name, for plugins that map a login to another user.
    fn find_user(&self, name: &str) -> Option<User>;
    /// The login is refused: audit `detail` (the user sees only a generic refusal).
    fn refused(&self, user: &User, detail: String);
}

/// The login step plugins are working on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Authenticate,
    Authorize,
}

/// A login whose first factor succeeded and whose plugins are still running.
pub struct PendingLogin {
    user: User,
    login: LoginSpec,
    method: String,
    step: Step,
    answers: Vec<Answer>,
    question: Option<Question>,
    /// The plugin behind each question asked so far, in order.
    asked_by: Vec<String>,
    accepted_by: Vec<String>,
    audit_notes: Vec<(String, String, String)>,
    /// Why the login was refused, in one line the user may be shown (set by [`run`] when it
    /// returns [`Next::Deny`]).
    refusal: Option<String>,
    /// A sign-in to the gateway itself: complete after `authenticate` (no target to authorize).
    sign_in_only: bool,
}

/// A login every plugin accepted.
pub struct Completed {
    pub user: User,
    pub login: LoginSpec,
    pub method: String,
    pub accepted_by: Vec<String>,
    /// (plugin, key, value) for the audit trail.
    pub audit_notes: Vec<(String, String, String)>,
}

/// What the protocol does next.
pub enum Next {
    /// Every plugin accepted: the login is complete.
    Accept,
    /// Ask this question, then [`PendingLogin::answer`] and [`run`] again.
    Ask(Question),
    /// Refused (already handed to [`LoginContext::refused`]).
    Deny,
}

/// Bound on questions per login (all plugins together), so a plugin cannot keep a client in a
/// loop: the question after the 8th refuses the login.
pub const MAX_QUESTIONS: usize = 8;
/// Bound on one answer's length.
pub const MAX_ANSWER: usize = 1024;

impl PendingLogin {
    pub fn new(user: User, login: LoginSpec, method: &str) -> Self {
        PendingLogin {
            user,
            login,
            method: method.to_string(),
            step: Step::Authenticate,
            answers: Vec::new(),
            question: None,
            asked_by: Vec::new(),
            accepted_by: Vec::new(),
            audit_notes: Vec::new(),
            refusal: None,
            sign_in_only: false,
        }
    }

    /// `user` signing in to the gateway itself (portal, API) after `method` succeeded: only the
    /// `authenticate` hooks run, with the answers the client already gave (a web sign-in asks
    /// its questions one request at a time, so each request brings every answer so far). More
    /// than [`MAX_QUESTIONS`] answers refuse the sign-in when [`run`] starts.
    pub fn sign_in(user: User, method: &str, answers: Vec<(String, String)>) -> Self {
        let login = LoginSpec::sign_in(user.name.clone());
        let mut pending = Self::new(user, login, method);
        pending.sign_in_only = true;
        pending.answers = answers
            .into_iter()
            .map(|(key, value)| {
                Answer::new(key, value.chars().take(MAX_ANSWER).collect::<String>())
            })
            .collect();
        pending
    }

    pub fn user(&self) -> &User {
        &self.user
    }

    pub fn login(&self) -> &LoginSpec {
        &self.login
    }

    pub fn question(&self) -> Option<&Question> {
        self.question.as_ref()
    }

    /// After [`run`] returned [`Next::Deny`]: one line for the user (no control characters),
    /// generic unless the reason is the user's to know (too many questions). The audit trail
    /// has the detail.
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// Records the answer to the pending question.
    pub fn answer(&mut self, value: String) {
        if let Some(q) = self.question.take() {
            let value: String = value.chars().take(MAX_ANSWER).collect();
            self.answers.push(Answer::new(q.key, value));
        }
    }

    /// How a completed login reads in the audit trail, the same for every protocol: the
    /// methods ("password and totp-mfa") and the plugins' notes as JSON objects.
    pub fn audit_summary(
        method: &str,
        accepted_by: &[String],
        notes: Vec<(String, String, String)>,
    ) -> (String, Vec<serde_json::Value>) {
        let how = if accepted_by.is_empty() {
            method.to_string()
        } else {
            format!("{method} and {}", accepted_by.join(", "))
        };
        let notes = notes
            .into_iter()
            .map(|(plugin, key, value)| {
                serde_json::json!({"plugin": plugin, "key": key, "value": value})
            })
            .collect();
        (how, notes)
    }

    pub fn into_parts(self) -> Completed {
        Completed {
            user: self.user,
            login: self.login,
            method: self.method,
            accepted_by: self.accepted_by,
            audit_notes: self.audit_notes,
        }
    }

    /// Takes a plugin's acceptance: a renamed user (must exist), groups, who accepted, notes.
    /// `Err` is the refusal detail.
    fn accept(
        &mut self,
        ctx: &(dyn LoginContext + Sync),
        accepted: crate::Accepted,
    ) -> Result<(), String> {
        if accepted.gateway_user != self.user.name.as_str() {
            // A plugin mapped the login to another gateway user (an external identity to a
            // local one): that user must exist, and policies see that user.
            let Some(renamed) = ctx.find_user(&accepted.gateway_user) else {
                return Err(format!(
                    "a plugin renamed the user to `{}`, who does not exist",
                    accepted.gateway_user
                ));
            };
            self.audit_notes.push((
                "gateway".into(),
                "renamed".into(),
                format!("{} -> {}", self.user.name, renamed.name),
            ));
            self.user = renamed;
        }
        let groups: Vec<Name> = accepted
            .groups
            .iter()
            .filter_map(|g| Name::new(g).ok())
            .collect();
        if groups != self.user.groups {
            self.audit_notes.push((
                "gateway".into(),
                "groups".into(),
                groups
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ));
            self.user.groups = groups;
        }
        for plugin in accepted.plugins {
            if !self.accepted_by.contains(&plugin) {
                self.accepted_by.push(plugin);
            }
        }
        self.audit_notes.extend(
            accepted
                .audit
                .into_iter()
                .map(|n| (n.plugin, n.key, n.value)),
        );
        Ok(())
    }
}

/// What the user is told when a plugin denies or fails (the audit trail has the reason).
pub const REFUSED: &str = "access denied: a plugin refused this login";

fn refuse(
    ctx: &(dyn LoginContext + Sync),
    pending: &mut PendingLogin,
    user_line: String,
    detail: String,
) -> Next {
    ctx.refused(&pending.user, detail);
    pending.refusal = Some(user_line);
    Next::Deny
}

/// Runs the plugins until they accept, ask, or refuse.
pub async fn run(
    ctx: &(dyn LoginContext + Sync),
    plugins: &PluginHost,
    pending: &mut PendingLogin,
    cookies: &mut SessionCookies,
) -> Next {
    if pending.answers.len() > MAX_QUESTIONS {
        let given = pending.answers.len();
        return refuse(
            ctx,
            pending,
            format!("access denied: more than {MAX_QUESTIONS} answers"),
            format!("the sign-in brought {given} answers; at most {MAX_QUESTIONS} per login"),
        );
    }
    loop {
        let conn = ctx.connection(&pending.user, &pending.login);
        let verdict = match pending.step {
            Step::Authenticate => plugins.authenticate(&conn, cookies, &pending.answers).await,
            Step::Authorize => plugins.authorize(&conn, cookies, &pending.answers).await,
        };
        match verdict {
            Ok(AaVerdict::Accept(accepted)) => {
                if let Err(detail) = pending.accept(ctx, accepted) {
                    return refuse(ctx, pending, REFUSED.into(), detail);
                }
                match pending.step {
                    Step::Authenticate if pending.sign_in_only => return Next::Accept,
                    Step::Authenticate => pending.step = Step::Authorize,
                    Step::Authorize => return Next::Accept,
                }
            }
            Ok(AaVerdict::NeedInfo { plugin, question }) => {
                if pending.asked_by.len() >= MAX_QUESTIONS {
                    let own = pending.asked_by.iter().filter(|p| **p == plugin).count() + 1;
                    let number = pending.asked_by.len() + 1;
                    return refuse(
                        ctx,
                        pending,
                        format!(
                            "access denied: plugin `{plugin}` asked more than {MAX_QUESTIONS} questions"
                        ),
                        format!(
                            "plugin `{plugin}` asked question {number} of this login ({own} of \
                             them its own, key `{}`); at most {MAX_QUESTIONS} questions per \
                             login, so the login is refused",
                            question.key
                        ),
                    );
                }
                tracing::debug!(plugin = %plugin, key = %question.key, "plugin asks a question");
                pending.asked_by.push(plugin);
                pending.question = Some(question.clone());
                return Next::Ask(question);
            }
            Ok(AaVerdict::Deny { plugin, reason }) => {
                return refuse(
                    ctx,
                    pending,
                    REFUSED.into(),
                    format!("plugin `{plugin}` denied: {reason}"),
                );
            }
            Err(failure) => {
                let mut detail = failure.to_string();
                if !failure.denied.is_empty() {
                    detail.push_str(&format!(
                        " (refused capabilities: {})",
                        failure.denied.join(", ")
                    ));
                }
                return refuse(
                    ctx,
                    pending,
                    crate::PluginFailure::USER_MESSAGE.into(),
                    detail,
                );
            }
        }
    }
}
