//! The target side against a real x11vnc serving a real Xvfb display: VNC Authentication
//! with the right and a wrong password, security type None, and a full update decoded into
//! a framebuffer that shows what `xsetroot` drew.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_vnc::codec::{encoding, security};
use gatehouse_vnc::{
    ClientMessage, Framebuffer, Password, ServerMessage, TargetError, TargetOptions,
};
use std::time::Duration;
use support::{Display, X11vnc, is};

const RED: [u8; 3] = [255, 0, 0];

#[tokio::test]
async fn vnc_authentication_and_a_full_update_of_the_real_desktop() {
    let display = Display::start("800x600x24");
    display.solid("red");
    let x11vnc = X11vnc::start(&display, Some("s3cret"));
    let password = Password::new("s3cret");
    let mut target = gatehouse_vnc::connect(
        x11vnc.dial().await,
        Some(&password),
        &TargetOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(target.security_type(), security::VNC_AUTH);
    let init = target.server_init().clone();
    assert_eq!((init.width, init.height), (800, 600));
    assert!(!init.name.is_empty());

    target
        .send(&ClientMessage::SetEncodings(vec![
            encoding::HEXTILE,
            encoding::COPY_RECT,
            encoding::RAW,
        ]))
        .await
        .unwrap();
    target
        .send(&ClientMessage::FramebufferUpdateRequest {
            incremental: false,
            x: 0,
            y: 0,
            width: 800,
            height: 600,
        })
        .await
        .unwrap();
    let mut framebuffer = Framebuffer::new(800, 600).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Away from the pointer, which x11vnc draws into the screen (at 0,0, then the centre).
    let points = [(100, 100), (700, 50), (799, 599), (10, 590)];
    while !points.iter().all(|&(x, y)| is(&framebuffer, x, y, RED)) {
        let message = tokio::time::timeout_at(deadline, target.next_message())
            .await
            .expect("a full red screen in time")
            .unwrap()
            .expect("x11vnc kept the connection");
        if let ServerMessage::FramebufferUpdate(update) = &message {
            framebuffer
                .apply(update, &target.context().pixel_format, Duration::ZERO)
                .unwrap();
            target
                .send(&ClientMessage::FramebufferUpdateRequest {
                    incremental: true,
                    x: 0,
                    y: 0,
                    width: 800,
                    height: 600,
                })
                .await
                .unwrap();
        }
    }
    assert_eq!((framebuffer.width(), framebuffer.height()), (800, 600));
}

#[tokio::test]
async fn a_wrong_password_is_a_typed_error_with_the_targets_reason() {
    let display = Display::start("320x200x24");
    let x11vnc = X11vnc::start(&display, Some("s3cret"));
    let error = gatehouse_vnc::connect(
        x11vnc.dial().await,
        Some(&Password::new("wrong")),
        &TargetOptions::default(),
    )
    .await
    .unwrap_err();
    let TargetError::AuthenticationFailed {
        reason: Some(reason),
    } = &error
    else {
        panic!("expected an authentication failure, got {error:?}");
    };
    assert!(!reason.is_empty());
    // One line for the user, the target's words quoted.
    let shown = error.to_string();
    assert!(!shown.contains('\n'), "{shown}");
    assert!(
        shown.starts_with("the target rejected the vnc password: `"),
        "{shown}"
    );

    // No password for a target that needs one.
    let error = gatehouse_vnc::connect(x11vnc.dial().await, None, &TargetOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, TargetError::PasswordRequired), "{error:?}");
}

#[tokio::test]
async fn security_none() {
    let display = Display::start("320x200x24");
    let x11vnc = X11vnc::start(&display, None);
    // A password from the vault is not needed when the target asks for none.
    let target = gatehouse_vnc::connect(
        x11vnc.dial().await,
        Some(&Password::new("unused")),
        &TargetOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(target.security_type(), security::NONE);
    assert_eq!(
        (target.server_init().width, target.server_init().height),
        (320, 200)
    );
}
