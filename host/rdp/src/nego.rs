//! The X.224 connection request and confirm (RDP security negotiation): what the client offers,
//! what the gateway answers, and the negotiation failure a client without NLA gets.

use crate::framing::{Expect, FrameError, Framed};
use ironrdp_pdu::nego::{
    ConnectionConfirm, ConnectionRequest, FailureCode, ResponseFlags, SecurityProtocol,
};
use ironrdp_pdu::x224::X224;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The NLA protocols: CredSSP, with or without the Early User Authorization Result.
pub(crate) fn offers_nla(protocol: SecurityProtocol) -> bool {
    protocol.intersects(SecurityProtocol::HYBRID | SecurityProtocol::HYBRID_EX)
}

/// What the gateway selects among the client's offers: HYBRID_EX when offered (it lets the
/// gateway tell the client "access denied" after authentication), else HYBRID.
pub(crate) fn select(protocol: SecurityProtocol) -> Option<SecurityProtocol> {
    if protocol.contains(SecurityProtocol::HYBRID_EX) {
        Some(SecurityProtocol::HYBRID_EX)
    } else if protocol.contains(SecurityProtocol::HYBRID) {
        Some(SecurityProtocol::HYBRID)
    } else {
        None
    }
}

/// A readable name for a protocol set, for the audit trail: `RDP` (standard security) when empty.
pub(crate) fn describe(protocol: SecurityProtocol) -> String {
    if protocol.is_standard_rdp_security() {
        "RDP".to_string()
    } else {
        protocol.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum NegoError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) async fn read_connection_request<S: AsyncRead + Unpin>(
    framed: &mut Framed<S>,
) -> Result<ConnectionRequest, NegoError> {
    let message = framed.read_message(Expect::Rdp).await?;
    let request: X224<ConnectionRequest> =
        ironrdp_pdu::decode(&message).map_err(|e| NegoError::Malformed {
            what: "X.224 connection request",
            reason: e.to_string(),
        })?;
    Ok(request.0)
}

pub(crate) async fn read_connection_confirm<S: AsyncRead + Unpin>(
    framed: &mut Framed<S>,
) -> Result<ConnectionConfirm, NegoError> {
    let message = framed.read_message(Expect::Rdp).await?;
    let confirm: X224<ConnectionConfirm> =
        ironrdp_pdu::decode(&message).map_err(|e| NegoError::Malformed {
            what: "X.224 connection confirm",
            reason: e.to_string(),
        })?;
    Ok(confirm.0)
}

pub(crate) async fn write_pdu<S, P>(stream: &mut S, pdu: &P) -> Result<(), NegoError>
where
    S: AsyncWrite + Unpin,
    P: ironrdp_pdu::Encode,
{
    let bytes = ironrdp_pdu::encode_vec(pdu).map_err(|e| NegoError::Malformed {
        what: "outgoing PDU",
        reason: e.to_string(),
    })?;
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    Ok(())
}

/// Accepts the client's offer with `selected`.
pub(crate) async fn confirm<S: AsyncWrite + Unpin>(
    stream: &mut S,
    selected: SecurityProtocol,
) -> Result<(), NegoError> {
    let response = ConnectionConfirm::Response {
        flags: ResponseFlags::EXTENDED_CLIENT_DATA_SUPPORTED
            | ResponseFlags::DYNVC_GFX_PROTOCOL_SUPPORTED,
        protocol: selected,
    };
    write_pdu(stream, &X224(response)).await
}

/// Tells a client that offered no NLA that the gateway requires it (RDP_NEG_FAILURE,
/// HYBRID_REQUIRED_BY_SERVER), which clients show as a negotiation failure.
pub(crate) async fn refuse_without_nla<S: AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<(), NegoError> {
    let failure = ConnectionConfirm::Failure {
        code: FailureCode::HYBRID_REQUIRED_BY_SERVER,
    };
    write_pdu(stream, &X224(failure)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_prefers_hybrid_ex_and_requires_nla() {
        let all = SecurityProtocol::SSL | SecurityProtocol::HYBRID | SecurityProtocol::HYBRID_EX;
        assert_eq!(select(all), Some(SecurityProtocol::HYBRID_EX));
        assert_eq!(
            select(SecurityProtocol::SSL | SecurityProtocol::HYBRID),
            Some(SecurityProtocol::HYBRID)
        );
        assert_eq!(select(SecurityProtocol::SSL), None);
        assert_eq!(select(SecurityProtocol::empty()), None);
        assert_eq!(describe(SecurityProtocol::empty()), "RDP");
    }

    #[tokio::test]
    async fn the_refusal_is_a_negotiation_failure_with_code_5() {
        let mut out = Vec::new();
        refuse_without_nla(&mut out).await.unwrap();
        // TPKT (19 bytes), X.224 CC, then RDP_NEG_FAILURE: type 3, flags 0, length 8, code 5.
        assert_eq!(&out[..4], &[3, 0, 0, 19]);
        assert_eq!(&out[11..], &[3, 0, 8, 0, 5, 0, 0, 0]);
    }
}
