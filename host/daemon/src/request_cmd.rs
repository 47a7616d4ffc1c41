//! `gatehouse login` and `gatehouse request ...`: people's side of the vault, over the HTTPS API.

use crate::admin::table;
use crate::api_client::{ApiArgs, ApiClient, bearer, token_file};
use crate::datadir::DataDir;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The gateway user.
    #[arg(long)]
    pub user: String,
    /// Read the password from standard input (first line) instead of asking.
    #[arg(long)]
    pub password_stdin: bool,
    /// Print the token instead of saving it.
    #[arg(long)]
    pub print_token: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// File a request for a session, a password or a private key.
    Create {
        #[command(flatten)]
        request: AccessRequestArgs,
        #[arg(long)]
        emergency: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Requests you may see (yours and those you may review).
    List {
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    Show {
        id: String,
        #[command(flatten)]
        out: Output,
    },
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        out: Output,
    },
    Deny {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        out: Output,
    },
    Cancel {
        id: String,
        #[command(flatten)]
        out: Output,
    },
    Revoke {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        out: Output,
    },
    /// End your access early.
    Checkin {
        id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Show the released password or private key (audited).
    Checkout {
        id: String,
        #[command(flatten)]
        out: Output,
    },
    /// An `ssh` command line for a granted session request, usable once; for an asset with
    /// RDP also an `.rdp` file carrying the same single-use token.
    AccessString {
        id: String,
        /// Write the `.rdp` file here (mode 0600; it holds the token, not a password).
        #[arg(long, value_name = "PATH")]
        rdp_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        out: Output,
    },
}

/// What an access request asks for: filed by people (`request create`) and by broker
/// applications on their behalf (`a2a request`).
#[derive(Debug, Args, Serialize, Deserialize)]
pub struct AccessRequestArgs {
    /// `ACCOUNT@ASSET`.
    pub target: String,
    /// `session`, `password` or `private_key`.
    #[arg(long, default_value = "session")]
    pub access: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long)]
    pub ticket: Option<String>,
    /// Minutes of access once granted.
    #[arg(long)]
    pub duration: Option<u32>,
}

impl AccessRequestArgs {
    /// The request as the API's JSON body takes it.
    pub fn body(&self) -> Value {
        json!({
            "target": self.target, "access": self.access, "reason": self.reason,
            "ticket": self.ticket, "duration_minutes": self.duration,
        })
    }
}

