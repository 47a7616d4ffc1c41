//! A session's permit: a local `TargetAuthorization` (this process decided), or a
//! `RemotePermit` (the control node decided, for a session node). Only the policy engine and the
//! control node's client make them; the target is dialed only with one.

use crate::session::{SessionShared, Target};
use gatehouse_cluster::RemotePermit;
use gatehouse_core::{Asset, Name};
use gatehouse_policy::{ChannelDecision, ChannelRequest, TargetAuthorization};
use std::sync::Arc;

pub(crate) enum Permit {
    Local(Box<TargetAuthorization>),
    Remote(Arc<RemotePermit>),
}

impl Permit {
    pub fn asset(&self) -> &Asset {
        match self {
            Permit::Local(a) => a.asset(),
            Permit::Remote(p) => p.asset(),
        }
    }

    pub fn account_name(&self) -> &Name {
        match self {
            Permit::Local(a) => &a.account().name,
            Permit::Remote(p) => p.account(),
        }
    }

    /// How long the session may go without input from the user, and the policy that says so.
    pub fn idle_timeout(&self) -> Option<(std::time::Duration, &str)> {
        match self {
            Permit::Local(a) => a.idle_timeout(),
            Permit::Remote(p) => p.idle_timeout(),
        }
    }

    /// The ids of the policies that permitted the session.
    pub fn reasons(&self) -> &[String] {
        match self {
            Permit::Local(a) => a.reasons(),
            Permit::Remote(p) => p.reasons(),
        }
    }
}

impl SessionShared {
    /// Decides a channel or channel request inside the session: locally, or by the control
    /// node (which fails closed when it cannot be reached).
    pub(crate) async fn decide_channel(
        &self,
        target: &Target,
        request: &ChannelRequest,
    ) -> ChannelDecision {
        match (&target.authorization, &self.services.authority) {
            (Permit::Local(authorization), crate::Authority::Local(local)) => {
                local.policy.authorize_channel(authorization, request)
            }
            (Permit::Remote(permit), crate::Authority::Remote(control)) => {
                match control.channel(permit, request).await {
                    Ok(verdict) => ChannelDecision {
                        permitted: verdict.permitted,
                        reasons: verdict.reasons,
                        errors: verdict.errors,
                    },
                    Err(e) => ChannelDecision {
                        permitted: false,
                        reasons: vec!["control-node-unreachable".into()],
                        errors: vec![e.to_string()],
                    },
                }
            }
            _ => ChannelDecision {
                permitted: false,
                reasons: vec!["error".into()],
                errors: vec!["a permit of another authority".into()],
            },
        }
    }
}
