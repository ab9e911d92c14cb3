//! Finding valid batches among damaged bytes: the resynchronisation after
//! damage that readers, recovery and the scrubber share, and the tail check
//! of the active segment at start-up, which applies `recovery::tail_step`.

use std::io;

use bytes::Bytes;
use std::sync::atomic::Ordering;

use super::super::batch::{BatchError, BatchHeader};
use super::super::direct;
use super::super::format::*;
use super::super::recovery::{self, Found, TailRecovery, TailStep};
use super::super::verify::next_valid_within;
use super::{IndexConfig, Segment};
use crate::locks::RwLockExt;

impl Segment {
    /// The first batch after byte `after` that verifies whole and starts at
    /// or after offset `min_offset` (and at or after the segment's base),
    /// starting before `until`: where reading goes on after damage (see
    /// `verify::next_valid`, shared with `strata verify` and the scrubber).
    pub fn next_valid_batch(&self, after: u64, min_offset: u64, until: u64) -> io::Result<Option<(u64, BatchHeader)>> {
        let size = self.size().max(until);
        let mut read = |pos: u64, len: usize| self.read(pos, len);
        let min = min_offset.max(self.base_offset);
        next_valid_within(after, until, size, min, &mut read, &mut |_| Ok(()))
    }

    /// The position to start a timestamp search from: every record of the
    /// batches before it is older than `ts`.
    ///
    /// The time index is a hint: the batch the entry names must be where the
    /// offset index says and carry the entry's timestamp, or the indexes of a
    /// sealed segment are rebuilt (and an active one's search starts at 0).
    pub fn time_search_start(&self, ts: i64) -> io::Result<u64> {
        for retry in [false, true] {
            let (entry, at) = {
                let ix = self.indexes.read_locked();
                let entry = ix.time.last_before(ts);
                (entry, entry.and_then(|(_, rel)| ix.offset.lookup(rel)))
            };
            let (Some((entry_ts, rel)), Some((at_rel, p))) = (entry, at) else { return Ok(0) };
            let last = self.indexes.read_locked().time.last() == entry;
            if at_rel != rel && last {
                // The seal-time entry names the last offset, not a batch.
                return Ok(u64::from(p));
            }
            match self.checked_header_at(u64::from(p), self.size())? {
                Ok(h)
                    if at_rel == rel
                        && h.meta.base_offset == self.base_offset + u64::from(rel)
                        && h.meta.max_timestamp == entry_ts =>
                {
                    return Ok(u64::from(p))
                }
                _ if !retry && self.index_disagrees(rel, p)? => continue,
                _ => return Ok(0),
            }
        }
        Ok(0)
    }

