//! Access strings: a granted session request yields an `ssh` command line carrying a single-use,
//! expiring token bound to the requester and the request. The gateway redeems it at connect
//! time; the vault password never reaches the user.

use crate::requests::Actor;
use crate::{Workflow, WorkflowError, sha256_hex};
use gatehouse_audit::Entry;
use gatehouse_core::time::Timestamp;
use gatehouse_core::{AccessKind, AccessRequest, AccessToken, AuditKind, TargetSpec, User};
use gatehouse_store::{ACCESS_TOKENS, REQUESTS};

/// The login option that carries the token: `access=<token>@user@account@asset`.
pub const ACCESS_OPTION: &str = "access";

/// An issued access string. The token is shown once; only its hash is stored.
pub struct AccessString {
    pub request: String,
    /// The command line to run (contains the token).
    pub command: String,
    pub expires: Timestamp,
}

impl std::fmt::Debug for AccessString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessString")
            .field("request", &self.request)
            .field("command", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

fn endpoint(text: &str) -> (String, Option<u16>) {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host.to_string(), Some(p)),
            Err(_) => (text.to_string(), None),
        },
        _ => (text.to_string(), None),
    }
}

impl Workflow {
    /// Issues an access string for a granted session request (requester only).
    pub fn access_string(&self, actor: &Actor, id: &str) -> Result<AccessString, WorkflowError> {
        let request = self.get(actor, id)?;
        if request.requester != actor.user.name {
            return Err(WorkflowError::Forbidden(
                "only the requester gets an access string".into(),
            ));
        }
        if request.access != AccessKind::Session {
            return Err(WorkflowError::BadInput(format!(
                "request `{id}` is for a {}; access strings are for session requests",
                request.access
            )));
        }
        let now = Timestamp::now();
        if !request.usable_at(now) {
            return Err(WorkflowError::Conflict {
                id: request.id.clone(),
                state: request.state,
                action: "issue an access string",
            });
        }
        let token = crate::random_hex(20);
        let ttl = self.settings.access_token_seconds.saturating_mul(1000);
        let expires =
            Timestamp((now.0 + ttl).min(request.window_end.map(|e| e.0).unwrap_or(now.0 + ttl)));
        let record = AccessToken {
            request: request.id.clone(),
            user: actor.user.name.clone(),
            asset: request.asset.clone(),
            account: request.account.clone(),
            created: now,
            expires,
            used: None,
        };
        let hash = sha256_hex(token.as_bytes());
        self.store.write(|txn| {
            txn.put(&ACCESS_TOKENS, &hash, &record)?;
            self.auditor.record_in(
                txn,
                Entry::new(AuditKind::AccessTokenIssued, "access string issued")
                    .user(actor.user.name.to_string())
                    .target(request.target())
                    .client(actor.client.to_string())
                    .field("request", request.id.clone())
                    .field("token", hash[..12].to_string())
                    .field("expires", expires.0),
            )
        })?;
        let (host, port) = endpoint(
            self.settings
                .ssh_endpoint
                .as_deref()
                .unwrap_or("127.0.0.1:2222"),
        );
        let port = port.map(|p| format!("-p {p} ")).unwrap_or_default();
        let command = format!(
            "ssh {port}{ACCESS_OPTION}={token}@{}@{}@{}@{host}",
            actor.user.name, request.account, request.asset
        );
        Ok(AccessString {
            request: request.id,
            command,
            expires,
        })
    }

    /// Redeems an access token at connect time: it must exist, be unused and unexpired, belong
    /// to `user` and `target`, and its request must be usable. Marked used in the same
    /// transaction, so it works once. Every refusal is audited with its reason; the caller
    /// shows one line without it.
    pub fn redeem_access_token(
        &self,
        user: &User,
        token: &str,
        target: &TargetSpec,
        session_id: &str,
        client: &str,
    ) -> Result<AccessRequest, WorkflowError> {
        let hash = sha256_hex(token.as_bytes());
        let now = Timestamp::now();
        let refused = |why: String| -> WorkflowError {
            self.audit(
                Entry::new(AuditKind::AccessTokenRefused, why)
                    .user(user.name.to_string())
                    .target(target.to_string())
                    .session(session_id.to_string())
                    .client(client.to_string())
                    .field("token", hash[..12].to_string()),
            );
            WorkflowError::Unauthorized("the access token is unknown, used or expired".into())
        };
        let outcome = self.store.write(
            |txn| -> Result<Result<AccessRequest, String>, WorkflowError> {
                let Some(mut record) = txn.get(&ACCESS_TOKENS, &hash)? else {
                    return Ok(Err("unknown access token".into()));
                };
                if let Some(used) = record.used {
                    return Ok(Err(format!("access token already used at {}", used.0)));
                }
                if now >= record.expires {
                    return Ok(Err("access token expired".into()));
                }
                if record.user != user.name {
                    return Ok(Err(format!(
                        "access token of `{}` presented by `{}`",
                        record.user, user.name
                    )));
                }
                if record.asset != target.asset || record.account != target.account {
                    return Ok(Err(format!(
                        "access token for `{}@{}` used for `{target}`",
                        record.account, record.asset
                    )));
                }
                let Some(request) = txn.get(&REQUESTS, &record.request)? else {
                    return Ok(Err("the token's request no longer exists".into()));
                };
                if !request.usable_at(now) {
                    return Ok(Err(format!(
                        "the token's request `{}` is {}",
                        request.id, request.state
                    )));
                }
                record.used = Some(now);
                txn.put(&ACCESS_TOKENS, &hash, &record)?;
                Ok(Ok(request))
            },
        )?;
        outcome.map_err(refused)
    }
}
