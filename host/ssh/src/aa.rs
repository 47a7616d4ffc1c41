//! Authentication and authorization plugins in the SSH login: the protocol-neutral conversation
//! (`gatehouse_plugin_host::login`) with SSH's side of it. A plugin's question is asked through
//! keyboard-interactive (echo off unless the plugin says otherwise) and the hook runs again with
//! the answer. Any deny or plugin failure refuses the login; the audit trail gets the plugin and
//! its reason.

use crate::session::SessionShared;
use gatehouse_core::{AuditKind, LoginSpec, User};
use gatehouse_plugin_host::login::{self, LoginContext, Next, PendingLogin};
use gatehouse_plugin_host::{ConnectionInfo, PluginHost, Protocol, SessionCookies};
use gatehouse_store::{ASSETS, USERS};
use std::sync::Arc;

/// What plugins are told about a connection. `target` is (address, port) when known.
pub(crate) fn connection_info(
    shared: &SessionShared,
    user: &User,
    login: &LoginSpec,
    target: (String, u16),
) -> ConnectionInfo {
    ConnectionInfo::of_login(
        &shared.id,
        Protocol::Ssh,
        shared.client,
        user,
        login,
        target,
    )
}

impl LoginContext for SessionShared {
    fn connection(&self, user: &User, login: &LoginSpec) -> ConnectionInfo {
        // The plugin sees the target's address only when the asset exists; an unknown asset
        // looks like an empty address, never like an error.
        let address = match &login.target {
            Ok(t) => self
                .services
                .store
                .get(&ASSETS, t.asset.as_str())
                .ok()
                .flatten()
                .map(|a| (a.address, a.port))
                .unwrap_or_default(),
            Err(_) => Default::default(),
        };
        connection_info(self, user, login, address)
    }

    fn find_user(&self, name: &str) -> Option<User> {
        self.services.store.get(&USERS, name).ok().flatten()
    }

    fn refused(&self, user: &User, detail: String) {
        self.services.auditor.record_best_effort(
            gatehouse_audit::Entry::new(AuditKind::LoginFailed, detail)
                .session(self.id.clone())
                .user(user.name.to_string())
                .client(self.client.to_string()),
        );
    }
}

/// Runs the plugins until they accept, ask, or refuse.
pub(crate) async fn run(
    shared: &Arc<SessionShared>,
    plugins: &PluginHost,
    pending: &mut PendingLogin,
    cookies: &mut SessionCookies,
) -> Next {
    login::run(shared.as_ref(), plugins, pending, cookies).await
}
