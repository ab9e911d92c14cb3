//! Verification of a segment, batch by batch, without changing anything:
//! for `strata verify` (offline, on the files) and the background scrubber
//! (online, on a running broker's sealed segments).
//!
//! Every batch is checked whole (header, length, CRC; for version 1 the
//! record offsets), and the offsets must go on (a batch starts at or after
//! where the one before ended; compaction leaves gaps, never overlaps). At
//! damage the scan resynchronises on the next valid batch and goes on, so
//! one report lists every damaged range.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use bytes::Bytes;

use super::batch::{BatchError, BatchHeader};
use super::format::{
    BATCH_HEADER_LEN, BATCH_HEADER_LEN_V1, BATCH_MAGIC, BATCH_MAGIC_V1, INDEX_ENTRY_LEN, MAGIC_AT, TIME_INDEX_ENTRY_LEN,
};

/// What is wrong at one place of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Bytes that are not a valid batch where one must be.
    Damaged {
        /// Byte position in the `.log` file.
        pos: u64,
        /// Bytes up to the next valid batch (or the end).
        len: u64,
        /// Why.
        reason: String,
    },
    /// A valid batch whose offsets go backwards.
    Backwards {
        /// Byte position.
        pos: u64,
        /// Its base offset.
        base: u64,
        /// The offset expected at or after.
        expected: u64,
    },
    /// The end of the last segment is a write cut short: recovery cuts it.
    TornTail {
        /// Byte position.
        pos: u64,
        /// Bytes recovery would cut.
        len: u64,
    },
    /// An index file does not match the log (indexes are rebuilt from the
    /// log, so this loses nothing, but says the files were changed).
    Index {
        /// "offset index" or "time index".
        which: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Damaged { pos, len, reason } => write!(f, "damaged batch at byte {pos} ({len} bytes): {reason}"),
            Problem::Backwards { pos, base, expected } => {
                write!(f, "batch at byte {pos} starts at offset {base}, before offset {expected}")
            }
            Problem::TornTail { pos, len } => {
                write!(
                    f,
                    "torn tail at byte {pos} ({len} bytes; after a crash recovery cuts it unless an fsync covered it, after a clean stop it refuses it)"
                )
            }
            Problem::Index { which, reason } => write!(f, "{which}: {reason}"),
        }
    }
}

/// What a scan of one segment found.
#[derive(Debug, Default, Clone)]
pub struct SegmentReport {
    /// Valid batches: position → header.
    pub batches: BTreeMap<u64, BatchHeader>,
    /// Records in them.
    pub records: u64,
    /// One past the last offset of the last valid batch (the base if none).
    pub next_offset: u64,
    /// Largest record timestamp (i64::MIN if none).
    pub max_timestamp: i64,
    /// Everything wrong, in file order.
    pub problems: Vec<Problem>,
}

/// Scans the `size` bytes of the segment with base offset `base`, read
/// through `read(pos, len)`. `last`: the partition's last segment, whose end
/// may be preallocated zeros or a torn write. `pace(bytes)` is called for
/// every read (throttling, stopping).
pub fn scan_segment(
    base: u64,
    size: u64,
    last: bool,
    mut read: impl FnMut(u64, usize) -> io::Result<Bytes>,
    mut pace: impl FnMut(usize) -> io::Result<()>,
) -> io::Result<SegmentReport> {
    let mut report = SegmentReport { next_offset: base, max_timestamp: i64::MIN, ..Default::default() };
    let mut pos = 0u64;
    while pos < size {
        let head = read(pos, (size - pos).min(BATCH_HEADER_LEN as u64) as usize)?;
        pace(head.len())?;
        let checked = match BatchHeader::parse_within(&head, size - pos) {
            Ok(h) => {
                let batch = read(pos, h.batch_len as usize)?;
                pace(batch.len())?;
                h.verify(&batch).map(|_| h)
            }
            Err(BatchError::BadLength(_)) => Err(BatchError::Truncated),
            Err(e) => Err(e),
        };
        match checked {
            Ok(h) => {
                if h.meta.base_offset < report.next_offset {
                    let expected = report.next_offset;
                    report.problems.push(Problem::Backwards { pos, base: h.meta.base_offset, expected });
                } else {
                    report.records += u64::from(h.meta.record_count);
                    report.next_offset = h.meta.next_offset();
                    report.max_timestamp = report.max_timestamp.max(h.meta.max_timestamp);
                    report.batches.insert(pos, h);
                }
                pos += u64::from(h.batch_len);
            }
            Err(error) => {
                let zeros = head.iter().all(|&b| b == 0);
                let next = next_valid(pos, size, report.next_offset, &mut read, &mut pace)?.map(|(p, _)| p);
                match next {
                    // Preallocated space (or a direct write's padding) at the end.
                    None if zeros && rest_is_zero(pos, size, &mut read, &mut pace)? => {}
                    None if last && !error.is_newer_version() => {
                        report.problems.push(Problem::TornTail { pos, len: size - pos })
                    }
                    _ => {
                        let reason =
                            if zeros { "zeros where a batch header must be".to_string() } else { error.to_string() };
                        let len = next.unwrap_or(size) - pos;
                        report.problems.push(Problem::Damaged { pos, len, reason });
                    }
                }
                match next {
                    Some(p) => pos = p,
                    None => break,
                }
            }
        }
    }
    Ok(report)
}

