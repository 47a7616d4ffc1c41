//! `gatehouse session watch ID`: follows a running SSH session's terminal in this terminal, from
//! its recording as the gateway writes it (the recorder flushes at least every second of
//! activity), until the session ends. What was shown before is written first, so the screen is
//! the user's; then the output as it comes.

use anyhow::{Result, bail};
use gatehouse_core::SessionRecord;
use gatehouse_recording::{RecordedSession, channel_file_name};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the recording is looked at for more.
const POLL: Duration = Duration::from_millis(100);
/// How often the session's record is read to learn that it ended.
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// How long to wait for the first terminal of a session that has none yet.
const FIRST_TERMINAL_WAIT: Duration = Duration::from_secs(10);

/// Follows `channel` (the first terminal when `None`) of session `id` under `recordings`,
/// writing its output to `out`; `record` reads the session's record (`None`: unknown).
pub fn watch(
    recordings: &Path,
    id: &str,
    channel: Option<u32>,
    record: &mut dyn FnMut() -> Result<Option<SessionRecord>>,
    out: &mut dyn Write,
) -> Result<()> {
    let Some(first) = record()? else {
        bail!("session `{id}` does not exist");
    };
    if first.protocol == "rdp" || first.protocol == "vnc" {
        bail!(
            "session `{id}` is a {} session: watch it in the player (https://<gateway>:8443/player)",
            first.protocol.to_uppercase()
        );
    }
    if first.node.is_some() && first.ended.is_none() {
        bail!(
            "session `{id}` runs on session node `{}`: its recording reaches this node when it ends",
            first.node.as_deref().unwrap_or_default()
        );
    }
    let started = Instant::now();
    let channel = loop {
        let recorded = RecordedSession::open(recordings, id).ok();
        let channels = recorded
            .as_ref()
            .and_then(|r| r.channels().ok())
            .unwrap_or_default();
        match channel {
            Some(c) if channels.contains(&c) => break c,
            None if !channels.is_empty() => break channels[0],
            _ => {}
        }
        if started.elapsed() > FIRST_TERMINAL_WAIT || first.ended.is_some() {
            bail!(
                "session `{id}` has no terminal recording{} (it may run commands without a terminal: `gatehouse session show {id}`)",
                channel
                    .map(|c| format!(" for channel {c}"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    };
    let path = recordings.join(id).join(channel_file_name(channel));
    let mut file = open_at(&path, 0)?;
    let mut position: u64 = 0;
    let mut pending: Vec<u8> = Vec::new();
    let mut header_seen = false;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut ended = first.ended.is_some();
    let mut last_record = Instant::now();
    loop {
        let read = file.read(&mut chunk)?;
        position += read as u64;
        if read > 0 {
            pending.extend_from_slice(&chunk[..read]);
            // Whole lines only: the recorder may be half-way through one.
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if !header_seen {
                    header_seen = true;
                    continue;
                }
                if let Some(data) = output_of(&line) {
                    out.write_all(data.as_bytes())?;
                }
            }
            out.flush()?;
            continue;
        }
        if ended {
            return Ok(());
        }
        if last_record.elapsed() >= RECORD_EVERY {
            last_record = Instant::now();
            // Once the record says it ended, one more read takes what was flushed last.
            ended = record()?.is_none_or(|r| r.ended.is_some());
            if ended {
                // The file may have been replaced whole since it was opened (a finished
                // recording is encrypted when sealed); read on from here.
                file = open_at(&path, position)?;
                continue;
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The recording file at `path` (decrypted when it is encrypted), read from plaintext byte `at`.
fn open_at(path: &Path, at: u64) -> Result<Box<dyn Read + Send>> {
    let mut file = gatehouse_recording::crypt::open(path)?;
    let skipped = std::io::copy(&mut (&mut file).take(at), &mut std::io::sink())?;
    if skipped < at {
        bail!(
            "`{}` is shorter than when it was being read",
            path.display()
        );
    }
    Ok(file)
}

/// The data of an output event line (`[time, "o", data]`), `None` for any other line.
fn output_of(line: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let event = value.as_array()?;
    (event.get(1)?.as_str()? == "o")
        .then(|| event.get(2)?.as_str().map(str::to_string))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_output_lines_are_written() {
        assert_eq!(
            output_of(b"[0.5, \"o\", \"hi\\r\\n\"]\n").as_deref(),
            Some("hi\r\n")
        );
        assert_eq!(output_of(b"[0.6, \"i\", \"secret\"]\n"), None);
        assert_eq!(output_of(b"[0.7, \"r\", \"80x24\"]\n"), None);
        assert_eq!(output_of(b"{\"version\":2}\n"), None);
        assert_eq!(output_of(b"[0.8, \"o\", \"cut"), None);
    }

    #[test]
    fn a_running_session_is_followed_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s1");
        std::fs::create_dir_all(&session).unwrap();
        let cast = session.join("channel-0.cast");
        std::fs::write(&cast, "{\"version\":2,\"width\":80,\"height\":24}\n[0.1, \"o\", \"$ \"]\n[0.2, \"i\", \"pw\"]\n[0.3, \"o\", \"hal").unwrap();
        let record = SessionRecord {
            id: "s1".into(),
            user: "alice".into(),
            account: "root".into(),
            asset: "db1".into(),
            client: "127.0.0.1:1".into(),
            protocol: "ssh".into(),
            started: gatehouse_core::time::Timestamp(1),
            ended: None,
            bytes_up: 0,
            bytes_down: 0,
            channels: Vec::new(),
            error: None,
            node: None,
            gateway: None,
        };
        let writer = {
            let cast = cast.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&cast)
                    .unwrap();
                file.write_all(b"f\"]\n[0.4, \"o\", \"done\\r\\n\"]\n")
                    .unwrap();
            })
        };
        let mut calls = 0;
        let mut read_record = || -> Result<Option<SessionRecord>> {
            calls += 1;
            let mut r = record.clone();
            // Ended from the third look on (the first is the check at the start).
            if calls >= 3 {
                r.ended = Some(gatehouse_core::time::Timestamp(2));
            }
            Ok(Some(r))
        };
        let mut out = Vec::new();
        watch(dir.path(), "s1", None, &mut read_record, &mut out).unwrap();
        writer.join().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "$ halfdone\r\n");
    }
}
