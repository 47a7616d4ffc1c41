//! What the daemon's own protocol listeners (RDP, Telnet, VNC) share: binding an optional
//! listener, and the accept loop: one task and one tracing span (`session`, with the protocol,
//! session id, user, target and client address) per connection, no new connection once the
//! drain starts, and the running sessions given the grace period plus a little to store their
//! records.

use anyhow::{Context, Result};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

/// After the grace period, how long ended sessions get to store their records.
const CLOSE_AFTER_DEADLINE: Duration = Duration::from_secs(10);

/// Binds `label`'s listener: the explicit address given on the command line, else the
/// settings' when `enabled`. Either must bind. `None` when the protocol is off.
pub(crate) async fn bind_optional(
    label: &str,
    enabled: bool,
    listen: SocketAddr,
    explicit: Option<SocketAddr>,
) -> Result<Option<TcpListener>> {
    let address = match explicit {
        Some(address) => address,
        None if enabled => listen,
        None => {
            tracing::info!("{label} disabled (settings.json)");
            return Ok(None);
        }
    };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address} for {label}"))?;
    Ok(Some(listener))
}

/// Accepts connections until the gateway drains, running `session(socket, peer, id)` for each
/// in its own task and span; returns when every session has ended (or the grace period and
/// [`CLOSE_AFTER_DEADLINE`] have passed).
pub(crate) async fn accept_sessions<F, Fut>(
    listener: TcpListener,
    shutdown: gatehouse_ssh::Shutdown,
    protocol: &'static str,
    session: F,
) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let sessions = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.draining() => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                tracing::error!(protocol, error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let id = uuid::Uuid::now_v7().to_string();
        let span = tracing::info_span!(
            "session",
            protocol,
            id = %id,
            user = tracing::field::Empty,
            target = tracing::field::Empty,
            client = %peer,
        );
        sessions.spawn(session(socket, peer, id).instrument(span));
    }
    drop(listener);
    sessions.close();
    tracing::info!(protocol, sessions = sessions.len(), "gateway draining");
    // After the deadline the relays close at once; the rest is writing the books.
    shutdown.closing().await;
    if tokio::time::timeout(CLOSE_AFTER_DEADLINE, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            protocol,
            sessions = sessions.len(),
            "sessions still open after the shutdown grace period"
        );
    }
    Ok(())
}

/// [`accept_sessions`] for one of a protocol's listeners, the usual one or transparent mode's
/// (`transparent`, with the store its assets are looked up in): the span says which
/// (`labels`: the usual and the transparent protocol name), and `session` gets each transparent
/// connection's arrival (the asset at its original destination whose `port_of` is its port).
pub(crate) async fn accept_protocol<F, Fut>(
    listener: TcpListener,
    shutdown: gatehouse_ssh::Shutdown,
    labels: (&'static str, &'static str),
    transparent: Option<(Transparent, std::sync::Arc<gatehouse_store::Store>)>,
    port_of: fn(&gatehouse_core::Asset) -> Option<u16>,
    session: F,
) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, String, Option<Arrived>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let protocol = match transparent {
        Some(_) => labels.1,
        None => labels.0,
    };
    accept_sessions(listener, shutdown, protocol, move |socket, client, id| {
        let arrived = transparent
            .as_ref()
            .map(|(mode, store)| mode.arrive(&socket, client, store, port_of));
        session(socket, client, id, arrived)
    })
    .await
}

/// Runs a protocol's listeners side by side, the usual one and transparent mode's (either may
/// be absent); returns when both have.
pub(crate) async fn both<A, B>(plain: Option<A>, redirected: Option<B>) -> std::io::Result<()>
where
    A: Future<Output = std::io::Result<()>>,
    B: Future<Output = std::io::Result<()>>,
{
    let plain = async move {
        match plain {
            Some(f) => f.await,
            None => Ok(()),
        }
    };
    let redirected = async move {
        match redirected {
            Some(f) => f.await,
            None => Ok(()),
        }
    };
    let (a, b) = tokio::join!(plain, redirected);
    a.and(b)
}

/// A listener in transparent mode (docs/transparent.md): its connections were redirected by a
/// router, and the target is the asset at their original destination.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transparent {
    /// Targets are dialed from the client's own address (`IP_TRANSPARENT`).
    pub source_from_client: bool,
}

/// Where a transparent connection was going, and the address it leaves from towards the
/// target (`None`: the gateway's own).
#[derive(Debug, Clone)]
pub(crate) struct Arrived {
    pub arrival: gatehouse_ssh::transparent::Arrival,
    pub source: Option<IpAddr>,
}

impl Transparent {
    /// The arrival of `socket` from `client`: its original destination and the asset there
    /// (`port_of`: the asset's port for the protocol).
    pub(crate) fn arrive(
        &self,
        socket: &TcpStream,
        client: SocketAddr,
        store: &gatehouse_store::Store,
        port_of: impl Fn(&gatehouse_core::Asset) -> Option<u16>,
    ) -> Arrived {
        let destination = gatehouse_ssh::transparent::original_destination(socket)
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let asset = gatehouse_ssh::transparent::asset_at(store, destination, port_of);
        tracing::debug!(%destination, asset = ?asset, "transparent connection");
        Arrived {
            arrival: gatehouse_ssh::transparent::Arrival { destination, asset },
            source: self.source_from_client.then_some(client.ip()),
        }
    }
}
