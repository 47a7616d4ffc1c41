//! Splits a fuzz input into the chunks one SSH channel relays in each direction, in relay order:
//! records of `[direction][length u16 BE][bytes]`, direction byte even for client to server.
#![allow(dead_code)]

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    ClientToServer,
    ServerToClient,
}

pub fn records(mut data: &[u8]) -> Vec<(Way, &[u8])> {
    let mut out = Vec::new();
    while let [way, high, low, rest @ ..] = data {
        let length = usize::from(u16::from_be_bytes([*high, *low])).min(rest.len());
        let (chunk, tail) = rest.split_at(length);
        let way = if way % 2 == 0 {
            Way::ClientToServer
        } else {
            Way::ServerToClient
        };
        out.push((way, chunk));
        data = tail;
    }
    out
}

/// Encodes records in the same format (for seed generation and documentation).
pub fn encode(records: &[(Way, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (way, chunk) in records {
        out.push(match way {
            Way::ClientToServer => 0,
            Way::ServerToClient => 1,
        });
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}
