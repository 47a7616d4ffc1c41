//! Recorded PDUs back to frames: [`Replayer`] reads the connection parameters out of the
//! recording itself (MCS Connect Initial and Response, Attach User Confirm, Client Info,
//! Demand Active), drives IronRDP's client `ActiveStage` with the target's PDUs, keeps the
//! decoded screen, and counts what it could not decode so that a session whose graphics do
//! not decode is flagged ([`Verdict`]) instead of silently producing garbage. Whatever
//! `ActiveStage` wants to send back to the target is dropped: this is playback.

use crate::pdus::{Direction, Framing, Pdu, PduError, PduReader};
use ironrdp_graphics::image_processing::PixelFormat;
use ironrdp_pdu::mcs::{ConnectInitial, ConnectResponse, McsMessage, SendDataRequest};
use ironrdp_pdu::rdp::ClientInfoPdu;
use ironrdp_pdu::rdp::capability_sets::CapabilitySet;
use ironrdp_pdu::rdp::client_info::{ClientInfoFlags, CompressionType};
use ironrdp_pdu::rdp::headers::{ShareControlHeader, ShareControlPdu};
use ironrdp_pdu::x224::{X224, X224Data};
use ironrdp_pdu::{Action, gcc::ClientEarlyCapabilityFlags};
use ironrdp_session::image::DecodedImage;
use ironrdp_session::{ActiveStage, ActiveStageBuilder, ActiveStageOutput};
use ironrdp_svc::StaticChannelSet;
use std::io::Read;
use std::time::Duration;

/// The largest desktop accepted from a Demand Active (memory for one frame stays bounded).
pub const MAX_DESKTOP: u16 = 8192;
/// The default static virtual channel chunk size (CHANNEL_CHUNK_LENGTH).
const CHUNK_SIZE: usize = 1600;
const EGFX_CHANNEL: &[u8] = b"Microsoft::Windows::RDS::Graphics";

/// The decoded screen at some moment.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// `width * height` pixels, 4 bytes each: red, green, blue, alpha (255 wherever the target
    /// drew; the screen starts all zero, transparent black, until it does).
    pub rgba: &'a [u8],
    pub width: u16,
    pub height: u16,
    /// When the screen last changed (time since the relay started).
    pub at: Duration,
}

impl Frame<'_> {
    /// The frame as a PNG (RGB: what was never drawn is black).
    pub fn png(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut encoder =
            png::Encoder::new(&mut out, u32::from(self.width), u32::from(self.height));
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let rgb: Vec<u8> = self
            .rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }
}

/// Whether a recording's graphics could be decoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// Every graphics update decoded.
    Decodable,
    /// Frames were decoded, but some updates were skipped or failed: parts of the screen may be
    /// stale.
    Partially(String),
    /// No trustworthy frame can be produced.
    NotDecodable(String),
}

/// What the replayer saw and could not decode.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecodeStats {
    /// PDUs fed.
    pub pdus: u64,
    /// Activations (Demand Active PDUs) seen; more than one means a reactivation.
    pub activations: u32,
    /// Target PDUs carrying graphics updates (fast-path or slow-path).
    pub graphics_pdus: u64,
    /// Graphics PDUs that changed the screen.
    pub decoded_pdus: u64,
    /// Graphics PDUs the decoder refused (the first error is kept).
    pub failed_pdus: u64,
    /// Drawing-order updates, which are not decoded (the steering turns them off).
    pub skipped_orders: u64,
    /// Graphics PDUs that arrived before any activation.
    pub before_activation: u64,
    /// Raw chunks from the target that the relay could not frame.
    pub undecodable_chunks: u64,
    /// The client asked for the graphics pipeline (EGFX) in its Connect Initial.
    pub gfx_offered: bool,
    /// The target opened the graphics pipeline channel: graphics go through EGFX, which this
    /// replayer does not decode.
    pub gfx_opened: bool,
    pub first_error: Option<String>,
}

#[derive(Default)]
struct Connection {
    client_desktop: Option<(u16, u16)>,
    /// Index of `drdynvc` among the client's channels.
    drdynvc_index: Option<usize>,
    connect_response: bool,
    io_channel: Option<u16>,
    message_channel: Option<u16>,
    drdynvc_channel: Option<u16>,
    user_channel: Option<u16>,
    compression: Option<CompressionType>,
    client_info: bool,
}

