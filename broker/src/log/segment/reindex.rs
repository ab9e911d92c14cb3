//! Indexes are hints, never truth: the checks a sealed segment's indexes
//! pass at open, and their rebuild from the log when they do not (or when a
//! lookup finds an entry that does not match its batch).

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::super::format::{BATCH_HEADER_LEN_V1, INDEX_ENTRY_LEN, TIME_INDEX_ENTRY_LEN};
use super::super::index::{Indexes, OffsetIndex, TimeIndex};
use super::super::sync_dir;
use super::{segment_paths, Segment};
use crate::locks::RwLockExt;

impl Segment {
    /// Why the indexes of this sealed segment cannot be trusted, if they
    /// cannot: a file of odd size, an entry out of order or out of bounds,
    /// an index that is empty (or missing) while the log is not, or a first
    /// or last entry that does not point at the batch it names.
    pub(super) fn sealed_indexes_disagree(&self) -> io::Result<Option<String>> {
        let size = self.size();
        let (offset_ok, time_ok, empty, first, last) = {
            let ix = self.indexes.read_locked();
            let empty = ix.offset.is_empty() || ix.time.is_empty();
            let first = ix.offset.lookup(0);
            (ix.offset.consistent(), ix.time.consistent(), empty, first, ix.offset.last())
        };
        if !offset_ok {
            return Ok(Some("the offset index has an odd size or an entry out of order or out of bounds".into()));
        }
        if !time_ok {
            return Ok(Some("the time index has an odd size or an entry out of order".into()));
        }
        if size == 0 {
            return Ok(None);
        }
        if empty {
            return Ok(Some("an index is empty or missing".into()));
        }
        for (rel, pos) in first.into_iter().chain(last) {
            match self.checked_header_at(u64::from(pos), size)? {
                Ok(h) if h.meta.base_offset == self.base_offset + u64::from(rel) => {}
                _ => {
                    return Ok(Some(format!(
                        "entry for relative offset {rel} at byte {pos} does not point at that batch"
                    )))
                }
            }
        }
        Ok(None)
    }

    /// Rebuilds the indexes of this sealed segment if they disagree with
    /// its log (at open, and the scrubber's check). A check or rebuild that
    /// fails (an I/O error, a full disk) is logged and leaves the indexes as
    /// they are: they are hints, checked on every use.
    pub fn check_indexes(&self) {
        let checked = self.sealed_indexes_disagree().and_then(|why| match why {
            Some(why) => self.rebuild_indexes(&why),
            None => Ok(()),
        });
        if let Err(e) = checked {
            tracing::warn!(segment = %self.path.display(), error = %e, "checking or rebuilding the indexes failed");
        }
    }

    /// Rebuilds both indexes of this sealed segment from its log (written
    /// beside the old ones, fsynced, renamed over them) and swaps them in.
    /// Every batch is verified first; damaged ones are passed over (readers
    /// meet them as damage).
    pub(super) fn rebuild_indexes(&self, why: &str) -> io::Result<()> {
        let mut ix = self.indexes.write_locked();
        let size = self.size();
        let dir = self.path.parent().map(PathBuf::from).unwrap_or_default();
        let [_, index_path, time_path] = segment_paths(&dir, self.base_offset);
        let tmp =
            |p: &PathBuf| p.with_extension(format!("{}.rebuild", p.extension().unwrap_or_default().to_string_lossy()));
        let (index_tmp, time_tmp) = (tmp(&index_path), tmp(&time_path));
        // Each batch adds at most one entry to each index.
        let most = (size / BATCH_HEADER_LEN_V1 as u64 + 1) as usize;
        let mut fresh = Indexes {
            offset: OffsetIndex::open(&index_tmp, Some(most * INDEX_ENTRY_LEN), 0)?,
            time: TimeIndex::open(&time_tmp, Some(most * TIME_INDEX_ENTRY_LEN))?,
            bytes_since_entry: 0,
        };
        let (mut pos, mut max_ts, mut last_offset) = (0u64, i64::MIN, None);
        while pos < size {
            // Only verified batches are indexed: a damaged header says nothing.
            let h = match self.verified_batch_at(pos, size)? {
                Ok(h) if h.meta.base_offset >= self.base_offset => h,
                _ => match self.next_valid_batch(pos, self.base_offset, size)? {
                    Some((p, _)) => {
                        pos = p;
                        continue;
                    }
                    None => break,
                },
            };
            fresh.note_batch(self.rel(h.meta.base_offset), pos, &h, max_ts, self.index_interval);
            max_ts = max_ts.max(h.meta.max_timestamp);
            last_offset = Some(h.meta.next_offset() - 1);
            pos += u64::from(h.batch_len);
        }
        // As sealing does: a last time entry keeps the segment's largest timestamp.
        if let Some(last) = last_offset {
            let rel = self.rel(last);
            if fresh.time.last().is_none_or(|(ts, r)| ts < max_ts && r < rel) && max_ts > 0 {
                fresh.time.push(max_ts, rel);
            }
        }
        fresh.offset.seal()?;
        fresh.time.seal()?;
        drop(fresh);
        fs::rename(&index_tmp, &index_path)?;
        fs::rename(&time_tmp, &time_path)?;
        sync_dir(&dir)?;
        *ix = Indexes {
            offset: OffsetIndex::open(&index_path, None, size)?,
            time: TimeIndex::open(&time_path, None)?,
            bytes_since_entry: 0,
        };
        self.max_timestamp.store(max_ts, Ordering::Release);
        self.index_suspect.store(false, Ordering::Relaxed);
        tracing::warn!(segment = %self.path.display(), reason = %why, entries = ix.offset.len(),
            "rebuilt the indexes of a sealed segment from its log");
        metrics::counter!("strata_index_rebuilds_total").increment(1);
        Ok(())
    }
}
