//! Streaming the audit trail as SNMPv2c notifications (RFC 3416 PDUs in RFC 1901 messages) over
//! UDP, for `audit_streams` entries with `snmp`. BER by `rasn` / `rasn-snmp`.
//!
//! Each event is one notification. With `inform` (the default) it is an InformRequest, and it
//! counts as delivered only once the receiver's Response with the same request-id arrives: up to
//! [`WINDOW`] informs are in flight, each sent again after [`INFORM_TIMEOUT`] (doubling) up to
//! [`INFORM_TRIES`] times; the stream's position moves past an event once it and every event
//! before it were answered. When they are not (the receiver is down, unreachable, or does not
//! accept the community: an SNMPv2c receiver says nothing to a community it refuses), the stream
//! backs off as the syslog stream does and sends again from its position: at least once, the
//! `seq` varbind to drop repeats by. Without `inform` it sends SNMPv2-Trap PDUs, which nothing
//! answers: an event counts as delivered once its datagram left, so delivery is best effort (a
//! receiver that is down or refuses the community loses those events).
//!
//! The varbinds of every notification, in this order:
//!
//! | OID | name | syntax |
//! | --- | --- | --- |
//! | 1.3.6.1.2.1.1.3.0 | sysUpTime.0 | TimeTicks: hundredths of a second since the stream started |
//! | 1.3.6.1.6.3.1.1.4.1.0 | snmpTrapOID.0 | OID: [`AUDIT_EVENT`] or [`AUDIT_WARNING`] |
//! | 1.3.6.1.4.1.32473.1.1.1.0 | seq | Counter64: the event's sequence number in the trail |
//! | 1.3.6.1.4.1.32473.1.1.2.0 | kind | OCTET STRING: `login_failed`, `admin_change`, ... |
//! | 1.3.6.1.4.1.32473.1.1.3.0 | time | OCTET STRING: RFC 3339, UTC, milliseconds |
//! | 1.3.6.1.4.1.32473.1.1.4.0 | user | OCTET STRING (empty when none) |
//! | 1.3.6.1.4.1.32473.1.1.5.0 | detail | OCTET STRING: the event's text |
//! | 1.3.6.1.4.1.32473.1.1.6.0 | session | OCTET STRING (empty when none) |
//! | 1.3.6.1.4.1.32473.1.1.7.0 | target | OCTET STRING (empty when none) |
//! | 1.3.6.1.4.1.32473.1.1.8.0 | client | OCTET STRING (empty when none) |
//! | 1.3.6.1.4.1.32473.1.1.9.0 | node | OCTET STRING: the cluster node (empty when none) |
//! | 1.3.6.1.4.1.32473.1.1.10.0 | host | OCTET STRING: the gateway's host name |
//! | 1.3.6.1.4.1.32473.1.1.11.0 | chain | OCTET STRING: the event's hash-chain link (hex) |
//!
//! 32473 is the documentation private enterprise number (RFC 5612), the number the syslog
//! stream's SD-ID uses. Strings are UTF-8 with control characters as spaces, the detail cut at
//! [`MAX_DETAIL`] bytes and the others at [`MAX_FIELD`], so a notification fits one datagram.
//! Audit events hold no secrets, and nothing else is added.

use crate::stream::{
    BACKOFF_MAX, CONNECT_TIMEOUT, SnmpReceiver, StreamSettings, kind_name, save_position, severity,
    wanted,
};
use gatehouse_core::AuditEvent;
use gatehouse_store::Store;
use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_smi::v1::TimeTicks;
use rasn_snmp::v2::{InformRequest, ObjectSyntax, Pdu, Pdus, Trap, VarBind, VarBindValue};
use rasn_snmp::v2c::Message;
use std::borrow::Cow;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// sysUpTime.0 (RFC 3418).
const SYS_UP_TIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
/// snmpTrapOID.0 (RFC 3418).
const SNMP_TRAP_OID: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];
/// gatehouseAuditEvent: an audit event (the syslog stream sends it at severity informational).
pub(crate) const AUDIT_EVENT: &[u32] = &[1, 3, 6, 1, 4, 1, 32473, 1, 0, 1];
/// gatehouseAuditWarning: a failure or refusal (`login_failed`, `access_denied`, ...; the
/// syslog stream sends it at severity warning).
pub(crate) const AUDIT_WARNING: &[u32] = &[1, 3, 6, 1, 4, 1, 32473, 1, 0, 2];
/// The event's objects: `1.3.6.1.4.1.32473.1.1.<n>.0`.
const OBJECTS: &[u32] = &[1, 3, 6, 1, 4, 1, 32473, 1, 1];

