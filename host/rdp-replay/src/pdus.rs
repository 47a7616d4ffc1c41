//! The `rdp.pdus` recording format: the magic `GHRDP1\n\0`, then per PDU a 14-byte header
//! (direction u8: 0 client→target, 1 target→client; framing u8: 0 X.224, 1 fast-path,
//! 2 undecodable; microseconds since the relay started, u64 LE; length, u32 LE) and the bytes.
//!
//! [`PduReader`] streams a recording with one reused buffer (memory bounded by [`MAX_PDU`]);
//! [`PduWriter`] writes the same format byte for byte.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

/// The first eight bytes of every recording.
pub const MAGIC: &[u8; 8] = b"GHRDP1\n\0";

/// The largest PDU a recording may hold. The relay frames at most 64 KiB (TPKT and fast-path
/// lengths are 16 and 15 bits) plus one 16 KiB read for raw chunks; anything far larger is a
/// corrupt length, refused before any allocation.
pub const MAX_PDU: usize = 1024 * 1024;

const HEADER: usize = 14;

/// Which way a PDU travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ClientToTarget,
    TargetToClient,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Direction::ClientToTarget => 0,
            Direction::TargetToClient => 1,
        }
    }
}

/// How the relay framed a PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// Slow path: TPKT, X.224, MCS.
    X224,
    FastPath,
    /// A raw chunk the relay could not frame.
    Undecodable,
}

impl Framing {
    fn byte(self) -> u8 {
        match self {
            Framing::X224 => 0,
            Framing::FastPath => 1,
            Framing::Undecodable => 2,
        }
    }
}

/// One recorded PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdu<'a> {
    pub direction: Direction,
    pub framing: Framing,
    /// Time since the relay started.
    pub at: Duration,
    pub bytes: &'a [u8],
}

/// Why a recording cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("not an RDP recording: the file starts with {found:02x?}, not the `GHRDP1` magic")]
    BadMagic { found: Vec<u8> },
    #[error("the recording is truncated at byte {offset}: {what} is cut short")]
    Truncated { offset: u64, what: &'static str },
    #[error("corrupt PDU header at byte {offset}: direction byte {value}")]
    BadDirection { offset: u64, value: u8 },
    #[error("corrupt PDU header at byte {offset}: framing byte {value}")]
    BadFraming { offset: u64, value: u8 },
    #[error(
        "corrupt PDU header at byte {offset}: a PDU of {length} bytes (the limit is {MAX_PDU})"
    )]
    TooLarge { offset: u64, length: u64 },
    #[error("i/o on the recording: {0}")]
    Io(#[from] io::Error),
}

/// Streams the PDUs of a recording, one at a time, through a single reused buffer.
pub struct PduReader<R> {
    source: R,
    buffer: Vec<u8>,
    /// Bytes consumed so far, for error messages.
    offset: u64,
}

/// A reader of a recording file as it is on disk (decrypted when it is encrypted).
pub type FileSource = io::BufReader<Box<dyn Read + Send>>;

/// Opens a recording file for reading (through `gatehouse_recording::crypt`, so an encrypted
/// recording is decrypted as it is read).
pub fn open(path: &Path) -> Result<PduReader<FileSource>, PduError> {
    let file = gatehouse_recording::crypt::open(path).map_err(|e| match e {
        gatehouse_recording::RecordingError::Io { source, .. } => PduError::Io(source),
        other => PduError::Io(io::Error::other(other.to_string())),
    })?;
    PduReader::new(io::BufReader::with_capacity(64 * 1024, file))
}

impl<R: Read> PduReader<R> {
    /// Checks the magic.
    pub fn new(mut source: R) -> Result<Self, PduError> {
        let mut magic = [0u8; 8];
        let read = read_full(&mut source, &mut magic)?;
        let found = magic.get(..read).unwrap_or_default();
        if found != MAGIC {
            return Err(PduError::BadMagic {
                found: found.to_vec(),
            });
        }
        Ok(PduReader {
            source,
            buffer: Vec::new(),
            offset: 8,
        })
    }

