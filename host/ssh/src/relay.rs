//! Relaying one session channel between the user and the target.
//!
//! Each direction runs as its own future so that a full window one way never stalls the other
//! way. What the gateway holds per channel and direction is bounded by the SSH window it grants:
//! the vendored russh gives window back only when the relay has taken the data (not when it
//! arrives), and never blocks a connection's loop on a full channel queue. A slow reader thus
//! pushes back, through the windows, to the fast writer's TCP socket instead of filling the
//! gateway's memory or stalling the other direction.

use crate::drain::{CLOSING_LINE, DrainState, draining_line};
use crate::messages::Refusal;
use crate::record::{ChannelRecording, Pty, Start};
use crate::server::refusal_line;
use crate::session::SessionShared;
use gatehouse_core::{AuditKind, ChannelSummary};
use gatehouse_policy::ChannelRequest;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelWriteHalf, Sig};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Requests that arrive before the channel's start request; at most this many are kept.
const MAX_EARLY_MESSAGES: usize = 64;

/// How long the target may take to answer our close of its channel.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a channel may be quiet before its recording buffer is written out.
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn sig_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(name) => name.clone(),
    }
}

/// Tells the user why the channel cannot proceed, then closes it.
async fn refuse(client: &ChannelWriteHalf<Msg>, server: &Handle, refusal: &Refusal) {
    // Answer the start request positively so the client shows our line rather than its own
    // generic "request failed".
    let _ = server.channel_success(client.id()).await;
    let _ = client
        .extended_data_bytes(1, refusal_line(refusal).into_bytes())
        .await;
    let _ = client.exit_status(1).await;
    let _ = client.eof().await;
    let _ = client.close().await;
}

/// Waits for the session's target, writing the session's notices (an access request being
/// held, its approval) to the user's stderr meanwhile.
async fn target_with_notices(
    shared: &Arc<SessionShared>,
    client: &ChannelWriteHalf<Msg>,
) -> Result<Arc<crate::session::Target>, Refusal> {
    let mut notices = shared.notices();
    let mut written = 0;
    let target = shared.target();
    tokio::pin!(target);
    loop {
        let pending: Vec<String> = notices
            .borrow_and_update()
            .iter()
            .skip(written)
            .cloned()
            .collect();
        written += pending.len();
        for line in pending {
            let _ = client
                .extended_data_bytes(1, format!("{line}\r\n").into_bytes())
                .await;
        }
        tokio::select! {
            result = &mut target => return result,
            changed = notices.changed() => {
                if changed.is_err() {
                    return target.await;
                }
            }
        }
    }
}