/// Feeds recorded PDUs to IronRDP's `ActiveStage` and keeps the decoded screen.
pub struct Replayer {
    connection: Connection,
    stage: Option<ActiveStage>,
    image: Option<DecodedImage>,
    /// The desktop size the last activation set; the image has it once made.
    size: Option<(u16, u16)>,
    /// Only the verdict is wanted: the frame buffer is made when the first PDU needs it, so a
    /// session that never draws (a login check, `+auth-only`) costs no full-screen buffer.
    check_only: bool,
    changed_at: Duration,
    last_at: Duration,
    stats: DecodeStats,
}

impl Default for Replayer {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a recording could not be replayed at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Recording(#[from] PduError),
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    match bytes.get(offset..offset.checked_add(2)?)? {
        &[a, b] => Some(u16::from_le_bytes([a, b])),
        _ => None,
    }
}

/// What a target PDU on the I/O channel carries, from its headers alone.
enum IoKind {
    DemandActive,
    DeactivateAll,
    /// A slow-path graphics update; `orders` when its updateType is UPDATETYPE_ORDERS.
    Graphics {
        orders: bool,
    },
    /// A slow-path pointer update.
    Pointer,
    /// Licensing, finalization, session info, ...: nothing for the screen.
    Other,
}

fn io_kind(user_data: &[u8]) -> IoKind {
    let Some(pdu_type) = u16_at(user_data, 2) else {
        return IoKind::Other;
    };
    match pdu_type & 0xf {
        0x1 => IoKind::DemandActive,
        0x6 => IoKind::DeactivateAll,
        0x7 => {
            let pdu_type2 = user_data.get(14).copied();
            let compressed = user_data.get(15).is_some_and(|c| c & 0x20 != 0);
            match pdu_type2 {
                // PDUTYPE2_UPDATE: updateType follows the 18-byte headers, unless compressed.
                Some(0x02) => IoKind::Graphics {
                    orders: !compressed && u16_at(user_data, 18) == Some(0),
                },
                Some(0x1b) => IoKind::Pointer,
                _ => IoKind::Other,
            }
        }
        _ => IoKind::Other,
    }
}

/// Counts a fast-path output PDU's updates: (visual updates, drawing-order updates), or
/// `None` if its framing is broken.
fn fast_path_updates(bytes: &[u8]) -> Option<(u32, u32)> {
    let first = *bytes.get(1)?;
    let mut offset = if first & 0x80 != 0 { 3 } else { 2 };
    let (mut visual, mut orders) = (0u32, 0u32);
    while offset < bytes.len() {
        let header = *bytes.get(offset)?;
        offset += 1;
        if (header >> 6) & 0x2 != 0 {
            offset += 1; // compressionFlags
        }
        let size = usize::from(u16_at(bytes, offset)?);
        offset = offset.checked_add(2)?.checked_add(size)?;
        if offset > bytes.len() {
            return None;
        }
        match header & 0xf {
            0x0 => {
                orders += 1;
                visual += 1;
            }
            0x1 | 0x2 | 0x4 => visual += 1,
            _ => {}
        }
    }
    Some((visual, orders))
}

impl Replayer {
    pub fn new() -> Self {
        Replayer {
            connection: Connection::default(),
            stage: None,
            image: None,
            size: None,
            check_only: false,
            changed_at: Duration::ZERO,
            last_at: Duration::ZERO,
            stats: DecodeStats::default(),
        }
    }

    /// Replays a whole recording.
    pub fn replay<R: Read>(reader: &mut PduReader<R>) -> Result<Replayer, ReplayError> {
        let mut replayer = Replayer::new();
        while let Some(pdu) = reader.next_pdu()? {
            replayer.feed(&pdu);
        }
        Ok(replayer)
    }

    /// Replays a whole recording for its verdict only (see [`Verdict`]), without keeping a
    /// frame buffer for sessions that never draw.
    pub fn check<R: Read>(reader: &mut PduReader<R>) -> Result<Verdict, ReplayError> {
        let mut replayer = Replayer {
            check_only: true,
            ..Replayer::new()
        };
        while let Some(pdu) = reader.next_pdu()? {
            replayer.feed(&pdu);
        }
        Ok(replayer.verdict())
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// Time of the last PDU fed.
    pub fn position(&self) -> Duration {
        self.last_at
    }

    /// The current screen, once an activation set its size.
    pub fn frame(&self) -> Option<Frame<'_>> {
        let image = self.image.as_ref()?;
        Some(Frame {
            rgba: image.data(),
            width: image.width(),
            height: image.height(),
            at: self.changed_at,
        })
    }