/// The detail varbind holds at most this many bytes.
pub(crate) const MAX_DETAIL: usize = 1024;
/// The other string varbinds hold at most this many bytes.
pub(crate) const MAX_FIELD: usize = 255;
/// Informs in flight at most (each waits for its Response).
pub(crate) const WINDOW: usize = 16;
/// An unanswered inform is sent again after this, doubling each time.
pub(crate) const INFORM_TIMEOUT: Duration = Duration::from_secs(1);
/// Sends of one inform (the first and the retries) before the receiver counts as unreachable.
pub(crate) const INFORM_TRIES: u32 = 3;
/// Traps are sent in bursts of this many, a pause between, not to flood the receiver's socket.
const TRAP_BURST: usize = 32;
const TRAP_PAUSE: Duration = Duration::from_millis(5);
/// The largest datagram read (a Response echoes the inform's varbinds).
const DATAGRAM_MAX: usize = 65_535;

/// Why a round of notifications stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnmpError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "no Response to the InformRequest after {tries} tries over {waited:.1?}: the receiver \
         is down, unreachable, or does not accept this stream's community"
    )]
    NoResponse { tries: u32, waited: Duration },
    #[error("the receiver answered the InformRequest with error-status {0}")]
    ErrorStatus(u32),
    #[error("encoding the notification: {0}")]
    Encode(String),
}

fn oid(arcs: &[u32]) -> ObjectIdentifier {
    // The arcs are the constants above and small suffixes: always a valid OID.
    ObjectIdentifier::new_unchecked(Cow::Owned(arcs.to_vec()))
}

fn object(n: u32) -> ObjectIdentifier {
    let mut arcs = OBJECTS.to_vec();
    arcs.extend([n, 0]);
    oid(&arcs)
}

/// A string varbind's bytes: control characters as spaces, at most `max` bytes, cut at a
/// character boundary.
fn text(value: &str, max: usize) -> OctetString {
    let mut out = String::with_capacity(value.len().min(max));
    for c in value.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    OctetString::from(out.into_bytes())
}

fn bind(name: ObjectIdentifier, value: impl Into<ObjectSyntax>) -> VarBind {
    VarBind {
        name,
        value: VarBindValue::Value(value.into()),
    }
}

/// The varbinds of one event's notification (the table in the module's documentation).
pub(crate) fn varbinds(event: &AuditEvent, hostname: &str, uptime: TimeTicks) -> Vec<VarBind> {
    let notification = if severity(&event.kind) <= 4 {
        AUDIT_WARNING
    } else {
        AUDIT_EVENT
    };
    let field = |value: &Option<String>| text(value.as_deref().unwrap_or(""), MAX_FIELD);
    let node = event
        .fields
        .get("node")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let time = humantime::format_rfc3339_millis(event.time.to_system_time()).to_string();
    vec![
        bind(oid(SYS_UP_TIME), uptime),
        bind(oid(SNMP_TRAP_OID), oid(notification)),
        bind(object(1), rasn_smi::v2::Counter64(event.seq)),
        bind(object(2), text(&kind_name(&event.kind), MAX_FIELD)),
        bind(object(3), text(&time, MAX_FIELD)),
        bind(object(4), field(&event.user)),
        bind(object(5), text(&event.detail, MAX_DETAIL)),
        bind(object(6), field(&event.session)),
        bind(object(7), field(&event.target)),
        bind(object(8), field(&event.client)),
        bind(object(9), text(node, MAX_FIELD)),
        bind(object(10), text(hostname, MAX_FIELD)),
        bind(object(11), field(&event.chain)),
    ]
}

/// One SNMPv2c message: an InformRequest (`inform`) or an SNMPv2-Trap.
pub(crate) fn encode(
    community: &str,
    inform: bool,
    request_id: i32,
    variable_bindings: Vec<VarBind>,
) -> Result<Vec<u8>, SnmpError> {
    let pdu = Pdu {
        request_id,
        error_status: Pdu::ERROR_STATUS_NO_ERROR,
        error_index: 0,
        variable_bindings,
    };
    let message = Message {
        version: Integer::from(Message::<()>::VERSION),
        community: OctetString::from(community.as_bytes().to_vec()),
        data: if inform {
            Pdus::InformRequest(InformRequest(pdu))
        } else {
            Pdus::Trap(Trap(pdu))
        },
    };
    rasn::ber::encode(&message).map_err(|e| SnmpError::Encode(e.to_string()))
}

