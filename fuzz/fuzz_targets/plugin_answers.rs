//! What the host makes of a plugin's answers (gatehouse-plugin-host `convert`): the WIT values an
//! AA plugin's `authenticate`/`authorize` and a ticketing plugin's `validate` return, checked
//! against the size caps and name rules before anything uses them.
//!
//! Input: bytes read as a verdict (strings of any length and content, lists of any size).
//!
//! Properties: no panic; an answer is taken exactly when an independent reading of the caps and
//! name rules (`limits::caps`, `gatehouse_core::Name`) says so, and a taken answer is passed on
//! unchanged; a plugin's own error is reported as such when within its cap, malformed otherwise.
#![no_main]

use gatehouse_core::Name;
use gatehouse_plugin_host::fuzzing::{self, TicketAnswer, Verdict};
use gatehouse_plugin_host::limits::caps;
use gatehouse_plugin_host::{Acceptance, FailureKind, Question, TicketVerdict};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A string that is as often near a cap as not: a fuzzed one, or a run of one character of a
/// fuzzed length.
fn text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => u.arbitrary::<String>()?,
        2 => {
            let c = *u.choose(&['a', 'Z', '0', '-', '.', '_', '@', ' ', 'é', '\u{0}'])?;
            let len = u.int_in_range(0..=1100)?;
            std::iter::repeat_n(c, len).collect()
        }
        _ => {
            let len = u.int_in_range(0..=70)?;
            let mut s: String = std::iter::repeat_n('g', len).collect();
            if u.arbitrary()? {
                s.insert(0, *u.choose(&['-', '.', '@', 'x'])?);
            }
            s
        }
    })
}

fn list<T>(
    u: &mut Unstructured<'_>,
    most: usize,
    item: impl Fn(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let len = u.int_in_range(0..=most)?;
    (0..len).map(|_| item(u)).collect()
}

fn pair(u: &mut Unstructured<'_>) -> Result<(String, String)> {
    Ok((text(u)?, text(u)?))
}

fn answer(u: &mut Unstructured<'_>) -> Result<Verdict> {
    Ok(match u.int_in_range(0..=2)? {
        0 => Verdict::Accept(Acceptance {
            rename_user: if u.arbitrary()? { Some(text(u)?) } else { None },
            set_groups: if u.arbitrary()? {
                Some(list(u, 70, text)?)
            } else {
                None
            },
            audit: list(u, 36, pair)?,
            ticket: if u.arbitrary()? { Some(text(u)?) } else { None },
        }),
        1 => Verdict::Deny(text(u)?),
        _ => Verdict::NeedInfo(Question {
            key: text(u)?,
            prompt: text(u)?,
            echo: u.arbitrary()?,
        }),
    })
}

fn name_ok(name: &str) -> bool {
    name.len() <= caps::KEY && Name::new(name).is_ok()
}

fn audit_ok(audit: &[(String, String)]) -> bool {
    audit.len() <= caps::AUDIT_PAIRS
        && audit
            .iter()
            .all(|(k, v)| k.len() <= caps::KEY && v.len() <= caps::AUDIT_VALUE)
}

fn acceptable(verdict: &Verdict) -> bool {
    match verdict {
        Verdict::Accept(a) => {
            a.rename_user.as_deref().is_none_or(name_ok)
                && a.set_groups
                    .as_ref()
                    .is_none_or(|g| g.len() <= caps::GROUPS && g.iter().all(|n| name_ok(n)))
                && a.ticket.as_ref().is_none_or(|t| t.len() <= caps::TICKET_ID)
                && audit_ok(&a.audit)
        }
        Verdict::Deny(reason) => reason.len() <= caps::REASON,
        Verdict::NeedInfo(q) => {
            !q.key.is_empty() && q.key.len() <= caps::KEY && q.prompt.len() <= caps::PROMPT
        }
    }
}

fn same(a: &Verdict, b: &Verdict) -> bool {
    match (a, b) {
        (Verdict::Accept(a), Verdict::Accept(b)) => a == b,
        (Verdict::Deny(a), Verdict::Deny(b)) => a == b,
        (Verdict::NeedInfo(a), Verdict::NeedInfo(b)) => a == b,
        _ => false,
    }
}

fn check_ticket(u: &mut Unstructured<'_>) -> Result<()> {
    let answer = match u.int_in_range(0..=2)? {
        0 => Ok(TicketAnswer::Valid(list(u, 36, pair)?)),
        1 => Ok(TicketAnswer::Invalid(text(u)?)),
        _ => Err(text(u)?),
    };
    let read = fuzzing::ticket_verdict(answer.clone());
    match (answer, read) {
        (Ok(TicketAnswer::Valid(audit)), Ok(TicketVerdict::Valid { audit: taken })) => {
            assert!(audit_ok(&audit));
            assert_eq!(taken, audit);
        }
        (Ok(TicketAnswer::Invalid(reason)), Ok(TicketVerdict::Invalid { reason: taken })) => {
            assert!(reason.len() <= caps::REASON);
            assert_eq!(taken, reason);
        }
        (Ok(TicketAnswer::Valid(audit)), Err(FailureKind::Malformed(_))) => {
            assert!(!audit_ok(&audit))
        }
        (Ok(TicketAnswer::Invalid(reason)), Err(FailureKind::Malformed(_))) => {
            assert!(reason.len() > caps::REASON)
        }
        (Err(error), Err(FailureKind::Reported(reported))) => {
            assert!(error.len() <= caps::ERROR);
            assert_eq!(reported, error);
        }
        (Err(error), Err(FailureKind::Malformed(_))) => assert!(error.len() > caps::ERROR),
        (answer, read) => panic!("{answer:?} read as {read:?}"),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(verdict) = answer(&mut u) else {
        return;
    };
    let expected = acceptable(&verdict);
    match fuzzing::verdict(verdict.clone()) {
        Ok(taken) => {
            assert!(expected, "taken although over a cap: {verdict:?}");
            assert!(same(&taken, &verdict), "{verdict:?} taken as {taken:?}");
        }
        Err(FailureKind::Malformed(_)) => {
            assert!(!expected, "refused although within the caps: {verdict:?}")
        }
        Err(other) => panic!("a verdict refused as {other:?}"),
    }
    let _ = check_ticket(&mut u);
});
