//! Record batch codec: the unit of storage (docs/storage-format.md).
//!
//! A batch is a fixed little-endian header followed by its records, each framed
//! as protobuf field 15 holding a `strata.v1.Record`. The records are encoded
//! here by hand (a handful of varints and byte strings) so storage does not
//! depend on generated code, and so a fetch can splice them unchanged.

use bytes::{BufMut, BytesMut};

use super::format::*;

/// What the codec needs from a record to store it. Implemented by the server
/// for its protobuf messages, so encoding never copies into an intermediate type.
pub trait RecordSource {
    /// Producer's timestamp, 0 = unset.
    fn timestamp_ms(&self) -> i64;
    /// Optional key.
    fn key(&self) -> Option<&[u8]>;
    /// Optional value (absent = tombstone).
    fn value(&self) -> Option<&[u8]>;
    /// Headers in order.
    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])>;
}

impl<T: RecordSource> RecordSource for &T {
    fn timestamp_ms(&self) -> i64 {
        (**self).timestamp_ms()
    }
    fn key(&self) -> Option<&[u8]> {
        (**self).key()
    }
    fn value(&self) -> Option<&[u8]> {
        (**self).value()
    }
    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        (**self).headers()
    }
}

/// How timestamps are assigned while encoding.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Broker time at append, ms since epoch.
    pub append_time_ms: i64,
    /// Every record gets `append_time_ms` (topic timestamp type LogAppendTime).
    pub log_append_time: bool,
}

impl Stamp {
    fn timestamp(&self, produced: i64) -> i64 {
        if self.log_append_time || produced == 0 {
            self.append_time_ms
        } else {
            produced
        }
    }
}

/// Summary of an encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: u32,
    /// Number of records.
    pub record_count: u32,
    /// Smallest record timestamp.
    pub first_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
}

impl BatchMeta {
    /// One past the last offset of the batch.
    pub fn next_offset(&self) -> u64 {
        // Saturating: an unverified (damaged) header must not overflow.
        self.base_offset.saturating_add(u64::from(self.last_offset_delta)).saturating_add(1)
    }
}

// ---- protobuf primitives ---------------------------------------------------
//
// Inlined by force, and the encoder loop kept out of line: they run for
// every field of every record, and an unrelated edit once changed how the
// compiler inlined them (the profile showed the loop moved into its caller
// and these helpers out of it). Fixed here, the hot loop is the same code
// from build to build.

#[inline(always)]
fn varint_len(v: u64) -> usize {
    // (index of the highest set bit * 9 + 73) / 64 = ceil(bits / 7), branch-free.
    (((63 - (v | 1).leading_zeros()) * 9 + 73) / 64) as usize
}

#[inline(always)]
fn put_varint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[inline(always)]
fn key_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

#[inline(always)]
fn put_key(buf: &mut impl BufMut, field: u32, wire_type: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire_type));
}

#[inline(always)]
fn bytes_field_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

#[inline(always)]
fn put_bytes_field(buf: &mut impl BufMut, field: u32, data: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, data.len() as u64);
    buf.put_slice(data);
}

/// Reads a varint at `*pos`, advancing it. `None` if truncated or over-long.
fn get_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

// ---- encoding ----------------------------------------------------------------

/// Length of a record's protobuf message (without the field-15 framing).
fn record_len<R: RecordSource>(offset: u64, timestamp: i64, r: &R) -> usize {
    let mut len = key_len(REC_OFFSET) + varint_len(offset);
    if timestamp != 0 {
        len += key_len(REC_TIMESTAMP) + varint_len(timestamp as u64);
    }
    if let Some(k) = r.key() {
        len += bytes_field_len(REC_KEY, k.len());
    }
    if let Some(v) = r.value() {
        len += bytes_field_len(REC_VALUE, v.len());
    }
    for (k, v) in r.headers() {
        len += bytes_field_len(REC_HEADER, header_len(k, v));
    }
    len
}