    /// The next PDU, or `None` at a clean end of the recording (between two PDUs).
    pub fn next_pdu(&mut self) -> Result<Option<Pdu<'_>>, PduError> {
        let mut header = [0u8; HEADER];
        let read = read_full(&mut self.source, &mut header)?;
        let at_offset = self.offset;
        if read == 0 {
            return Ok(None);
        }
        if read < HEADER {
            return Err(PduError::Truncated {
                offset: at_offset,
                what: "a PDU header",
            });
        }
        let [d, f, t0, t1, t2, t3, t4, t5, t6, t7, l0, l1, l2, l3] = header;
        let direction = match d {
            0 => Direction::ClientToTarget,
            1 => Direction::TargetToClient,
            value => {
                return Err(PduError::BadDirection {
                    offset: at_offset,
                    value,
                });
            }
        };
        let framing = match f {
            0 => Framing::X224,
            1 => Framing::FastPath,
            2 => Framing::Undecodable,
            value => {
                return Err(PduError::BadFraming {
                    offset: at_offset,
                    value,
                });
            }
        };
        let micros = u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]);
        let length = u32::from_le_bytes([l0, l1, l2, l3]);
        let length = match usize::try_from(length) {
            Ok(n) if n <= MAX_PDU => n,
            _ => {
                return Err(PduError::TooLarge {
                    offset: at_offset,
                    length: u64::from(length),
                });
            }
        };
        self.buffer.resize(length, 0);
        let read = read_full(&mut self.source, &mut self.buffer)?;
        if read < length {
            return Err(PduError::Truncated {
                offset: at_offset,
                what: "a PDU's bytes",
            });
        }
        self.offset = at_offset
            .saturating_add(HEADER as u64)
            .saturating_add(length as u64);
        Ok(Some(Pdu {
            direction,
            framing,
            at: Duration::from_micros(micros),
            bytes: &self.buffer,
        }))
    }
}

