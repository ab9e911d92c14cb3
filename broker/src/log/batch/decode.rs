//! Decoding a stored batch: its header (either format version), its
//! verification, and the records of its body.

use super::super::format::*;
use super::{batch_crc, get_varint, BatchMeta, HeaderExtra};

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length: a torn write.
    Truncated,
    /// Unknown format version (a newer one than this broker knows, if
    /// greater than `BATCH_MAGIC`).
    BadMagic(u8),
    /// Declared length smaller than a header.
    BadLength(u32),
    /// The checksum does not match the contents.
    CrcMismatch,
    /// A version-1 batch (whose base offset the CRC does not cover) whose
    /// first record's offset lies outside the header's offset range.
    OffsetMismatch,
}

impl BatchError {
    /// True for a batch of a format version newer than this broker writes
    /// (one of the next few: versions grow one at a time, and a random byte
    /// is more likely damage): not damage, but data this build cannot read.
    pub fn is_newer_version(&self) -> bool {
        matches!(self, BatchError::BadMagic(m) if *m > BATCH_MAGIC && *m <= BATCH_MAGIC + NEWER_VERSIONS)
    }
}

/// How many versions past `BATCH_MAGIC` a magic byte may be to be taken
/// for a newer format rather than damage.
const NEWER_VERSIONS: u8 = 6;

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Truncated => write!(f, "truncated batch"),
            BatchError::BadMagic(m) => write!(f, "unknown batch format version {m}"),
            BatchError::BadLength(l) => write!(f, "impossible batch length {l}"),
            BatchError::CrcMismatch => write!(f, "CRC mismatch"),
            BatchError::OffsetMismatch => write!(f, "record offsets do not match the batch header"),
        }
    }
}

/// A parsed batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offsets, counts and timestamps.
    pub meta: BatchMeta,
    /// Total size in bytes, header included.
    pub batch_len: u32,
    /// Attribute bits.
    pub attributes: u16,
    /// Stored checksum.
    pub crc: u32,
    /// Format version (`BATCH_MAGIC_V1` or `BATCH_MAGIC`).
    pub version: u8,
    /// Producer id, -1 when none.
    pub producer_id: i64,
    /// Producer epoch, -1 when none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 when none.
    pub base_sequence: i32,
    /// Leader epoch at append (0 for version 1).
    pub leader_epoch: i32,
}

fn le<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    std::array::from_fn(|i| b[at + i])
}

impl BatchHeader {
    /// Parses the header at the start of `b` (at least the header's length
    /// needed); checks version and length, not the CRC.
    pub fn parse(b: &[u8]) -> Result<Self, BatchError> {
        if b.len() < BATCH_HEADER_LEN_V1 {
            return Err(BatchError::Truncated);
        }
        let version = b[MAGIC_AT];
        let header_len = match version {
            BATCH_MAGIC => BATCH_HEADER_LEN,
            BATCH_MAGIC_V1 => BATCH_HEADER_LEN_V1,
            m => return Err(BatchError::BadMagic(m)),
        };
        if b.len() < header_len {
            return Err(BatchError::Truncated);
        }
        let batch_len = u32::from_le_bytes(le(b, BATCH_LEN_AT));
        if (batch_len as usize) < header_len {
            return Err(BatchError::BadLength(batch_len));
        }
        Ok(BatchHeader {
            meta: BatchMeta {
                base_offset: u64::from_le_bytes(le(b, BASE_OFFSET_AT)),
                last_offset_delta: u32::from_le_bytes(le(b, LAST_OFFSET_DELTA_AT)),
                record_count: u32::from_le_bytes(le(b, RECORD_COUNT_AT)),
                first_timestamp: i64::from_le_bytes(le(b, FIRST_TIMESTAMP_AT)),
                max_timestamp: i64::from_le_bytes(le(b, MAX_TIMESTAMP_AT)),
            },
            batch_len,
            attributes: u16::from_le_bytes(le(b, ATTRIBUTES_AT)),
            crc: u32::from_le_bytes(le(b, CRC_AT)),
            version,
            producer_id: i64::from_le_bytes(le(b, PRODUCER_ID_AT)),
            producer_epoch: i16::from_le_bytes(le(b, PRODUCER_EPOCH_AT)),
            base_sequence: i32::from_le_bytes(le(b, BASE_SEQUENCE_AT)),
            leader_epoch: if version == BATCH_MAGIC { i32::from_le_bytes(le(b, LEADER_EPOCH_AT)) } else { 0 },
        })
    }

