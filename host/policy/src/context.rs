//! The context the host computes for each request, because Cedar cannot: local time in the
//! configured time zone, the client's address, the protocol, how the user authenticated, whether a
//! plugin verified a ticket, and the channel in question.

use crate::PolicyError;
use crate::schema::schema;
use cedar_policy::{Context, EntityUid};
use serde_json::{Value, json};
use std::net::SocketAddr;

/// Local time as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    pub weekday: &'static str,
    pub hour: i64,
    pub minute: i64,
    pub date: String,
    pub zone: String,
}

/// Turns instants into [`LocalTime`] in the gateway's time zone.
#[derive(Debug, Clone)]
pub struct Clock {
    zone: jiff::tz::TimeZone,
    name: String,
}

impl Clock {
    /// `name` is an IANA zone ("Europe/Berlin"); `None` is the system's zone.
    pub fn new(name: Option<&str>) -> Result<Self, PolicyError> {
        match name {
            Some(n) => {
                let zone = jiff::tz::TimeZone::get(n)
                    .map_err(|e| PolicyError::Config(format!("time zone `{n}`: {e}")))?;
                Ok(Clock {
                    zone,
                    name: n.to_string(),
                })
            }
            None => {
                let zone = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
                let name = zone.iana_name().unwrap_or("UTC").to_string();
                Ok(Clock { zone, name })
            }
        }
    }

    pub fn zone_name(&self) -> &str {
        &self.name
    }

    pub fn now(&self) -> LocalTime {
        self.at(jiff::Timestamp::now())
    }

    pub fn at(&self, instant: jiff::Timestamp) -> LocalTime {
        let local = instant.to_zoned_datetime(self.zone.clone());
        let weekday = match local.weekday() {
            jiff::civil::Weekday::Monday => "mon",
            jiff::civil::Weekday::Tuesday => "tue",
            jiff::civil::Weekday::Wednesday => "wed",
            jiff::civil::Weekday::Thursday => "thu",
            jiff::civil::Weekday::Friday => "fri",
            jiff::civil::Weekday::Saturday => "sat",
            jiff::civil::Weekday::Sunday => "sun",
        };
        LocalTime {
            weekday,
            hour: i64::from(local.hour()),
            minute: i64::from(local.minute()),
            date: local.date().to_string(),
            zone: self.name.clone(),
        }
    }

    /// Parses `2026-11-24T10:00` (local to the zone) or an RFC 3339 instant.
    pub fn parse(&self, text: &str) -> Result<LocalTime, PolicyError> {
        if let Ok(instant) = text.parse::<jiff::Timestamp>() {
            return Ok(self.at(instant));
        }
        let civil: jiff::civil::DateTime = text
            .parse()
            .map_err(|e| PolicyError::Config(format!("time `{text}`: {e}")))?;
        let zoned = civil
            .to_zoned_datetime(self.zone.clone())
            .map_err(|e| PolicyError::Config(format!("time `{text}`: {e}")))?;
        Ok(self.at(zoned.timestamp()))
    }
}

/// What the host knows about the session a decision is made in.
#[derive(Debug, Clone)]
pub struct SessionFacts {
    pub session_id: String,
    /// "ssh", "rdp", "api"
    pub protocol: String,
    pub client: SocketAddr,
    /// The login's `key=value@` pairs.
    pub pairs: Vec<(String, String)>,
    /// "password", "publickey", plugin names.
    pub authenticated_with: Vec<String>,
    pub ticket_verified: bool,
    pub time: LocalTime,
    /// The session node the session runs on (`None`: this process serves it).
    pub node: Option<NodeFacts>,
    /// Transparent mode: where the client was connecting to (`context.destination`).
    pub destination: Option<SocketAddr>,
}

/// A session node, as Cedar sees it (`Node`): its id and the networks it manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub id: String,
    pub networks: Vec<String>,
}

fn entity(uid: &EntityUid) -> Value {
    json!({ "__entity": { "type": uid.type_name().to_string(), "id": uid.id().unescaped() } })
}

