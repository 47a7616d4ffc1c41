//! How the gateway's connections meet the network, for every protocol: where a redirected
//! connection was going (transparent mode: `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` after an
//! iptables `REDIRECT`, the local address after `TPROXY`), and dialing a target with a time
//! limit, `TCP_NODELAY`, and optionally from the client's own address (`IP_TRANSPARENT`: the
//! target sees the user's address, not the gateway's; the router must send the replies back to
//! the gateway, docs/transparent.md).
//!
//! Only this crate knows socket options.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// Why a target could not be dialed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {address}: no answer within {} s", limit.as_secs())]
    Timeout { address: String, limit: Duration },
    #[error("connecting to {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// The client's address could not be used as the source (no `CAP_NET_ADMIN`, another
    /// address family, ...).
    #[error("connecting to {address} from {from}: {reason}")]
    Source {
        address: String,
        from: IpAddr,
        reason: String,
    },
}

impl ConnectError {
    /// What went wrong, without the address (for messages that name it already).
    pub fn reason(&self) -> String {
        match self {
            ConnectError::Timeout { limit, .. } => {
                format!("no answer within {} s", limit.as_secs())
            }
            ConnectError::Unreachable { reason, .. } => reason.clone(),
            ConnectError::Source { from, reason, .. } => {
                format!("from the client's address {from}: {reason}")
            }
        }
    }
}

/// `host:port` as people write it (`[v6]:port` for an IPv6 address).
pub fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => SocketAddr::from((ip, port)).to_string(),
        _ => format!("{host}:{port}"),
    }
}

/// Connects to `host` (a name or an address) at `port` within `limit`, with `TCP_NODELAY`.
/// With `from`, the connection leaves from that address (`IP_TRANSPARENT`, any port): the
/// target is dialed at an address of the same family.
pub async fn connect(
    host: &str,
    port: u16,
    from: Option<IpAddr>,
    limit: Duration,
) -> Result<TcpStream, ConnectError> {
    let address = host_port(host, port);
    let dialed = tokio::time::timeout(limit, dial(host, port, from, &address)).await;
    let stream = dialed.map_err(|_| ConnectError::Timeout {
        address: address.clone(),
        limit,
    })??;
    // Interactive traffic: no Nagle delay on either protocol's keystrokes.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn dial(
    host: &str,
    port: u16,
    from: Option<IpAddr>,
    address: &str,
) -> Result<TcpStream, ConnectError> {
    let unreachable = |e: io::Error| ConnectError::Unreachable {
        address: address.to_string(),
        reason: e.to_string(),
    };
    let Some(from) = from else {
        return TcpStream::connect((host, port)).await.map_err(unreachable);
    };
    let source = |reason: String| ConnectError::Source {
        address: address.to_string(),
        from,
        reason,
    };
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(unreachable)?
        .collect();
    let Some(target) = resolved.into_iter().find(|a| a.is_ipv4() == from.is_ipv4()) else {
        let family = if from.is_ipv4() { "IPv4" } else { "IPv6" };
        return Err(source(format!("the target has no {family} address")));
    };
    let socket = transparent_socket(target, from).map_err(|e| source(e.to_string()))?;
    socket.connect(target).await.map_err(unreachable)
}

/// A socket bound to `from` (not one of this host's addresses) for a connection to `target`.
fn transparent_socket(target: SocketAddr, from: IpAddr) -> io::Result<TcpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    let transparent = if from.is_ipv4() {
        socket.set_ip_transparent_v4(true)
    } else {
        socket.set_ip_transparent_v6(true)
    };
    transparent.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW ({e})"),
        )
    })?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}

/// Whether this process may dial from addresses that are not its own (`IP_TRANSPARENT` needs
/// `CAP_NET_ADMIN` or `CAP_NET_RAW`): checked once at start, so that an operator learns it then rather than
/// from every session's failure.
pub fn check_foreign_source() -> io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_ip_transparent_v4(true)
}

