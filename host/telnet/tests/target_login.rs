//! The target leg against a real `in.telnetd` (inetutils): the gateway negotiates as a Telnet
//! client and logs in with the vault's credential; a wrong one is a typed refusal, and the
//! rules of `LoginScript` decide, with a shell prompt pattern or with the quiet period.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_telnet::{
    Credential, LoginScript, LoginStage, Pattern, SecretString, TargetError, TargetSide, Terminal,
    WindowSize,
};
use std::time::Duration;
use support::{TARGET_PASSWORD, TARGET_USER, Telnetd, target_script};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
enum Expect {
    LoggedIn,
    Refused(&'static str),
    Timeout(LoginStage),
}

fn quiet_script() -> LoginScript {
    LoginScript {
        quiet_period: Duration::from_millis(700),
        timeout: Duration::from_secs(15),
        ..LoginScript::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_against_a_real_telnetd() {
    let telnetd = Telnetd::start();
    let never = LoginScript {
        user_prompt: Pattern::Suffix("username:".into()),
        timeout: Duration::from_secs(2),
        ..target_script()
    };
    let cases: Vec<(&str, &str, &str, LoginScript, Expect)> = vec![
        (
            "right password, shell prompt proves it",
            TARGET_USER,
            TARGET_PASSWORD,
            target_script(),
            Expect::LoggedIn,
        ),
        (
            "right password, quiet period proves it",
            TARGET_USER,
            TARGET_PASSWORD,
            quiet_script(),
            Expect::LoggedIn,
        ),
        (
            "wrong password",
            TARGET_USER,
            "not-the-password",
            target_script(),
            Expect::Refused("Login incorrect"),
        ),
        (
            "unknown user",
            "mallory",
            TARGET_PASSWORD,
            target_script(),
            Expect::Refused("Login incorrect"),
        ),
        // The failure comes 1 s after the password, later than the quiet period: only text
        // other than white space starts the quiet clock, so this is still a refusal.
        (
            "wrong password, quiet rule",
            TARGET_USER,
            "nope",
            quiet_script(),
            Expect::Refused("Login incorrect"),
        ),
        (
            "a prompt that never comes",
            TARGET_USER,
            TARGET_PASSWORD,
            never,
            Expect::Timeout(LoginStage::UserPrompt),
        ),
    ];
    for (name, user, password, script, expected) in cases {
        let stream = TcpStream::connect(telnetd.address).await.unwrap();
        let terminal = Terminal {
            terminal_type: Some("VT220".into()),
            window: Some(WindowSize {
                columns: 101,
                rows: 37,
            }),
        };
        let mut target = TargetSide::connect(stream, &terminal).await.unwrap();
        let password = SecretString::new(password.into());
        let credential = Credential {
            username: user,
            password: &password,
        };
        let result = target.login(&credential, &script).await;
        match (&expected, result) {
            (Expect::LoggedIn, Ok(logged_in)) => assert!(logged_in.banner_len > 0, "{name}"),
            (Expect::Refused(message), Err(TargetError::Refused { message: got })) => {
                assert_eq!(&got, message, "{name}");
            }
            (Expect::Timeout(stage), Err(TargetError::Timeout { stage: got })) => {
                assert_eq!(&got, stage, "{name}")
            }
            (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
        }
    }
}

/// Secrets never reach a `Debug` print, and the refusal's text is the target's line only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_carries_no_secret() {
    let telnetd = Telnetd::start();
    let stream = TcpStream::connect(telnetd.address).await.unwrap();
    let mut target = TargetSide::connect(stream, &Terminal::default())
        .await
        .unwrap();
    let password = SecretString::new("wrong-Secret-123".into());
    let credential = Credential {
        username: TARGET_USER,
        password: &password,
    };
    let error = target
        .login(&credential, &target_script())
        .await
        .unwrap_err();
    let shown = format!("{error} {error:?} {credential:?}");
    assert!(!shown.contains("wrong-Secret-123"), "{shown}");
    assert_eq!(
        error.to_string(),
        "the target refused the login: `Login incorrect`"
    );
}

#[tokio::test]
async fn a_user_name_with_a_line_break_is_not_sent() {
    let (gateway_end, _target_end) = tokio::io::duplex(1024);
    let mut target = TargetSide::connect(gateway_end, &Terminal::default())
        .await
        .unwrap();
    let password = SecretString::new("x".into());
    let credential = Credential {
        username: "bob\r\nrm -rf /",
        password: &password,
    };
    let error = target
        .login(&credential, &LoginScript::default())
        .await
        .unwrap_err();
    assert!(matches!(error, TargetError::BadUsername), "{error:?}");
}

/// A target that closes during the login is `Closed` at the stage it was in.
#[tokio::test]
async fn a_target_closing_early_is_closed_with_its_stage() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"login: ").await.unwrap();
        let mut buffer = [0u8; 64];
        let _ = socket.read(&mut buffer).await;
    });
    let stream = TcpStream::connect(address).await.unwrap();
    let mut target = TargetSide::connect(stream, &Terminal::default())
        .await
        .unwrap();
    let password = SecretString::new("x".into());
    let credential = Credential {
        username: "bob",
        password: &password,
    };
    let error = target
        .login(&credential, &LoginScript::default())
        .await
        .unwrap_err();
    server.await.unwrap();
    assert!(
        matches!(
            error,
            TargetError::Closed {
                stage: LoginStage::PasswordPrompt
            }
        ),
        "{error:?}"
    );
}
