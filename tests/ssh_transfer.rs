//! End to end: 100 MiB file transfers through the gateway with real scp (legacy and sftp mode)
//! and sftp, checked by sha256 on both ends and in the session record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs;
use std::path::Path;

use serde_json::Value;
use support::ssh_client::{Client, assert_client_ok};
use support::world::{GATEWAY_USER, World};
use support::{
    OutputExt, json_id, json_objects_where, object_has_number, object_has_string_containing,
    sha256_file, write_random_file,
};

const SIZE: u64 = 100 * 1024 * 1024;

#[derive(Clone, Copy, Debug)]
enum Method {
    ScpLegacy,
    ScpSftpMode,
    Sftp,
}

impl Method {
    fn upload(self, client: &Client, local: &Path, remote: &str) -> std::process::Output {
        match self {
            Method::ScpLegacy => client.scp_upload(local, remote, true),
            Method::ScpSftpMode => client.scp_upload(local, remote, false),
            Method::Sftp => client.sftp_batch(&format!("put {} {remote}\n", local.display())),
        }
    }

    fn download(self, client: &Client, remote: &str, local: &Path) -> std::process::Output {
        match self {
            Method::ScpLegacy => client.scp_download(remote, local, true),
            Method::ScpSftpMode => client.scp_download(remote, local, false),
            Method::Sftp => client.sftp_batch(&format!("get {remote} {}\n", local.display())),
        }
    }
}

/// Upload then download a 100 MiB random file (two gateway sessions), compare sha256 on the
/// target's disk and after the round trip, then check both session records list the transfer.
fn round_trip(tag: &str, method: Method) {
    let w = World::start(tag);
    let client = w.client().timeout(World::slow());
    let remote = format!("gh-{tag}.bin");
    let on_target = w.account.home().join(&remote);
    let _ = fs::remove_file(&on_target);

    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src.bin");
    write_random_file(&src, SIZE);
    let digest = sha256_file(&src);

    let up = method.upload(&client, &src, &remote);
    assert_client_ok(&format!("{method:?} upload"), &up);
    assert_eq!(
        sha256_file(&on_target),
        digest,
        "{method:?}: file on the target differs"
    );

    let back = local.path().join("back.bin");
    let down = method.download(&client, &remote, &back);
    assert_client_ok(&format!("{method:?} download"), &down);
    assert_eq!(
        sha256_file(&back),
        digest,
        "{method:?}: downloaded file differs"
    );
    let _ = fs::remove_file(&on_target);

    // Each of the two sessions lists a transfer of `remote` with its size.
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 2);
    assert_eq!(
        sessions.len(),
        2,
        "expected exactly two sessions: {sessions:#?}"
    );
    for session in &sessions {
        let id = json_id(&session["id"]);
        let show: Value = w.gh.session_show(&id);
        let transfers = json_objects_where(&show, &|o| {
            object_has_string_containing(o, &remote) && object_has_number(o, SIZE)
        });
        assert!(
            !transfers.is_empty(),
            "{method:?}: session {id} does not list a transfer of {remote} with size {SIZE}:\n{show:#}"
        );
        let text = w.gh.cli_ok(&["session", "show", &id]);
        assert!(
            text.contains(&remote),
            "session show {id} (text) lacks {remote}:\n{text}"
        );
    }

    w.assert_no_secret_leaks(&[
        &up.stdout_text(),
        &up.stderr_text(),
        &down.stdout_text(),
        &down.stderr_text(),
    ]);
}

#[test]
fn scp_legacy_protocol_round_trip() {
    round_trip("x_scpo", Method::ScpLegacy);
}

#[test]
fn scp_sftp_mode_round_trip() {
    round_trip("x_scp", Method::ScpSftpMode);
}

#[test]
fn sftp_batch_round_trip() {
    round_trip("x_sftp", Method::Sftp);
}
