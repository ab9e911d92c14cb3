//! Compaction's segment rewriting (for `cleanup.policy` with `compact`):
//! keep only the latest record per key in closed segments, so an entity
//! topic replays to its table. What to keep beyond that (tombstone age, the
//! compaction lag) is a [`CompactionPolicy`] the caller passes in.
//!
//! A pass over one partition:
//! 1. Build a map key → latest offset from every segment (closed and active).
//!    Keys are kept as 128-bit hashes so memory stays bounded by key count.
//! 2. For each closed segment whose records are all older than
//!    `min.compaction.lag.ms` (a prefix of the log), copy the batches keeping
//!    a record if it is the latest for its key, or has no key; a latest
//!    record that is a tombstone is dropped once its timestamp is older than
//!    `delete.retention.ms`. Kept records keep their offsets and bytes; a batch
//!    keeps its base and last offset, so offsets become sparse but never move.
//! 3. Swap the copy in (crash-safe protocol below) and reload the segment.
//!
//! Swap protocol for segment `B` (the recovery rule is
//! `recovery::recover_cleaned`):
//! write and fsync `B.log.cleaned`, `B.index.cleaned`, `B.timeindex.cleaned`;
//! rename `B.log.cleaned` over `B.log` (the commit point) and fsync the
//! directory; rename the two index copies over theirs and fsync again.

use std::collections::HashMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use std::fs::File;

use super::batch::{write_header_with, BatchError, BatchHeader, BatchMeta, RecordIter, RecordView};
use super::format::{cleaned_paths, BATCH_HEADER_LEN, BATCH_HEADER_LEN_V1, INDEX_ENTRY_LEN, TIME_INDEX_ENTRY_LEN};
use super::index::{Indexes, OffsetIndex, TimeIndex};
use super::{sync_dir, IndexConfig, Log, Segment};
use crate::failpoint;

/// What compaction may drop beyond older versions of a key (the topic's
/// `delete.retention.ms` and `min.compaction.lag.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Records younger than this are never compacted away: a closed segment
    /// is cleaned only once its newest record is older.
    pub min_compaction_lag_ms: u64,
    /// A tombstone that is the latest for its key is dropped once it is older.
    pub delete_retention_ms: u64,
}

/// Crash points of the swap protocol, in order.
pub const FAILPOINTS: [&str; 3] =
    ["compaction-after-log-copy", "compaction-before-commit", "compaction-after-log-swap"];

/// Writes a compacted copy of a segment (`<base>.*.cleaned`), batch by batch,
/// with its own indexes. Nothing is visible until [`commit`] renames it in.
pub struct CleanedWriter {
    base: u64,
    file: io::BufWriter<File>,
    indexes: Indexes,
    pos: u64,
    max_timestamp: i64,
    interval: u64,
}

impl CleanedWriter {
    /// Starts the copy of segment `base` in `dir`; `max_batches` bounds the index sizes.
    pub fn create(dir: &Path, base: u64, max_batches: usize, cfg: IndexConfig) -> io::Result<CleanedWriter> {
        let [log, index, time] = cleaned_paths(dir, base);
        let file = File::create(log)?;
        let offset = OffsetIndex::open(&index, Some(max_batches * INDEX_ENTRY_LEN), 0)?;
        let time = TimeIndex::open(&time, Some((max_batches + 1) * TIME_INDEX_ENTRY_LEN))?;
        Ok(CleanedWriter {
            base,
            file: io::BufWriter::with_capacity(1 << 20, file),
            indexes: Indexes { offset, time, bytes_since_entry: 0 },
            pos: 0,
            max_timestamp: i64::MIN,
            interval: cfg.interval_bytes,
        })
    }

    /// Appends one complete, valid batch.
    pub fn push(&mut self, batch: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let h = BatchHeader::parse(batch).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.file.write_all(batch)?;
        let rel = (h.meta.base_offset - self.base) as u32;
        self.indexes.note_batch(rel, self.pos, &h, self.max_timestamp, self.interval);
        self.max_timestamp = self.max_timestamp.max(h.meta.max_timestamp);
        self.pos += u64::from(h.batch_len);
        Ok(())
    }

