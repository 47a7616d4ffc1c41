//! The client leg's login conversation and its defences, over an in-memory stream: the line
//! editor as a table (input typed, answer expected), then hostile clients (an option flipped
//! forever, a subnegotiation without end, a flood, a silent client, a truncated command).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_telnet::codec::{DO, DONT, EC, IAC, IP, SB, SE, WILL, WONT};
use gatehouse_telnet::options::{ECHO, NAWS, TERMINAL_TYPE};
use gatehouse_telnet::{
    ClientConfig, ClientError, ClientSide, ProtocolError, Terminal, WindowSize,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn quick() -> ClientConfig {
    ClientConfig {
        negotiation_timeout: Duration::from_millis(200),
        answer_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

/// The user's end: collects everything the gateway writes, in a task, so the gateway never
/// blocks on a full pipe.
fn collect(mut user: tokio::io::ReadHalf<DuplexStream>) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = user.read_to_end(&mut all).await;
        all
    })
}

/// The user accepts our WILL ECHO and answers TERMINAL-TYPE and NAWS in its first packet.
const POLITE: &[u8] = &[
    IAC,
    DO,
    ECHO,
    IAC,
    WILL,
    TERMINAL_TYPE,
    IAC,
    WILL,
    NAWS,
    IAC,
    SB,
    NAWS,
    0,
    90,
    0,
    20,
    IAC,
    SE,
    IAC,
    SB,
    TERMINAL_TYPE,
    0,
    b'A',
    b'N',
    b'S',
    b'I',
    IAC,
    SE,
];

