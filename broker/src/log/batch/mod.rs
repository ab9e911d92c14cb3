//! Record batch codec: the unit of storage (docs/storage-format.md).
//!
//! A batch is a fixed little-endian header followed by its records, each framed
//! as protobuf field 15 holding a `strata.v1.Record`. The records are encoded
//! here by hand (a handful of varints and byte strings) so storage does not
//! depend on generated code, and so a fetch can splice them unchanged.

use bytes::{BufMut, Bytes, BytesMut};

use super::format::*;

mod decode;

pub use decode::{position_of_offset, BatchError, BatchHeader, RecordIter, RecordView};

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
    /// The value as shared bytes the log may keep until they are written,
    /// instead of copying them (`None`: copy; the default). Must hold the
    /// same bytes as [`RecordSource::value`].
    fn shared_value(&self) -> Option<Bytes> {
        None
    }
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
    fn shared_value(&self) -> Option<Bytes> {
        (**self).shared_value()
    }
}

/// Values referenced, not copied, by an encoded batch: each `(at, bytes)`
/// belongs at byte `at` of the batch (counted from its first header byte),
/// before the encoded byte found there. The batch is the encoded bytes with
/// these spliced in, in order; an empty list means the encoding is whole.
pub(crate) type Shared = Vec<(usize, Bytes)>;

/// Values at least this long are referenced by a gathering encoder (see
/// [`append_batch_gather`]) rather than copied. Below it, an entry in a
/// vectored write costs more than copying the bytes.
pub(crate) const SHARE_MIN_BYTES: usize = 512;

/// How timestamps are assigned while encoding, and who produced the batch.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Broker time at append, ms since epoch.
    pub append_time_ms: i64,
    /// Every record gets `append_time_ms` (topic timestamp type LogAppendTime).
    pub log_append_time: bool,
    /// The idempotent producer of the batch, stored in its header.
    pub producer: Option<ProducerStamp>,
}

/// An idempotent producer's id, epoch and the batch's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id.
    pub id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// The batch's sequence number.
    pub sequence: i32,
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
pub(super) fn get_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
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
pub fn append_batch<B, R>(buf: &mut B, base_offset: u64, records: &[R], stamp: Stamp) -> BatchMeta
where
    B: BufMut + std::ops::DerefMut<Target = [u8]>,
    R: RecordSource,
{
    append_batch_with(buf, None, base_offset, records, stamp).0
}

/// As [`append_batch`], but the records' shared values of at least
/// [`SHARE_MIN_BYTES`] are pushed onto `shared` (which must be empty)
/// instead of being copied into `buf`: the batch is `buf`'s new bytes with
/// them spliced in (see [`Shared`]); its header and CRC cover the whole.
/// Also returns how many bytes the shared values add.
pub(crate) fn append_batch_gather<B, R>(
    buf: &mut B,
    shared: &mut Shared,
    base_offset: u64,
    records: &[R],
    stamp: Stamp,
) -> (BatchMeta, usize)
where
    B: BufMut + std::ops::DerefMut<Target = [u8]>,
    R: RecordSource,
{
    debug_assert!(shared.is_empty());
    append_batch_with(buf, Some(shared), base_offset, records, stamp)
}

#[inline(never)]
fn append_batch_with<B, R>(
    buf: &mut B,
    mut shared: Option<&mut Shared>,
    base_offset: u64,
    records: &[R],
    stamp: Stamp,
) -> (BatchMeta, usize)
where
    B: BufMut + std::ops::DerefMut<Target = [u8]>,
    R: RecordSource,
{
    debug_assert!(!records.is_empty());
    let start = buf.len();
    // Bytes of the batch referenced so far, not in `buf`.
    let mut spliced = 0;
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
            // `shared_value` only for values that will be shared: it costs
            // a reference count.
            let share = shared.as_deref_mut().filter(|_| v.len() >= SHARE_MIN_BYTES);
            match share.and_then(|s| Some((s, r.shared_value()?))) {
                Some((shared, bytes)) if bytes.len() == v.len() => {
                    debug_assert!(bytes[..] == *v, "shared_value differs from value");
                    if shared.capacity() == 0 {
                        shared.reserve((records.len() - i).min(256));
                    }
                    put_key(buf, REC_VALUE, 2);
                    put_varint(buf, v.len() as u64);
                    shared.push((buf.len() - start + spliced, bytes));
                    spliced += v.len();
                }
                _ => put_bytes_field(buf, REC_VALUE, v),
            }
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
    let extra = match stamp.producer {
        Some(p) => {
            HeaderExtra { producer_id: p.id, producer_epoch: p.epoch, base_sequence: p.sequence, ..HeaderExtra::NONE }
        }
        None => HeaderExtra::NONE,
    };
    let shared: &[(usize, Bytes)] = shared.map_or(&[], |s| s);
    write_header_spliced(&mut buf[start..], shared, spliced, &meta, &HeaderExtra { attributes, ..extra });
    (meta, spliced)
}