    /// Feeds one PDU, in recording order. Returns whether the screen changed.
    pub fn feed(&mut self, pdu: &Pdu<'_>) -> bool {
        self.stats.pdus += 1;
        self.last_at = pdu.at;
        match (pdu.direction, pdu.framing) {
            (Direction::ClientToTarget, Framing::X224) => {
                self.client_pdu(pdu.bytes);
                false
            }
            (Direction::TargetToClient, Framing::X224) => self.target_slow_path(pdu),
            (Direction::TargetToClient, Framing::FastPath) => self.target_fast_path(pdu),
            (Direction::TargetToClient, Framing::Undecodable) => {
                self.stats.undecodable_chunks += 1;
                false
            }
            (Direction::ClientToTarget, _) => false,
        }
    }

    /// How the graphics of what was fed so far decode.
    pub fn verdict(&self) -> Verdict {
        let s = &self.stats;
        if s.activations == 0 {
            return Verdict::NotDecodable(
                "no activation (Server Demand Active) in the recording".into(),
            );
        }
        if s.gfx_opened {
            // From then on the screen is drawn through EGFX: whatever frame there is, is stale.
            return Verdict::NotDecodable(
                "the target drew through the graphics pipeline (EGFX), which is not decoded \
                 (recorded without steering?)"
                    .into(),
            );
        }
        let problems = self.problems();
        if s.decoded_pdus == 0 {
            let why = if s.graphics_pdus == 0 {
                "the recording has no graphics updates".to_owned()
            } else {
                format!("no graphics update decoded ({problems})")
            };
            return Verdict::NotDecodable(why);
        }
        if problems.is_empty() {
            Verdict::Decodable
        } else {
            Verdict::Partially(problems)
        }
    }

    fn problems(&self) -> String {
        let s = &self.stats;
        let mut parts = Vec::new();
        if s.failed_pdus > 0 {
            parts.push(format!(
                "{} of {} graphics PDUs failed to decode (first: {})",
                s.failed_pdus,
                s.graphics_pdus,
                s.first_error.as_deref().unwrap_or("unknown")
            ));
        }
        if s.skipped_orders > 0 {
            parts.push(format!(
                "{} drawing-order updates skipped (recorded without steering?)",
                s.skipped_orders
            ));
        }
        if s.undecodable_chunks > 0 {
            parts.push(format!(
                "{} raw chunks the relay could not frame",
                s.undecodable_chunks
            ));
        }
        parts.join("; ")
    }

    fn fail(&mut self, error: String) {
        self.stats.failed_pdus += 1;
        if self.stats.first_error.is_none() {
            self.stats.first_error = Some(error);
        }
    }

