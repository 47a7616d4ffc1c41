//! `gatehouse session ...`: list and show sessions (from the store), play and export recordings
//! (from the recording files).

use crate::admin::{table, time_text};
use crate::cli::{AdminCommand, SessionCommand, SessionRecordCommand};
use crate::datadir::DataDir;
use anyhow::{Result, anyhow, bail};
use gatehouse_core::SessionRecord;
use gatehouse_recording::{
    Direction, EventRecord, FileEvent, FileProtocol, RecordedSession, RecordingEvent,
};
use gatehouse_vault::KeySource;
use std::time::Duration;

fn sessions(dir: &DataDir, overrides: Option<KeySource>) -> Result<Vec<SessionRecord>> {
    let text = crate::run_admin(
        dir,
        overrides,
        AdminCommand::SessionRecord(SessionRecordCommand::List(crate::cli::JsonFlag {
            json: true,
        })),
    )?;
    Ok(serde_json::from_str(&text)?)
}

fn session(dir: &DataDir, overrides: Option<KeySource>, id: &str) -> Result<SessionRecord> {
    let text = crate::run_admin(
        dir,
        overrides,
        AdminCommand::SessionRecord(SessionRecordCommand::Show { id: id.to_string() }),
    )?;
    let record: Option<SessionRecord> = serde_json::from_str(&text)?;
    record.ok_or_else(|| anyhow!("session `{id}` does not exist"))
}

fn file_protocol_name(protocol: FileProtocol) -> &'static str {
    match protocol {
        FileProtocol::Sftp => "sftp",
        FileProtocol::Scp => "scp",
    }
}

