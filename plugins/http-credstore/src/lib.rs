//! `http-credstore`: target credentials from an HTTP secret store shaped like HashiCorp Vault's
//! KV version 2 engine: `GET {address}/v1/{mount}/data/{path}` with `X-Vault-Token`, answering
//! `{"data": {"data": {"password": "...", "private_key": "..."}}}`; 404 means no credential.
//! `{path}` is `path-template` with `{asset}` and `{account}` filled in.

wit_bindgen::generate!({
    path: "../../wit",
    world: "gatehouse:plugin/credential-store-plugin@0.1.0",
});

use exports::gatehouse::plugin::credential_store::{CredentialRequest, Guest};
use gatehouse::plugin::types::SessionEnd;
use gatehouse::plugin::{config, log, secrets};
use std::collections::BTreeMap;

struct HttpCredstore;

#[derive(serde::Deserialize)]
struct KvResponse {
    data: KvData,
}

#[derive(serde::Deserialize)]
struct KvData {
    data: BTreeMap<String, serde_json::Value>,
}

fn text(key: &str, default: Option<&str>) -> Result<String, String> {
    match config::get(key) {
        Some(config::Value::Text(value)) => Ok(value),
        _ => default
            .map(str::to_owned)
            .ok_or_else(|| format!("`{key}` is not configured")),
    }
}

fn fetch(request: &CredentialRequest, field: &str) -> Result<Option<String>, String> {
    let address = text("address", None)?;
    let mount = text("mount", Some("secret"))?;
    let template = text("path-template", Some("gatehouse/{asset}/{account}"))?;
    let path = template
        .replace(
            "{asset}",
            &guest_http::encode_segment(&request.target_asset),
        )
        .replace(
            "{account}",
            &guest_http::encode_segment(&request.target_account),
        );
    let token = secrets::get("vault-token").map_err(|e| format!("vault token: {e:?}"))?;
    let url = format!("{}/v1/{mount}/data/{path}", address.trim_end_matches('/'));
    let response =
        guest_http::get(&url, &[("x-vault-token", &token)]).map_err(|e| e.to_string())?;
    match response.status {
        200 => {
            let document: KvResponse = serde_json::from_slice(&response.body)
                .map_err(|e| format!("unexpected secret document: {e}"))?;
            match document.data.data.get(field) {
                Some(serde_json::Value::String(value)) => Ok(Some(value.clone())),
                Some(_) => Err(format!("field `{field}` is not a string")),
                None => Ok(None),
            }
        }
        404 => Ok(None),
        status => Err(format!("secret store answered {status}")),
    }
}

impl Guest for HttpCredstore {
    fn get_password(request: CredentialRequest) -> Result<Option<String>, String> {
        fetch(&request, "password")
    }

    fn get_private_key(request: CredentialRequest) -> Result<Option<String>, String> {
        fetch(&request, "private_key")
    }

    fn authentication_completed(request: CredentialRequest, succeeded: bool) {
        if !succeeded {
            log::log(
                log::Level::Warn,
                &format!(
                    "the credential of {}@{} did not log in",
                    request.target_account, request.target_asset
                ),
            );
        }
    }

    fn check_in(_request: CredentialRequest) {}

    fn session_ended(_request: CredentialRequest, _end: SessionEnd) {}
}

export!(HttpCredstore);
