//! The whole proxy between real components: a viewer logs in to the gateway with VeNCrypt
//! Plain (TLS with an rcgen certificate), the gateway checks the login, logs in to a real
//! x11vnc with the vault's VNC password, and relays with a recorder. Keys typed through the
//! proxy run a command in an `xterm` on the target that repaints the desktop, the recorder
//! sees the keystrokes, and the recording replays to exactly the screen the viewer has.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_vnc::codec::{encoding, security};
use gatehouse_vnc::{ClientMessage, ClientSideOptions, ServerMessage, TypedText};
use std::sync::Arc;
use std::time::Duration;
use support::{
    Captured, Display, Event, Login, RGB565_BE, VAULT_PASSWORD, X11vnc, gateway, is, viewer,
};
use tokio::net::TcpListener;

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];

fn typed(events: &[Event]) -> String {
    let mut text = TypedText::new();
    for event in events {
        if let Event::FromClient(ClientMessage::KeyEvent { down, keysym }) = event {
            text.key(*down, *keysym);
        }
    }
    text.take()
}

#[tokio::test]
async fn typing_through_the_proxy_runs_a_command_on_the_target_and_the_recording_replays() {
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

    let mut viewer = viewer(
        port,
        Login::Plain {
            subtype: security::X509_PLAIN,
            username: "alice@root@desk",
            password: "gate-pass",
            tls: certificate.client.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!((viewer.init.width, viewer.init.height), (800, 600));
    assert!(
        viewer.init.name.starts_with("gatehouse: "),
        "{}",
        viewer.init.name
    );

    // Tight, ZRLE and ExtendedDesktopSize are steered away.
    viewer
        .send(ClientMessage::SetEncodings(vec![
            7, 16, 5, 1, 0, -223, -239, -308,
        ]))
        .await;
    viewer
        .update_until(Duration::from_secs(20), |fb| is(fb, 700, 500, RED))
        .await;

    // Point at the xterm (focus follows the pointer without a window manager) and type.
    viewer
        .send(ClientMessage::PointerEvent {
            buttons: 0,
            x: 40,
            y: 40,
        })
        .await;
    for c in "xsetroot -solid green".chars() {
        for down in [true, false] {
            viewer
                .send(ClientMessage::KeyEvent {
                    down,
                    keysym: u32::from(c),
                })
                .await;
        }
    }
    for down in [true, false] {
        viewer
            .send(ClientMessage::KeyEvent {
                down,
                keysym: 0xff0d,
            })
            .await;
    }
    viewer
        .update_until(Duration::from_secs(20), |fb| is(fb, 700, 500, GREEN))
        .await;
    // Nothing is outstanding; let anything in flight arrive, then leave.
    while let Ok(message) = tokio::time::timeout(Duration::from_millis(500), viewer.next()).await {
        assert!(!matches!(message, ServerMessage::ServerCutText(_)));
    }
    let seen = viewer.framebuffer.clone();
    drop(viewer);
    let outcome = tokio::time::timeout(Duration::from_secs(10), gateway)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert!(!outcome.stopped);
    assert_eq!(outcome.summary.encodings_removed, 3);
    assert_eq!(outcome.summary.key_events, 44);
    assert_eq!(outcome.summary.converted_updates, 0);

    let events = recorder.events();
    let Event::Start(init) = &events[0] else {
        panic!("the first event is {:?}", events[0]);
    };
    assert_eq!(init.pixel_format, gatehouse_vnc::PixelFormat::TARGET);
    assert!(
        events.contains(&Event::FromClient(ClientMessage::SetEncodings(vec![
            encoding::HEXTILE,
            encoding::COPY_RECT,
            encoding::RAW,
            encoding::DESKTOP_SIZE,
            encoding::CURSOR,
        ])))
    );
    assert!(
        events.contains(&Event::FromClient(ClientMessage::PointerEvent {
            buttons: 0,
            x: 40,
            y: 40
        }))
    );
    assert_eq!(typed(&events), "xsetroot -solid green\n");

    let recording = Arc::try_unwrap(recorder)
        .ok()
        .unwrap()
        .recording
        .finish()
        .unwrap();
    let replayed = gatehouse_vnc::replay(recording.as_slice()).unwrap();
    assert!(is(&replayed, 700, 500, GREEN));
    assert!(
        replayed.rgba() == seen.rgba(),
        "the replay differs from the viewer's screen"
    );
}

#[tokio::test]
async fn a_sixteen_bit_viewer_gets_converted_updates_and_the_recording_stays_in_one_format() {
    let desktop = Display::start("640x480x24");
    desktop.solid("red");
    let x11vnc = X11vnc::start(&desktop, Some(VAULT_PASSWORD));
    let certificate = support::gateway_certificate();
    let recorder = Captured::new();
    let (port, gateway) = gateway(
        ClientSideOptions::vencrypt(certificate.server.clone()),
        x11vnc.port,
        recorder.clone(),
    )
    .await;
    let mut viewer = viewer(
        port,
        Login::Plain {
            subtype: security::TLS_PLAIN,
            username: "alice@root@desk",
            password: "gate-pass",
            tls: certificate.client.clone(),
        },
    )
    .await
    .unwrap();
    viewer.send(ClientMessage::SetPixelFormat(RGB565_BE)).await;
    viewer
        .send(ClientMessage::SetEncodings(vec![5, 1, 0]))
        .await;
    viewer
        .update_until(Duration::from_secs(20), |fb| is(fb, 600, 400, RED))
        .await;
    desktop.solid("green");
    viewer
        .update_until(Duration::from_secs(20), |fb| is(fb, 600, 400, GREEN))
        .await;
    while tokio::time::timeout(Duration::from_millis(500), viewer.next())
        .await
        .is_ok()
    {}
    let seen = viewer.framebuffer.clone();
    drop(viewer);
    let outcome = tokio::time::timeout(Duration::from_secs(10), gateway)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert!(outcome.summary.converted_updates > 0);
    // SetPixelFormat stays at the gateway.
    assert!(
        !recorder
            .events()
            .iter()
            .any(|e| matches!(e, Event::FromClient(ClientMessage::SetPixelFormat(_))))
    );
    let recording = Arc::try_unwrap(recorder)
        .ok()
        .unwrap()
        .recording
        .finish()
        .unwrap();
    let replayed = gatehouse_vnc::replay(recording.as_slice()).unwrap();
    // Pure colours survive 5-6-5 exactly, so the screens are identical.
    assert!(
        replayed.rgba() == seen.rgba(),
        "the replay differs from the viewer's screen"
    );
}

#[tokio::test]
async fn a_wrong_gateway_password_is_refused_with_a_reason() {
    let desktop = Display::start("320x200x24");
    let x11vnc = X11vnc::start(&desktop, Some(VAULT_PASSWORD));
    let certificate = support::gateway_certificate();
    let (port, gateway) = gateway(
        ClientSideOptions::vencrypt(certificate.server.clone()),
        x11vnc.port,
        Captured::new(),
    )
    .await;
    let refused = viewer(
        port,
        Login::Plain {
            subtype: security::X509_PLAIN,
            username: "alice@root@desk",
            password: "not-it",
            tls: certificate.client.clone(),
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(refused, "invalid user name or password");
    assert_eq!(gateway.await.unwrap().unwrap_err(), "refused");
}

#[tokio::test]
async fn security_none_only_when_allowed() {
    let desktop = Display::start("320x200x24");
    desktop.solid("red");
    let x11vnc = X11vnc::start(&desktop, Some(VAULT_PASSWORD));
    // Not offered by default: a default ClientSideOptions has nothing to offer.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        gatehouse_vnc::accept(stream, &ClientSideOptions::default()).await
    });
    let _client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    assert!(matches!(
        refused.await.unwrap().unwrap_err(),
        gatehouse_vnc::ClientError::NothingToOffer
    ));

    let recorder = Captured::new();
    let options = ClientSideOptions {
        allow_none: true,
        ..ClientSideOptions::default()
    };
    let (port, gateway) = gateway(options, x11vnc.port, recorder.clone()).await;
    let mut viewer = viewer(port, Login::None).await.unwrap();
    viewer
        .update_until(Duration::from_secs(20), |fb| is(fb, 300, 180, RED))
        .await;
    drop(viewer);
    let outcome = gateway.await.unwrap().unwrap();
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
}