#[derive(Debug)]
enum Answer {
    Text(&'static str),
    Aborted,
    TooLong,
    NotUtf8,
    Closed,
}

#[tokio::test]
async fn the_line_editor() {
    let long = "a".repeat(300);
    let cases: Vec<(&str, Vec<u8>, Answer)> = vec![
        ("cr lf", b"alice\r\n".to_vec(), Answer::Text("alice")),
        ("cr nul", b"alice\r\0".to_vec(), Answer::Text("alice")),
        ("bare cr", b"alice\r".to_vec(), Answer::Text("alice")),
        ("bare lf", b"alice\n".to_vec(), Answer::Text("alice")),
        (
            "backspace",
            b"alicX\x08e\r\n".to_vec(),
            Answer::Text("alice"),
        ),
        ("del", b"al\x7fx\r\n".to_vec(), Answer::Text("ax")),
        (
            "del on empty",
            b"\x7f\x7fok\r\n".to_vec(),
            Answer::Text("ok"),
        ),
        ("ctrl-u", b"abc\x15xyz\r\n".to_vec(), Answer::Text("xyz")),
        (
            "utf-8 erased whole",
            "xé\x7f\r\n".as_bytes().to_vec(),
            Answer::Text("x"),
        ),
        (
            "utf-8 kept",
            "ré@db1\r\n".as_bytes().to_vec(),
            Answer::Text("ré@db1"),
        ),
        (
            "in-band target",
            b"alice@root@db1\r\n".to_vec(),
            Answer::Text("alice@root@db1"),
        ),
        (
            "iac ec",
            [&b"ab"[..], &[IAC, EC], b"\r\n"].concat(),
            Answer::Text("a"),
        ),
        (
            "controls ignored",
            b"a\x01\x1bb\tc\r\n".to_vec(),
            Answer::Text("abc"),
        ),
        ("ctrl-c", b"ab\x03".to_vec(), Answer::Aborted),
        ("ctrl-d", b"\x04".to_vec(), Answer::Aborted),
        ("iac ip", vec![b'a', IAC, IP], Answer::Aborted),
        (
            "too long",
            [long.as_bytes(), b"\r\n"].concat(),
            Answer::TooLong,
        ),
        (
            "not utf-8",
            vec![b'a', 0xc3, 0x28, b'\r', b'\n'],
            Answer::NotUtf8,
        ),
        (
            "iac iac is byte 255",
            vec![b'a', IAC, IAC, b'\r', b'\n'],
            Answer::NotUtf8,
        ),
        ("closed mid-line", b"ali".to_vec(), Answer::Closed),
    ];
    for (name, typed, expected) in cases {
        for secret in [false, true] {
            let (gateway_end, user_end) = tokio::io::duplex(64 * 1024);
            let (user_read, mut user_write) = tokio::io::split(user_end);
            let screen = collect(user_read);
            user_write.write_all(POLITE).await.unwrap();
            let mut client = ClientSide::accept(gateway_end, quick()).await.unwrap();
            user_write.write_all(&typed).await.unwrap();
            if matches!(expected, Answer::Closed) {
                user_write.shutdown().await.unwrap();
            }
            let answer = if secret {
                client
                    .ask_secret("Password: ")
                    .await
                    .map(|s| s.expose().to_string())
            } else {
                client.ask("login: ").await
            };
            match (&expected, answer) {
                (Answer::Text(text), Ok(got)) => assert_eq!(&got, text, "{name}"),
                (Answer::Aborted, Err(ClientError::Aborted))
                | (Answer::TooLong, Err(ClientError::LineTooLong { limit: 256 }))
                | (Answer::NotUtf8, Err(ClientError::NotUtf8))
                | (Answer::Closed, Err(ClientError::Closed)) => {}
                (expected, got) => {
                    panic!("{name} (secret: {secret}): expected {expected:?}, got {got:?}")
                }
            }
            drop(client);
            let screen = screen.await.unwrap();
            if secret {
                // Nothing typed comes back: the prompt, at most a line end.
                let after_prompt =
                    &screen[screen.windows(10).position(|w| w == b"Password: ").unwrap() + 10..];
                assert!(
                    after_prompt.is_empty() || after_prompt == b"\r\n",
                    "{name}: echoed {after_prompt:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn negotiation_learns_the_terminal_and_answers_continue_across_packets() {
    let (gateway_end, user_end) = tokio::io::duplex(64 * 1024);
    let (user_read, mut user_write) = tokio::io::split(user_end);
    let screen = collect(user_read);
    user_write.write_all(POLITE).await.unwrap();
    let mut client = ClientSide::accept(gateway_end, quick()).await.unwrap();
    assert_eq!(
        client.terminal(),
        Terminal {
            terminal_type: Some("ANSI".into()),
            window: Some(WindowSize {
                columns: 90,
                rows: 20
            })
        }
    );
    assert!(client.gateway_echoes());
    // The CR ends the first answer; its LF arrives with the second.
    user_write.write_all(b"alice@root@db1\r").await.unwrap();
    assert_eq!(client.ask("login: ").await.unwrap(), "alice@root@db1");
    user_write.write_all(b"\nsecret\r\n").await.unwrap();
    let password = client.ask_secret("Password: ").await.unwrap();
    assert_eq!(password.expose(), "secret");
    assert_eq!(format!("{password:?}"), "SecretString([redacted])");
    client.say("no such target\nbye").await.unwrap();
    drop(client);
    let screen = screen.await.unwrap();
    let expected_offers = [
        IAC,
        WILL,
        ECHO,
        IAC,
        WILL,
        3,
        IAC,
        DO,
        TERMINAL_TYPE,
        IAC,
        DO,
        NAWS,
    ];
    assert!(screen.starts_with(&expected_offers), "{screen:?}");
    let text = String::from_utf8_lossy(&screen);
    assert!(
        text.ends_with("login: alice@root@db1\r\nPassword: \r\nno such target\r\nbye\r\n"),
        "{text:?}"
    );
    assert!(!text.contains("secret"));
}

#[tokio::test]
async fn a_silent_client_gets_defaults_after_the_negotiation_timeout() {
    let (gateway_end, _user_end) = tokio::io::duplex(64 * 1024);
    let started = std::time::Instant::now();
    let client = ClientSide::accept(gateway_end, quick()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(client.terminal(), Terminal::default());
    // A client that refused our echo keeps echoing itself.
    let (gateway_end, user_end) = tokio::io::duplex(64 * 1024);
    let (_user_read, mut user_write) = tokio::io::split(user_end);
    user_write
        .write_all(&[IAC, DONT, ECHO, IAC, WONT, TERMINAL_TYPE, IAC, WONT, NAWS])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let client = ClientSide::accept(gateway_end, quick()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "settled answers end the wait"
    );
    assert!(!client.gateway_echoes());
}

#[derive(Debug)]
enum Hostile {
    Protocol(ProtocolError),
    TooMuchInput,
    Closed,
    Answer(&'static str),
}

#[tokio::test]
async fn hostile_clients() {
    let flipping: Vec<u8> = (0..20_000)
        .flat_map(|round| {
            let verb = if round % 2 == 0 { WILL } else { WONT };
            [
                IAC,
                verb,
                NAWS,
                IAC,
                verb,
                34,
                IAC,
                if round % 2 == 0 { DO } else { DONT },
                ECHO,
            ]
        })
        .chain(*b"still-here\r\n")
        .collect();
    let endless_subnegotiation: Vec<u8> = [
        &[IAC, WILL, TERMINAL_TYPE, IAC, SB, TERMINAL_TYPE, 0][..],
        &[b'A'; 10_000],
    ]
    .concat();
    let cases: Vec<(&str, Vec<u8>, Hostile)> = vec![
        (
            "options flipped forever",
            flipping,
            Hostile::Answer("still-here"),
        ),
        (
            "subnegotiation without end",
            endless_subnegotiation,
            Hostile::Protocol(ProtocolError::SubnegotiationTooLong {
                option: TERMINAL_TYPE,
                limit: 512,
            }),
        ),
        (
            "truncated command then close",
            vec![b'a', IAC],
            Hostile::Closed,
        ),
        (
            "typing ahead of the questions",
            vec![b'x'; 10_000],
            Hostile::TooMuchInput,
        ),
    ];
    for (name, sent, expected) in cases {
        let (gateway_end, user_end) = tokio::io::duplex(16 * 1024);
        let (user_read, mut user_write) = tokio::io::split(user_end);
        let screen = collect(user_read);
        let sent_len = sent.len();
        let writer = tokio::spawn(async move {
            let _ = user_write.write_all(&sent).await;
            let _ = user_write.shutdown().await;
        });
        let result = async {
            let mut client = ClientSide::accept(gateway_end, quick()).await?;
            client.ask("login: ").await
        }
        .await;
        writer.await.unwrap();
        match (&expected, result) {
            (Hostile::Answer(text), Ok(got)) => assert_eq!(&got, text, "{name}"),
            (Hostile::Protocol(error), Err(ClientError::Protocol(got))) => {
                assert_eq!(&got, error, "{name}")
            }
            (Hostile::TooMuchInput, Err(ClientError::TooMuchInput { limit: 4096 }))
            | (Hostile::Closed, Err(ClientError::Closed)) => {}
            (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
        }
        // At most one 3-byte answer per 3-byte command, plus our offers and the prompt.
        let screen = screen.await.unwrap();
        assert!(
            screen.len() <= sent_len + 64,
            "{name}: {} bytes answered to {sent_len}",
            screen.len()
        );
    }
}