/// The first position after `after` and before `until` holding a batch
/// that verifies whole, ends by `until`, and starts at or after
/// `min_offset`: where reading goes on after damage. Every byte position is
/// tried, nearest first (neither a damaged length nor an index may be
/// trusted to point at the next batch); chunks of zeros are passed over at
/// once, and cheap header checks come before reading a candidate whole.
pub(super) fn next_valid(
    after: u64,
    until: u64,
    min_offset: u64,
    read: &mut impl FnMut(u64, usize) -> io::Result<Bytes>,
    pace: &mut impl FnMut(usize) -> io::Result<()>,
) -> io::Result<Option<(u64, BatchHeader)>> {
    next_valid_within(after, until, until, min_offset, read, pace)
}

/// [`next_valid`] where batches may end past `until`, up to `size`.
pub(super) fn next_valid_within(
    after: u64,
    until: u64,
    size: u64,
    min_offset: u64,
    read: &mut impl FnMut(u64, usize) -> io::Result<Bytes>,
    pace: &mut impl FnMut(usize) -> io::Result<()>,
) -> io::Result<Option<(u64, BatchHeader)>> {
    const CHUNK: u64 = 1 << 20;
    let mut from = after + 1;
    while from < until && from + BATCH_HEADER_LEN_V1 as u64 <= size {
        let data = read(from, (size - from).min(CHUNK + BATCH_HEADER_LEN as u64) as usize)?;
        pace(data.len())?;
        if data.iter().all(|&b| b == 0) {
            from += CHUNK;
            continue;
        }
        let span = data.len().saturating_sub(MAGIC_AT).min(CHUNK as usize).min((until - from) as usize);
        for i in (0..span).filter(|&i| matches!(data[i + MAGIC_AT], BATCH_MAGIC | BATCH_MAGIC_V1)) {
            let p = from + i as u64;
            let plausible = |h: &BatchHeader| h.meta.base_offset >= min_offset && h.meta.record_count >= 1;
            let Ok(h) = BatchHeader::parse_within(&data[i..], size - p) else { continue };
            if !plausible(&h) {
                continue;
            }
            let batch = read(p, h.batch_len as usize)?;
            pace(batch.len())?;
            if h.verify(&batch).is_ok() {
                return Ok(Some((p, h)));
            }
        }
        from += CHUNK;
    }
    Ok(None)
}

fn rest_is_zero(
    pos: u64,
    size: u64,
    read: &mut impl FnMut(u64, usize) -> io::Result<Bytes>,
    pace: &mut impl FnMut(usize) -> io::Result<()>,
) -> io::Result<bool> {
    const CHUNK: u64 = 1 << 20;
    let mut at = pos;
    while at < size {
        let data = read(at, (size - at).min(CHUNK) as usize)?;
        pace(data.len())?;
        if data.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += data.len() as u64;
    }
    Ok(true)
}

/// A missing index file is a problem only beside a log with batches.
fn missing(which: &'static str, report: &SegmentReport) -> Option<Problem> {
    (!report.batches.is_empty()).then(|| Problem::Index { which, reason: "missing".into() })
}

