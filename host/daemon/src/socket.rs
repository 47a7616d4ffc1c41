//! The admin socket: while `serve` holds the store, other `gatehouse` commands send their
//! requests here (a Unix socket in the data directory, mode 0600, one JSON line each way). Besides
//! admin commands it takes one notice: `gatehouse plugin ...` changed the plugin registry, and the
//! gateway reloads its plugins ([`crate::plugin_glue::PluginsChanged`]).

use crate::admin::{AdminContext, AdminRequest, AdminResponse, execute};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The largest request accepted (a private key and a few public keys fit easily).
const MAX_REQUEST: usize = 1024 * 1024;

/// Serves admin requests until the task is dropped. `plugins` is the gateway's plugin host, which
/// plugin changes reload.
pub async fn serve(
    path: &Path,
    ctx: Arc<AdminContext>,
    plugins: Option<gatehouse_plugin_host::PluginHost>,
) -> Result<()> {
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
        let plugins = plugins.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, ctx, plugins).await {
                tracing::warn!(error = %e, "admin socket request failed");
            }
        });
    }
}

async fn handle(
    stream: tokio::net::UnixStream,
    ctx: Arc<AdminContext>,
    plugins: Option<gatehouse_plugin_host::PluginHost>,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if let Ok(notice) = serde_json::from_str::<crate::plugin_glue::PluginsChanged>(&line) {
        let response = plugins_changed(&ctx, plugins, notice).await;
        return answer(&mut write, &response).await;
    }
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
    answer(&mut write, &response).await
}

async fn answer(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &AdminResponse,
) -> Result<()> {
    let mut text = serde_json::to_string(response)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

/// Reloads the plugins after a change to the registry (compiling is blocking work).
async fn plugins_changed(
    ctx: &Arc<AdminContext>,
    plugins: Option<gatehouse_plugin_host::PluginHost>,
    notice: crate::plugin_glue::PluginsChanged,
) -> AdminResponse {
    let Some(host) = plugins else {
        return AdminResponse {
            ok: false,
            output: "this gateway runs without a plugin host".into(),
        };
    };
    let store = ctx.store.clone();
    let change = notice.plugins_changed;
    let result = tokio::task::spawn_blocking(move || {
        crate::plugin_glue::apply_change(&store, &host, &change, "cli")
    })
    .await;
    match result {
        Ok(Ok(output)) => AdminResponse { ok: true, output },
        Ok(Err(e)) => AdminResponse {
            ok: false,
            output: format!("{e:#}"),
        },
        Err(e) => AdminResponse {
            ok: false,
            output: format!("reloading the plugins failed: {e}"),
        },
    }
}

use tokio::io::AsyncReadExt as _;

/// Tells the running server, if any, about a plugin change; `Ok(None)` when no server listens
/// on the socket (none runs, or one stopped without removing it).
pub fn send_plugins_changed(
    path: &Path,
    notice: &crate::plugin_glue::PluginsChanged,
) -> Result<Option<AdminResponse>> {
    use std::io::{BufRead, Write};
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("the admin socket `{}`", path.display()))
            );
        }
    };
    // A reload compiles changed plugins: allow it time, but never hang the CLI.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    let mut text = serde_json::to_string(notice)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut reader = std::io::BufReader::new(stream);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .context("waiting for the running gateway to reload its plugins")?;
    serde_json::from_str(&answer)
        .map(Some)
        .context("malformed answer from the admin socket")
}

/// Sends a request to the running server.
/// How long the CLI waits for the admin socket of a gateway that holds the store but does not
/// answer yet: one that is starting (after a crash the old socket file is still there until the
/// new server binds its own, a moment after it opened the store).
const STARTING_SERVER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Connects to `path`, waiting up to `patience` while it is missing or refuses.
fn connect_waiting(
    path: &Path,
    patience: std::time::Duration,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

pub fn send(path: &Path, request: &AdminRequest) -> Result<AdminResponse> {
    use std::io::{BufRead, Write};
    let mut stream = connect_waiting(path, STARTING_SERVER_PATIENCE).with_context(|| {
        format!(
            "the store is in use, but the running server's admin socket `{}` does not answer \
             (waited {} s)",
            path.display(),
            STARTING_SERVER_PATIENCE.as_secs()
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

#[cfg(test)]
mod tests {
    use super::connect_waiting;
    use std::time::Duration;

    #[test]
    fn a_starting_server_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        // A stale socket file, as a killed server leaves it: connections are refused.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert_eq!(
            std::os::unix::net::UnixStream::connect(&path)
                .unwrap_err()
                .kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        let server_path = path.clone();
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            let _ = std::fs::remove_file(&server_path);
            let listener = std::os::unix::net::UnixListener::bind(&server_path).unwrap();
            listener.accept().unwrap();
        });
        connect_waiting(&path, Duration::from_secs(10)).unwrap();
        server.join().unwrap();

        // Nobody comes: the error after the wait is the connection's own.
        let lonely = dir.path().join("none.sock");
        let started = std::time::Instant::now();
        let err = connect_waiting(&lonely, Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
