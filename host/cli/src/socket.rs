//! The admin socket: while `serve` holds the store, other `gatehouse` commands send their
//! requests here (a Unix socket in the data directory, mode 0600, one JSON line each way).

use crate::admin::{AdminContext, AdminRequest, AdminResponse, execute};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The largest request accepted (a private key and a few public keys fit easily).
const MAX_REQUEST: usize = 1024 * 1024;

/// Serves admin requests until the task is dropped.
pub async fn serve(path: &Path, ctx: Arc<AdminContext>) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding the admin socket `{}`", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, ctx).await {
                tracing::warn!(error = %e, "admin socket request failed");
            }
        });
    }
}

async fn handle(stream: tokio::net::UnixStream, ctx: Arc<AdminContext>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<AdminRequest>(&line) {
        Ok(request) => {
            let result = tokio::task::spawn_blocking(move || {
                let result = execute(&ctx, &request);
                // Grants are template links: relink at once instead of at the next poll.
                crate::policy_cmd::reload_audited(&ctx, &request.inputs.actor, false);
                result
            })
            .await?;
            match result {
                Ok(output) => AdminResponse { ok: true, output },
                Err(e) => AdminResponse {
                    ok: false,
                    output: format!("{e:#}"),
                },
            }
        }
        Err(e) => AdminResponse {
            ok: false,
            output: format!("malformed admin request: {e}"),
        },
    };
    zeroize::Zeroize::zeroize(&mut line);
    let mut text = serde_json::to_string(&response)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

use tokio::io::AsyncReadExt as _;

/// Sends a request to the running server.
pub fn send(path: &Path, request: &AdminRequest) -> Result<AdminResponse> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "the store is in use, but the running server's admin socket `{}` does not answer",
            path.display()
        )
    })?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    zeroize::Zeroize::zeroize(&mut text);
    let mut reader = std::io::BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    serde_json::from_str(&answer).context("malformed answer from the admin socket")
}
