//! The relay against scripted targets that a real server would never be: bulk data with every
//! byte value both ways (IAC escaping on both legs, bounded buffers, partial writes), a target
//! flipping ECHO forever, a subnegotiation without end, a failing recorder, an idle session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_telnet::codec::{self, Decoder, Event, IAC, SB, WILL, WONT};
use gatehouse_telnet::options::ECHO;
use gatehouse_telnet::{
    ClientConfig, ClientSide, ProtocolError, RecordError, Recorder, RelayConfig, RelayError,
    RelaySummary, Side, TargetSide, WindowSize, relay,
};
use std::net::SocketAddr;
use std::time::Duration;
use support::{MemoryRecorder, TestUser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A gateway for one connection without any login: accept, connect the target, relay.
async fn gateway<R: Recorder + Send + 'static>(
    target: SocketAddr,
    mut recorder: R,
    config: RelayConfig,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<(Result<RelaySummary, RelayError>, R)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let quick = ClientConfig {
            negotiation_timeout: Duration::from_millis(100),
            ..ClientConfig::default()
        };
        let client = ClientSide::accept(socket, quick).await.unwrap();
        let stream = TcpStream::connect(target).await.unwrap();
        let target = TargetSide::connect(stream, &client.terminal())
            .await
            .unwrap();
        let result = relay(client, target, &mut recorder, &config).await;
        (result, recorder)
    });
    (address, task)
}

fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|index| (index as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// Reads a Telnet stream to its end; returns the data and the number of command bytes.
async fn read_data<S: AsyncReadExt + Unpin>(stream: &mut S, until: usize) -> Vec<u8> {
    let mut decoder = Decoder::default();
    let mut data = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    while data.len() < until {
        let count = stream.read(&mut buffer).await.unwrap();
        if count == 0 {
            break;
        }
        let mut events = Vec::new();
        decoder.decode(&buffer[..count], &mut events).unwrap();
        for event in events {
            if let Event::Data(bytes) = event {
                data.extend(bytes);
            }
        }
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_with_every_byte_value_crosses_both_ways() {
    const DOWN: usize = 2 * 1024 * 1024;
    const UP: usize = 1024 * 1024;
    let target_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_address = target_listener.local_addr().unwrap();
    let target = tokio::spawn(async move {
        let (socket, _) = target_listener.accept().await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        let sender = tokio::spawn(async move {
            let mut wire = Vec::new();
            codec::escape_data(&pattern(DOWN, 1), &mut wire);
            writer.write_all(&wire).await.unwrap();
            writer
        });
        let received = read_data(&mut reader, UP).await;
        let writer = sender.await.unwrap();
        drop(writer);
        received
    });
    let config = RelayConfig {
        buffer_limit: 16 * 1024,
        ..RelayConfig::default()
    };
    let (gateway_address, gateway) =
        gateway(target_address, MemoryRecorder::default(), config).await;
    let user = TcpStream::connect(gateway_address).await.unwrap();
    let (mut user_reader, mut user_writer) = user.into_split();
    let typist = tokio::spawn(async move {
        // Past the gateway's negotiation wait: type-ahead before the relay is bounded.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut wire = Vec::new();
        codec::escape_data(&pattern(UP, 2), &mut wire);
        user_writer.write_all(&wire).await.unwrap();
        user_writer
    });
    // A slow reader: the relay must hold the target back, not buffer 2 MiB.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down = read_data(&mut user_reader, usize::MAX).await;
    let _user_writer = typist.await.unwrap();
    let up = target.await.unwrap();
    let (summary, recorder) = gateway.await.unwrap();
    let summary = summary.unwrap();
    assert!(
        down == pattern(DOWN, 1),
        "target → user data differs ({} bytes)",
        down.len()
    );
    assert!(
        up == pattern(UP, 2),
        "user → target data differs ({} bytes)",
        up.len()
    );
    assert_eq!(
        summary,
        RelaySummary {
            client_to_target: UP as u64,
            target_to_client: DOWN as u64,
            ended_by: Side::Target
        }
    );
    assert!(recorder.output() == down && recorder.input() == up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_flipping_echo_forever_is_answered_once_per_flip_and_mirrored() {
    const FLIPS: usize = 5000;
    let target_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_address = target_listener.local_addr().unwrap();
    let target = tokio::spawn(async move {
        let (socket, _) = target_listener.accept().await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        let counter = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = reader.read_to_end(&mut all).await;
            all.len()
        });
        let flips: Vec<u8> = (0..FLIPS)
            .flat_map(|_| [IAC, WILL, ECHO, IAC, WONT, ECHO])
            .collect();
        writer.write_all(&flips).await.unwrap();
        writer.write_all(b"done\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(writer);
        counter.await.unwrap()
    });
    let (gateway_address, gateway) = gateway(
        target_address,
        MemoryRecorder::default(),
        RelayConfig::default(),
    )
    .await;
    let mut user = TestUser::connect(
        gateway_address,
        "XTERM",
        WindowSize {
            columns: 80,
            rows: 24,
        },
    )
    .await;
    user.read_until("done").await;
    user.read_to_end().await;
    let answered_to_target = target.await.unwrap();
    let (summary, _) = gateway.await.unwrap();
    assert_eq!(summary.unwrap().ended_by, Side::Target);
    // DO for each WILL, DONT for each WONT, plus the gateway's own few offers.
    assert!(
        answered_to_target <= FLIPS * 6 + 32,
        "{answered_to_target} bytes"
    );
    // The user saw each mirrored change at most once per flip, and ended with the target's
    // last word: the gateway does not echo.
    assert!(
        user.wire.len() <= FLIPS * 6 + 256,
        "{} bytes",
        user.wire.len()
    );
    let tail = &user.wire[user.wire.len().saturating_sub(64)..];
    let last_echo = tail
        .windows(3)
        .rposition(|w| w[0] == IAC && w[2] == ECHO)
        .map(|at| tail[at + 1]);
    assert_eq!(last_echo, Some(WONT), "tail {tail:?}");
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    EndlessSubnegotiation,
    Recorder,
    Idle,
}

/// A recorder whose disk is full.
struct FullDisk;
impl Recorder for FullDisk {
    fn output(&mut self, _: &[u8]) -> Result<(), RecordError> {
        Err(RecordError("the recording volume is full".into()))
    }
    fn input(&mut self, _: &[u8]) -> Result<(), RecordError> {
        Ok(())
    }
    fn resize(&mut self, _: WindowSize) -> Result<(), RecordError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_end_with_the_reason() {
    for failure in [
        Failure::EndlessSubnegotiation,
        Failure::Recorder,
        Failure::Idle,
    ] {
        let target_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_address = target_listener.local_addr().unwrap();
        let target = tokio::spawn(async move {
            let (mut socket, _) = target_listener.accept().await.unwrap();
            let sent: Vec<u8> = match failure {
                Failure::EndlessSubnegotiation => [&[IAC, SB, 24][..], &[b'A'; 4096]].concat(),
                Failure::Recorder => b"hello".to_vec(),
                Failure::Idle => Vec::new(),
            };
            let _ = socket.write_all(&sent).await;
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
        });
        let config = RelayConfig {
            idle_timeout: Some(Duration::from_millis(300)),
            ..RelayConfig::default()
        };
        let (address, result) = match failure {
            Failure::Recorder => {
                let (address, gateway) = gateway(target_address, FullDisk, config).await;
                let _user = TcpStream::connect(address).await.unwrap();
                (address, gateway.await.unwrap().0)
            }
            _ => {
                let (address, gateway) =
                    gateway(target_address, MemoryRecorder::default(), config).await;
                let _user = TcpStream::connect(address).await.unwrap();
                (address, gateway.await.unwrap().0)
            }
        };
        let _ = address;
        match (failure, result) {
            (
                Failure::EndlessSubnegotiation,
                Err(RelayError::Protocol {
                    side: Side::Target,
                    error:
                        ProtocolError::SubnegotiationTooLong {
                            option: 24,
                            limit: 512,
                        },
                }),
            ) => {}
            (Failure::Recorder, Err(RelayError::Recording(error))) => {
                assert_eq!(error.to_string(), "the recording volume is full");
            }
            (Failure::Idle, Err(RelayError::Idle(idle))) => {
                assert_eq!(idle, Duration::from_millis(300))
            }
            (failure, got) => panic!("{failure:?}: got {got:?}"),
        }
        target.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_closing_ends_the_session_and_what_was_typed_still_arrives() {
    let target_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_address = target_listener.local_addr().unwrap();
    let target = tokio::spawn(async move {
        let (mut socket, _) = target_listener.accept().await.unwrap();
        read_data(&mut socket, usize::MAX).await
    });
    let (address, gateway) = gateway(
        target_address,
        MemoryRecorder::default(),
        RelayConfig::default(),
    )
    .await;
    let mut user = TcpStream::connect(address).await.unwrap();
    // Past the gateway's negotiation wait (the user answers nothing), then type and half-close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    user.write_all(b"logout\r\n").await.unwrap();
    user.shutdown().await.unwrap();
    let mut rest = Vec::new();
    user.read_to_end(&mut rest).await.unwrap();
    let (summary, recorder) = gateway.await.unwrap();
    let summary = summary.unwrap();
    assert_eq!(summary.ended_by, Side::Client);
    assert_eq!(target.await.unwrap(), b"logout\r\n");
    assert_eq!(recorder.input(), b"logout\r\n");
    assert_eq!(summary.client_to_target, 8);
}