    /// Flushes and fsyncs the log copy (then calls `between`, a crash point),
    /// then seals and fsyncs the index copies. Returns the copy's size.
    pub fn finish(mut self, last_offset: u64, between: impl FnOnce()) -> io::Result<u64> {
        use std::io::Write;
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        between();
        let rel = (last_offset - self.base) as u32;
        let ix = &mut self.indexes;
        if self.max_timestamp > ix.time.last().map_or(i64::MIN, |(ts, _)| ts)
            && self.max_timestamp > 0
            && ix.time.last().is_none_or(|(_, r)| r < rel)
        {
            ix.time.push(self.max_timestamp, rel);
        }
        ix.offset.seal()?;
        ix.time.seal()?;
        Ok(self.pos)
    }
}

fn commit(dir: &Path, base: u64) -> io::Result<()> {
    failpoint::hit(FAILPOINTS[1]);
    let [log, index, time] = cleaned_paths(dir, base);
    failpoint::io("rename")?;
    fs::rename(&log, log.with_extension(""))?;
    sync_dir(dir)?;
    failpoint::hit(FAILPOINTS[2]);
    fs::rename(&index, index.with_extension(""))?;
    fs::rename(&time, time.with_extension(""))?;
    sync_dir(dir)
}

/// Paces reads and writes to a byte rate, and notices a stop request.
pub struct Throttle<'a> {
    bytes_per_sec: u64,
    start: Instant,
    bytes: u64,
    stop: &'a AtomicBool,
}

impl<'a> Throttle<'a> {
    /// At most `bytes_per_sec`; `stop` aborts the pass between batches.
    pub fn new(bytes_per_sec: u64, stop: &'a AtomicBool) -> Self {
        Throttle { bytes_per_sec: bytes_per_sec.max(1), start: Instant::now(), bytes: 0, stop }
    }

    /// Accounts `n` bytes of I/O, sleeping if ahead of the allowed rate.
    /// Errors with `Interrupted` once a stop was requested.
    pub fn account(&mut self, n: usize) -> io::Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "compaction stopped for shutdown"));
        }
        self.bytes += n as u64;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            // Pacing I/O, not waiting for a condition.
            std::thread::sleep(ahead);
        }
        Ok(())
    }
}

/// What a pass did to one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments rewritten.
    pub segments_rewritten: u32,
    /// Bytes of the cleanable segments before.
    pub bytes_before: u64,
    /// Bytes of the same segments after.
    pub bytes_after: u64,
    /// Records dropped because a newer record has the same key.
    pub records_dropped: u64,
    /// Tombstones dropped after `delete.retention.ms`.
    pub tombstones_dropped: u64,
    /// Time alone will make more cleanable (young tombstones kept, or closed
    /// segments held back by `min.compaction.lag.ms`): clean again later even
    /// if nothing is appended.
    pub work_left: bool,
}

fn key_hash(key: &[u8]) -> u128 {
    // Two SipHash passes with different prefixes: 128 bits, so a collision
    // (which would drop a live record) is as unlikely as with Kafka's MD5.
    let h = |seed: u8| {
        let mut s = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut s);
        key.hash(&mut s);
        s.finish()
    };
    (u128::from(h(0)) << 64) | u128::from(h(1))
}

/// Calls `f` for every batch of `seg` below `limit` with its header,
/// reading in large chunks. Every batch is verified first: compaction never
/// copies a damaged batch, and stops (with `InvalidData` naming the file and
/// position) where it finds one.
fn for_each_batch(
    seg: &Segment,
    limit: u64,
    throttle: &mut Throttle,
    mut f: impl FnMut(&BatchHeader, &Bytes) -> io::Result<()>,
) -> io::Result<()> {
    const CHUNK: u64 = 4 << 20;
    let damaged = |pos: u64, e: BatchError| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("damaged batch at byte {pos} of {}: {e}; compaction skipped this partition", seg.path().display()),
        )
    };
    let mut pos = 0;
    while pos < limit {
        let h = seg.checked_header_at(pos, limit)?.map_err(|e| damaged(pos, e))?;
        let want = (limit - pos).min(CHUNK.max(u64::from(h.batch_len)));
        let data = seg.read(pos, want as usize)?;
        throttle.account(data.len())?;
        let mut p = 0;
        while p + BATCH_HEADER_LEN_V1 <= data.len() {
            let h = match BatchHeader::parse(&data[p..]) {
                Ok(h) => h,
                Err(BatchError::Truncated) if p > 0 => break,
                Err(e) => return Err(damaged(pos + p as u64, e)),
            };
            let end = p + h.batch_len as usize;
            if end > data.len() {
                break;
            }
            h.verify(&data[p..end]).map_err(|e| damaged(pos + p as u64, e))?;
            f(&h, &data.slice(p..end))?;
            p = end;
        }
        pos += p as u64;
    }
    Ok(())
}

