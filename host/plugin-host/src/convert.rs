//! Conversions between the public API types and the generated WIT types. Everything coming
//! back from a plugin is checked against the size caps here: an answer over a cap is malformed.

use crate::bindings::v0_1_0::aa::exports::gatehouse::plugin::aa as wit_aa;
use crate::bindings::v0_1_0::aa::gatehouse::plugin::types as wit;
use crate::bindings::v0_1_0::credential_store::exports::gatehouse::plugin::credential_store as wit_cred;
use crate::bindings::v0_1_0::ticketing::exports::gatehouse::plugin::ticketing as wit_ticket;
use crate::error::FailureKind;
use crate::limits::caps;
use crate::types::{
    Acceptance, Answer, ConnectionInfo, CredentialRequest, Protocol, Question, SessionEnd,
    TicketRequest, TicketVerdict,
};

fn pairs(items: &[(String, String)]) -> Vec<wit::Pair> {
    items
        .iter()
        .map(|(key, value)| wit::Pair {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

pub(crate) fn connection(conn: &ConnectionInfo, answers: &[Answer]) -> wit::Connection {
    wit::Connection {
        session_id: conn.session_id.clone(),
        protocol: match conn.protocol {
            Protocol::Ssh => wit::Protocol::Ssh,
            Protocol::Rdp => wit::Protocol::Rdp,
            Protocol::Web => wit::Protocol::Web,
            Protocol::Telnet => wit::Protocol::Telnet,
            Protocol::Vnc => wit::Protocol::Vnc,
        },
        client_address: conn.client_address.clone(),
        client_port: conn.client_port,
        gateway_user: conn.gateway_user.clone(),
        groups: conn.groups.clone(),
        target_asset: conn.target_asset.clone(),
        target_address: conn.target_address.clone(),
        target_port: conn.target_port,
        target_account: conn.target_account.clone(),
        options: pairs(&conn.options),
        answers: answers
            .iter()
            .map(|a| wit::Pair {
                key: a.key.clone(),
                value: a.value.clone(),
            })
            .collect(),
    }
}

pub(crate) fn session_end(end: &SessionEnd) -> wit::SessionEnd {
    wit::SessionEnd {
        started_at_ms: end.started_at_ms,
        ended_at_ms: end.ended_at_ms,
        bytes_from_client: end.bytes_from_client,
        bytes_to_client: end.bytes_to_client,
        reason: end.reason.clone(),
    }
}

pub(crate) fn credential_request(request: &CredentialRequest) -> wit_cred::CredentialRequest {
    wit_cred::CredentialRequest {
        session_id: request.session_id.clone(),
        gateway_user: request.gateway_user.clone(),
        target_account: request.target_account.clone(),
        target_asset: request.target_asset.clone(),
        target_address: request.target_address.clone(),
    }
}

pub(crate) fn ticket_request(request: &TicketRequest) -> wit_ticket::TicketRequest {
    wit_ticket::TicketRequest {
        ticket_id: request.ticket_id.clone(),
        session_id: request.session_id.clone(),
        gateway_user: request.gateway_user.clone(),
        target_account: request.target_account.clone(),
        target_asset: request.target_asset.clone(),
        client_address: request.client_address.clone(),
    }
}

fn capped(what: &str, text: &str, max: usize) -> Result<(), FailureKind> {
    if text.len() > max {
        return Err(FailureKind::Malformed(format!(
            "{what} is {} bytes long (at most {max})",
            text.len()
        )));
    }
    Ok(())
}

fn valid_name(what: &str, name: &str) -> Result<(), FailureKind> {
    capped(what, name, caps::KEY)?;
    gatehouse_core::Name::new(name.to_owned())
        .map(|_| ())
        .map_err(|_| FailureKind::Malformed(format!("{what} `{name}` is not a valid name")))
}

fn audit_pairs(items: Vec<wit::Pair>) -> Result<Vec<(String, String)>, FailureKind> {
    if items.len() > caps::AUDIT_PAIRS {
        return Err(FailureKind::Malformed(format!(
            "{} audit pairs (at most {})",
            items.len(),
            caps::AUDIT_PAIRS
        )));
    }
    items
        .into_iter()
        .map(|pair| {
            capped("an audit key", &pair.key, caps::KEY)?;
            capped("an audit value", &pair.value, caps::AUDIT_VALUE)?;
            Ok((pair.key, pair.value))
        })
        .collect()
}

/// One plugin's verdict, checked.
#[derive(Debug)]
pub(crate) enum PluginVerdict {
    Accept(Acceptance),
    Deny(String),
    NeedInfo(Question),
}

pub(crate) fn verdict(verdict: wit_aa::Verdict) -> Result<PluginVerdict, FailureKind> {
    match verdict {
        wit_aa::Verdict::Accept(acceptance) => {
            if let Some(user) = &acceptance.rename_user {
                valid_name("the renamed user", user)?;
            }
            if let Some(groups) = &acceptance.set_groups {
                if groups.len() > caps::GROUPS {
                    return Err(FailureKind::Malformed(format!(
                        "{} groups (at most {})",
                        groups.len(),
                        caps::GROUPS
                    )));
                }
                for group in groups {
                    valid_name("a group", group)?;
                }
            }
            if let Some(ticket) = &acceptance.ticket {
                capped("the ticket id", ticket, caps::TICKET_ID)?;
            }
            Ok(PluginVerdict::Accept(Acceptance {
                rename_user: acceptance.rename_user,
                set_groups: acceptance.set_groups,
                audit: audit_pairs(acceptance.audit)?,
                ticket: acceptance.ticket,
            }))
        }
        wit_aa::Verdict::Deny(reason) => {
            capped("the deny reason", &reason, caps::REASON)?;
            Ok(PluginVerdict::Deny(reason))
        }
        wit_aa::Verdict::NeedInfo(question) => {
            capped("the question key", &question.key, caps::KEY)?;
            capped("the question prompt", &question.prompt, caps::PROMPT)?;
            if question.key.is_empty() {
                return Err(FailureKind::Malformed("the question key is empty".into()));
            }
            Ok(PluginVerdict::NeedInfo(Question {
                key: question.key,
                prompt: question.prompt,
                echo: question.echo,
            }))
        }
    }
}

pub(crate) fn reported_error(error: String) -> FailureKind {
    match capped("the error", &error, caps::ERROR) {
        Ok(()) => FailureKind::Reported(error),
        Err(malformed) => malformed,
    }
}

pub(crate) fn ticket_verdict(
    verdict: Result<wit_ticket::TicketVerdict, String>,
) -> Result<TicketVerdict, FailureKind> {
    match verdict {
        Ok(wit_ticket::TicketVerdict::Valid(audit)) => Ok(TicketVerdict::Valid {
            audit: audit_pairs(audit)?,
        }),
        Ok(wit_ticket::TicketVerdict::Invalid(reason)) => {
            capped("the invalid-ticket reason", &reason, caps::REASON)?;
            Ok(TicketVerdict::Invalid { reason })
        }
        Err(error) => Err(reported_error(error)),
    }
}