fn header_len(k: &str, v: &[u8]) -> usize {
    let mut len = 0;
    if !k.is_empty() {
        len += bytes_field_len(HDR_KEY, k.len());
    }
    if !v.is_empty() {
        len += bytes_field_len(HDR_VALUE, v.len());
    }
    len
}

/// Size a record takes in a batch, framing included. Offsets and timestamps
/// are counted at their widest so the bound holds wherever the record lands.
pub fn stored_record_size<R: RecordSource>(r: &R) -> usize {
    let body = record_len(u64::MAX, -1, r);
    1 + varint_len(body as u64) + body
}

/// Encodes `records` as one batch starting at `base_offset` into `buf`
/// (which is cleared first). The caller guarantees `records` is non-empty.
pub fn encode_batch<R: RecordSource>(buf: &mut BytesMut, base_offset: u64, records: &[R], stamp: Stamp) -> BatchMeta {
    buf.clear();
    append_batch(buf, base_offset, records, stamp)
}

/// Encodes `records` as one batch starting at `base_offset` into `buf`,
/// after what it holds. The caller guarantees `records` is non-empty.
#[inline(never)]
pub fn append_batch<B, R>(buf: &mut B, base_offset: u64, records: &[R], stamp: Stamp) -> BatchMeta
where
    B: BufMut + std::ops::DerefMut<Target = [u8]>,
    R: RecordSource,
{
    debug_assert!(!records.is_empty());
    let start = buf.len();
    buf.put_bytes(0, BATCH_HEADER_LEN);
    let mut first_ts = i64::MAX;
    let mut max_ts = i64::MIN;
    for (i, r) in records.iter().enumerate() {
        let offset = base_offset + i as u64;
        let ts = stamp.timestamp(r.timestamp_ms());
        first_ts = first_ts.min(ts);
        max_ts = max_ts.max(ts);
        put_key(buf, RECORD_FIELD, 2);
        put_varint(buf, record_len(offset, ts, r) as u64);
        // The offset is always written, even 0, so readers can find it first.
        put_key(buf, REC_OFFSET, 0);
        put_varint(buf, offset);
        if ts != 0 {
            put_key(buf, REC_TIMESTAMP, 0);
            put_varint(buf, ts as u64);
        }
        if let Some(k) = r.key() {
            put_bytes_field(buf, REC_KEY, k);
        }
        if let Some(v) = r.value() {
            put_bytes_field(buf, REC_VALUE, v);
        }
        for (k, v) in r.headers() {
            put_key(buf, REC_HEADER, 2);
            put_varint(buf, header_len(k, v) as u64);
            if !k.is_empty() {
                put_bytes_field(buf, HDR_KEY, k.as_bytes());
            }
            if !v.is_empty() {
                put_bytes_field(buf, HDR_VALUE, v);
            }
        }
    }
    let meta = BatchMeta {
        base_offset,
        last_offset_delta: (records.len() - 1) as u32,
        record_count: records.len() as u32,
        first_timestamp: first_ts,
        max_timestamp: max_ts,
    };
    let attributes = if stamp.log_append_time { ATTR_LOG_APPEND_TIME } else { 0 };
    write_header(&mut buf[start..], &meta, attributes);
    meta
}

/// Fills the version-2 header of the batch in `buf` (records already in
/// place, after `BATCH_HEADER_LEN` bytes) and its CRC; no producer, leader
/// epoch 0.
pub fn write_header(buf: &mut [u8], meta: &BatchMeta, attributes: u16) {
    write_header_with(buf, meta, &HeaderExtra { attributes, ..HeaderExtra::NONE });
}

/// The header fields besides offsets, counts and timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtra {
    /// Attribute bits (`ATTR_*`).
    pub attributes: u16,
    /// Producer id, -1 when none.
    pub producer_id: i64,
    /// Producer epoch, -1 when none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 when none.
    pub base_sequence: i32,
    /// Leader epoch at append (version 2; 0 for version-1 batches).
    pub leader_epoch: i32,
}

