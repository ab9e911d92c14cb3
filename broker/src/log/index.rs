//! Sparse indexes of a segment.
//!
//! - [`OffsetIndex`]: (offset − base, file position) every `index_interval_bytes`.
//! - [`TimeIndex`]: (largest timestamp so far, offset − base of the batch that
//!   raised it), at most one entry per index interval.
//!
//! The active segment's entries are kept in memory and appended to their
//! files with positional writes: the files are never sparse and never
//! mapped writable, so a full disk is a failed write (logged; the index is a
//! hint and recovery rebuilds it), never a SIGBUS. On seal (segment roll or
//! clean stop) the files are fsynced and mapped read-only.
//! Entries are only hints: a lost or stale entry costs a longer scan, never a
//! wrong answer, because readers always confirm against batch headers.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::Mmap;

use super::batch::BatchHeader;
use super::format::{INDEX_ENTRY_LEN, TIME_INDEX_ENTRY_LEN};

/// Index pages are touched one at a time: without this hint, the first read
/// of a mapped index faults in a large readahead window — megabytes per
/// partition with 1,000 partitions.
fn random_access(map: Mmap) -> Mmap {
    if let Err(e) = map.advise(memmap2::Advice::Random) {
        tracing::debug!(error = %e, "madvise(MADV_RANDOM) on an index failed");
    }
    map
}

/// Where the entries are.
#[derive(Debug)]
enum Entries {
    /// An active segment's: in memory, appended to the file as they come.
    Memory(Vec<u8>),
    /// A sealed segment's: the whole file, mapped read-only (None if empty).
    Mapped(Option<Mmap>),
}

/// Fixed-size entries in a file.
#[derive(Debug)]
struct EntryFile<const E: usize> {
    file: File,
    data: Entries,
    entries: usize,
    capacity: usize,
    /// At open, the file held something other than whole, valid entries:
    /// an odd size, or an entry out of order or out of bounds.
    damaged: bool,
    /// A positional write of an entry failed (reported once).
    write_failed: bool,
}

impl<const E: usize> EntryFile<E> {
    /// Opens (or creates) `path`. `writable_capacity_bytes` = Some(max) for
    /// an active segment (entries appended, at most `max / E`), None for a
    /// sealed one. `valid(prev, entry)` decides where the real entries end.
    fn open(
        path: &Path,
        writable_capacity_bytes: Option<usize>,
        valid: impl Fn(Option<&[u8; E]>, &[u8; E]) -> bool,
    ) -> io::Result<Self> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len() as usize;
        let (data, capacity) = match writable_capacity_bytes {
            Some(max) => {
                let mut bytes = Vec::with_capacity(len);
                file.read_to_end(&mut bytes)?;
                (Entries::Memory(bytes), (max / E).max(len / E))
            }
            // SAFETY: the file is this segment's, sealed (never written again
            // while mapped: a rebuild writes a new file and renames it over),
            // and no other process writes a broker's data directory (it is
            // locked).
            None if len > 0 => (Entries::Mapped(Some(random_access(unsafe { Mmap::map(&file)? }))), len / E),
            None => (Entries::Mapped(None), 0),
        };
        let mut this =
            EntryFile { file, data, entries: 0, capacity, damaged: !len.is_multiple_of(E), write_failed: false };
        let mut prev: Option<[u8; E]> = None;
        while this.entries < len.min(capacity * E) / E {
            let e = this.get(this.entries);
            if !valid(prev.as_ref(), &e) {
                // In a sealed file every entry must be valid; in an older
                // broker's preallocated one the rest is zeros.
                this.damaged |= writable_capacity_bytes.is_none() || e != [0u8; E];
                break;
            }
            prev = Some(e);
            this.entries += 1;
        }
        if let Entries::Memory(bytes) = &mut this.data {
            bytes.truncate(this.entries * E);
            if len != this.entries * E {
                this.file.set_len((this.entries * E) as u64)?;
            }
        }
        Ok(this)
    }

    fn bytes(&self) -> &[u8] {
        match &self.data {
            Entries::Memory(b) => b,
            Entries::Mapped(Some(m)) => m,
            Entries::Mapped(None) => &[],
        }
    }

    fn get(&self, i: usize) -> [u8; E] {
        let bytes = &self.bytes()[i * E..(i + 1) * E];
        std::array::from_fn(|k| bytes[k])
    }

    fn push(&mut self, entry: [u8; E]) -> bool {
        if self.entries >= self.capacity {
            return false;
        }
        let Entries::Memory(bytes) = &mut self.data else { return false };
        bytes.extend_from_slice(&entry);
        if let Err(e) = self.file.write_all_at(&entry, (self.entries * E) as u64) {
            if !std::mem::replace(&mut self.write_failed, true) {
                tracing::warn!(error = %e, "writing an index entry failed; the index is rebuilt from the log when needed");
            }
        }
        self.entries += 1;
        true
    }

    fn truncate(&mut self, entries: usize) {
        if entries < self.entries {
            if let Entries::Memory(bytes) = &mut self.data {
                bytes.truncate(entries * E);
            }
            self.entries = entries;
            let _ = self.file.set_len((entries * E) as u64);
        }
    }

    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.entries)
    }

    /// Writes what a failed write left out, cuts the file to its entries,
    /// fsyncs it, and maps it read-only.
    fn seal(&mut self) -> io::Result<()> {
        if let Entries::Memory(bytes) = &self.data {
            if self.write_failed {
                self.file.write_all_at(bytes, 0)?;
                self.write_failed = false;
            }
        }
        self.file.set_len((self.entries * E) as u64)?;
        self.file.sync_all()?;
        self.capacity = self.entries;
        // SAFETY: as in `open`; the file now has exactly `entries` entries.
        self.data = Entries::Mapped(match self.entries {
            0 => None,
            _ => Some(random_access(unsafe { Mmap::map(&self.file)? })),
        });
        Ok(())
    }

    /// Binary search: the last index `i` with `pred(entry i)` true, assuming
    /// `pred` is true for a prefix of the entries.
    fn last_where(&self, pred: impl Fn(&[u8; E]) -> bool) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if pred(&self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }
}