    /// Parses the header at the start of `b` for a batch that must end
    /// within `available` bytes: a length past them is `BadLength`, and a
    /// magic byte of a newer version whose length does not fit either is a
    /// torn write (`Truncated`), not a newer version.
    pub fn parse_within(b: &[u8], available: u64) -> Result<Self, BatchError> {
        match Self::parse(b) {
            Ok(h) if u64::from(h.batch_len) > available => Err(BatchError::BadLength(h.batch_len)),
            Err(e) if e.is_newer_version() => {
                let len =
                    b.get(BATCH_LEN_AT..BATCH_LEN_AT + 4).map_or(0, |l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]));
                match (BATCH_HEADER_LEN_V1 as u64..=available).contains(&u64::from(len)) {
                    true => Err(e),
                    false => Err(BatchError::Truncated),
                }
            }
            r => r,
        }
    }

    /// Bytes before the records: the header of this batch's version.
    pub fn header_len(&self) -> usize {
        if self.version == BATCH_MAGIC_V1 {
            BATCH_HEADER_LEN_V1
        } else {
            BATCH_HEADER_LEN
        }
    }

    /// The fields besides offsets, counts and timestamps.
    pub fn extra(&self) -> HeaderExtra {
        HeaderExtra {
            attributes: self.attributes,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            leader_epoch: self.leader_epoch,
        }
    }

    /// Parses and fully validates a whole batch (`b` may extend past it):
    /// version, length, CRC, and for version 1 (whose CRC leaves the base
    /// offset out) that the first record's offset is in the header's range.
    pub fn parse_verified(b: &[u8]) -> Result<Self, BatchError> {
        let h = Self::parse(b)?;
        let batch = b.get(..h.batch_len as usize).ok_or(BatchError::Truncated)?;
        h.verify(batch)?;
        Ok(h)
    }

    /// Checks `batch` (exactly this header's batch) against the header.
    pub fn verify(&self, batch: &[u8]) -> Result<(), BatchError> {
        if batch.len() != self.batch_len as usize {
            return Err(BatchError::Truncated);
        }
        if batch_crc(self.version, batch) != self.crc {
            return Err(BatchError::CrcMismatch);
        }
        if self.version == BATCH_MAGIC_V1 {
            let first = RecordIter::new(&batch[BATCH_HEADER_LEN_V1..]).next().map(|r| r.offset);
            let range = self.meta.base_offset..self.meta.next_offset();
            if !first.is_some_and(|o| range.contains(&o)) {
                return Err(BatchError::OffsetMismatch);
            }
        }
        Ok(())
    }
}

/// One record read back from a batch body, borrowing its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Absolute offset.
    pub offset: u64,
    /// Timestamp, ms since epoch.
    pub timestamp_ms: i64,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Value, if any.
    pub value: Option<&'a [u8]>,
    /// Byte range of this record's framed entry within the body.
    pub entry: std::ops::Range<usize>,
}

/// Iterates the records of a batch body (the bytes after the header).
/// Stops at the first malformed entry; stored batches passed their CRC, so
/// that only happens on a bug, never on disk damage.
pub struct RecordIter<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> RecordIter<'a> {
    /// Iterates `body`.
    pub fn new(body: &'a [u8]) -> Self {
        RecordIter { body, pos: 0 }
    }

    fn next_record(&mut self) -> Option<RecordView<'a>> {
        let start = self.pos;
        let mut pos = self.pos;
        if *self.body.get(pos)? != RECORD_KEY_BYTE {
            return None;
        }
        pos += 1;
        let len = get_varint(self.body, &mut pos)? as usize;
        let end = pos.checked_add(len)?;
        let msg = self.body.get(pos..end)?;
        let mut view = RecordView { offset: 0, timestamp_ms: 0, key: None, value: None, entry: start..end };
        let mut p = 0;
        while p < msg.len() {
            let key = get_varint(msg, &mut p)?;
            let (field, wire) = ((key >> 3) as u32, (key & 7) as u8);
            match wire {
                0 => {
                    let v = get_varint(msg, &mut p)?;
                    match field {
                        REC_OFFSET => view.offset = v,
                        REC_TIMESTAMP => view.timestamp_ms = v as i64,
                        _ => {}
                    }
                }
                2 => {
                    let l = get_varint(msg, &mut p)? as usize;
                    let data = msg.get(p..p.checked_add(l)?)?;
                    p += l;
                    match field {
                        REC_KEY => view.key = Some(data),
                        REC_VALUE => view.value = Some(data),
                        _ => {}
                    }
                }
                _ => return None,
            }
        }
        self.pos = end;
        Some(view)
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// Byte position within `body` of the first record whose offset is >= `offset`
/// (`body.len()` if none). Used to trim the first batch of a fetch.
pub fn position_of_offset(body: &[u8], offset: u64) -> usize {
    RecordIter::new(body).find(|r| r.offset >= offset).map_or(body.len(), |r| r.entry.start)
}