/// A listener for connections a router sends here. It accepts what an iptables `REDIRECT`
/// rule sends, and, when this process may set `IP_TRANSPARENT` (`CAP_NET_ADMIN`), what a
/// `TPROXY` rule sends (connections to addresses that are not this host's). The second value
/// says whether TPROXY works.
pub fn listen_transparent(address: SocketAddr) -> io::Result<(tokio::net::TcpListener, bool)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    let tproxy = if address.is_ipv4() {
        socket.set_ip_transparent_v4(true)
    } else {
        socket.set_ip_transparent_v6(true)
    }
    .is_ok();
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    let listener = tokio::net::TcpListener::from_std(socket.into())?;
    Ok((listener, tproxy))
}

/// Where a connection a router sent here was going: `SO_ORIGINAL_DST` (IPv4) or
/// `IP6T_SO_ORIGINAL_DST` (IPv6) when netfilter redirected it, else the local address (what
/// TPROXY keeps, and what a connection nobody redirected was going to anyway).
pub fn original_destination(socket: &TcpStream) -> Option<SocketAddr> {
    let local = socket.local_addr().ok()?;
    let sock = socket2::SockRef::from(socket);
    let original = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    match original.ok().and_then(|a| a.as_socket()) {
        // An IPv4 client of a dual-stack listener: the address without its IPv6 mapping.
        Some(SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => Some(SocketAddr::from((v4, v6.port()))),
            None => Some(SocketAddr::V6(v6)),
        },
        Some(found) => Some(found),
        None => Some(unmapped(local)),
    }
}

fn unmapped(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => address,
        },
        v4 => v4,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn host_port_brackets_ipv6_only() {
        assert_eq!(host_port("db1.example", 22), "db1.example:22");
        assert_eq!(host_port("10.0.0.5", 3389), "10.0.0.5:3389");
        assert_eq!(host_port("fd00::5", 5900), "[fd00::5]:5900");
    }

    #[tokio::test]
    async fn connects_and_reports_where_it_arrived() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = tokio::net::TcpListener::bind(bind).await else {
                // A host without IPv6 on loopback.
                continue;
            };
            let here = listener.local_addr().unwrap();
            let ip = here.ip().to_string();
            let dialed = connect(&ip, here.port(), None, Duration::from_secs(5));
            let (dialed, accepted) = tokio::join!(dialed, listener.accept());
            let dialed = dialed.unwrap();
            assert!(dialed.nodelay().unwrap());
            let (accepted, _) = accepted.unwrap();
            // Not redirected: the original destination is where it arrived.
            assert_eq!(original_destination(&accepted), Some(here));
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_with_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = connect("127.0.0.1", port, None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("connecting to 127.0.0.1:{port}: "))
        );
    }

    #[tokio::test]
    async fn a_source_of_the_other_family_is_refused_before_dialing() {
        let err = connect(
            "127.0.0.1",
            9,
            Some("fd00::7".parse().unwrap()),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ConnectError::Source { .. }), "{err:?}");
        assert!(err.to_string().contains("no IPv6 address"), "{err}");
    }

    /// Needs CAP_NET_ADMIN (the tests run as root): the peer sees the source given.
    #[tokio::test]
    async fn a_connection_leaves_from_the_source_given() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let here = listener.local_addr().unwrap();
        let from: IpAddr = "127.0.0.77".parse().unwrap();
        let dialed = connect("127.0.0.1", here.port(), Some(from), Duration::from_secs(5));
        let (dialed, accepted) = tokio::join!(dialed, listener.accept());
        dialed.expect("IP_TRANSPARENT (run as root)");
        let (_, peer) = accepted.unwrap();
        assert_eq!(peer.ip(), from);
    }

    #[test]
    fn mapped_addresses_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:22".parse().unwrap();
        assert_eq!(
            unmapped(mapped),
            "10.1.2.3:22".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[fd00::1]:22".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }
}