/// Reads until `buffer` is full or the source ends; returns how much was read.
fn read_full(source: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buffer.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match source.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes a recording in the same format the reader reads. Buffer the sink yourself
/// (`BufWriter`); `finish` flushes it.
pub struct PduWriter<W: Write> {
    sink: W,
}

impl<W: Write> PduWriter<W> {
    /// Writes the magic.
    pub fn new(mut sink: W) -> Result<Self, PduError> {
        sink.write_all(MAGIC)?;
        Ok(PduWriter { sink })
    }

    /// Appends one PDU. Times past `u64::MAX` microseconds saturate.
    pub fn write(&mut self, pdu: &Pdu<'_>) -> Result<(), PduError> {
        let length = u32::try_from(pdu.bytes.len())
            .ok()
            .filter(|&n| n as usize <= MAX_PDU)
            .ok_or(PduError::TooLarge {
                offset: 0,
                length: pdu.bytes.len() as u64,
            })?;
        let micros = u64::try_from(pdu.at.as_micros()).unwrap_or(u64::MAX);
        let mut header = [0u8; HEADER];
        let (kinds, rest) = header.split_at_mut(2);
        kinds.copy_from_slice(&[pdu.direction.byte(), pdu.framing.byte()]);
        let (time, len) = rest.split_at_mut(8);
        time.copy_from_slice(&micros.to_le_bytes());
        len.copy_from_slice(&length.to_le_bytes());
        self.sink.write_all(&header)?;
        self.sink.write_all(pdu.bytes)?;
        Ok(())
    }

    /// Writes what is buffered to the sink (readers following the file see it).
    pub fn flush(&mut self) -> Result<(), PduError> {
        self.sink.flush()?;
        Ok(())
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> Result<W, PduError> {
        self.sink.flush()?;
        Ok(self.sink)
    }

    pub fn get_ref(&self) -> &W {
        &self.sink
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(Direction, Framing, u64, Vec<u8>)> {
        vec![
            (
                Direction::ClientToTarget,
                Framing::X224,
                0,
                vec![3, 0, 0, 4],
            ),
            (
                Direction::TargetToClient,
                Framing::FastPath,
                1_500,
                vec![0, 3, 9],
            ),
            (
                Direction::TargetToClient,
                Framing::Undecodable,
                u64::MAX,
                vec![],
            ),
            (
                Direction::ClientToTarget,
                Framing::FastPath,
                7,
                vec![0xaa; 70_000],
            ),
        ]
    }

    /// The exact bytes the glue's own writer (host/daemon/src/rdp_glue.rs) produces.
    fn by_hand(pdus: &[(Direction, Framing, u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"GHRDP1\n\0".to_vec();
        for (d, f, micros, bytes) in pdus {
            out.push(match d {
                Direction::ClientToTarget => 0,
                Direction::TargetToClient => 1,
            });
            out.push(match f {
                Framing::X224 => 0,
                Framing::FastPath => 1,
                Framing::Undecodable => 2,
            });
            out.extend_from_slice(&micros.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    #[test]
    fn the_writer_is_byte_identical_to_the_format_and_the_reader_round_trips() {
        let pdus = sample();
        let mut writer = PduWriter::new(Vec::new()).unwrap();
        for (direction, framing, micros, bytes) in &pdus {
            writer
                .write(&Pdu {
                    direction: *direction,
                    framing: *framing,
                    at: Duration::from_micros(*micros),
                    bytes,
                })
                .unwrap();
        }
        let written = writer.finish().unwrap();
        assert_eq!(written, by_hand(&pdus));

        let mut reader = PduReader::new(&written[..]).unwrap();
        for (direction, framing, micros, bytes) in &pdus {
            let pdu = reader.next_pdu().unwrap().unwrap();
            assert_eq!(pdu.direction, *direction);
            assert_eq!(pdu.framing, *framing);
            assert_eq!(pdu.at, Duration::from_micros(*micros));
            assert_eq!(pdu.bytes, &bytes[..]);
        }
        assert!(reader.next_pdu().unwrap().is_none());
    }

    #[test]
    fn bad_magic_truncation_and_corrupt_headers_are_typed_errors() {
        assert!(matches!(
            PduReader::new(&b"GHSSH1\n\0"[..]),
            Err(PduError::BadMagic { .. })
        ));
        assert!(matches!(
            PduReader::new(&b"GHR"[..]),
            Err(PduError::BadMagic { .. })
        ));
        let good = by_hand(&sample());
        // Cut inside every PDU's header and bytes: a typed error, never a panic.
        for cut in 9..good.len() {
            let mut reader = PduReader::new(&good[..cut]).unwrap();
            let mut result = Ok(());
            loop {
                match reader.next_pdu() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let boundaries = [8, 26, 43, 57];
            if boundaries.contains(&cut) {
                assert!(result.is_ok(), "cut at {cut}: {result:?}");
            } else {
                assert!(
                    matches!(result, Err(PduError::Truncated { .. })),
                    "cut at {cut}: {result:?}"
                );
            }
        }
        let mut corrupt = good.clone();
        corrupt[8] = 7;
        assert!(matches!(
            PduReader::new(&corrupt[..]).unwrap().next_pdu(),
            Err(PduError::BadDirection { value: 7, .. })
        ));
        let mut corrupt = good.clone();
        corrupt[9] = 3;
        assert!(matches!(
            PduReader::new(&corrupt[..]).unwrap().next_pdu(),
            Err(PduError::BadFraming { value: 3, .. })
        ));
        let mut corrupt = good;
        corrupt[18..22].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            PduReader::new(&corrupt[..]).unwrap().next_pdu(),
            Err(PduError::TooLarge { .. })
        ));
    }
}
