//! Hostile peers during the handshakes and hostile recordings: scripted bytes over an
//! in-memory pipe get typed errors (and, where RFB allows, a reason on the wire), never a
//! hang or a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_vnc::codec::security;
use gatehouse_vnc::{
    ClientError, ClientSideOptions, Password, ProtocolError, RecordKind, RecordingError,
    RecordingReader, RecordingWriter, Replayer, TargetError, TargetOptions,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

/// Runs `connect` against a scripted target that sends `script` and then closes.
async fn target_with(script: &[u8]) -> TargetError {
    let (ours, mut theirs) = duplex(64 * 1024);
    let script = script.to_vec();
    let peer = tokio::spawn(async move {
        theirs.write_all(&script).await.unwrap();
        let mut sink = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(200), theirs.read_to_end(&mut sink)).await;
    });
    let error = gatehouse_vnc::connect(ours, Some(&Password::new("pw")), &TargetOptions::default())
        .await
        .unwrap_err();
    peer.await.unwrap();
    error
}

fn with_reason(prefix: &[u8], reason: &str) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

#[tokio::test]
async fn hostile_targets() {
    let error = target_with(b"HTTP/1.1 400").await;
    assert!(
        matches!(error, TargetError::Protocol(ProtocolError::BadVersion(_))),
        "{error:?}"
    );

    let error = target_with(&with_reason(b"RFB 003.008\n\x00", "too many connections")).await;
    assert_eq!(
        error.to_string(),
        "the target refused the connection: `too many connections`"
    );

    // Only VeNCrypt and RA2: nothing the gateway speaks to targets.
    let error = target_with(b"RFB 003.008\n\x02\x13\x06").await;
    assert!(
        matches!(&error, TargetError::NoSupportedSecurity { offered } if offered == &[19, 6]),
        "{error:?}"
    );

    // A reason longer than the limit is not read.
    let mut script = b"RFB 003.008\n\x00".to_vec();
    script.extend_from_slice(&u32::MAX.to_be_bytes());
    let error = target_with(&script).await;
    assert!(
        matches!(error, TargetError::Protocol(ProtocolError::TooLong { .. })),
        "{error:?}"
    );

    // RFB 3.3: the server picks; type 0 carries a reason.
    let error = target_with(&with_reason(b"RFB 003.003\n\x00\x00\x00\x00", "go away")).await;
    assert!(
        matches!(&error, TargetError::Refused { reason } if reason == "go away"),
        "{error:?}"
    );

    // Authentication failure in 3.8: the reason; then a ServerInit far too large.
    let mut script = b"RFB 003.008\n\x01\x02".to_vec();
    script.extend_from_slice(&[0; 16]);
    let error = target_with(&with_reason(
        &[script.as_slice(), &[0, 0, 0, 1]].concat(),
        "password check failed!",
    ))
    .await;
    assert_eq!(
        error.to_string(),
        "the target rejected the vnc password: `password check failed!`"
    );

    let mut script = b"RFB 003.008\n\x01\x01\x00\x00\x00\x00".to_vec();
    script.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    script.extend_from_slice(&[0; 16]);
    let error = target_with(&script).await;
    assert!(
        matches!(
            error,
            TargetError::Protocol(ProtocolError::DesktopTooLarge { .. })
        ),
        "{error:?}"
    );

    // The target closes in the middle of the handshake.
    let error = target_with(b"RFB 003.008\n\x01").await;
    assert!(matches!(error, TargetError::Io(_)), "{error:?}");
}

/// Runs `accept` (security None allowed) against a scripted viewer; returns the error and
/// everything the gateway wrote.
async fn viewer_with(script: &[u8]) -> (ClientError, Vec<u8>) {
    let (ours, theirs): (DuplexStream, DuplexStream) = duplex(64 * 1024);
    let (mut read, mut write) = tokio::io::split(theirs);
    let script = script.to_vec();
    let writer = tokio::spawn(async move {
        write.write_all(&script).await.unwrap();
        // The viewer stops talking (its half closes); the gateway must not wait forever.
        write.shutdown().await.unwrap();
        write
    });
    let options = ClientSideOptions {
        allow_none: true,
        ..ClientSideOptions::default()
    };
    let error = gatehouse_vnc::accept(ours, &options).await.unwrap_err();
    let _write = writer.await.unwrap();
    let mut written = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(200), read.read_to_end(&mut written)).await;
    (error, written)
}