fn offset_entry(&[a, b, c, d, e, f, g, h]: &[u8; INDEX_ENTRY_LEN]) -> (u32, u32) {
    (u32::from_le_bytes([a, b, c, d]), u32::from_le_bytes([e, f, g, h]))
}

fn time_entry(&[a, b, c, d, e, f, g, h, i, j, k, l]: &[u8; TIME_INDEX_ENTRY_LEN]) -> (i64, u32) {
    (i64::from_le_bytes([a, b, c, d, e, f, g, h]), u32::from_le_bytes([i, j, k, l]))
}

/// Offset → file position, sparse.
#[derive(Debug)]
pub struct OffsetIndex(EntryFile<INDEX_ENTRY_LEN>);

impl OffsetIndex {
    /// Opens the index of a segment whose log holds `log_len` bytes. Entries
    /// must grow strictly and point inside the log; the first that does not
    /// ends the index (what follows is preallocated space or stale).
    pub fn open(path: &Path, writable_capacity_bytes: Option<usize>, log_len: u64) -> io::Result<Self> {
        let f = EntryFile::open(path, writable_capacity_bytes, |prev, e| {
            let (rel, pos) = offset_entry(e);
            let in_log = u64::from(pos) < log_len;
            match prev.map(offset_entry) {
                None => in_log,
                Some((prel, ppos)) => in_log && rel > prel && pos > ppos,
            }
        })?;
        Ok(OffsetIndex(f))
    }

    /// Adds an entry; false if the index is full (the segment must roll).
    pub fn push(&mut self, rel_offset: u32, position: u32) -> bool {
        let mut e = [0u8; INDEX_ENTRY_LEN];
        e[..4].copy_from_slice(&rel_offset.to_le_bytes());
        e[4..].copy_from_slice(&position.to_le_bytes());
        self.0.push(e)
    }