pub(crate) async fn run_session_channel(
    shared: Arc<SessionShared>,
    client: Channel<Msg>,
    number: u32,
    server: Handle,
) {
    let (mut client_rx, client_tx) = client.split();

    // Phase 1: collect pty/env requests (already answered by the handler) until the request that
    // says what the channel is for.
    let mut early: Vec<ChannelMsg> = Vec::new();
    let mut pty: Option<Pty> = None;
    let start = loop {
        let Some(msg) = client_rx.wait().await else {
            return;
        };
        match msg {
            ChannelMsg::RequestShell { .. } => break Start::Shell,
            ChannelMsg::Exec { command, .. } => {
                break Start::Exec(String::from_utf8_lossy(&command).into_owned());
            }
            ChannelMsg::RequestSubsystem { name, .. } => break Start::Subsystem(name),
            ChannelMsg::Close => {
                let _ = client_tx.close().await;
                return;
            }
            ChannelMsg::RequestPty {
                ref term,
                col_width,
                row_height,
                ..
            } => {
                pty = Some(Pty {
                    term: term.clone(),
                    cols: col_width,
                    rows: row_height,
                });
                early.push(msg);
            }
            other => {
                if early.len() >= MAX_EARLY_MESSAGES {
                    let _ = client_tx.close().await;
                    return;
                }
                early.push(other);
            }
        }
    };

    // A login that joins someone's running session gets that session's terminal instead.
    if let Some(join) = shared.join_spec() {
        crate::join::run_joiner(shared, client_rx, client_tx, &start, server, join).await;
        return;
    }

    // Phase 2: the target and the channel decision.
    let target = match target_with_notices(&shared, &client_tx).await {
        Ok(t) => t,
        Err(refusal) => {
            refuse(&client_tx, &server, &refusal).await;
            return;
        }
    };
    let request = match &start {
        Start::Shell => ChannelRequest::Shell,
        Start::Exec(command) => ChannelRequest::Exec {
            command: command.clone(),
        },
        Start::Subsystem(name) => ChannelRequest::Subsystem { name: name.clone() },
    };
    let decision = shared.decide_channel(&target, &request).await;
    let description = match &start {
        Start::Shell => "shell".to_string(),
        Start::Exec(cmd) => format!("exec `{cmd}`"),
        Start::Subsystem(name) => format!("subsystem `{name}`"),
    };
    let mut fields = vec![
        ("channel", serde_json::Value::from(request.kind())),
        ("number", number.into()),
        ("policies", serde_json::json!(decision.reasons)),
    ];
    if !decision.errors.is_empty() {
        fields.push(("policy_errors", serde_json::json!(decision.errors)));
    }
    if !decision.permitted {
        shared.audit(
            AuditKind::ChannelDenied,
            format!("{description} denied"),
            &fields,
        );
        let _ = client_tx
            .extended_data_bytes(
                1,
                format!(
                    "gatehouse: {} is not permitted by policy on this target\r\n",
                    request.kind()
                )
                .into_bytes(),
            )
            .await;
        let _ = server.channel_failure(client_tx.id()).await;
        let _ = client_tx.close().await;
        return;
    }
    // Fail closed: a channel that cannot be audited is not opened.
    if let Err(e) = shared
        .audit_durable(AuditKind::ChannelOpened, description, &fields)
        .await
    {
        tracing::error!(error = %e, "cannot audit the channel; refusing it");
        let refusal = Refusal::Internal {
            session: shared.id.clone(),
        };
        refuse(&client_tx, &server, &refusal).await;
        return;
    }

    let recording = match shared.recording().await {
        Ok(session_recording) => ChannelRecording::start(
            session_recording,
            number,
            &start,
            pty.as_ref(),
            &format!("{}@{}", shared.user_name(), shared.target_text()),
            shared.config.exec_record_limit,
        )
        .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let recording = match recording {
        Ok(r) => Arc::new(Mutex::new(r)),
        Err(e) => {
            tracing::error!(error = %e, "cannot record; refusing the channel");
            let refusal = Refusal::Internal {
                session: shared.id.clone(),
            };
            refuse(&client_tx, &server, &refusal).await;
            return;
        }
    };

    let target_channel = match target.connection.handle.channel_open_session().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "target refused a session channel");
            let refusal = Refusal::Internal {
                session: shared.id.clone(),
            };
            refuse(&client_tx, &server, &refusal).await;
            finish(&shared, recording).await;
            return;
        }
    };
    let (mut target_rx, target_tx) = target_channel.split();

    // Replay what came before the start request, then the start request itself.
    for msg in early {
        if let Err(e) = forward_to_target(&shared, &target_tx, msg, &recording).await {
            tracing::debug!(error = %e, "target channel closed early");
        }
    }
    let started = match &start {
        Start::Shell => target_tx.request_shell(true).await,
        Start::Exec(cmd) => target_tx.exec(true, cmd.clone().into_bytes()).await,
        Start::Subsystem(name) => target_tx.request_subsystem(true, name.clone()).await,
    };
    if let Err(e) = started {
        tracing::debug!(error = %e, "target channel closed before the start request");
    }

    // A terminal can be joined (watched, or typed into where policy allows) while it runs.
    let (tap, mut typed_rx, mut notices_rx) = if matches!(start, Start::Shell) {
        let size = pty.as_ref().map_or((80, 24), |p| (p.cols, p.rows));
        let (tap, typed, notices) = crate::join::TerminalTap::new(number, size);
        shared.add_terminal(tap.clone());
        (Some(tap), Some(typed), Some(notices))
    } else {
        (None, None, None)
    };

    let client_id = client_tx.id();
    let up = async {
        loop {
            let joined = async {
                match typed_rx.as_mut() {
                    Some(typed) => typed.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = client_rx.wait() => {
                    let Some(msg) = msg else { break };
                    let closing = matches!(msg, ChannelMsg::Close);
                    if forward_to_target(&shared, &target_tx, msg, &recording)
                        .await
                        .is_err()
                        || closing
                    {
                        break;
                    }
                }
                Some(typed) = joined => {
                    if let Ok(mut r) = recording.lock() {
                        r.joined_input(&typed.user, &typed.data);
                    }
                    shared
                        .bytes_up
                        .fetch_add(typed.data.len() as u64, Ordering::Relaxed);
                    if target_tx.data_bytes(typed.data).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let down = async {
        let mut start_answered = false;
        let mut drain = shared.shutdown.subscribe();
        let mut closing_by: Option<tokio::time::Instant> = None;
        loop {
            let closing = async {
                match closing_by {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                // A quiet channel still gets its recording onto disk within about a second.
                received = tokio::time::timeout(IDLE_FLUSH, target_rx.wait()) => match received {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(_) => {
                        if let Ok(mut r) = recording.lock() {
                            r.flush();
                        }
                        continue;
                    }
                },
                Ok(()) = drain.changed() => {
                    let state = *drain.borrow_and_update();
                    match state {
                        DrainState::Draining { deadline } => {
                            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                            let _ = client_tx
                                .extended_data_bytes(1, draining_line(left).into_bytes())
                                .await;
                        }
                        DrainState::Closing if closing_by.is_none() => {
                            // The grace period is over: the target's command is hung up on and
                            // its channel closed; its exit status still reaches the user.
                            let _ = client_tx
                                .extended_data_bytes(1, CLOSING_LINE.as_bytes().to_vec())
                                .await;
                            let _ = target_tx.signal(Sig::HUP).await;
                            let _ = target_tx.eof().await;
                            let _ = target_tx.close().await;
                            closing_by = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                        }
                        _ => {}
                    }
                    continue;
                }
                () = closing => break,
                // Who joined or left the session, for its user.
                Some(line) = async {
                    match notices_rx.as_mut() {
                        Some(notices) => notices.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let _ = client_tx
                        .extended_data_bytes(1, format!("\r\n{line}\r\n").into_bytes())
                        .await;
                    continue;
                }
            };
            let result = match msg {
                ChannelMsg::Data { data } => {
                    if let Ok(mut r) = recording.lock() {
                        r.output(&data, false);
                    }
                    if let Some(tap) = &tap {
                        tap.output(&data);
                    }
                    shared
                        .bytes_down
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    client_tx.data_bytes(data).await
                }
                ChannelMsg::ExtendedData { data, ext } => {
                    if let Ok(mut r) = recording.lock() {
                        r.output(&data, true);
                    }
                    if let Some(tap) = &tap {
                        tap.output(&data);
                    }
                    shared
                        .bytes_down
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    client_tx.extended_data_bytes(ext, data).await
                }
                ChannelMsg::Eof => client_tx.eof().await,
                ChannelMsg::ExitStatus { exit_status } => {
                    if let Ok(mut r) = recording.lock() {
                        r.exit_status(exit_status);
                    }
                    client_tx.exit_status(exit_status).await
                }
                ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                } => {
                    if let Ok(mut r) = recording.lock() {
                        r.exit_signal(&sig_name(&signal_name));
                    }
                    let _ = server
                        .exit_signal_request(
                            client_id,
                            signal_name,
                            core_dumped,
                            error_message,
                            lang_tag,
                        )
                        .await;
                    Ok(())
                }
                ChannelMsg::Success if !start_answered => {
                    start_answered = true;
                    let _ = server.channel_success(client_id).await;
                    Ok(())
                }
                ChannelMsg::Failure if !start_answered => {
                    start_answered = true;
                    let _ = server.channel_failure(client_id).await;
                    Ok(())
                }
                ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        let _ = client_tx.close().await;
    };
    // Each direction reads its side as fast as the other side's window lets it write, and the
    // windows only grow back as data is consumed, so neither stalls the other (the vendored
    // russh grants window on consumption; see host/vendor/russh/PATCHES.md).
    {
        tokio::pin!(up, down);
        tokio::select! {
            () = &mut up => {
                // The user closed the channel or went away: close the target's end and let the
                // target's answer (its CLOSE) end the other direction.
                let _ = target_tx.close().await;
                if tokio::time::timeout(CLOSE_GRACE, &mut down).await.is_err() {
                    tracing::debug!("the target did not answer the channel's close in time");
                }
            }
            () = &mut down => {
                // The target closed, or the user can no longer be written to: nothing more goes up,
                // and a write waiting for the target's window must not keep the channel open.
                let _ = target_tx.close().await;
            }
        }
    }
    if let Some(tap) = &tap {
        tap.end();
        shared.remove_terminal(number);
    }
    finish(&shared, recording).await;
}

async fn finish(shared: &SessionShared, recording: Arc<Mutex<ChannelRecording>>) {
    // The relay futures are done, so this is the last reference. Finishing syncs the files: on a
    // blocking thread, not on the runtime's workers.
    let summary: Option<ChannelSummary> = match Arc::try_unwrap(recording) {
        Ok(mutex) => match mutex.into_inner() {
            Ok(recording) => tokio::task::spawn_blocking(move || recording.finish())
                .await
                .inspect_err(|e| tracing::error!(error = %e, "cannot finish the channel recording"))
                .ok(),
            Err(_) => None,
        },
        Err(_) => {
            tracing::error!("channel recording still in use at channel end");
            None
        }
    };
    if let Some(summary) = summary {
        shared.add_channel(summary);
    }
}

/// Forwards one message from the user to the target, recording what needs recording.
async fn forward_to_target(
    shared: &SessionShared,
    target: &ChannelWriteHalf<russh::client::Msg>,
    msg: ChannelMsg,
    recording: &Mutex<ChannelRecording>,
) -> Result<(), russh::Error> {
    match msg {
        ChannelMsg::Data { data } => {
            if let Ok(mut r) = recording.lock() {
                r.input(&data);
            }
            shared
                .bytes_up
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            target.data_bytes(data).await
        }
        ChannelMsg::ExtendedData { data, ext } => {
            shared
                .bytes_up
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            target.extended_data_bytes(ext, data).await
        }
        ChannelMsg::Eof => target.eof().await,
        ChannelMsg::Close => target.close().await,
        ChannelMsg::RequestPty {
            term,
            col_width,
            row_height,
            pix_width,
            pix_height,
            terminal_modes,
            ..
        } => {
            target
                .request_pty(
                    false,
                    &term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    &terminal_modes,
                )
                .await
        }
        ChannelMsg::SetEnv {
            variable_name,
            variable_value,
            ..
        } => {
            if shared.config.env_allowed(&variable_name) {
                target.set_env(false, variable_name, variable_value).await
            } else {
                Ok(())
            }
        }
        ChannelMsg::WindowChange {
            col_width,
            row_height,
            pix_width,
            pix_height,
        } => {
            if let Ok(mut r) = recording.lock() {
                r.resize(col_width, row_height);
            }
            target
                .window_change(col_width, row_height, pix_width, pix_height)
                .await
        }
        ChannelMsg::Signal { signal } => {
            if let Ok(mut r) = recording.lock() {
                r.signal(&sig_name(&signal));
            }
            target.signal(signal).await
        }
        // Forwarding requests are decided (and refused) by the handler; a second start request
        // on the same channel is a protocol error the target would refuse anyway.
        _ => Ok(()),
    }
}