    fn client_pdu(&mut self, bytes: &[u8]) {
        let c = &mut self.connection;
        if c.client_desktop.is_none() && bytes.get(7..9) == Some(&[0x7f, 0x65][..]) {
            let Ok(X224(data)) = ironrdp_pdu::decode::<X224<X224Data<'_>>>(bytes) else {
                return;
            };
            let Ok(initial) = ironrdp_pdu::decode::<ConnectInitial>(data.data.as_ref()) else {
                return;
            };
            let blocks = initial.conference_create_request.gcc_blocks();
            c.client_desktop = Some((blocks.core.desktop_width, blocks.core.desktop_height));
            self.stats.gfx_offered = blocks
                .core
                .optional_data
                .early_capability_flags
                .is_some_and(|f| {
                    f.contains(ClientEarlyCapabilityFlags::SUPPORT_DYN_VC_GFX_PROTOCOL)
                });
            c.drdynvc_index = blocks.network.as_ref().and_then(|n| {
                n.channels.iter().position(|ch| {
                    ch.name
                        .as_bytes()
                        .iter()
                        .map(u8::to_ascii_lowercase)
                        .eq(b"drdynvc\0".iter().copied())
                })
            });
            return;
        }
        if c.client_info {
            return;
        }
        // The Client Info PDU: SEC_INFO_PKT in the security header flags.
        let Ok(X224(request)) = ironrdp_pdu::decode::<X224<SendDataRequest<'_>>>(bytes) else {
            return;
        };
        if u16_at(&request.user_data, 0).is_some_and(|flags| flags & 0x0040 != 0)
            && let Ok(info) = ironrdp_pdu::decode::<ClientInfoPdu>(request.user_data.as_ref())
        {
            c.client_info = true;
            let info = info.client_info;
            c.compression = info
                .flags
                .contains(ClientInfoFlags::COMPRESSION)
                .then_some(info.compression_type);
        }
    }

    fn target_slow_path(&mut self, pdu: &Pdu<'_>) -> bool {
        let bytes = pdu.bytes;
        let c = &mut self.connection;
        if !c.connect_response && bytes.get(7..9) == Some(&[0x7f, 0x66][..]) {
            if let Ok(X224(data)) = ironrdp_pdu::decode::<X224<X224Data<'_>>>(bytes)
                && let Ok(response) = ironrdp_pdu::decode::<ConnectResponse>(data.data.as_ref())
            {
                let blocks = response.conference_create_response.gcc_blocks();
                c.connect_response = true;
                c.io_channel = Some(blocks.network.io_channel);
                c.message_channel = blocks
                    .message_channel
                    .as_ref()
                    .map(|m| m.mcs_message_channel_id);
                c.drdynvc_channel = c
                    .drdynvc_index
                    .and_then(|i| blocks.network.channel_ids.get(i).copied());
            }
            return false;
        }
        let Ok(indication) = ironrdp_pdu::mcs::decode_send_data_indication(bytes) else {
            if c.user_channel.is_none()
                && let Ok(X224(McsMessage::AttachUserConfirm(confirm))) =
                    ironrdp_pdu::decode::<X224<McsMessage<'_>>>(bytes)
            {
                c.user_channel = Some(confirm.initiator_id);
            }
            return false;
        };
        if Some(indication.channel_id) == c.drdynvc_channel {
            if dvc_creates_egfx(indication.user_data) {
                self.stats.gfx_opened = true;
            }
            return false;
        }
        if Some(indication.channel_id) != c.io_channel {
            return false;
        }
        match io_kind(indication.user_data) {
            IoKind::DemandActive => {
                self.demand_active(indication.user_data);
                false
            }
            IoKind::DeactivateAll | IoKind::Other => false,
            IoKind::Graphics { orders } => {
                self.stats.graphics_pdus += 1;
                if orders {
                    self.stats.skipped_orders += 1;
                    return false;
                }
                self.process(pdu, Action::X224, true)
            }
            IoKind::Pointer => self.process(pdu, Action::X224, false),
        }
    }

    fn target_fast_path(&mut self, pdu: &Pdu<'_>) -> bool {
        let (visual, orders) = match fast_path_updates(pdu.bytes) {
            Some(counts) => counts,
            None => {
                self.stats.graphics_pdus += 1;
                self.fail("a fast-path PDU with broken update framing".into());
                return false;
            }
        };
        if visual == 0 {
            // Pointer, synchronize: nothing for the screen, fed for the decoder's state.
            return self.process(pdu, Action::FastPath, false);
        }
        self.stats.graphics_pdus += 1;
        self.stats.skipped_orders += u64::from(orders);
        if orders == visual {
            return false;
        }
        self.process(pdu, Action::FastPath, true)
    }

    fn demand_active(&mut self, user_data: &[u8]) {
        let header = match ironrdp_pdu::decode::<ShareControlHeader>(user_data) {
            Ok(header) => header,
            Err(e) => {
                self.fail(format!("undecodable Demand Active: {e}"));
                return;
            }
        };
        let ShareControlPdu::ServerDemandActive(demand) = header.share_control_pdu else {
            return;
        };
        let size = demand.pdu.capability_sets.iter().find_map(|set| match set {
            CapabilitySet::Bitmap(bitmap) => Some((bitmap.desktop_width, bitmap.desktop_height)),
            _ => None,
        });
        let Some((width, height)) = size.or(self.connection.client_desktop) else {
            self.fail("a Demand Active without a desktop size".into());
            return;
        };
        if width == 0 || height == 0 || width > MAX_DESKTOP || height > MAX_DESKTOP {
            self.fail(format!("a desktop of {width}x{height}"));
            return;
        }
        self.stats.activations += 1;
        let c = &self.connection;
        let io_channel = c.io_channel.unwrap_or(1003);
        let user_channel = c.user_channel.unwrap_or(1007);
        match &mut self.stage {
            Some(stage) => {
                let chunk = stage.static_channel_chunk_size();
                stage.reactivate(
                    io_channel,
                    user_channel,
                    header.share_id,
                    false,
                    true,
                    chunk,
                );
            }
            None => {
                self.stage = Some(
                    ActiveStageBuilder {
                        static_channels: StaticChannelSet::new(),
                        user_channel_id: user_channel,
                        io_channel_id: io_channel,
                        message_channel_id: c.message_channel,
                        share_id: header.share_id,
                        compression_type: c.compression,
                        enable_server_pointer: false,
                        pointer_software_rendering: true,
                    }
                    .build(),
                );
                if let Some(stage) = &mut self.stage {
                    stage.set_static_channel_chunk_size(CHUNK_SIZE);
                }
            }
        }
        self.size = Some((width, height));
        if self.check_only {
            let stale = self
                .image
                .as_ref()
                .is_some_and(|i| i.width() != width || i.height() != height);
            if stale {
                self.image = None;
            }
        } else {
            self.ensure_image();
        }
    }

    /// Makes the frame buffer at the activation's size, unless it has it already.
    fn ensure_image(&mut self) {
        let Some((width, height)) = self.size else {
            return;
        };
        let same = self
            .image
            .as_ref()
            .is_some_and(|i| i.width() == width && i.height() == height);
        if !same {
            self.image = Some(DecodedImage::new(PixelFormat::RgbA32, width, height));
        }
    }

    /// Runs one target PDU through the active stage. `graphics`: count its failure.
    fn process(&mut self, pdu: &Pdu<'_>, action: Action, graphics: bool) -> bool {
        if self.stage.is_some() {
            self.ensure_image();
        }
        let (Some(stage), Some(image)) = (&mut self.stage, &mut self.image) else {
            if graphics {
                self.stats.before_activation += 1;
            }
            return false;
        };
        match stage.process(image, action, pdu.bytes, None) {
            Ok(outputs) => {
                let changed = outputs
                    .iter()
                    .any(|o| matches!(o, ActiveStageOutput::GraphicsUpdate(_)));
                if changed {
                    self.changed_at = pdu.at;
                    self.stats.decoded_pdus += 1;
                }
                changed
            }
            Err(e) => {
                if graphics {
                    self.fail(e.to_string());
                }
                false
            }
        }
    }
}

