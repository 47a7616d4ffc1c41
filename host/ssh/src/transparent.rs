//! Transparent mode: clients connect to a server's own address and a router sends the
//! connection to the gateway (iptables `REDIRECT`, or `TPROXY` with a transparent listener).
//! The gateway takes the original destination (`SO_ORIGINAL_DST` for a redirected connection,
//! the socket's local address for TPROXY), maps it to the asset at that address and port, and
//! completes the in-band login with it: the user logs in as `alice@root` (options before the
//! name as usual). Naming an asset is allowed only when it is that one. Cedar sees the original
//! destination (`context.destination`).

use gatehouse_core::Name;
use gatehouse_store::{ASSETS, Store};
use std::net::{IpAddr, SocketAddr};

/// Where a transparent connection was going.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The address and port the client connected to.
    pub destination: SocketAddr,
    /// The asset at that address and SSH port, if any.
    pub asset: Option<Name>,
}

pub use gatehouse_net::original_destination;

/// The asset whose address is `destination`'s IP (an address written as an IP) and whose
/// port for the protocol (`port_of`: its SSH port, its Telnet port, ...) is its port.
pub fn asset_at(
    store: &Store,
    destination: SocketAddr,
    port_of: impl Fn(&gatehouse_core::Asset) -> Option<u16>,
) -> Option<Name> {
    let assets: Vec<gatehouse_core::Asset> = match store.list(&ASSETS) {
        Ok(assets) => assets,
        Err(e) => {
            tracing::error!(error = %e, "reading assets for a transparent connection");
            return None;
        }
    };
    assets
        .into_iter()
        .find(|a| {
            port_of(a) == Some(destination.port())
                && a.address.parse::<IpAddr>().ok() == Some(destination.ip())
        })
        .map(|a| a.name)
}

/// Why a transparent login cannot be completed: the line the user reads.
#[derive(Debug)]
pub(crate) struct NotHere(pub String);

/// The in-band login `username` completed with the asset the connection was going to
/// (`LoginSpec::complete_transparent`).
pub(crate) fn complete(username: &str, arrival: &Arrival) -> Result<String, NotHere> {
    gatehouse_core::LoginSpec::complete_transparent(
        username,
        arrival.asset.as_ref(),
        &arrival.destination.to_string(),
    )
    .map_err(NotHere)
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn arrival(asset: Option<&str>) -> Arrival {
        Arrival {
            destination: "10.0.0.5:22"
                .parse()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            asset: asset.and_then(|a| Name::new(a).ok()),
        }
    }

    #[test]
    fn the_asset_completes_the_login() {
        let here = arrival(Some("db1"));
        let cases = [
            ("alice@root", Ok("alice@root@db1")),
            ("otp=123@alice@root", Ok("otp=123@alice@root@db1")),
            ("alice@root@db1", Ok("alice@root@db1")),
            ("watch=0190@alice", Ok("watch=0190@alice")),
            (
                "alice@root@db2",
                Err("transparent mode the target is the server"),
            ),
            ("alice", Err("log in as USER@ACCOUNT")),
        ];
        for (given, want) in cases {
            match (complete(given, &here), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{given}"),
                (Err(NotHere(line)), Err(want)) => assert!(line.contains(want), "{given}: {line}"),
                (got, want) => panic!("{given}: {got:?}, wanted {want:?}"),
            }
        }
        let nowhere = arrival(None);
        let Err(NotHere(line)) = complete("alice@root", &nowhere) else {
            panic!("an unmanaged destination completed a login");
        };
        assert!(
            line.contains("is unknown or you are not permitted"),
            "{line}"
        );
    }
}