impl HeaderExtra {
    /// No attributes, no producer, leader epoch 0.
    pub const NONE: HeaderExtra =
        HeaderExtra { attributes: 0, producer_id: -1, producer_epoch: -1, base_sequence: -1, leader_epoch: 0 };
}

/// Fills the version-2 header of the batch in `buf` and its CRC.
pub fn write_header_with(buf: &mut [u8], meta: &BatchMeta, extra: &HeaderExtra) {
    let len = buf.len() as u32;
    let h = &mut buf[..BATCH_HEADER_LEN];
    h[BASE_OFFSET_AT..][..8].copy_from_slice(&meta.base_offset.to_le_bytes());
    h[BATCH_LEN_AT..][..4].copy_from_slice(&len.to_le_bytes());
    h[MAGIC_AT] = BATCH_MAGIC;
    h[ATTRIBUTES_AT..][..2].copy_from_slice(&extra.attributes.to_le_bytes());
    h[LAST_OFFSET_DELTA_AT..][..4].copy_from_slice(&meta.last_offset_delta.to_le_bytes());
    h[RECORD_COUNT_AT..][..4].copy_from_slice(&meta.record_count.to_le_bytes());
    h[FIRST_TIMESTAMP_AT..][..8].copy_from_slice(&meta.first_timestamp.to_le_bytes());
    h[MAX_TIMESTAMP_AT..][..8].copy_from_slice(&meta.max_timestamp.to_le_bytes());
    h[PRODUCER_ID_AT..][..8].copy_from_slice(&extra.producer_id.to_le_bytes());
    h[PRODUCER_EPOCH_AT..][..2].copy_from_slice(&extra.producer_epoch.to_le_bytes());
    h[BASE_SEQUENCE_AT..][..4].copy_from_slice(&extra.base_sequence.to_le_bytes());
    h[LEADER_EPOCH_AT..][..4].copy_from_slice(&extra.leader_epoch.to_le_bytes());
    let crc = batch_crc(BATCH_MAGIC, buf);
    buf[CRC_AT..][..4].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC of a whole batch of format `version`, as its header stores it.
fn batch_crc(version: u8, batch: &[u8]) -> u32 {
    if version == BATCH_MAGIC_V1 {
        return crc32fast::hash(&batch[CRC_END..]);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&batch[..CRC_AT]);
    h.update(&batch[CRC_END..]);
    h.finalize()
}

// ---- decoding ----------------------------------------------------------------

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
    b[at..at + N].try_into().expect("slice of N bytes")
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A plain record for tests.
    #[derive(Debug, Clone, Default)]
    pub struct TestRecord {
        pub ts: i64,
        pub key: Option<Vec<u8>>,
        pub value: Option<Vec<u8>>,
        pub headers: Vec<(String, Vec<u8>)>,
    }

    impl RecordSource for TestRecord {
        fn timestamp_ms(&self) -> i64 {
            self.ts
        }
        fn key(&self) -> Option<&[u8]> {
            self.key.as_deref()
        }
        fn value(&self) -> Option<&[u8]> {
            self.value.as_deref()
        }
        fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
            self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
        }
    }

    pub fn value_record(v: &[u8]) -> TestRecord {
        TestRecord { value: Some(v.to_vec()), ..Default::default() }
    }

    fn stamp() -> Stamp {
        Stamp { append_time_ms: 1_700_000_000_000, log_append_time: false }
    }

    fn arb_record() -> impl Strategy<Value = TestRecord> {
        (
            prop_oneof![Just(0i64), 1i64..i64::MAX],
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..10)), 0..4),
        )
            .prop_map(|(ts, key, value, headers)| TestRecord { ts, key, value, headers })
    }

    proptest! {
        #[test]
        fn batches_round_trip(base in 0u64..u64::MAX / 2, records in proptest::collection::vec(arb_record(), 1..50)) {
            let mut buf = BytesMut::new();
            let meta = encode_batch(&mut buf, base, &records, stamp());
            let h = BatchHeader::parse_verified(&buf).unwrap();
            prop_assert_eq!(h.meta, meta);
            prop_assert_eq!(h.batch_len as usize, buf.len());
            prop_assert_eq!(meta.record_count as usize, records.len());
            let body = &buf[BATCH_HEADER_LEN..];
            let views: Vec<_> = RecordIter::new(body).collect();
            prop_assert_eq!(views.len(), records.len());
            for (i, (v, r)) in views.iter().zip(&records).enumerate() {
                prop_assert_eq!(v.offset, base + i as u64);
                let ts = if r.ts == 0 { stamp().append_time_ms } else { r.ts };
                prop_assert_eq!(v.timestamp_ms, ts);
                prop_assert_eq!(v.key, r.key.as_deref());
                prop_assert_eq!(v.value, r.value.as_deref());
                prop_assert!(stored_record_size(r) >= v.entry.len());
            }
            prop_assert_eq!(views.last().unwrap().entry.end, body.len());
        }

        #[test]
        fn any_single_bit_flip_is_detected(records in proptest::collection::vec(arb_record(), 1..10), bit in any::<prop::sample::Index>()) {
            let mut buf = BytesMut::new();
            encode_batch(&mut buf, 5, &records, stamp());
            let bit = bit.index((buf.len() - BASE_OFFSET_AT - 8) * 8) + 64; // base offset is checked by position, not CRC
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(BatchHeader::parse_verified(&buf).is_err());
        }

        #[test]
        fn truncation_is_detected(records in proptest::collection::vec(arb_record(), 1..10), cut in any::<prop::sample::Index>()) {
            let mut buf = BytesMut::new();
            encode_batch(&mut buf, 0, &records, stamp());
            let cut = cut.index(buf.len());
            prop_assert!(BatchHeader::parse_verified(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn decodes_as_protobuf_record() {
        use prost::Message;
        let r = TestRecord {
            ts: 0,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![("h".into(), b"x".to_vec()), (String::new(), Vec::new())],
        };
        let mut buf = BytesMut::new();
        encode_batch(&mut buf, 0, &[r], stamp());
        let pr = strata_proto::v1::PartitionRecords::decode(&buf[BATCH_HEADER_LEN..]).unwrap();
        assert_eq!(pr.records.len(), 1);
        let rec = &pr.records[0];
        assert_eq!(rec.offset, 0);
        assert_eq!(rec.timestamp_ms, stamp().append_time_ms);
        assert_eq!(rec.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(rec.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(rec.headers.len(), 2);
        assert_eq!(rec.headers[0].key, "h");
        assert_eq!(rec.headers[1].key, "");
    }

    #[test]
    fn log_append_time_overrides_producer_time() {
        let r = TestRecord { ts: 5, ..Default::default() };
        let mut buf = BytesMut::new();
        let s = Stamp { log_append_time: true, ..stamp() };
        let meta = encode_batch(&mut buf, 0, &[r], s);
        assert_eq!(meta.max_timestamp, s.append_time_ms);
        let h = BatchHeader::parse(&buf).unwrap();
        assert_eq!(h.attributes & ATTR_LOG_APPEND_TIME, ATTR_LOG_APPEND_TIME);
    }

    #[test]
    fn position_of_offset_trims_leading_records() {
        let records: Vec<_> = (0..5u8).map(|i| value_record(&[i; 10])).collect();
        let mut buf = BytesMut::new();
        encode_batch(&mut buf, 100, &records, stamp());
        let body = &buf[BATCH_HEADER_LEN..];
        assert_eq!(position_of_offset(body, 0), 0);
        assert_eq!(position_of_offset(body, 100), 0);
        let p = position_of_offset(body, 103);
        assert_eq!(RecordIter::new(&body[p..]).next().unwrap().offset, 103);
        assert_eq!(position_of_offset(body, 105), body.len());
    }

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(get_varint(&b, &mut pos), Some(v));
        }
    }
}