#[tokio::test]
async fn hostile_viewers() {
    let (error, _) = viewer_with(b"GET / HTTP/1.1\r\n").await;
    assert!(
        matches!(error, ClientError::Protocol(ProtocolError::BadVersion(_))),
        "{error:?}"
    );

    // RFB 3.3 cannot carry the login: refused with a 3.3-style reason.
    let (error, written) = viewer_with(b"RFB 003.003\n").await;
    assert!(matches!(error, ClientError::ClientTooOld), "{error:?}");
    assert_eq!(&written[..12], b"RFB 003.008\n");
    assert_eq!(&written[12..16], &[0, 0, 0, 0]);
    assert!(String::from_utf8_lossy(&written[20..]).contains("rfb 3.7 or later"));

    // A security type that was not offered gets a failed SecurityResult with a reason.
    let (error, written) = viewer_with(b"RFB 003.008\n\x02").await;
    assert!(
        matches!(error, ClientError::SecurityNotOffered(2)),
        "{error:?}"
    );
    assert_eq!(&written[12..14], &[1, security::NONE]);
    assert_eq!(&written[14..18], &[0, 0, 0, 1]);
    assert!(String::from_utf8_lossy(&written[22..]).contains("not offered"));

    // The viewer hangs up.
    let (error, _) = viewer_with(b"RFB 003.0").await;
    assert!(matches!(error, ClientError::Io(_)), "{error:?}");
}

#[tokio::test]
async fn vencrypt_refuses_other_versions_and_subtypes() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let options = ClientSideOptions::vencrypt(std::sync::Arc::new(tls));
    for (script, expected) in [
        (&b"RFB 003.008\n\x13\x00\x01"[..], "version 0.1"),
        (
            &b"RFB 003.008\n\x13\x00\x02\x00\x00\x01\x00"[..],
            "sub-type 256",
        ),
    ] {
        let (ours, mut theirs) = duplex(64 * 1024);
        theirs.write_all(script).await.unwrap();
        let error = gatehouse_vnc::accept(ours, &options).await.unwrap_err();
        let shown = error.to_string();
        assert!(
            shown.contains(expected.split(' ').next_back().unwrap()),
            "{shown}"
        );
    }
}

#[test]
fn hostile_recordings() {
    assert!(matches!(
        RecordingReader::new(&b"NOTAVNCRECORDING"[..]),
        Err(RecordingError::BadMagic)
    ));
    assert!(matches!(
        RecordingReader::new(&b"GHVNCREC\x00\x02\x00\x00"[..]),
        Err(RecordingError::UnsupportedVersion(2))
    ));
    assert!(matches!(
        RecordingReader::new(&b"GHVNC"[..]),
        Err(RecordingError::Truncated)
    ));

    // A corrupt length: refused before reading.
    let mut file = b"GHVNCREC\x00\x01\x00\x00".to_vec();
    file.push(1);
    file.extend_from_slice(&0u64.to_be_bytes());
    file.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut reader = RecordingReader::new(file.as_slice()).unwrap();
    assert!(matches!(
        reader.next_record(),
        Err(RecordingError::RecordTooLarge { .. })
    ));

    // A length inside the limit but past the end of the file.
    let mut file = b"GHVNCREC\x00\x01\x00\x00".to_vec();
    file.push(1);
    file.extend_from_slice(&0u64.to_be_bytes());
    file.extend_from_slice(&1_000_000u32.to_be_bytes());
    file.extend_from_slice(&[0; 10]);
    let mut reader = RecordingReader::new(file.as_slice()).unwrap();
    assert!(matches!(
        reader.next_record(),
        Err(RecordingError::Truncated)
    ));

    // A message from the target before the session's start.
    let writer = RecordingWriter::new(Vec::new()).unwrap();
    writer
        .write_record(RecordKind::FromTarget, Duration::ZERO, &[2])
        .unwrap();
    let file = writer.finish().unwrap();
    let mut reader = RecordingReader::new(file.as_slice()).unwrap();
    let record = reader.next_record().unwrap().unwrap();
    assert!(matches!(
        Replayer::new().feed(&record),
        Err(RecordingError::MissingStart)
    ));
    assert!(reader.next_record().unwrap().is_none());
}