/// Result of filtering one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every record kept: the batch stays as it is.
    Unchanged,
    /// Some records kept: the new batch is in the output buffer.
    Rewritten,
    /// No record kept: the batch disappears.
    Empty,
}

/// Copies into `out` the records of `batch` that `keep` accepts, as a new
/// batch with the same base and last offset (so offsets never move).
pub fn filter_batch(
    batch: &[u8],
    mut keep: impl FnMut(&RecordView) -> bool,
    out: &mut BytesMut,
) -> io::Result<Filtered> {
    let h = BatchHeader::parse(batch).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let body = &batch[h.header_len()..h.batch_len as usize];
    out.clear();
    out.resize(BATCH_HEADER_LEN, 0);
    let (mut kept, mut total) = (0u32, 0u32);
    let (mut first_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for r in RecordIter::new(body) {
        total += 1;
        if keep(&r) {
            kept += 1;
            first_ts = first_ts.min(r.timestamp_ms);
            max_ts = max_ts.max(r.timestamp_ms);
            out.extend_from_slice(&body[r.entry.clone()]);
        }
    }
    if kept == total {
        return Ok(Filtered::Unchanged);
    }
    if kept == 0 {
        return Ok(Filtered::Empty);
    }
    let meta = BatchMeta { record_count: kept, first_timestamp: first_ts, max_timestamp: max_ts, ..h.meta };
    write_header_with(out, &meta, &h.extra());
    Ok(Filtered::Rewritten)
}

/// Compacts one partition. Returns None if there was nothing to clean.
pub fn compact_partition(
    log: &Log,
    settings: &CompactionPolicy,
    index: IndexConfig,
    now_ms: i64,
    throttle: &mut Throttle,
) -> io::Result<Option<CleanStats>> {
    let (closed, _) = log.closed_segments();
    let lag_limit = now_ms.saturating_sub(settings.min_compaction_lag_ms as i64);
    let closed_count = closed.len();
    let cleanable: Vec<_> = closed.into_iter().take_while(|s| s.max_timestamp() <= lag_limit).collect();
    if cleanable.is_empty() {
        return Ok(None);
    }
    let mut young_tombstones = false;
    // 1. Latest offset per key, over the whole log as it is now.
    let mut latest: HashMap<u128, u64> = HashMap::new();
    for seg in &log.all_segments() {
        for_each_batch(seg, seg.size(), throttle, |h, batch| {
            for r in RecordIter::new(&batch[h.header_len()..]) {
                if let Some(k) = r.key {
                    latest.insert(key_hash(k), r.offset);
                }
            }
            Ok(())
        })?;
    }
    // 2. and 3. Copy, commit and reload each cleanable segment that changes.
    let tombstone_limit = now_ms.saturating_sub(settings.delete_retention_ms as i64);
    let mut stats = CleanStats::default();
    let mut out = BytesMut::new();
    for seg in &cleanable {
        let size = seg.size();
        stats.bytes_before += size;
        let max_batches = (size / BATCH_HEADER_LEN as u64 + 1) as usize;
        let mut writer = CleanedWriter::create(log.dir(), seg.base_offset(), max_batches, index)?;
        let mut changed = false;
        let mut last_offset = seg.base_offset();
        let (mut dropped, mut tombstones) = (0u64, 0u64);
        let copied = for_each_batch(seg, size, throttle, |h, batch| {
            let keep = |r: &RecordView| {
                let Some(k) = r.key else { return true };
                if latest.get(&key_hash(k)).is_some_and(|&l| r.offset < l) {
                    dropped += 1;
                    return false;
                }
                if r.value.is_none() {
                    if r.timestamp_ms < tombstone_limit {
                        tombstones += 1;
                        return false;
                    }
                    young_tombstones = true;
                }
                true
            };
            match filter_batch(batch, keep, &mut out)? {
                Filtered::Unchanged => writer.push(batch)?,
                Filtered::Rewritten => {
                    changed = true;
                    writer.push(&out)?;
                }
                Filtered::Empty => changed = true,
            }
            last_offset = h.meta.base_offset + u64::from(h.meta.last_offset_delta);
            Ok(())
        });
        if let Err(e) = copied {
            discard(log.dir(), seg.base_offset());
            return Err(e);
        }
        if !changed {
            drop(writer);
            discard(log.dir(), seg.base_offset());
            stats.bytes_after += size;
            continue;
        }
        let new_size = writer.finish(last_offset, || failpoint::hit(FAILPOINTS[0]))?;
        throttle.account(new_size as usize)?;
        commit(log.dir(), seg.base_offset())?;
        log.reload_segment(seg.base_offset(), index)?;
        stats.segments_rewritten += 1;
        stats.bytes_after += new_size;
        stats.records_dropped += dropped;
        stats.tombstones_dropped += tombstones;
    }
    stats.work_left = young_tombstones || cleanable.len() < closed_count;
    Ok(Some(stats))
}

fn discard(dir: &Path, base: u64) {
    for p in cleaned_paths(dir, base) {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::TestRecord;
    use crate::log::batch::{encode_batch, Stamp};

    fn keyed(k: &str, v: Option<&str>) -> TestRecord {
        TestRecord { ts: 100, key: Some(k.into()), value: v.map(|v| v.into()), headers: vec![] }
    }

    #[test]
    fn filter_keeps_offsets_and_batch_bounds() {
        let mut batch = BytesMut::new();
        let records = [keyed("a", Some("1")), keyed("b", Some("2")), keyed("a", Some("3")), keyed("c", None)];
        encode_batch(&mut batch, 40, &records, Stamp { append_time_ms: 1, log_append_time: false, producer: None });
        let mut out = BytesMut::new();
        // Keep offsets 41 and 43.
        let f = filter_batch(&batch, |r| r.offset % 2 == 1, &mut out).unwrap();
        assert_eq!(f, Filtered::Rewritten);
        let h = BatchHeader::parse_verified(&out).unwrap();
        assert_eq!(h.meta.base_offset, 40);
        assert_eq!(h.meta.last_offset_delta, 3, "last offset kept so offsets never move");
        assert_eq!(h.meta.record_count, 2);
        let offsets: Vec<_> = RecordIter::new(&out[BATCH_HEADER_LEN..]).map(|r| r.offset).collect();
        assert_eq!(offsets, vec![41, 43]);
        assert_eq!(filter_batch(&batch, |_| true, &mut out).unwrap(), Filtered::Unchanged);
        assert_eq!(filter_batch(&batch, |_| false, &mut out).unwrap(), Filtered::Empty);
    }

    #[test]
    fn key_hashes_differ_for_different_keys() {
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        assert_eq!(key_hash(b"a"), key_hash(b"a"));
    }

    #[test]
    fn recovery_discards_uncommitted_and_finishes_committed_swaps() {
        use crate::log::recovery::recover_cleaned;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Segment 0: copy never committed (log copy still there).
        for p in cleaned_paths(d, 0) {
            fs::write(&p, b"new").unwrap();
            fs::write(p.with_extension(""), b"old").unwrap();
        }
        // Segment 7: log swapped, indexes not yet.
        let [log7, idx7, time7] = cleaned_paths(d, 7);
        fs::write(log7.with_extension(""), b"new").unwrap();
        for p in [&idx7, &time7] {
            fs::write(p, b"new").unwrap();
            fs::write(p.with_extension(""), b"old").unwrap();
        }
        recover_cleaned(d).unwrap();
        for p in cleaned_paths(d, 0) {
            assert!(!p.exists());
            assert_eq!(fs::read(p.with_extension("")).unwrap(), b"old");
        }
        for p in cleaned_paths(d, 7) {
            assert!(!p.exists());
            assert_eq!(fs::read(p.with_extension("")).unwrap(), b"new");
        }
    }

    fn settings() -> CompactionPolicy {
        CompactionPolicy { min_compaction_lag_ms: 0, delete_retention_ms: 1000 }
    }

    #[test]
    fn compacting_a_log_keeps_latest_per_key_with_original_offsets() {
        use crate::log::{LogConfig, ReadResult};
        let dir = tempfile::tempdir().unwrap();
        let index = IndexConfig { interval_bytes: 128, max_bytes: 4096 };
        let cfg = LogConfig {
            // Eight one-record batches (79 bytes each) per segment: the
            // young tombstone (key 4) starts a segment of its own.
            segment_bytes: 632,
            segment_ms: u64::MAX,
            index,
            log_append_time: false,
            flush_records: 0,
            direct_io: true,
            truncate_damage: false,
            clean_stop: false,
        };
        let (log, _) = Log::open(dir.path(), "t/0".into(), cfg).unwrap();
        let mut expected = std::collections::BTreeMap::new();
        // 10 keys x 20 versions, timestamps 1000..; key 3 ends with an old tombstone, key 4 with a young one.
        for v in 0..20 {
            for k in 0..10 {
                let key = format!("key-{k}");
                let tombstone = v == 19 && (k == 3 || k == 4);
                let ts = if k == 4 && tombstone { 1_000_000 } else { 1000 + v };
                let value = (!tombstone).then(|| format!("v{v}"));
                let r = TestRecord {
                    ts,
                    key: Some(key.clone().into()),
                    value: value.clone().map(Into::into),
                    headers: vec![],
                };
                let a = log.append(&[r], 0).unwrap();
                expected.insert(key, (a.base_offset, value));
            }
        }
        // A filler so every update sits in a closed segment.
        log.append(
            &[TestRecord { ts: 5000, key: Some(b"filler".to_vec()), value: Some(vec![0; 700]), headers: vec![] }],
            0,
        )
        .unwrap();
        let before = log.disk_usage().1;
        let stop = AtomicBool::new(false);
        let mut throttle = Throttle::new(u64::MAX / 2, &stop);
        let stats = compact_partition(&log, &settings(), index, 10_000, &mut throttle).unwrap().unwrap();
        assert!(stats.segments_rewritten > 0);
        assert_eq!(stats.records_dropped, 190, "19 older versions of 10 keys");
        assert_eq!(stats.tombstones_dropped, 1, "only the tombstone older than delete.retention.ms");
        assert!(stats.work_left, "the young tombstone must be looked at again");
        assert!(log.disk_usage().1 < before / 5);

        // Replay: exactly the latest record per key, at its original offset.
        let mut offset = log.log_start();
        let mut seen = Vec::new();
        while offset < log.end_offset() {
            let ReadResult { chunks, next_offset, .. } = log.read(offset, 1 << 20).unwrap();
            for c in &chunks {
                for r in RecordIter::new(c) {
                    seen.push((
                        String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                        r.offset,
                        r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    ));
                }
            }
            offset = next_offset;
        }
        let filler = seen.pop().unwrap();
        assert_eq!(filler.0, "filler");
        let mut want: Vec<_> =
            expected.into_iter().filter(|(k, _)| k != "key-3").map(|(k, (o, v))| (k, o, v)).collect();
        want.sort_by_key(|w| w.1);
        assert_eq!(seen, want);

        // The compacted log reopens the same (indexes were swapped in too).
        log.close().unwrap();
        drop(log);
        let (log, _) = Log::open(dir.path(), "t/0".into(), cfg).unwrap();
        let r = log.read(want[3].1, 1 << 20).unwrap();
        let first = RecordIter::new(&r.chunks[0]).next().unwrap();
        assert_eq!(first.offset, want[3].1);
    }
}