/// Whether a `drdynvc` chunk from the target is a Create Request for the graphics pipeline
/// channel ([MS-RDPEDYC] 2.2.2.1).
fn dvc_creates_egfx(chunk: &[u8]) -> bool {
    // CHANNEL_PDU_HEADER (8 bytes), then the DVC header byte: Cmd (high 4 bits), Sp, cbChId.
    let Some(&header) = chunk.get(8) else {
        return false;
    };
    if header >> 4 != 0x1 {
        return false;
    }
    let id_len = match header & 0x3 {
        0 => 1,
        1 => 2,
        _ => 4,
    };
    chunk
        .get(9 + id_len..)
        .is_some_and(|name| name.starts_with(EGFX_CHANNEL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_update_framing_is_counted_without_panics() {
        // Header, length 1 byte, then a bitmap update (code 1, size 2) and an orders update.
        let pdu = [0x00, 12, 0x01, 2, 0, 0xaa, 0xbb, 0x00, 1, 0, 0xcc];
        assert_eq!(fast_path_updates(&pdu), Some((2, 1)));
        assert_eq!(fast_path_updates(&pdu[..6]), None);
        assert_eq!(fast_path_updates(&[]), None);
    }

    #[test]
    fn egfx_create_requests_are_recognised() {
        let mut chunk = vec![0u8; 8];
        chunk.push(0x10); // create, 1-byte channel id
        chunk.push(7);
        chunk.extend_from_slice(b"Microsoft::Windows::RDS::Graphics\0");
        assert!(dvc_creates_egfx(&chunk));
        chunk[8] = 0x30;
        assert!(!dvc_creates_egfx(&chunk));
        assert!(!dvc_creates_egfx(&chunk[..9]));
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let mut replayer = Replayer::new();
        for bytes in [
            &[][..],
            &[0xff; 3][..],
            &[3, 0, 0, 4][..],
            &[0x00, 0x05, 0x01, 0xff, 0xff][..],
        ] {
            for (direction, framing) in [
                (Direction::TargetToClient, Framing::FastPath),
                (Direction::TargetToClient, Framing::X224),
                (Direction::ClientToTarget, Framing::X224),
                (Direction::TargetToClient, Framing::Undecodable),
            ] {
                replayer.feed(&Pdu {
                    direction,
                    framing,
                    at: Duration::ZERO,
                    bytes,
                });
            }
        }
        assert!(replayer.frame().is_none());
        assert!(matches!(replayer.verdict(), Verdict::NotDecodable(_)));
    }
}