    /// The last entry with relative offset <= `rel_offset`: (relative offset, position).
    pub fn lookup(&self, rel_offset: u32) -> Option<(u32, u32)> {
        self.0.last_where(|e| offset_entry(e).0 <= rel_offset).map(|i| offset_entry(&self.0.get(i)))
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<(u32, u32)> {
        self.0.entries.checked_sub(1).map(|i| offset_entry(&self.0.get(i)))
    }

    /// False if the file held more than whole, valid entries when opened.
    pub fn consistent(&self) -> bool {
        !self.0.damaged
    }

    /// Every entry whose position is after `position`, in order.
    pub fn entries_after(&self, position: u32) -> Vec<(u32, u32)> {
        let from = self.0.last_where(|e| offset_entry(e).1 <= position).map_or(0, |i| i + 1);
        (from..self.0.entries).map(|i| offset_entry(&self.0.get(i))).collect()
    }

    /// Drops entries at relative offsets >= `rel_offset`.
    pub fn truncate_from(&mut self, rel_offset: u32) {
        let keep = self.0.last_where(|e| offset_entry(e).0 < rel_offset).map_or(0, |i| i + 1);
        self.0.truncate(keep);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.entries
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.entries == 0
    }

    /// How many more entries can be added.
    pub fn room(&self) -> usize {
        self.0.room()
    }

    /// Cuts the file to its entries and syncs it.
    pub fn seal(&mut self) -> io::Result<()> {
        self.0.seal()
    }
}

/// Timestamp → offset, sparse.
#[derive(Debug)]
pub struct TimeIndex(EntryFile<TIME_INDEX_ENTRY_LEN>);

impl TimeIndex {
    /// Opens a time index. Entries must carry positive, non-decreasing
    /// timestamps and strictly growing offsets.
    pub fn open(path: &Path, writable_capacity_bytes: Option<usize>) -> io::Result<Self> {
        let f = EntryFile::open(path, writable_capacity_bytes, |prev, e| {
            let (ts, rel) = time_entry(e);
            match prev.map(time_entry) {
                None => ts > 0,
                Some((pts, prel)) => ts > pts && rel > prel,
            }
        })?;
        Ok(TimeIndex(f))
    }

    /// Adds an entry; false if full.
    pub fn push(&mut self, max_timestamp: i64, rel_offset: u32) -> bool {
        let mut e = [0u8; TIME_INDEX_ENTRY_LEN];
        e[..8].copy_from_slice(&max_timestamp.to_le_bytes());
        e[8..].copy_from_slice(&rel_offset.to_le_bytes());
        self.0.push(e)
    }

    /// False if the file held more than whole, valid entries when opened.
    pub fn consistent(&self) -> bool {
        !self.0.damaged
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.entries == 0
    }