fn event_text(event: &RecordingEvent) -> String {
    match event {
        RecordingEvent::Exec { command } => format!("exec `{command}`"),
        RecordingEvent::File { protocol, event } => {
            let via = file_protocol_name(*protocol);
            match event {
                FileEvent::Transfer {
                    direction,
                    path,
                    bytes,
                    complete,
                } => {
                    let way = match direction {
                        Direction::Upload => "upload",
                        Direction::Download => "download",
                    };
                    let partial = if *complete { "" } else { ", incomplete" };
                    format!("{way} `{path}` ({bytes} bytes{partial}, {via})")
                }
                FileEvent::Remove { path } => format!("remove `{path}` ({via})"),
                FileEvent::Rename { from, to } => format!("rename `{from}` to `{to}` ({via})"),
                FileEvent::Mkdir { path } => format!("mkdir `{path}` ({via})"),
                FileEvent::Rmdir { path } => format!("rmdir `{path}` ({via})"),
                FileEvent::SetStat { path } => format!("set attributes of `{path}` ({via})"),
            }
        }
        RecordingEvent::FileEventsDropped { protocol, events } => {
            let via = file_protocol_name(*protocol);
            format!(
                "{events} more file events not logged ({via}: the channel's event budget was spent)"
            )
        }
        RecordingEvent::Keys { text, .. } => format!("keys {text:?}"),
        RecordingEvent::ClipboardOffer { from, formats } => {
            format!("clipboard offered by the {from}: {}", formats.join(", "))
        }
        RecordingEvent::Clipboard {
            from,
            format,
            size,
            text,
            truncated,
        } => {
            let way = if from == "client" {
                "pasted into the target"
            } else {
                "copied out of the target"
            };
            let cut = if *truncated { " (truncated)" } else { "" };
            match text {
                Some(text) => format!("clipboard {way}: {text:?}{cut}"),
                None => format!("clipboard {way}: {size} bytes of {format}{cut}"),
            }
        }
        RecordingEvent::Graphics { verdict, reason } => match reason {
            Some(reason) => format!("graphics {verdict}: {reason}"),
            None => format!("graphics {verdict}"),
        },
        RecordingEvent::Joined { user, mode } => format!("{user} joined ({mode})"),
        RecordingEvent::Left { user } => format!("{user} left"),
        RecordingEvent::JoinedInput { user, text } => format!("{user} typed {text:?}"),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn first_recorded_channel(recorded: &RecordedSession, channel: Option<u32>) -> Result<u32> {
    let channels = recorded.channels()?;
    match channel {
        Some(c) if channels.contains(&c) => Ok(c),
        Some(c) => bail!(
            "session `{}` has no terminal recording for channel {c} (recorded: {channels:?})",
            recorded.id()
        ),
        None => channels
            .first()
            .copied()
            .ok_or_else(|| anyhow!("session `{}` has no terminal recording", recorded.id())),
    }
}

pub fn run(dir: &DataDir, overrides: Option<KeySource>, command: SessionCommand) -> Result<()> {
    // Commands that read recordings here can read encrypted ones (a reindex run by the server
    // uses the server's key; one run here needs it too, but may go to the server instead).
    match &command {
        SessionCommand::Show { .. }
        | SessionCommand::Watch { .. }
        | SessionCommand::Play { .. }
        | SessionCommand::Export { .. } => {
            crate::recording_key::install_for_reading(dir, overrides.clone())?;
        }
        SessionCommand::Reindex => {
            if let Err(e) = crate::recording_key::install_for_reading(dir, overrides.clone()) {
                tracing::debug!(error = %format!("{e:#}"), "recording key not loaded here");
            }
        }
        _ => {}
    }
    match command {
        SessionCommand::List(j) => {
            let list = sessions(dir, overrides)?;
            if j.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let rows = list
                .iter()
                .map(|s| {
                    let ended = match (s.ended, &s.error) {
                        (None, _) => "(active)".to_string(),
                        (Some(t), Some(e)) if e.starts_with("interrupted") => {
                            format!("{} (interrupted)", time_text(t))
                        }
                        (Some(t), _) => time_text(t),
                    };
                    vec![
                        s.id.clone(),
                        s.node.clone().unwrap_or_else(|| "-".into()),
                        s.protocol.clone(),
                        s.user.clone(),
                        format!("{}@{}", s.account, s.asset),
                        time_text(s.started),
                        ended,
                        s.bytes_up.to_string(),
                        s.bytes_down.to_string(),
                    ]
                })
                .collect::<Vec<_>>();
            print!(
                "{}",
                table(
                    &[
                        "ID", "NODE", "PROTOCOL", "USER", "TARGET", "STARTED", "ENDED", "UP",
                        "DOWN"
                    ],
                    &rows
                )
            );
            Ok(())
        }
        SessionCommand::Terminate { id, reason } => {
            let said = crate::run_admin(
                dir,
                overrides,
                AdminCommand::SessionRecord(SessionRecordCommand::Terminate { id, reason }),
            )?;
            print!("{said}");
            Ok(())
        }
        SessionCommand::Show { id, json } => {
            let record = session(dir, overrides, &id)?;
            let events: Vec<EventRecord> =
                match RecordedSession::open(&dir.recordings(), &id).and_then(|r| r.events()) {
                    Ok(events) => events,
                    Err(gatehouse_recording::RecordingError::SessionNotFound(_)) => Vec::new(),
                    Err(e) => {
                        eprintln!("gatehouse: the session's events cannot be read: {e}");
                        Vec::new()
                    }
                };
            if json.json {
                let value = serde_json::json!({ "session": record, "events": events });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(());
            }
            println!("session   {}", record.id);
            println!("user      {}", record.user);
            println!("target    {}@{}", record.account, record.asset);
            println!("client    {}", record.client);
            if let Some(node) = &record.node {
                println!("node      {node}");
            }
            println!("started   {}", time_text(record.started));
            println!(
                "ended     {}",
                record
                    .ended
                    .map(time_text)
                    .unwrap_or_else(|| "(active)".into())
            );
            println!(
                "bytes     {} up, {} down",
                record.bytes_up, record.bytes_down
            );
            for c in &record.channels {
                println!(
                    "channel {}  {}{}  exit {}{}",
                    c.number,
                    c.kind,
                    c.command
                        .as_deref()
                        .map(|x| format!(" `{x}`"))
                        .unwrap_or_default(),
                    c.exit_status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    if c.recorded { "  (recorded)" } else { "" }
                );
            }
            for e in &events {
                if matches!(
                    e.event,
                    RecordingEvent::Exec { .. }
                        | RecordingEvent::File { .. }
                        | RecordingEvent::Keys { .. }
                        | RecordingEvent::ClipboardOffer { .. }
                        | RecordingEvent::Clipboard { .. }
                        | RecordingEvent::Graphics { .. }
                ) {
                    println!(
                        "  {:>9.3}s  ch{}  {}",
                        e.time,
                        e.channel.map(|c| c.to_string()).unwrap_or_default(),
                        event_text(&e.event)
                    );
                }
            }
            Ok(())
        }
        SessionCommand::Watch { id, channel } => {
            let mut record = || -> Result<Option<SessionRecord>> {
                let text = crate::run_admin(
                    dir,
                    overrides.clone(),
                    AdminCommand::SessionRecord(SessionRecordCommand::Show { id: id.clone() }),
                )?;
                Ok(serde_json::from_str(&text)?)
            };
            let mut out = std::io::stdout().lock();
            crate::watch::watch(&dir.recordings(), &id, channel, &mut record, &mut out)?;
            eprintln!("\r\n[gatehouse: session {id} ended]");
            Ok(())
        }
        SessionCommand::Search { query, limit, json } => {
            dir.require_initialised()?;
            // A reader beside the running gateway's writer: the index needs no server.
            let index = gatehouse_search::SearchIndex::open(&dir.search_index())?;
            let hits = index.search(&query, None, limit.clamp(1, 1000))?;
            if json.json {
                print!("{}", crate::admin::json(&hits)?);
            } else {
                print!("{}", crate::search::hits_text(&hits));
            }
            Ok(())
        }
        SessionCommand::Reindex => {
            let text = crate::run_admin(
                dir,
                overrides,
                AdminCommand::SessionRecord(SessionRecordCommand::Reindex),
            )?;
            print!("{text}");
            Ok(())
        }
        SessionCommand::Play {
            id,
            channel,
            speed,
            max_idle,
            from,
        } => {
            if !(speed.is_finite() && speed > 0.0) {
                bail!("speed must be a positive number, not `{speed}`");
            }
            let recorded = RecordedSession::open(&dir.recordings(), &id)?;
            if let Some(screen) = crate::video::ScreenRecording::in_dir(recorded.dir()) {
                bail!(
                    "session `{id}` is a{} {} session: `gatehouse session export {id} -o {id}.webm` renders it to a video (or watch it at https://<gateway>:8443/player)",
                    if screen.protocol() == "RDP" { "n" } else { "" },
                    screen.protocol()
                );
            }
            let channel = first_recorded_channel(&recorded, channel)?;
            let idle = max_idle
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64);
            let mut out = std::io::stdout().lock();
            gatehouse_recording::play(
                &recorded.channel_path(channel),
                speed,
                idle,
                from,
                &mut out,
            )?;
            Ok(())
        }
        SessionCommand::Export {
            id,
            channel,
            output,
            fps,
            at,
            max_idle,
        } => {
            let recorded = RecordedSession::open(&dir.recordings(), &id)?;
            if let Some(screen) = crate::video::ScreenRecording::in_dir(recorded.dir()) {
                let seconds = |s: f64, what: &str| -> Result<Duration> {
                    Duration::try_from_secs_f64(s)
                        .map_err(|_| anyhow!("{what} must be a number of seconds, not `{s}`"))
                };
                let options = gatehouse_rdp_replay::ExportOptions {
                    fps,
                    at: at.map(|s| seconds(s, "--at")).transpose()?,
                    max_idle: match max_idle {
                        None => Some(Duration::from_secs(10)),
                        Some(0.0) => None,
                        Some(s) => Some(seconds(s, "--max-idle")?),
                    },
                    ..Default::default()
                };
                let summary = crate::video::export(&screen, &output, &options)?;
                println!(
                    "wrote session `{id}` to `{}`: {} frame(s) of {}x{}{}",
                    output.display(),
                    summary.frames,
                    summary.width,
                    summary.height,
                    match &summary.verdict {
                        gatehouse_rdp_replay::Verdict::Decodable => String::new(),
                        gatehouse_rdp_replay::Verdict::Partially(why)
                        | gatehouse_rdp_replay::Verdict::NotDecodable(why) =>
                            format!(" (partly decoded: {why})"),
                    }
                );
                return Ok(());
            }
            let channel = first_recorded_channel(&recorded, channel)?;
            recorded.export(channel, &output)?;
            println!(
                "wrote channel {channel} of session `{id}` to `{}`",
                output.display()
            );
            Ok(())
        }
    }
}
