//! Checks the test fixtures themselves, without Gatehouse: real `ssh`, `scp` and `sftp`
//! straight to a `TargetSshd`, with password and with public-key authentication.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs;
use std::time::Duration;

use support::ssh_client::{Client, asciinema_play, assert_client_ok};
use support::{
    OutputExt, TargetSshd, TestAccount, generate_keypair, sha256_file, write_random_file,
};

fn setup(
    tag: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    TargetSshd,
    TestAccount,
) {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = generate_keypair(keys.path(), "client");
    let account = TestAccount::new(tag).with_authorized_key(&public);
    let sshd = TargetSshd::start(std::slice::from_ref(&account));
    (keys, private, sshd, account)
}

#[test]
fn ssh_with_password_and_with_key() {
    let (_keys, private, sshd, account) = setup("fx_exec");
    assert!(sshd.host_key_line().starts_with("ssh-ed25519 AAAA"));
    assert_eq!(sshd.host_key().split_whitespace().count(), 2);

    let by_password = Client::password(sshd.port(), &account.name, &account.password);
    let out = by_password.ssh("echo hi");
    assert_client_ok("ssh with password", &out);
    assert_eq!(out.stdout_text(), "hi\n");

    let out = by_password.ssh_dash_l("id -un");
    assert_client_ok("ssh -l with password", &out);
    assert_eq!(out.stdout_text().trim(), account.name);

    let by_key = Client::key(sshd.port(), &account.name, &private);
    let out = by_key.ssh("echo hi");
    assert_client_ok("ssh with key", &out);
    assert_eq!(out.stdout_text(), "hi\n");
    let log = sshd.log_text();
    assert!(
        log.contains(&format!("Accepted password for {}", account.name)),
        "{log}"
    );
    assert!(
        log.contains(&format!("Accepted publickey for {}", account.name)),
        "{log}"
    );

    // Exit status and stderr propagate.
    let out = by_password.ssh("echo oops >&2; exit 7");
    assert_eq!(out.code(), Some(7), "{}", out.describe());
    assert!(out.stderr_text().contains("oops"), "{}", out.describe());

    // Stdin reaches the remote command.
    let out = by_key.ssh_stdin("tr a-z A-Z", b"piped\n");
    assert_eq!(out.stdout_text(), "PIPED\n", "{}", out.describe());

    // Wrong password is refused with the standard message.
    let wrong = Client::password(sshd.port(), &account.name, "not-the-password");
    let out = wrong.ssh("echo hi");
    assert_ne!(out.code(), Some(0));
    assert!(
        out.stderr_text().contains("Permission denied"),
        "{}",
        out.describe()
    );

    // Environment: LANG is accepted by the target.
    let out = by_password
        .option("SendEnv=LANG")
        .env("LANG", "C.UTF-8")
        .ssh("printf '%s' \"$LANG\"");
    assert_eq!(out.stdout_text(), "C.UTF-8", "{}", out.describe());
}

#[test]
fn scp_and_sftp_directly() {
    let (_keys, _private, sshd, account) = setup("fx_xfer");
    let home = account.home();
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src.bin");
    write_random_file(&src, 3 * 1024 * 1024 + 17);
    let digest = sha256_file(&src);
    let client = Client::password(sshd.port(), &account.name, &account.password);

    for (legacy, name) in [(true, "fx-legacy.bin"), (false, "fx-sftpmode.bin")] {
        let _ = fs::remove_file(home.join(name));
        let out = client.scp_upload(&src, name, legacy);
        assert_client_ok(&format!("scp upload (legacy={legacy})"), &out);
        assert_eq!(sha256_file(&home.join(name)), digest);
        let back = local.path().join(format!("back-{name}"));
        let out = client.scp_download(name, &back, legacy);
        assert_client_ok(&format!("scp download (legacy={legacy})"), &out);
        assert_eq!(sha256_file(&back), digest);
        let _ = fs::remove_file(home.join(name));
    }

    let back = local.path().join("back-sftp.bin");
    let out = client.sftp_batch(&format!(
        "put {} fx-sftp.bin\nget fx-sftp.bin {}\nrm fx-sftp.bin\n",
        src.display(),
        back.display()
    ));
    assert_client_ok("sftp -b", &out);
    assert_eq!(sha256_file(&back), digest);

    // A failing batch command makes sftp fail.
    let out = client.sftp_batch("get does-not-exist.bin /dev/null\n");
    assert_ne!(out.code(), Some(0), "{}", out.describe());
}

