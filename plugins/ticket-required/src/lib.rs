//! `ticket-required`: a session needs a ticket id. It comes from the `ticket=` pair of the
//! in-band username or from a question; its format is checked against the configuration
//! (prefixes and digit count). The plugin accepts with the ticket id, and when the operator
//! linked a ticketing plugin to this one (`ticketing = "..."` in grants.toml), the host asks
//! that plugin to validate the ticket before the session may go on.

wit_bindgen::generate!({
    path: "../../wit",
    world: "gatehouse:plugin/aa-plugin@0.1.0",
});

use exports::gatehouse::plugin::aa::{Acceptance, Guest, Question, Verdict};
use gatehouse::plugin::types::{Connection, Pair, SessionEnd};
use gatehouse::plugin::{config, cookies, log};

struct TicketRequired;

fn prefixes() -> Vec<String> {
    match config::get("prefixes") {
        Some(config::Value::Texts(values)) => values,
        _ => vec!["CHG".into(), "INC".into()],
    }
}

fn digits() -> usize {
    match config::get("digits") {
        Some(config::Value::Integer(n)) => n.clamp(1, 20) as usize,
        _ => 6,
    }
}

fn prompt() -> String {
    match config::get("prompt") {
        Some(config::Value::Text(text)) => text,
        _ => "Ticket number: ".into(),
    }
}

/// `CHG123456`: a configured prefix, then exactly the configured number of digits.
fn well_formed(ticket: &str) -> bool {
    let digits = digits();
    prefixes().iter().any(|prefix| {
        ticket
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.len() == digits && rest.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn find<'a>(pairs: &'a [Pair], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

fn accept(ticket: Option<String>) -> Verdict {
    Verdict::Accept(Acceptance {
        rename_user: None,
        set_groups: None,
        audit: Vec::new(),
        ticket,
    })
}

impl Guest for TicketRequired {
    fn authenticate(_conn: Connection) -> Verdict {
        accept(None)
    }

    fn authorize(conn: Connection) -> Verdict {
        let ticket = find(&conn.options, "ticket").or_else(|| find(&conn.answers, "ticket"));
        let Some(ticket) = ticket.map(str::trim) else {
            return Verdict::NeedInfo(Question {
                key: "ticket".into(),
                prompt: prompt(),
                echo: true,
            });
        };
        if !well_formed(ticket) {
            let reason = format!(
                "ticket id `{ticket}` does not match the expected format ({} followed by {} digits)",
                prefixes().join(" or "),
                digits()
            );
            log::log(log::Level::Warn, &reason);
            return Verdict::Deny(reason);
        }
        // Other plugins of this session can see the ticket too.
        let _ = cookies::set_session_value("ticket", ticket);
        accept(Some(ticket.to_owned()))
    }

    fn session_ended(_conn: Connection, _end: SessionEnd) {}
}

export!(TicketRequired);