/// What a receiver's Response says. It is matched to its inform by request-id (RFC 3416); the
/// socket is connected, so only the receiver's address is heard.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub request_id: i32,
    pub error_status: u32,
}

/// A received datagram, if it is an SNMPv2c Response.
pub(crate) fn decode_response(datagram: &[u8]) -> Option<Answer> {
    let message: Message<Pdus> = rasn::ber::decode(datagram).ok()?;
    if message.version != Integer::from(Message::<()>::VERSION) {
        return None;
    }
    match message.data {
        Pdus::Response(response) => Some(Answer {
            request_id: response.0.request_id,
            error_status: response.0.error_status,
        }),
        _ => None,
    }
}

/// sysUpTime: hundredths of a second since the stream started, wrapping as TimeTicks do.
fn uptime(elapsed: Duration) -> TimeTicks {
    let ticks = elapsed.as_millis() / 10;
    TimeTicks((ticks % (1u128 << 32)) as u32)
}

/// A UDP socket connected to the receiver (resolved anew for each socket).
async fn open(address: &str) -> std::io::Result<UdpSocket> {
    let resolved = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "resolving timed out"))??
        .next()
        .ok_or_else(|| std::io::Error::other(format!("`{address}` resolves to no address")))?;
    let local = if resolved.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(resolved).await?;
    Ok(socket)
}

/// One stream's sender: the socket, the request-ids, the receive buffer.
struct Sender<'a> {
    receiver: &'a SnmpReceiver,
    hostname: &'a str,
    started: Instant,
    socket: Option<UdpSocket>,
    request_id: i32,
    buffer: Vec<u8>,
}

/// An inform waiting for its Response.
struct InFlight {
    index: usize,
    request_id: i32,
    datagram: Vec<u8>,
    tries: u32,
    first_sent: Instant,
    deadline: Instant,
}

impl Sender<'_> {
    fn next_request_id(&mut self) -> i32 {
        // Positive ids, 1 after i32::MAX.
        self.request_id = self.request_id.checked_add(1).unwrap_or(1);
        self.request_id
    }

    fn datagram(&mut self, event: &AuditEvent) -> Result<(i32, Vec<u8>), SnmpError> {
        let request_id = self.next_request_id();
        let binds = varbinds(event, self.hostname, uptime(self.started.elapsed()));
        let datagram = encode(
            &self.receiver.community,
            self.receiver.inform,
            request_id,
            binds,
        )?;
        Ok((request_id, datagram))
    }

    /// Sends `events` (in trail order); `through` is set to the seq up to which every one of
    /// them was delivered, as far as they got.
    async fn deliver(
        &mut self,
        events: &[&AuditEvent],
        through: &mut Option<u64>,
    ) -> Result<(), SnmpError> {
        if self.socket.is_none() {
            self.socket = Some(open(&self.receiver.address).await?);
        }
        if self.receiver.inform {
            self.informs(events, through).await
        } else {
            self.traps(events, through).await
        }
    }

    async fn traps(
        &mut self,
        events: &[&AuditEvent],
        through: &mut Option<u64>,
    ) -> Result<(), SnmpError> {
        for (n, event) in events.iter().enumerate() {
            let (_, datagram) = self.datagram(event)?;
            let Some(socket) = &self.socket else {
                return Err(std::io::Error::other("no socket").into());
            };
            socket.send(&datagram).await?;
            *through = Some(event.seq);
            if (n + 1) % TRAP_BURST == 0 {
                tokio::time::sleep(TRAP_PAUSE).await;
            }
        }
        Ok(())
    }

    async fn informs(
        &mut self,
        events: &[&AuditEvent],
        through: &mut Option<u64>,
    ) -> Result<(), SnmpError> {
        let mut answered = vec![false; events.len()];
        let mut done = 0;
        let mut next = 0;
        let mut flight: Vec<InFlight> = Vec::with_capacity(WINDOW);
        loop {
            while flight.len() < WINDOW && next < events.len() {
                let (request_id, datagram) = self.datagram(events[next])?;
                let Some(socket) = &self.socket else {
                    return Err(std::io::Error::other("no socket").into());
                };
                socket.send(&datagram).await?;
                let now = Instant::now();
                flight.push(InFlight {
                    index: next,
                    request_id,
                    datagram,
                    tries: 1,
                    first_sent: now,
                    deadline: now + INFORM_TIMEOUT,
                });
                next += 1;
            }
            while done < events.len() && answered[done] {
                *through = Some(events[done].seq);
                done += 1;
            }
            if done == events.len() {
                return Ok(());
            }
            let Some(deadline) = flight.iter().map(|f| f.deadline).min() else {
                // Unreachable: an unanswered event is in flight or waits for a free slot.
                return Err(std::io::Error::other("no inform in flight").into());
            };
            let Some(socket) = &self.socket else {
                return Err(std::io::Error::other("no socket").into());
            };
            match tokio::time::timeout_at(deadline, socket.recv(&mut self.buffer)).await {
                Ok(Ok(length)) => {
                    let Some(answer) = decode_response(&self.buffer[..length]) else {
                        tracing::debug!("audit stream: a datagram that is no SNMPv2c Response");
                        continue;
                    };
                    // A Response to an inform no longer in flight repeats one already counted.
                    let Some(at) = flight
                        .iter()
                        .position(|f| f.request_id == answer.request_id)
                    else {
                        continue;
                    };
                    if answer.error_status != Pdu::ERROR_STATUS_NO_ERROR {
                        return Err(SnmpError::ErrorStatus(answer.error_status));
                    }
                    answered[flight.swap_remove(at).index] = true;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    let now = Instant::now();
                    for inform in flight.iter_mut().filter(|f| f.deadline <= now) {
                        if inform.tries >= INFORM_TRIES {
                            return Err(SnmpError::NoResponse {
                                tries: inform.tries,
                                waited: now - inform.first_sent,
                            });
                        }
                        socket.send(&inform.datagram).await?;
                        inform.deadline = now + INFORM_TIMEOUT * 2u32.pow(inform.tries);
                        inform.tries += 1;
                    }
                }
            }
        }
    }
}

