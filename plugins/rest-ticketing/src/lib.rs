//! `rest-ticketing`: validates tickets against a REST endpoint over `wasi:http` and writes the
//! session id back when the session ends.
//!
//! `GET  {endpoint}/tickets/{id}` → 200 `{"status": "open", ...}` (valid when the status is one
//! of `valid-states`), 404 (no such ticket).
//! `POST {endpoint}/tickets/{id}/comments` `{"text": "..."}` at session end.

wit_bindgen::generate!({
    path: "../../wit",
    world: "gatehouse:plugin/ticketing-plugin@0.1.0",
});

use exports::gatehouse::plugin::ticketing::{Guest, TicketRequest, TicketVerdict};
use gatehouse::plugin::types::{HostError, Pair, SessionEnd};
use gatehouse::plugin::{config, secrets};

struct RestTicketing;

#[derive(serde::Deserialize)]
struct Ticket {
    status: String,
    #[serde(default)]
    assignee: Option<String>,
}

fn endpoint() -> Result<String, String> {
    match config::get("endpoint") {
        Some(config::Value::Text(url)) => Ok(url.trim_end_matches('/').to_owned()),
        _ => Err("`endpoint` is not configured".into()),
    }
}

fn valid_states() -> Vec<String> {
    match config::get("valid-states") {
        Some(config::Value::Texts(states)) => states,
        _ => vec!["open".into(), "in-progress".into()],
    }
}

/// The API token, if the operator granted one.
fn token() -> Result<Option<String>, String> {
    match secrets::get("api-token") {
        Ok(token) => Ok(Some(token)),
        Err(HostError::NotGranted(_)) | Err(HostError::NotFound(_)) => Ok(None),
        Err(error) => Err(format!("{error:?}")),
    }
}

fn ticket_url(request: &TicketRequest) -> Result<String, String> {
    Ok(format!(
        "{}/tickets/{}",
        endpoint()?,
        guest_http::encode_segment(&request.ticket_id)
    ))
}

impl Guest for RestTicketing {
    fn validate(request: TicketRequest) -> Result<TicketVerdict, String> {
        let url = ticket_url(&request)?;
        let token = token()?;
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        let response = guest_http::get(&url, &headers).map_err(|e| e.to_string())?;
        match response.status {
            200 => {
                let ticket: Ticket = serde_json::from_slice(&response.body)
                    .map_err(|e| format!("unexpected ticket document: {e}"))?;
                if valid_states().contains(&ticket.status) {
                    let mut audit = vec![Pair {
                        key: "ticket-status".into(),
                        value: ticket.status,
                    }];
                    if let Some(assignee) = ticket.assignee {
                        audit.push(Pair {
                            key: "ticket-assignee".into(),
                            value: assignee,
                        });
                    }
                    Ok(TicketVerdict::Valid(audit))
                } else {
                    Ok(TicketVerdict::Invalid(format!(
                        "ticket is `{}`",
                        ticket.status
                    )))
                }
            }
            404 => Ok(TicketVerdict::Invalid("no such ticket".into())),
            status => Err(format!("ticketing endpoint answered {status}")),
        }
    }

    fn close(request: TicketRequest, end: SessionEnd) -> Result<(), String> {
        let url = format!("{}/comments", ticket_url(&request)?);
        let text = format!(
            "gatehouse session {} by {} to {}@{} ended ({}, {} bytes in, {} bytes out)",
            request.session_id,
            request.gateway_user,
            request.target_account,
            request.target_asset,
            end.reason,
            end.bytes_from_client,
            end.bytes_to_client
        );
        let body =
            serde_json::json!({ "text": text, "session-id": request.session_id }).to_string();
        let token = token()?;
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        let response =
            guest_http::post_json(&url, &headers, body.as_bytes()).map_err(|e| e.to_string())?;
        if (200..300).contains(&response.status) {
            Ok(())
        } else {
            Err(format!("ticketing endpoint answered {}", response.status))
        }
    }
}

export!(RestTicketing);