/// The pieces of a batch encoded in `own` with `shared` spliced in, in
/// order, none empty (see [`Shared`]).
pub(crate) fn batch_pieces<'a>(own: &'a [u8], shared: &'a [(usize, Bytes)]) -> Pieces<'a> {
    Pieces { own, shared: shared.iter(), from: 0, spliced: 0, next_shared: None, done: false }
}

/// Iterator of [`batch_pieces`].
#[derive(Clone)]
pub(crate) struct Pieces<'a> {
    own: &'a [u8],
    shared: std::slice::Iter<'a, (usize, Bytes)>,
    /// Where in `own` the next own piece starts.
    from: usize,
    /// Bytes spliced in before `from`.
    spliced: usize,
    next_shared: Option<&'a [u8]>,
    done: bool,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if let Some(b) = self.next_shared.take() {
                return Some(b);
            }
            let piece = match self.shared.next() {
                Some((at, bytes)) => {
                    let end = at - self.spliced;
                    let piece = &self.own[self.from..end];
                    (self.from, self.spliced) = (end, self.spliced + bytes.len());
                    self.next_shared = Some(&bytes[..]).filter(|b| !b.is_empty());
                    piece
                }
                None if self.done => return None,
                None => {
                    self.done = true;
                    &self.own[self.from..]
                }
            };
            if !piece.is_empty() {
                return Some(piece);
            }
        }
    }
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
    write_header_spliced(buf, &[], 0, meta, extra);
}

/// As [`write_header_with`], for the batch of `buf` with `shared` (of
/// `spliced` bytes in all) spliced in.
fn write_header_spliced(
    buf: &mut [u8],
    shared: &[(usize, Bytes)],
    spliced: usize,
    meta: &BatchMeta,
    extra: &HeaderExtra,
) {
    let len = (buf.len() + spliced) as u32;
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
    let crc = if shared.is_empty() {
        batch_crc(BATCH_MAGIC, buf)
    } else {
        // The first piece holds the whole header (values come after it).
        let mut h = crc32fast::Hasher::new();
        for (i, piece) in batch_pieces(buf, shared).enumerate() {
            if i == 0 {
                h.update(&piece[..CRC_AT]);
                h.update(&piece[CRC_END..]);
            } else {
                h.update(piece);
            }
        }
        h.finalize()
    };
    buf[CRC_AT..][..4].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC of a whole batch of format `version`, as its header stores it.
pub(super) fn batch_crc(version: u8, batch: &[u8]) -> u32 {
    if version == BATCH_MAGIC_V1 {
        return crc32fast::hash(&batch[CRC_END..]);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&batch[..CRC_AT]);
    h.update(&batch[CRC_END..]);
    h.finalize()
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
        Stamp { append_time_ms: 1_700_000_000_000, log_append_time: false, producer: None }
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

    /// A record whose value the log may share (as the server's are).
    #[derive(Debug, Clone)]
    pub struct SharedRecord(pub TestRecord, pub Option<Bytes>);

    impl RecordSource for SharedRecord {
        fn timestamp_ms(&self) -> i64 {
            self.0.ts
        }
        fn key(&self) -> Option<&[u8]> {
            self.0.key.as_deref()
        }
        fn value(&self) -> Option<&[u8]> {
            self.1.as_deref()
        }
        fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
            self.0.headers()
        }
        fn shared_value(&self) -> Option<Bytes> {
            self.1.clone()
        }
    }

    proptest! {
        /// Large values referenced instead of copied: the same bytes, the
        /// same header and CRC, whatever mix of sizes (both sides of
        /// SHARE_MIN_BYTES, empty, absent) and whatever was in the buffer.
        #[test]
        fn gathered_batches_are_the_contiguous_ones(
            records in proptest::collection::vec(
                (arb_record(), proptest::option::of(prop_oneof![0usize..10, 500usize..2000])), 1..20),
            before in 0usize..5000,
        ) {
            let records: Vec<SharedRecord> = records
                .into_iter()
                .enumerate()
                .map(|(i, (r, len))| SharedRecord(r, len.map(|n| Bytes::from(vec![i as u8; n]))))
                .collect();
            let mut whole = BytesMut::new();
            let meta = encode_batch(&mut whole, 7, &records, stamp());
            let mut own = BytesMut::from(&vec![0xAAu8; before][..]);
            let mut shared = Shared::new();
            let (gathered, spliced) = append_batch_gather(&mut own, &mut shared, 7, &records, stamp());
            prop_assert_eq!(gathered, meta);
            prop_assert_eq!(spliced, shared.iter().map(|(_, b)| b.len()).sum::<usize>());
            let expect_shared = records.iter().filter(|r| r.1.as_ref().is_some_and(|v| v.len() >= SHARE_MIN_BYTES)).count();
            prop_assert_eq!(shared.len(), expect_shared);
            let joined: Vec<u8> = batch_pieces(&own[before..], &shared).flatten().copied().collect();
            prop_assert_eq!(&joined[..], &whole[..]);
            prop_assert!(batch_pieces(&own[before..], &shared).all(|p| !p.is_empty()));
            prop_assert!(BatchHeader::parse_verified(&joined).is_ok());
        }

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
