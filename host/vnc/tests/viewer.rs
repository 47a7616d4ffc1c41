//! A stock viewer through the proxy: TigerVNC's `xtigervncviewer` (Debian package
//! tigervnc-viewer) runs headless on its own Xvfb, logs in to the gateway with VeNCrypt
//! X509Plain (the gateway's rcgen certificate as its CA; user name and password from
//! `VNC_USERNAME`/`VNC_PASSWORD`, which TigerVNC reads for Plain logins), and `xdotool`
//! types into its window. The keystrokes reach an `xterm` on the target, whose command
//! repaints the target's desktop; the recorder sees them and the recording replays to the
//! screen the relay forwarded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_vnc::{ClientMessage, ClientSideOptions, TypedText};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Captured, Display, Event, Process, VAULT_PASSWORD, X11vnc, gateway, is};

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];

async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn xdotool(display: &Display, args: &[&str]) -> String {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display.name())
        .stderr(Stdio::inherit())
        .output()
        .expect("xdotool (Debian package xdotool) must be installed");
    assert!(out.status.success(), "xdotool {args:?}: {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn tigervnc_logs_in_with_x509plain_and_types_through_the_proxy() {
    let desktop = Display::start("800x600x24");
    desktop.solid("red");
    let _xterm = desktop.spawn("xterm", &["-geometry", "60x10+0+0"]);
    let x11vnc = X11vnc::start(&desktop, Some(VAULT_PASSWORD));
    let certificate = support::gateway_certificate();
    let recorder = Captured::new();
    let (port, gateway) = gateway(
        ClientSideOptions::vencrypt(certificate.server.clone()),
        x11vnc.port,
        recorder.clone(),
    )
    .await;

    let home = tempfile::tempdir().unwrap();
    let ca = support::write_file(&home.path().join("gateway.pem"), &certificate.pem);
    let screen = Display::start("1024x768x24");
    let log = std::fs::File::create(home.path().join("viewer.log")).unwrap();
    let viewer = Process(
        Command::new("xtigervncviewer")
            .args([
                "-SecurityTypes",
                "X509Plain",
                "-X509CA",
                ca.to_str().unwrap(),
                "-AutoSelect=0",
                "-FullColor=1",
                "-RemoteResize=0",
                "-geometry",
                "+0+0",
                &format!("localhost::{port}"),
            ])
            .env("DISPLAY", screen.name())
            .env("HOME", home.path())
            .env("VNC_USERNAME", "alice@root@desk")
            .env("VNC_PASSWORD", "gate-pass")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("xtigervncviewer (Debian package tigervnc-viewer) must be installed"),
    );
    let viewer_log = home.path().join("viewer.log");
    let shows = |rgb: [u8; 3]| {
        let recorder = recorder.clone();
        move || recorder.screen().is_some_and(|fb| is(&fb, 700, 500, rgb))
    };
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        wait_for(
            "the viewer's first screen",
            Duration::from_secs(30),
            shows(RED),
        ),
    )
    .await;
    assert!(
        waited.is_ok(),
        "viewer log:\n{}",
        std::fs::read_to_string(&viewer_log).unwrap_or_default()
    );

    // The viewer's window, then the pointer over the target's xterm and some typing.
    let window = xdotool(
        &screen,
        &["search", "--sync", "--onlyvisible", "--name", "TigerVNC"],
    );
    let window = window.lines().next().unwrap().to_string();
    // TigerVNC sends pointer events once its window has been clicked, and key events once
    // it has the input focus (there is no window manager to give it); a click in the xterm
    // is harmless.
    xdotool(
        &screen,
        &["mousemove", "--window", &window, "40", "40", "click", "1"],
    );
    xdotool(&screen, &["windowfocus", &window]);
    wait_for(
        "the pointer to reach the target",
        Duration::from_secs(10),
        || {
            recorder.events().iter().any(|e| {
                matches!(
                    e,
                    Event::FromClient(ClientMessage::PointerEvent { x: 40, y: 40, .. })
                )
            })
        },
    )
    .await;
    xdotool(&screen, &["type", "--delay", "30", "xsetroot -solid green"]);
    xdotool(&screen, &["key", "Return"]);
    wait_for(
        "the target's desktop to turn green",
        Duration::from_secs(20),
        shows(GREEN),
    )
    .await;

    drop(viewer);
    let outcome = tokio::time::timeout(Duration::from_secs(10), gateway)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(outcome.summary.framebuffer_updates > 0);
    let events = recorder.events();
    let mut typed = TypedText::new();
    for event in &events {
        if let Event::FromClient(ClientMessage::KeyEvent { down, keysym }) = event {
            typed.key(*down, *keysym);
        }
    }
    assert!(
        typed.text().contains("xsetroot -solid green\n"),
        "{:?}",
        typed.text()
    );
    // Only encodings the relay can decode were asked of the target.
    for event in &events {
        if let Event::FromClient(ClientMessage::SetEncodings(list)) = event {
            assert!(
                list.iter()
                    .all(|e| gatehouse_vnc::codec::encoding::RELAYED.contains(e)),
                "{list:?}"
            );
        }
    }
    let live = recorder.screen().unwrap();
    let recording = Arc::try_unwrap(recorder)
        .ok()
        .unwrap()
        .recording
        .finish()
        .unwrap();
    let replayed = gatehouse_vnc::replay(recording.as_slice()).unwrap();
    assert!(is(&replayed, 700, 500, GREEN));
    assert!(replayed.rgba() == live.rgba());
}