    /// The last entry whose timestamp is < `ts`: (timestamp, relative offset).
    /// Every record before that entry's batch is older than `ts`.
    pub fn last_before(&self, ts: i64) -> Option<(i64, u32)> {
        self.0.last_where(|e| time_entry(e).0 < ts).map(|i| time_entry(&self.0.get(i)))
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<(i64, u32)> {
        self.0.entries.checked_sub(1).map(|i| time_entry(&self.0.get(i)))
    }

    /// Drops entries at relative offsets >= `rel_offset`.
    pub fn truncate_from(&mut self, rel_offset: u32) {
        let keep = self.0.last_where(|e| time_entry(e).1 < rel_offset).map_or(0, |i| i + 1);
        self.0.truncate(keep);
    }

    /// How many more entries can be added.
    pub fn room(&self) -> usize {
        self.0.room()
    }

    /// Cuts the file to its entries and syncs it.
    pub fn seal(&mut self) -> io::Result<()> {
        self.0.seal()
    }
}

/// A segment's two indexes and the bookkeeping for their next entry.
#[derive(Debug)]
pub(in crate::log) struct Indexes {
    pub(in crate::log) offset: OffsetIndex,
    pub(in crate::log) time: TimeIndex,
    /// Bytes appended since the last offset index entry.
    pub(in crate::log) bytes_since_entry: u64,
}

impl Indexes {
    /// Notes a batch appended at `pos`: an offset entry at the first batch and
    /// then every `interval` bytes; a time entry with it when the segment's
    /// largest timestamp (`max_before`, before this batch) grew.
    pub(in crate::log) fn note_batch(&mut self, rel: u32, pos: u64, h: &BatchHeader, max_before: i64, interval: u64) {
        if self.offset.is_empty() || self.bytes_since_entry >= interval {
            self.offset.push(rel, pos as u32);
            self.bytes_since_entry = 0;
            if h.meta.max_timestamp > max_before {
                self.time.push(h.meta.max_timestamp, rel);
            }
        }
        self.bytes_since_entry += u64::from(h.batch_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_index_lookup_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::open(&path, Some(80), 10_000).unwrap();
        assert!(idx.lookup(5).is_none());
        for i in 0..10u32 {
            assert!(idx.push(i * 10, i * 1000));
        }
        assert_eq!(idx.room(), 0);
        assert!(!idx.push(100, 10_000));
        assert_eq!(idx.lookup(0), Some((0, 0)));
        assert_eq!(idx.lookup(35), Some((30, 3000)));
        assert_eq!(idx.lookup(1_000), Some((90, 9000)));
        drop(idx);
        // Reopen with a shorter log: entries pointing past it are dropped.
        let idx = OffsetIndex::open(&path, Some(80), 5_500).unwrap();
        assert_eq!(idx.len(), 6);
        assert_eq!(idx.last(), Some((50, 5000)));
    }

    #[test]
    fn preallocated_zeroes_are_not_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::open(&path, Some(4096), 1 << 20).unwrap();
        idx.push(0, 0);
        idx.push(7, 4100);
        drop(idx);
        // An older broker preallocated the file: its entries, then zeros.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
        let mut idx = OffsetIndex::open(&path, Some(4096), 1 << 20).unwrap();
        assert_eq!(idx.len(), 2);
        assert!(idx.consistent(), "zeros after the entries of an active index are not damage");
        idx.seal().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        let idx = OffsetIndex::open(&path, None, 1 << 20).unwrap();
        assert_eq!(idx.last(), Some((7, 4100)));

        let tpath = dir.path().join("0.timeindex");
        let mut t = TimeIndex::open(&tpath, Some(1200)).unwrap();
        t.push(100, 0);
        t.push(150, 9);
        drop(t);
        let t = TimeIndex::open(&tpath, Some(1200)).unwrap();
        assert_eq!(t.last(), Some((150, 9)));
    }

    #[test]
    fn truncate_from_drops_later_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = OffsetIndex::open(&dir.path().join("i"), Some(800), 1 << 30).unwrap();
        let mut t = TimeIndex::open(&dir.path().join("t"), Some(1200)).unwrap();
        for i in 0..10u32 {
            idx.push(i * 10, i * 100);
            t.push(1000 + i64::from(i), i * 10);
        }
        idx.truncate_from(45);
        t.truncate_from(45);
        assert_eq!(idx.last(), Some((40, 400)));
        assert_eq!(t.last(), Some((1004, 40)));
        idx.truncate_from(0);
        assert!(idx.is_empty());
    }

    proptest! {
        #[test]
        fn lookup_finds_floor_entry(gaps in proptest::collection::vec(1u32..1000, 1..200), probe in 0u32..300_000) {
            let dir = tempfile::tempdir().unwrap();
            let mut idx = OffsetIndex::open(&dir.path().join("i"), Some(8 * 200), u64::MAX).unwrap();
            let mut t = TimeIndex::open(&dir.path().join("t"), Some(12 * 200)).unwrap();
            let mut rel = 0u32;
            let mut entries = Vec::new();
            for (i, g) in gaps.iter().enumerate() {
                if i > 0 { rel += g; }
                idx.push(rel, rel * 3);
                t.push(i64::from(rel) + 1, rel);
                entries.push(rel);
            }
            let expect = entries.iter().rev().find(|&&e| e <= probe).map(|&e| (e, e * 3));
            prop_assert_eq!(idx.lookup(probe), expect);
            let ts = i64::from(probe);
            let expect_t = entries.iter().rev().find(|&&e| i64::from(e) + 1 < ts).map(|&e| (i64::from(e) + 1, e));
            prop_assert_eq!(t.last_before(ts), expect_t);
        }
    }
}
