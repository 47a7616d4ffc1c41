//! Local port forwarding (`ssh -L`, direct-tcpip channels) that policy permitted: the gateway
//! opens the same channel on its connection to the target, so the forwarded connection leaves
//! from the target host as the target account, and relays bytes both ways with the same bounded
//! queues as session channels. Each forward is audited when it opens and when it closes.

use crate::session::{SessionShared, Target};
use gatehouse_core::{AuditKind, ChannelSummary};
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How long the second direction may take to finish after the first has closed.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the client asked to connect.
pub(crate) struct ForwardSpec {
    pub host: String,
    pub port: u32,
    pub originator: String,
    pub originator_port: u32,
}

pub(crate) async fn run_direct_tcpip(
    shared: Arc<SessionShared>,
    target: Arc<Target>,
    client: Channel<Msg>,
    reply: ChannelOpenHandle,
    spec: ForwardSpec,
    number: u32,
) {
    let destination = format!("{}:{}", spec.host, spec.port);
    let opened = target
        .connection
        .handle
        .channel_open_direct_tcpip(
            spec.host.clone(),
            spec.port,
            spec.originator.clone(),
            spec.originator_port,
        )
        .await;
    let target_channel = match opened {
        Ok(c) => c,
        Err(e) => {
            shared.audit(
                AuditKind::ChannelDenied,
                format!("the target could not open the forward to {destination}: {e}"),
                &[
                    ("channel", "direct-tcpip".into()),
                    ("number", number.into()),
                ],
            );
            reply
                .reject(ChannelOpenFailure::Other {
                    code: 2,
                    reason: format!("gatehouse: the target could not connect to {destination}"),
                })
                .await;
            return;
        }
    };
    reply.accept().await;

    let (mut client_rx, client_tx) = client.split();
    let (mut target_rx, target_tx) = target_channel.split();
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let up = async {
        while let Some(msg) = client_rx.wait().await {
            let result = match msg {
                ChannelMsg::Data { data } => {
                    up_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    shared
                        .bytes_up
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    target_tx.data_bytes(data).await
                }
                ChannelMsg::Eof => target_tx.eof().await,
                ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        let _ = target_tx.close().await;
    };
    let down = async {
        while let Some(msg) = target_rx.wait().await {
            let result = match msg {
                ChannelMsg::Data { data } => {
                    down_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    shared
                        .bytes_down
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    client_tx.data_bytes(data).await
                }
                ChannelMsg::Eof => client_tx.eof().await,
                ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        let _ = client_tx.close().await;
    };
    // Once one side has closed, the other gets a short grace to finish (the peer's CLOSE that
    // answers ours ends it; the grace covers a peer that never answers).
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut down).await;
        }
        _ = &mut down => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut up).await;
        }
    }
    let up = up_bytes.load(Ordering::Relaxed);
    let down = down_bytes.load(Ordering::Relaxed);
    shared.audit(
        AuditKind::ChannelClosed,
        format!("forward to {destination} closed: {up} bytes up, {down} bytes down"),
        &[
            ("channel", "direct-tcpip".into()),
            ("number", number.into()),
            ("bytes_up", up.into()),
            ("bytes_down", down.into()),
        ],
    );
    shared.add_channel(ChannelSummary {
        number,
        kind: "direct-tcpip".into(),
        command: Some(destination),
        exit_status: None,
        recorded: false,
    });
}
