//! The RDP relay's inspection of client PDUs (gatehouse-rdp `relay`): the MCS Connect Initial
//! fix-up, the Client Info rewrite that keeps the gateway user's credentials from the target and
//! the recording, and the Confirm Active steering for decodable recordings.
//!
//! Input: one byte of options (steering, the protocol the target selected), then one client PDU.
//!
//! Properties: no panic; each rewrite is one whole TPKT message of its own length, can be
//! rewritten again (to the same bytes for the Client Info and the Confirm Active, to the same
//! length for the Connect Initial), and says what it must: the Connect Initial
//! carries the target's selection and, when steering, no graphics-pipeline flag; the Client Info
//! names the target account with an empty password and no password cookie; a steered Confirm
//! Active has all drawing orders off and no bitmap codecs.
#![no_main]

use gatehouse_rdp::fuzzing::{self, Steered};
use ironrdp_pdu::gcc::ClientEarlyCapabilityFlags;
use ironrdp_pdu::mcs::{ConnectInitial, SendDataRequest};
use ironrdp_pdu::nego::SecurityProtocol;
use ironrdp_pdu::rdp::ClientInfoPdu;
use ironrdp_pdu::rdp::capability_sets::CapabilitySet;
use ironrdp_pdu::rdp::headers::{ShareControlHeader, ShareControlPdu};
use ironrdp_pdu::x224::{X224, X224Data};
use libfuzzer_sys::fuzz_target;

const USER: &str = "svc-target";
const DOMAIN: &str = "CORP";

fn one_message(bytes: &[u8]) {
    let info = ironrdp_pdu::find_size(bytes)
        .expect("a rewrite frames")
        .expect("a rewrite is whole");
    assert_eq!(info.length, bytes.len());
    assert!(bytes.len() <= fuzzing::MAX_MESSAGE);
}

fn check_connect_initial(pdu: &[u8], selected: SecurityProtocol, steer: bool) {
    let Ok(fixed) = fuzzing::fix_connect_initial(pdu, selected, steer) else {
        return;
    };
    one_message(&fixed);
    let data: X224<X224Data<'_>> = ironrdp_pdu::decode(&fixed).expect("the fix-up decodes");
    let initial: ConnectInitial =
        ironrdp_pdu::decode(data.0.data.as_ref()).expect("its Connect Initial decodes");
    let core = &initial.conference_create_request.gcc_blocks().core;
    assert_eq!(core.optional_data.server_selected_protocol, Some(selected));
    if steer && let Some(flags) = core.optional_data.early_capability_flags {
        assert!(!flags.contains(ClientEarlyCapabilityFlags::SUPPORT_DYN_VC_GFX_PROTOCOL));
    }
    // Fixing the output again succeeds and keeps its length. It may differ in bytes: ironrdp-pdu
    // writes the 64-byte clientDigProductId as its UTF-16 cut to 62 bytes and a NUL, which can cut
    // a surrogate pair; the lone surrogate left decodes as U+FFFD the next time (docs/FUZZING.md).
    let again =
        fuzzing::fix_connect_initial(&fixed, selected, steer).expect("a fix-up fixes again");
    assert_eq!(again.len(), fixed.len(), "fixing again changes the length");
}

fn check_client_info(pdu: &[u8]) {
    let Ok(Some(rewritten)) = fuzzing::rewrite_client_info(pdu, USER, Some(DOMAIN)) else {
        return;
    };
    one_message(&rewritten);
    let request: X224<SendDataRequest<'_>> =
        ironrdp_pdu::decode(&rewritten).expect("the rewrite decodes");
    let info: ClientInfoPdu =
        ironrdp_pdu::decode(request.0.user_data.as_ref()).expect("its Client Info decodes");
    let credentials = &info.client_info.credentials;
    assert_eq!(credentials.username, USER);
    assert_eq!(credentials.domain.as_deref(), Some(DOMAIN));
    assert!(
        credentials.password.is_empty(),
        "a password reaches the target"
    );
    assert!(
        info.client_info.password_cookie.is_none(),
        "a password cookie reaches the target"
    );
    let again = fuzzing::rewrite_client_info(&rewritten, USER, Some(DOMAIN))
        .expect("a rewrite rewrites again")
        .expect("a rewrite is a Client Info");
    assert_eq!(again, rewritten, "the rewrite is not idempotent");
}

fn check_confirm_active(pdu: &[u8]) {
    let Steered::Rewritten(steered) = fuzzing::steer_confirm_active(pdu) else {
        return;
    };
    one_message(&steered);
    let request: X224<SendDataRequest<'_>> =
        ironrdp_pdu::decode(&steered).expect("the steered PDU decodes");
    let header: ShareControlHeader =
        ironrdp_pdu::decode(request.0.user_data.as_ref()).expect("its Share Control decodes");
    let ShareControlPdu::ClientConfirmActive(confirm) = &header.share_control_pdu else {
        panic!("steering made something else of a Confirm Active");
    };
    for set in &confirm.pdu.capability_sets {
        match set {
            CapabilitySet::Order(order) => {
                let body = ironrdp_pdu::encode_vec(order).expect("the Order set encodes");
                let support = body.get(32..64).expect("an Order set has orderSupport");
                assert!(support.iter().all(|&b| b == 0), "drawing orders left on");
            }
            CapabilitySet::BitmapCodecs(codecs) => assert!(codecs.0.is_empty(), "codecs left"),
            _ => {}
        }
    }
    match fuzzing::steer_confirm_active(&steered) {
        Steered::Rewritten(again) => assert_eq!(again, steered, "steering is not idempotent"),
        other => panic!("a steered Confirm Active steers again as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, pdu)) = data.split_first() else {
        return;
    };
    let steer = options & 1 != 0;
    let selected = match (options >> 1) % 4 {
        0 => SecurityProtocol::HYBRID,
        1 => SecurityProtocol::HYBRID_EX,
        2 => SecurityProtocol::SSL,
        _ => SecurityProtocol::HYBRID | SecurityProtocol::HYBRID_EX,
    };
    check_connect_initial(pdu, selected, steer);
    check_client_info(pdu);
    check_confirm_active(pdu);
});