#[derive(Debug, Args)]
pub struct Output {
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// A client for the API that trusts the data directory's certificate, presenting `identity` (a
/// client certificate and its key) when given.
pub(crate) fn client(
    dir: &DataDir,
    api: &ApiArgs,
    identity: Option<(&Path, &Path)>,
) -> Result<ApiClient> {
    ApiClient::new(api, Some(dir.tls_dir().join("cert.pem")), identity)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn login(dir: &DataDir, args: LoginArgs) -> Result<()> {
    let password = zeroize::Zeroizing::new(if args.password_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text.lines().next().unwrap_or("").to_string()
    } else {
        rpassword::prompt_password(format!("password for {}: ", args.user))?
    });
    let client = client(dir, &args.api, None)?;
    let body = json!({ "user": args.user, "password": password.as_str() });
    let answer = runtime()?.block_on(client.call("POST", "/api/v1/login", None, Some(&body)))?;
    let value = answer.ok()?;
    let token = value["token"].as_str().unwrap_or_default().to_string();
    if args.print_token {
        println!("{token}");
        return Ok(());
    }
    let path = token_file()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Replace any earlier token: remove, then create afresh with mode 0600.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    crate::datadir::write_private_file(&path, token.as_bytes())?;
    eprintln!(
        "logged in as {} until {}; token saved in {}",
        value["user"].as_str().unwrap_or(""),
        value["expires_at"].as_str().unwrap_or(""),
        path.display()
    );
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn summary(r: &Value) -> String {
    let approvals = r["approvals"].as_array().map(|a| a.len()).unwrap_or(0);
    let needed = r["approvals_needed"].as_u64();
    let mut out = format!(
        "request {}: {} of {} for {} is {}",
        text(&r["id"]),
        text(&r["access"]),
        text(&r["target"]),
        text(&r["requester"]),
        text(&r["state"])
    );
    if let Some(n) = needed
        && text(&r["state"]) == "pending_approval"
    {
        out.push_str(&format!(" ({approvals} of {n} approvals)"));
    }
    if let Some(end) = r["window_end"].as_str() {
        out.push_str(&format!(", window ends {end}"));
    }
    out
}

/// The password or private key an answer releases, without its final line break.
pub(crate) fn released_secret(value: &Value) -> &str {
    value["password"]
        .as_str()
        .or_else(|| value["private_key"].as_str())
        .unwrap_or_default()
        .trim_end()
}

/// Prints the API's answer as JSON, or as `human` words it.
pub(crate) fn print(
    value: &Value,
    json_out: bool,
    human: impl FnOnce(&Value) -> String,
) -> Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(())
}

pub fn run(dir: &DataDir, command: RequestCommand) -> Result<()> {
    let rt = runtime()?;
    let auth = bearer()?;
    let call = |out: &Output, method: &str, path: String, body: Option<Value>| -> Result<Value> {
        let client = client(dir, &out.api, None)?;
        rt.block_on(client.call(method, &path, Some(&auth), body.as_ref()))?
            .ok()
    };
    // Most commands answer with one request, printed as its summary.
    let call_summary = |out: &Output, method: &str, path: String, body: Option<Value>| {
        print(&call(out, method, path, body)?, out.json, summary)
    };
    let id_path = |id: &str, action: &str| -> Result<String> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("`{id}` is not a request id");
        }
        Ok(format!("/api/v1/requests/{id}{action}"))
    };
    match command {
        RequestCommand::Create {
            request,
            emergency,
            out,
        } => {
            let mut body = request.body();
            body["emergency"] = json!(emergency);
            call_summary(&out, "POST", "/api/v1/requests".into(), Some(body))
        }
        RequestCommand::List { state, out } => {
            let path = match state {
                Some(s) => format!("/api/v1/requests?state={s}"),
                None => "/api/v1/requests".into(),
            };
            let r = call(&out, "GET", path, None)?;
            print(&r, out.json, |v| {
                let rows: Vec<Vec<String>> = v["requests"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .map(|r| {
                                vec![
                                    text(&r["id"]),
                                    text(&r["requester"]),
                                    text(&r["target"]),
                                    text(&r["access"]),
                                    text(&r["state"]),
                                    format!(
                                        "{}/{}",
                                        r["approvals"].as_array().map(|a| a.len()).unwrap_or(0),
                                        r["approvals_needed"].as_u64().unwrap_or(0)
                                    ),
                                    text(&r["created"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(
                    &[
                        "ID",
                        "REQUESTER",
                        "TARGET",
                        "ACCESS",
                        "STATE",
                        "APPROVALS",
                        "CREATED",
                    ],
                    &rows,
                )
                .trim_end()
                .to_string()
            })
        }
        RequestCommand::Show { id, out } => call_summary(&out, "GET", id_path(&id, "")?, None),
        RequestCommand::Approve { id, comment, out } => call_summary(
            &out,
            "POST",
            id_path(&id, "/approve")?,
            Some(json!({"comment": comment})),
        ),
        RequestCommand::Deny { id, comment, out } => call_summary(
            &out,
            "POST",
            id_path(&id, "/deny")?,
            Some(json!({"comment": comment})),
        ),
        RequestCommand::Revoke { id, comment, out } => call_summary(
            &out,
            "POST",
            id_path(&id, "/revoke")?,
            Some(json!({"comment": comment})),
        ),
        RequestCommand::Cancel { id, out } => {
            call_summary(&out, "POST", id_path(&id, "/cancel")?, None)
        }
        RequestCommand::Checkin { id, out } => {
            call_summary(&out, "POST", id_path(&id, "/checkin")?, None)
        }
        RequestCommand::Checkout { id, out } => {
            let r = call(&out, "POST", id_path(&id, "/credential")?, None)?;
            print(&r, out.json, |v| released_secret(v).to_string())
        }
        RequestCommand::AccessString { id, rdp_file, out } => {
            let r = call(&out, "POST", id_path(&id, "/access-string")?, None)?;
            if let Some(path) = &rdp_file {
                let Some(content) = r["rdp_file"].as_str() else {
                    bail!(
                        "request `{id}` has no RDP access (its asset has no RDP endpoint, or the gateway does not serve RDP); the ssh command line is: {}",
                        text(&r["command"])
                    );
                };
                write_private(path, content.as_bytes())
                    .with_context(|| format!("writing `{}`", path.display()))?;
                eprintln!(
                    "wrote {}: open it with mstsc or `xfreerdp {}` and log in with your gateway password (works once)",
                    path.display(),
                    path.display()
                );
            }
            if let (Some(node), false) = (r["node"].as_str(), out.json) {
                eprintln!("through session node `{node}`, which manages the asset's network");
            }
            print(&r, out.json, |v| text(&v["command"]))
        }
    }
}

/// Writes a file only its owner can read (it holds a single-use token).
fn write_private(path: &std::path::Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)
}
