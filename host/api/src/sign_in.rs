//! Second factors at sign-in: after the password, a portal or API sign-in runs the gateway's
//! AA plugins (their `authenticate` hook, protocol `web`), the same plugins an SSH or RDP login
//! runs. A plugin's question (the TOTP plugin's one-time code) is answered with `401
//! answer_needed` and the question; the client signs in again with the password and every answer
//! so far (`answers`). Nothing is kept between the two requests, so any control node can answer
//! the second. The daemon implements [`SignInPlugins`] over its plugin host; the API only
//! carries questions and answers.

use gatehouse_core::User;
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use utoipa::ToSchema;

/// A question a plugin asks before the sign-in completes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuestionView {
    /// Send the answer under this key in `answers`.
    pub key: String,
    /// What to show the person ("One-time code: ").
    pub prompt: String,
    /// Whether the answer may be shown while typed (false: a password field).
    pub echo: bool,
}

/// What the plugins made of a sign-in whose password was right.
pub enum SignInVerdict {
    /// Every plugin accepted: `user` (a plugin may have mapped the login to another gateway
    /// user), `methods` ("password and totp-mfa") for the audit trail.
    Accept { user: User, methods: String },
    /// A plugin asks this; sign in again with the answer.
    Ask(QuestionView),
    /// Refused: one line for the person (the audit trail has the detail, already recorded).
    Refused(String),
}

/// Runs the AA plugins' `authenticate` hooks for a web sign-in.
pub trait SignInPlugins: Send + Sync {
    /// `via` is `portal` or `api`; `answers` are the client's answers so far, by key.
    fn check<'a>(
        &'a self,
        user: User,
        client: SocketAddr,
        via: &'a str,
        answers: Vec<(String, String)>,
    ) -> Pin<Box<dyn Future<Output = SignInVerdict> + Send + 'a>>;
}
