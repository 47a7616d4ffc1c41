//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, which the gateway's build never
//! turns on): a plugin's answers as plain Rust values, put through the same checks the host applies
//! to the WIT values a plugin returns ([`crate::convert`]).

use crate::bindings::v0_1_0::aa::exports::gatehouse::plugin::aa as wit_aa;
use crate::bindings::v0_1_0::aa::gatehouse::plugin::types as wit;
use crate::bindings::v0_1_0::ticketing::exports::gatehouse::plugin::ticketing as wit_ticket;
use crate::convert::{self, PluginVerdict};
use crate::error::FailureKind;
use crate::types::{Acceptance, Question, TicketVerdict};

/// What an AA plugin's `authenticate`/`authorize` may return, field for field as in `wit/hooks.wit`.
#[derive(Debug, Clone)]
pub enum Verdict {
    Accept(Acceptance),
    Deny(String),
    NeedInfo(Question),
}

/// What a ticketing plugin's `validate` may return.
#[derive(Debug, Clone)]
pub enum TicketAnswer {
    Valid(Vec<(String, String)>),
    Invalid(String),
}

fn pairs(items: Vec<(String, String)>) -> Vec<wit::Pair> {
    items
        .into_iter()
        .map(|(key, value)| wit::Pair { key, value })
        .collect()
}

/// The host's reading of an AA verdict: what the session goes on with, or why it is malformed.
pub fn verdict(answer: Verdict) -> Result<Verdict, FailureKind> {
    let wit_verdict = match answer {
        Verdict::Accept(acceptance) => wit_aa::Verdict::Accept(wit_aa::Acceptance {
            rename_user: acceptance.rename_user,
            set_groups: acceptance.set_groups,
            audit: pairs(acceptance.audit),
            ticket: acceptance.ticket,
        }),
        Verdict::Deny(reason) => wit_aa::Verdict::Deny(reason),
        Verdict::NeedInfo(question) => wit_aa::Verdict::NeedInfo(wit_aa::Question {
            key: question.key,
            prompt: question.prompt,
            echo: question.echo,
        }),
    };
    Ok(match convert::verdict(wit_verdict)? {
        PluginVerdict::Accept(acceptance) => Verdict::Accept(acceptance),
        PluginVerdict::Deny(reason) => Verdict::Deny(reason),
        PluginVerdict::NeedInfo(question) => Verdict::NeedInfo(question),
    })
}

/// The host's reading of a ticketing verdict (`Err` is the plugin's own error string).
pub fn ticket_verdict(answer: Result<TicketAnswer, String>) -> Result<TicketVerdict, FailureKind> {
    convert::ticket_verdict(answer.map(|verdict| match verdict {
        TicketAnswer::Valid(audit) => wit_ticket::TicketVerdict::Valid(pairs(audit)),
        TicketAnswer::Invalid(reason) => wit_ticket::TicketVerdict::Invalid(reason),
    }))
}