/// Checks the raw bytes of a segment's offset index against what the scan
/// found: whole entries, increasing, each naming a valid batch's position
/// and base offset. `None` bytes: the file is missing.
pub fn check_offset_index(base: u64, bytes: Option<&[u8]>, report: &SegmentReport) -> Option<Problem> {
    let problem = |reason: String| Some(Problem::Index { which: "offset index", reason });
    let Some(bytes) = bytes else { return missing("offset index", report) };
    if !bytes.len().is_multiple_of(INDEX_ENTRY_LEN) {
        return problem(format!("{} bytes is not a whole number of {INDEX_ENTRY_LEN}-byte entries", bytes.len()));
    }
    let mut prev: Option<(u32, u32)> = None;
    for (i, e) in bytes.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
        let (rel, pos) = (u32::from_le_bytes(e[..4].try_into().ok()?), u32::from_le_bytes(e[4..].try_into().ok()?));
        if rel == 0 && pos == 0 && i > 0 {
            break; // zeros after the entries of an older broker's active index
        }
        if prev.is_some_and(|(r, p)| rel <= r || pos <= p) {
            return problem(format!("entry {i} ({rel}, {pos}) does not follow the one before"));
        }
        match report.batches.get(&u64::from(pos)) {
            Some(h) if h.meta.base_offset == base + u64::from(rel) => {}
            _ => {
                return problem(format!(
                    "entry {i} names offset {} at byte {pos}, where no such batch starts",
                    base + u64::from(rel)
                ))
            }
        }
        prev = Some((rel, pos));
    }
    if prev.is_none() && !report.batches.is_empty() {
        return problem("empty while the log is not".into());
    }
    None
}

/// Checks the raw bytes of a segment's time index: whole entries,
/// increasing, each naming a batch with that largest timestamp (the last
/// entry may name the segment's last offset and largest timestamp instead).
pub fn check_time_index(base: u64, bytes: Option<&[u8]>, report: &SegmentReport) -> Option<Problem> {
    let problem = |reason: String| Some(Problem::Index { which: "time index", reason });
    let Some(bytes) = bytes else { return missing("time index", report) };
    if !bytes.len().is_multiple_of(TIME_INDEX_ENTRY_LEN) {
        return problem(format!("{} bytes is not a whole number of {TIME_INDEX_ENTRY_LEN}-byte entries", bytes.len()));
    }
    let by_base: BTreeMap<u64, &BatchHeader> = report.batches.values().map(|h| (h.meta.base_offset, h)).collect();
    let entries: Vec<(i64, u32)> = bytes
        .chunks_exact(TIME_INDEX_ENTRY_LEN)
        .map(|e| {
            (
                i64::from_le_bytes(e[..8].try_into().unwrap_or_default()),
                u32::from_le_bytes(e[8..].try_into().unwrap_or_default()),
            )
        })
        .take_while(|&(ts, rel)| ts != 0 || rel != 0)
        .collect();
    for (i, &(ts, rel)) in entries.iter().enumerate() {
        if i > 0 && (ts <= entries[i - 1].0 || rel <= entries[i - 1].1) {
            return problem(format!("entry {i} ({ts}, {rel}) does not follow the one before"));
        }
        let named = by_base.get(&(base + u64::from(rel))).is_some_and(|h| h.meta.max_timestamp == ts);
        let final_entry =
            i + 1 == entries.len() && ts == report.max_timestamp && base + u64::from(rel) < report.next_offset;
        if !named && !final_entry {
            return problem(format!(
                "entry {i} says offset {} has timestamp {ts}, which no batch there has",
                base + u64::from(rel)
            ));
        }
    }
    if entries.is_empty() && !report.batches.is_empty() {
        return problem("empty while the log is not".into());
    }
    None
}

impl super::Log {
    /// Verifies every segment (the scrubber; the active one up to what is
    /// written, which never changes), paced by `pace`: each damaged batch
    /// found is logged at ERROR and counted, once (as when a reader meets
    /// it); sealed segments' indexes that disagree with the log are rebuilt.
    /// Returns how many damaged places this pass found.
    pub fn scrub(&self, mut pace: impl FnMut(usize) -> io::Result<()>) -> io::Result<usize> {
        let segments = self.all_segments();
        let mut found = 0;
        for (i, seg) in segments.iter().enumerate() {
            let read = |pos: u64, len: usize| seg.read(pos, len);
            let report = scan_segment(seg.base_offset(), seg.size(), false, read, &mut pace)?;
            for p in &report.problems {
                if let Problem::Damaged { pos, .. } | Problem::Backwards { pos, .. } = p {
                    self.note_damage(seg, *pos, p);
                    found += 1;
                }
            }
            if i + 1 < segments.len() {
                seg.check_indexes();
            }
        }
        Ok(found)
    }
}
