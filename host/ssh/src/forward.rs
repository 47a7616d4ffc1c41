//! Port forwarding that policy permitted. Local (`ssh -L`, direct-tcpip channels): the gateway
//! opens the same channel on its connection to the target, so the forwarded connection leaves
//! from the target host as the target account. Remote (`ssh -R`, tcpip-forward): the gateway asks
//! the target to listen, and each connection the target accepts there is carried to the user on a
//! forwarded-tcpip channel. Both relay bytes both ways with the same bounded queues as session
//! channels, and each forwarded connection is audited when it opens and when it closes.

use crate::session::{SessionShared, Target};
use crate::target::IncomingForward;
use gatehouse_core::{AuditKind, ChannelSummary};
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    relay_pair(
        shared,
        client,
        target_channel,
        "direct-tcpip",
        destination,
        number,
    )
    .await;
}

/// Relays one forwarded connection both ways until either side closes, then audits it and adds
/// it to the session's channels.
async fn relay_pair(
    shared: Arc<SessionShared>,
    client: Channel<Msg>,
    target_channel: Channel<russh::client::Msg>,
    kind: &'static str,
    destination: String,
    number: u32,
) {
    let (mut client_rx, client_tx) = client.split();
    let (mut target_rx, target_tx) = target_channel.split();
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let up = pump(&mut client_rx, &target_tx, &up_bytes, &shared.bytes_up);
    let down = pump(&mut target_rx, &client_tx, &down_bytes, &shared.bytes_down);
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
            ("channel", kind.into()),
            ("number", number.into()),
            ("bytes_up", up.into()),
            ("bytes_down", down.into()),
        ],
    );
    shared.add_channel(ChannelSummary {
        number,
        kind: kind.into(),
        command: Some(destination),
        exit_status: None,
        recorded: false,
    });
}

/// Copies one direction of a forwarded connection until its sender closes or the other side
/// fails, counting the bytes for the forward and for the session; then closes the other side.
async fn pump<S>(
    from: &mut russh::ChannelReadHalf,
    to: &russh::ChannelWriteHalf<S>,
    forward: &AtomicU64,
    session: &AtomicU64,
) where
    S: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    while let Some(msg) = from.wait().await {
        let result = match msg {
            ChannelMsg::Data { data } => {
                forward.fetch_add(data.len() as u64, Ordering::Relaxed);
                session.fetch_add(data.len() as u64, Ordering::Relaxed);
                to.data_bytes(data).await
            }
            ChannelMsg::Eof => to.eof().await,
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if result.is_err() {
            break;
        }
    }
    let _ = to.close().await;
}

/// The remote forwards (`ssh -R`) the target holds for this session, as the target bound them.
#[derive(Default)]
pub(crate) struct RemoteForwards {
    bound: Mutex<HashSet<(String, u32)>>,
}

impl RemoteForwards {
    pub fn insert(&self, address: &str, port: u32) {
        if let Ok(mut bound) = self.bound.lock() {
            bound.insert((address.to_string(), port));
        }
    }

    /// Forgets a forward; false when the session held no such forward.
    pub fn remove(&self, address: &str, port: u32) -> bool {
        self.bound
            .lock()
            .map(|mut bound| bound.remove(&(address.to_string(), port)))
            .unwrap_or(false)
    }

    fn contains(&self, address: &str, port: u32) -> bool {
        self.bound
            .lock()
            .map(|bound| bound.contains(&(address.to_string(), port)))
            .unwrap_or(false)
    }
}

/// Takes the connections the target accepted on remote forwards, for the life of the session:
/// each one on a forward the user bound is carried to the user; anything else the target opens
/// is refused and audited.
pub(crate) async fn dispatch_remote_forwards(
    shared: Arc<SessionShared>,
    mut incoming: tokio::sync::mpsc::Receiver<IncomingForward>,
    user: russh::server::Handle,
) {
    loop {
        let next = tokio::select! {
            next = incoming.recv() => next,
            _ = shared.closed() => None,
        };
        let Some(forward) = next else { break };
        let on = format!("{}:{}", forward.connected_address, forward.connected_port);
        if !shared
            .remote_forwards
            .contains(&forward.connected_address, forward.connected_port)
        {
            shared.audit(
                AuditKind::ChannelDenied,
                format!("the target opened a forwarded connection on {on}, which the user did not forward"),
                &[("channel", "forwarded-tcpip".into())],
            );
            forward
                .reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            continue;
        }
        let number = shared.next_channel_number();
        let relays = shared.relays.clone();
        let span = shared.span.clone();
        relays.spawn(tracing::Instrument::instrument(
            run_forwarded_tcpip(shared.clone(), forward, user.clone(), on, number),
            span,
        ));
    }
}

async fn run_forwarded_tcpip(
    shared: Arc<SessionShared>,
    forward: IncomingForward,
    user: russh::server::Handle,
    on: String,
    number: u32,
) {
    let from = format!("{}:{}", forward.originator_address, forward.originator_port);
    let opened = user
        .channel_open_forwarded_tcpip(
            forward.connected_address.clone(),
            forward.connected_port,
            forward.originator_address.clone(),
            forward.originator_port,
        )
        .await;
    let client = match opened {
        Ok(client) => client,
        Err(e) => {
            shared.audit(
                AuditKind::ChannelDenied,
                format!("the user's client did not take the connection from {from} on remote forward {on}: {e}"),
                &[
                    ("channel", "forwarded-tcpip".into()),
                    ("number", number.into()),
                ],
            );
            forward
                .reply
                .reject(ChannelOpenFailure::ConnectFailed)
                .await;
            return;
        }
    };
    forward.reply.accept().await;
    shared.audit(
        AuditKind::ChannelOpened,
        format!("connection from {from} on remote forward {on}"),
        &[
            ("channel", "forwarded-tcpip".into()),
            ("number", number.into()),
            ("originator", from.clone().into()),
        ],
    );
    relay_pair(
        shared,
        client,
        forward.channel,
        "forwarded-tcpip",
        format!("{on} from {from}"),
        number,
    )
    .await;
}