/// Sends the trail to an SNMP receiver from `start` on, until the task is dropped.
pub(crate) async fn stream_loop(
    store: &Store,
    settings: &StreamSettings,
    receiver: &SnmpReceiver,
    hostname: &str,
    start: u64,
) {
    let mut sender = Sender {
        receiver,
        hostname,
        started: Instant::now(),
        socket: None,
        request_id: 0,
        buffer: vec![0; DATAGRAM_MAX],
    };
    let mut position = start;
    let mut backoff = Duration::from_millis(500);
    let mut reachable = true;
    loop {
        let Some((events, last)) = crate::stream::next_batch(store, settings, position).await
        else {
            continue;
        };
        let chosen: Vec<&AuditEvent> = events.iter().filter(|e| wanted(settings, e)).collect();
        let mut through = None;
        let delivered = if chosen.is_empty() {
            Ok(())
        } else {
            sender.deliver(&chosen, &mut through).await
        };
        match delivered {
            Ok(()) => {
                if !reachable {
                    tracing::info!(stream = %settings.name, receiver = %settings.receiver, "the audit stream's receiver is back");
                    reachable = true;
                }
                backoff = Duration::from_millis(500);
                position = last;
                save_position(store, settings, last);
            }
            Err(e) => {
                sender.socket = None;
                if let Some(seq) = through {
                    position = seq;
                    save_position(store, settings, seq);
                    backoff = Duration::from_millis(500);
                }
                if reachable {
                    tracing::warn!(stream = %settings.name, receiver = %settings.receiver, error = %e, "the audit stream's receiver cannot be reached; events wait in the trail");
                    reachable = false;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::AuditKind;
    use gatehouse_core::time::Timestamp;
    use rasn_snmp::v2::Response;

    fn event() -> AuditEvent {
        let mut fields = serde_json::Map::new();
        fields.insert("node".into(), "sess-a".into());
        AuditEvent {
            seq: 42,
            time: Timestamp(1_796_000_000_123),
            kind: AuditKind::LoginFailed,
            session: Some("s-1".into()),
            user: Some("alice".into()),
            target: None,
            client: Some("10.0.0.9:50000".into()),
            detail: "wrong password\nfor alice".into(),
            fields,
            chain: Some("ab".into()),
        }
    }

    fn string(bind: &VarBind) -> String {
        match &bind.value {
            VarBindValue::Value(ObjectSyntax::Simple(rasn_smi::v2::SimpleSyntax::String(s))) => {
                String::from_utf8(s.to_vec()).unwrap_or_default()
            }
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn an_event_is_a_notification_with_its_varbinds() {
        let binds = varbinds(&event(), "gw1", TimeTicks(1234));
        let names: Vec<String> = binds.iter().map(|b| b.name.to_string()).collect();
        assert_eq!(names[0], "1.3.6.1.2.1.1.3.0");
        assert_eq!(names[1], "1.3.6.1.6.3.1.1.4.1.0");
        for (i, name) in names[2..].iter().enumerate() {
            assert_eq!(name, &format!("1.3.6.1.4.1.32473.1.1.{}.0", i + 1));
        }
        assert_eq!(
            binds[1].value,
            VarBindValue::Value(oid(AUDIT_WARNING).into())
        );
        assert_eq!(
            binds[2].value,
            VarBindValue::Value(rasn_smi::v2::Counter64(42).into())
        );
        let texts: Vec<String> = binds[3..].iter().map(string).collect();
        assert_eq!(
            texts,
            [
                "login_failed",
                "2026-11-30T00:53:20.123Z",
                "alice",
                "wrong password for alice",
                "s-1",
                "",
                "10.0.0.9:50000",
                "sess-a",
                "gw1",
                "ab"
            ]
        );
        let mut ok = event();
        ok.kind = AuditKind::LoginOk;
        assert_eq!(
            varbinds(&ok, "gw1", TimeTicks(0))[1].value,
            VarBindValue::Value(oid(AUDIT_EVENT).into())
        );
    }

    #[test]
    fn strings_are_cut_at_a_character_boundary() {
        let mut long = event();
        long.detail = "é".repeat(2000);
        let binds = varbinds(&long, &"h".repeat(300), TimeTicks(0));
        let detail = string(&binds[6]);
        assert_eq!(detail.len(), MAX_DETAIL);
        assert!(detail.chars().all(|c| c == 'é'));
        assert_eq!(string(&binds[11]).len(), MAX_FIELD);
    }

    #[test]
    fn an_inform_is_ber_as_net_snmp_reads_it() {
        let datagram = encode(
            "public",
            true,
            7,
            vec![bind(oid(SYS_UP_TIME), TimeTicks(5))],
        )
        .unwrap();
        // SEQUENCE { INTEGER 1, OCTET STRING "public", [6] { 7, 0, 0, { { sysUpTime.0, TimeTicks 5 } } } }
        let expected: &[u8] = &[
            0x30, 0x27, 0x02, 0x01, 0x01, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa6,
            0x1a, 0x02, 0x01, 0x07, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x0f, 0x30, 0x0d,
            0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x03, 0x00, 0x43, 0x01, 0x05,
        ];
        assert_eq!(datagram, expected);
        let trap = encode("public", false, 7, vec![]).unwrap();
        assert_eq!(trap[13], 0xa7, "{trap:02x?}");
        // A whole notification encodes and decodes back.
        let full = encode("c", true, 9, varbinds(&event(), "gw1", TimeTicks(1))).unwrap();
        let back: Message<Pdus> = rasn::ber::decode(&full).unwrap();
        let Pdus::InformRequest(InformRequest(pdu)) = back.data else {
            panic!("not an inform")
        };
        assert_eq!(
            pdu.variable_bindings,
            varbinds(&event(), "gw1", TimeTicks(1))
        );
    }

    #[test]
    fn a_response_is_read_and_anything_else_is_not() {
        let response = Message {
            version: Integer::from(1),
            community: OctetString::from(b"public".to_vec()),
            data: Pdus::Response(Response(Pdu {
                request_id: 1_000_000,
                error_status: 0,
                error_index: 0,
                variable_bindings: varbinds(&event(), "gw1", TimeTicks(3)),
            })),
        };
        let bytes = rasn::ber::encode(&response).unwrap();
        assert_eq!(
            decode_response(&bytes),
            Some(Answer {
                request_id: 1_000_000,
                error_status: 0,
            })
        );
        let inform = encode("public", true, 5, vec![]).unwrap();
        assert_eq!(decode_response(&inform), None);
        assert_eq!(decode_response(b"\x30\x03\x02\x01"), None);
        assert_eq!(decode_response(&[]), None);
    }

    #[test]
    fn uptime_counts_hundredths_and_wraps_like_timeticks() {
        assert_eq!(uptime(Duration::from_millis(12_345)), TimeTicks(1234));
        let wrap = Duration::from_millis((1u64 << 32) * 10 + 50);
        assert_eq!(uptime(wrap), TimeTicks(5));
    }
}