/// `Time` of the schema, as JSON.
pub fn time_value(t: &LocalTime) -> Value {
    json!({
        "weekday": t.weekday,
        "hour": t.hour,
        "minute": t.minute,
        "date": t.date,
        "zone": t.zone,
    })
}

pub(crate) fn client_value(client: &SocketAddr) -> Value {
    json!({
        "ip": { "__extn": { "fn": "ip", "arg": client.ip().to_string() } },
        "port": client.port(),
    })
}

/// The uids a context refers to.
#[derive(Debug, Clone)]
pub struct ContextRefs {
    pub gateway: EntityUid,
    pub session: EntityUid,
    pub request: Option<EntityUid>,
    pub node: Option<EntityUid>,
}

/// `AccessContext` of the schema, as JSON.
pub fn access_value(facts: &SessionFacts, refs: &ContextRefs) -> Value {
    let mut v = json!({
        "protocol": facts.protocol,
        "client": client_value(&facts.client),
        "time": time_value(&facts.time),
        "gateway": entity(&refs.gateway),
        "session": entity(&refs.session),
        "authenticated_with": facts.authenticated_with,
        "ticket_verified": facts.ticket_verified,
    });
    if let Some(map) = v.as_object_mut() {
        if let Some(request) = &refs.request {
            map.insert("request".into(), entity(request));
        }
        if let Some(node) = &refs.node {
            map.insert("node".into(), entity(node));
        }
        if let Some(destination) = &facts.destination {
            map.insert("destination".into(), client_value(destination));
        }
    }
    v
}

/// One SSH channel or channel request, a decision point each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRequest {
    Shell,
    Exec { command: String },
    Subsystem { name: String },
    DirectTcpip { host: String, port: u32 },
    ForwardedTcpip { host: String, port: u32 },
    X11,
    Agent,
}

impl ChannelRequest {
    /// The Cedar action id.
    pub fn action(&self) -> &'static str {
        match self {
            ChannelRequest::Shell => "ssh_shell",
            ChannelRequest::Exec { .. } => "ssh_exec",
            ChannelRequest::Subsystem { .. } => "ssh_subsystem",
            ChannelRequest::DirectTcpip { .. } => "ssh_direct_tcpip",
            ChannelRequest::ForwardedTcpip { .. } => "ssh_forwarded_tcpip",
            ChannelRequest::X11 => "ssh_x11",
            ChannelRequest::Agent => "ssh_agent",
        }
    }

    /// The `context.channel.kind` value.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelRequest::Shell => "shell",
            ChannelRequest::Exec { .. } => "exec",
            ChannelRequest::Subsystem { .. } => "subsystem",
            ChannelRequest::DirectTcpip { .. } => "direct-tcpip",
            ChannelRequest::ForwardedTcpip { .. } => "forwarded-tcpip",
            ChannelRequest::X11 => "x11",
            ChannelRequest::Agent => "agent",
        }
    }

    fn value(&self) -> Value {
        let mut v = json!({ "kind": self.kind() });
        if let Some(map) = v.as_object_mut() {
            match self {
                ChannelRequest::Exec { command } => {
                    map.insert("command".into(), json!(command));
                }
                ChannelRequest::Subsystem { name } => {
                    map.insert("subsystem".into(), json!(name));
                }
                ChannelRequest::DirectTcpip { host, port }
                | ChannelRequest::ForwardedTcpip { host, port } => {
                    map.insert("host".into(), json!(host));
                    map.insert("port".into(), json!(port));
                }
                ChannelRequest::Shell | ChannelRequest::X11 | ChannelRequest::Agent => {}
            }
        }
        v
    }
}

/// `ChannelContext` of the schema, as JSON.
pub fn channel_value(facts: &SessionFacts, refs: &ContextRefs, channel: &ChannelRequest) -> Value {
    let mut v = access_value(facts, refs);
    if let Some(map) = v.as_object_mut() {
        map.insert("channel".into(), channel.value());
    }
    v
}

/// Parses a JSON context for `action`, checked against the schema.
pub fn context(value: Value, action: &EntityUid) -> Result<Context, PolicyError> {
    Context::from_json_value(value, Some((schema()?, action)))
        .map_err(|e| PolicyError::Internal(format!("context: {e}")))
}