#[test]
fn interactive_pty_session() {
    let (_keys, private, sshd, account) = setup("fx_pty");
    let client = Client::key(sshd.port(), &account.name, &private);
    let mut session = client.pty();
    session.expect("$ ", Duration::from_secs(30));
    session.send_line("echo gatehouse-marker-$((6*7))");
    session.expect("gatehouse-marker-42", Duration::from_secs(30));
    session.send_line("exit 3");
    let outcome = session.wait(Duration::from_secs(30));
    assert_eq!(outcome.status.code(), Some(3), "{}", outcome.describe());
}

#[test]
fn stopped_target_refuses_connections() {
    let (_keys, private, mut sshd, account) = setup("fx_down");
    let client = Client::key(sshd.port(), &account.name, &private);
    assert_client_ok("ssh before stop", &client.ssh("true"));
    sshd.stop();
    let out = client.ssh("true");
    assert_eq!(out.code(), Some(255), "{}", out.describe());
    assert!(
        out.stderr_text().contains("Connection refused"),
        "{}",
        out.describe()
    );
}

#[test]
fn asciinema_player_is_usable() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.cast");
    fs::write(
        &good,
        "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1700000000}\n\
         [0.5, \"o\", \"hello \"]\n\
         [30.0, \"o\", \"gatehouse-marker-42\\r\\n\"]\n",
    )
    .unwrap();
    let out = asciinema_play(&good);
    assert_client_ok("asciinema play", &out);
    assert!(
        out.stdout_text().contains("gatehouse-marker-42"),
        "{}",
        out.describe()
    );

    let bad = dir.path().join("bad.cast");
    fs::write(&bad, "not a cast\n").unwrap();
    assert_ne!(asciinema_play(&bad).code(), Some(0));
}

#[test]
fn leak_scanner_and_json_helpers_work() {
    use support::{
        files_containing, json_objects_where, object_has_number, object_has_string_containing,
    };
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("nested")).unwrap();
    fs::write(
        dir.path().join("nested/rec.bin"),
        b"\x00\x01Vault-secret-xyz\xff",
    )
    .unwrap();
    fs::write(dir.path().join("clean.txt"), b"nothing here").unwrap();
    let hits = files_containing(dir.path(), b"Vault-secret-xyz");
    assert_eq!(hits, vec![dir.path().join("nested/rec.bin")]);
    assert!(files_containing(dir.path(), b"absent").is_empty());

    // Every encoded form of a secret is found, and a clean text has none.
    let secret = "Pw-42";
    let utf16: Vec<u8> = secret
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let debug_dump = format!("encrypt_message: buf {:?}", utf16);
    assert_eq!(
        support::secret_forms_in(debug_dump.as_bytes(), secret),
        vec!["utf-16le byte list".to_string()]
    );
    let hex_dump = "creds 500077002d0034003200 end";
    assert_eq!(
        support::secret_forms_in(hex_dump.as_bytes(), secret),
        vec!["utf-16le hex".to_string()]
    );
    assert_eq!(
        support::secret_forms_in(b"token UHctNDI end", secret),
        vec!["utf-8 base64".to_string()]
    );
    assert!(support::secret_forms_in(b"nothing to see", secret).is_empty());

    let show = serde_json::json!({"id": "s1", "channels": [{"events": [
        {"type": "transfer", "path": "/home/x/gh-up.bin", "size": 104857600u64}
    ]}]});
    let found = json_objects_where(&show, &|o| {
        object_has_string_containing(o, "gh-up.bin") && object_has_number(o, 104857600)
    });
    assert_eq!(found.len(), 1);
}