    /// Checks the tail of the log batch by batch, from the last index entry
    /// that points at a valid batch, and acts on what it finds as
    /// [`recovery::tail_step`] decides. Rebuilds index entries for what it
    /// checked. Returns the offset after the last good batch along with what
    /// was done.
    pub fn recover_tail(
        &self,
        cfg: IndexConfig,
        truncate_damage: bool,
        clean_stop: bool,
        recovery_point: u64,
    ) -> io::Result<(u64, TailRecovery)> {
        let file_len = self.file.metadata()?.len();
        let mut report = TailRecovery::default();
        let mut ix = self.indexes.write_locked();
        // Walk back from the last index entry until one points at a good batch.
        let (mut pos, mut next_offset) = loop {
            match ix.offset.last() {
                None => break (0, self.base_offset),
                Some((rel, p)) => {
                    let good = self.verified_batch_at(u64::from(p), file_len)?;
                    if let Ok(h) = good {
                        if h.meta.base_offset == self.base_offset + u64::from(rel) {
                            break (u64::from(p), h.meta.base_offset);
                        }
                    }
                    ix.offset.truncate_from(rel);
                }
            }
        };
        let resume_rel = self.rel(next_offset);
        ix.offset.truncate_from(resume_rel);
        ix.time.truncate_from(resume_rel);
        let mut max_ts = ix.time.last().map_or(i64::MIN, |(ts, _)| ts);
        ix.bytes_since_entry = 0;
        while pos < file_len {
            let found = match self.verified_batch_at(pos, file_len)? {
                Ok(h) if h.meta.base_offset >= next_offset => Found::Batch(h),
                Ok(h) => Found::Overlap { base_offset: h.meta.base_offset, expected: next_offset },
                Err(BatchError::BadMagic(0)) if self.zero_header_at(pos)? => Found::Zeros,
                Err(e) => Found::Damaged(e),
            };
            let valid_after = match &found {
                Found::Batch(_) => None,
                _ => self.next_valid_batch(pos, next_offset, file_len)?.map(|(p, _)| p),
            };
            // Everything was fsynced before a clean stop; after a crash, what
            // the last fsync covered (the recovery point). Zeros after the
            // last batch (preallocation, direct I/O's padding) are judged
            // by the recovery point alone: a clean stop writes it too.
            let durable = match (&found, valid_after) {
                // (A damaged recovery point, u64::MAX, says nothing here.)
                (Found::Zeros, None) => recovery_point != u64::MAX && next_offset < recovery_point,
                _ => clean_stop || next_offset < recovery_point,
            };
            let hole = match valid_after {
                Some(next) if !durable => self.has_zero_block(pos, next)?,
                _ => false,
            };
            let h = match recovery::tail_step(found, valid_after, durable, truncate_damage || hole) {
                TailStep::Keep(h) => h,
                TailStep::End => break,
                TailStep::Cut(why) => {
                    report.truncated = Some((file_len - pos, why));
                    break;
                }
                TailStep::Refuse(why) => {
                    // Nothing is cut: the log ends here for readers, and
                    // takes no appends (see `Log::open`).
                    report.refused = Some(format!("{} at byte {pos}: {why}", self.path.display()));
                    break;
                }
            };
            report.batches_checked += 1;
            ix.note_batch(self.rel(h.meta.base_offset), pos, &h, max_ts, cfg.interval_bytes);
            max_ts = max_ts.max(h.meta.max_timestamp);
            next_offset = h.meta.next_offset();
            pos += u64::from(h.batch_len);
        }
        // (A damaged recovery point, u64::MAX, says nothing of where the log ends.)
        if report.refused.is_none() && recovery_point != u64::MAX {
            if let Some(why) = recovery::short_log(next_offset, recovery_point, truncate_damage) {
                report.refused = Some(format!("{} at byte {pos}: {why}", self.path.display()));
            }
        }
        if pos < file_len && report.refused.is_none() {
            self.file.set_len(pos)?;
            self.file.sync_all()?;
        }
        self.size.store(pos, Ordering::Release);
        self.allocated.store(pos, Ordering::Relaxed);
        self.max_timestamp.store(max_ts, Ordering::Release);
        Ok((next_offset, report))
    }

    /// True if `from..to` holds a whole 4 KiB block of zeros: what a write
    /// that was not fsynced leaves after a power loss (blocks reach the disk
    /// in any order), not what damage to written bytes looks like.
    fn has_zero_block(&self, from: u64, to: u64) -> io::Result<bool> {
        let block = DIRECT_IO_ALIGN as u64;
        let mut at = direct::align_up(from);
        while at + block <= to {
            if self.read(at, block as usize)?.iter().all(|&b| b == 0) {
                return Ok(true);
            }
            at += block;
        }
        Ok(false)
    }

    fn zero_header_at(&self, pos: u64) -> io::Result<bool> {
        Ok(self.header_bytes_at(pos)?.iter().all(|&x| x == 0))
    }

    /// Reads and verifies the whole batch at `pos`. The outer error is I/O;
    /// the inner one says why the bytes are not a good batch.
    pub fn verified_batch_at(&self, pos: u64, file_len: u64) -> io::Result<Result<BatchHeader, BatchError>> {
        Ok(self.verified_bytes_at(pos, file_len)?.map(|(h, _)| h))
    }

    /// As [`Segment::verified_batch_at`], with the batch's bytes.
    pub fn verified_bytes_at(&self, pos: u64, file_len: u64) -> io::Result<Result<(BatchHeader, Bytes), BatchError>> {
        match self.checked_header_at(pos, file_len)? {
            Ok(h) => self.verified_batch(pos, h),
            Err(BatchError::BadLength(_)) => Ok(Err(BatchError::Truncated)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Reads the batch at `pos` whose header `h` was read, and verifies it.
    pub(super) fn verified_batch(
        &self,
        pos: u64,
        h: BatchHeader,
    ) -> io::Result<Result<(BatchHeader, Bytes), BatchError>> {
        let batch = self.read(pos, h.batch_len as usize)?;
        Ok(h.verify(&batch).map(|_| (h, batch)))
    }
}
