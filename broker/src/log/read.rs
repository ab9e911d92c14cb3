//! The read path of a [`Log`]: records from an offset, below a bound the
//! caller gives (the partition's high watermark), and lookups by timestamp.
//! Reads take no writer lock (see the module documentation of `log`).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchError, BatchHeader, RecordIter};
use super::format::BATCH_HEADER_LEN_V1;
use super::segment::Seek;
use super::{Log, LogError, Segment};
use crate::locks::{LockExt, RwLockExt};

/// A damaged stretch of a log, as a reader meets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub file: PathBuf,
    /// Byte position of the damaged batch in it.
    pub position: u64,
    /// The first offset the reader asked for and cannot have.
    pub from: u64,
    /// The next readable offset: `from..next` is lost.
    pub next: u64,
    /// What is wrong with the bytes.
    pub reason: String,
}

/// Records read from a log, as stored (see `strata_proto::raw`).
#[derive(Debug, Default)]
pub struct ReadResult {
    /// Framed records, in offset order, starting at the requested offset.
    pub chunks: Vec<Bytes>,
    /// Offset to read next.
    pub next_offset: u64,
    /// The bound the read served below (the high watermark it was given,
    /// or the log end if lower).
    pub high_watermark: u64,
    /// Log start offset at the time of the read.
    pub log_start: u64,
    /// Total bytes in `chunks`.
    pub bytes: usize,
    /// Records in `chunks`.
    pub records: usize,
}

impl Log {
    /// Reads up to `max_bytes` of records from `offset` (at least one batch if
    /// any is available), from one segment. `max_bytes` 0 reads nothing but
    /// still checks the offset.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.read_limited(offset, max_bytes, usize::MAX)
    }

    /// As [`Log::read`], also stopping before a batch that would take the
    /// reply past `max_records` records (the first batch is always served).
    pub fn read_limited(&self, offset: u64, max_bytes: usize, max_records: usize) -> Result<ReadResult, LogError> {
        self.read_upto(offset, max_bytes, max_records, u64::MAX)
    }

    /// As [`Log::read_limited`], serving only offsets below `upto` (the
    /// partition's high watermark; capped at the log end). Offsets outside
    /// [log start, upto] are out of range.
    ///
    /// Every batch is verified (header, length, CRC, offsets following on)
    /// before it is served. At a damaged batch the read stops and returns
    /// the records before it; a read that starts at one fails with
    /// [`LogError::DataLoss`], naming the next readable offset.
    /// `ReadResult::next_offset` is where the reader goes on, also past
    /// offsets compaction removed.
    pub fn read_upto(
        &self,
        offset: u64,
        max_bytes: usize,
        max_records: usize,
        upto: u64,
    ) -> Result<ReadResult, LogError> {
        let hw = self.end_offset().min(upto);
        let log_start = self.log_start();
        if offset < log_start || offset > hw {
            return Err(LogError::OffsetOutOfRange { offset, log_start, high_watermark: hw });
        }
        let mut result = ReadResult { next_offset: offset, high_watermark: hw, log_start, ..Default::default() };
        // max_bytes 0: only validate the offset and report the bounds.
        if offset == hw || max_bytes == 0 {
            return Ok(result);
        }
        let segments: Vec<Arc<Segment>> = {
            let segs = self.segments.read_locked();
            segs.range(..=offset)
                .next_back()
                .into_iter()
                .chain(segs.range(offset + 1..))
                .map(|(_, s)| s.clone())
                .collect()
        };
        for (i, seg) in segments.iter().enumerate() {
            let limit = seg.size();
            let next_base = segments.get(i + 1).map_or(hw, |s| s.base_offset()).min(hw);
            let mut start = None;
            while let Some((pos, first)) = self.seek(seg, offset, limit, next_base, start)? {
                match self.read_batches(seg, pos, &first, offset, hw, max_bytes, max_records, &mut result)? {
                    None => return Ok(result),
                    // Records before the damage: served; the next read meets it.
                    Some(_) if result.next_offset > offset => return Ok(result),
                    // The damaged batch may only have claimed `offset`.
                    Some((at, error)) => start = Some(self.resync(seg, at, offset, limit, next_base, error)?),
                }
            }
        }
        // No batch holds `offset` or a later one below the bound (`upto`,
        // the partition's high watermark): compaction removed them. The
        // reader goes on at the bound.
        result.next_offset = hw;
        Ok(result)
    }

    /// Serves verified batches of `seg` from `pos` (where `first` starts)
    /// into `result`; returns the position and error of a damaged batch met.
    #[allow(clippy::too_many_arguments)]
    fn read_batches(
        &self,
        seg: &Segment,
        pos: u64,
        first: &BatchHeader,
        offset: u64,
        hw: u64,
        max_bytes: usize,
        max_records: usize,
        result: &mut ReadResult,
    ) -> Result<Option<(u64, BatchError)>, LogError> {
        let limit = seg.size();
        let want = (limit - pos).min(max_bytes.max(first.batch_len as usize) as u64);
        let data = seg.read_through(pos, want as usize, Some(&self.readahead))?;
        let mut p = 0usize;
        let damaged = loop {
            if p + BATCH_HEADER_LEN_V1 > data.len() {
                break None;
            }
            let h = match BatchHeader::parse(&data[p..]) {
                Ok(h) => h,
                // The next header is cut by the end of what was read.
                Err(BatchError::Truncated) if p > 0 => break None,
                Err(e) => break Some((pos + p as u64, e)),
            };
            let end = p + h.batch_len as usize;
            if end > data.len() && p > 0 {
                break None;
            }
            // Verified before any header field is believed.
            let checked = match end <= data.len() {
                true => h.verify(&data[p..end]),
                false => Err(BatchError::Truncated),
            };
            let backwards = p > 0 && h.meta.base_offset < result.next_offset;
            if let Err(e) = checked.and(if backwards { Err(BatchError::OffsetMismatch) } else { Ok(()) }) {
                break Some((pos + p as u64, e));
            }
            if h.meta.base_offset >= hw {
                // Nothing between here and the bound: compacted away.
                result.next_offset = hw;
                break None;
            }
            let mut body = data.slice(p + h.header_len()..end);
            let mut records = h.meta.record_count as usize;
            if h.meta.base_offset < offset {
                body = body.slice(batch::position_of_offset(&body, offset)..);
                records = RecordIter::new(&body).count();
            }
            if p > 0 && result.records + records > max_records {
                break None;
            }
            result.records += records;
            result.bytes += body.len();
            if !body.is_empty() {
                result.chunks.push(body);
            }
            result.next_offset = h.meta.next_offset();
            p = end;
        };
        if let Some(file) = seg.direct_file() {
            self.readahead.read_next(seg.id(), file, pos + p as u64, want as usize, limit);
        }
        Ok(damaged)
    }

    /// The batch of `seg` holding `offset` (or the first after it),
    /// searching from the index (or from byte `start`): past damage before
    /// `offset`, and failing with `DataLoss` at damage that covers it.
    fn seek(
        &self,
        seg: &Segment,
        offset: u64,
        limit: u64,
        next_base: u64,
        mut start: Option<u64>,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        loop {
            let seek = match start {
                None => seg.find_batch(offset, limit)?,
                Some(p) => seg.find_batch_from(p, offset, limit)?,
            };
            match seek {
                Seek::At(pos, h) => return Ok(Some((pos, h))),
                Seek::NotHere => return Ok(None),
                Seek::Damaged { pos, error } => start = Some(self.resync(seg, pos, offset, limit, next_base, error)?),
            }
        }
    }

    /// Damage at `at` met while reading `offset`: where to go on if the
    /// next valid batch still holds `offset` (the damage lies before it, or
    /// only claimed it), else `DataLoss` up to that batch (or `next_base`).
    fn resync(
        &self,
        seg: &Segment,
        at: u64,
        offset: u64,
        limit: u64,
        next_base: u64,
        error: BatchError,
    ) -> Result<u64, LogError> {
        self.note_damage(seg, at, &error);
        match seg.next_valid_batch(at, 0, limit)? {
            Some((p, h)) if h.meta.base_offset <= offset => Ok(p),
            resync => {
                let next = resync.map_or(next_base, |(_, h)| h.meta.base_offset.min(next_base));
                Err(self.data_loss(seg, at, offset, next, error))
            }
        }
    }

    fn data_loss(&self, seg: &Segment, pos: u64, from: u64, next: u64, error: BatchError) -> LogError {
        LogError::DataLoss(Box::new(Damage {
            file: seg.path().to_path_buf(),
            position: pos,
            from,
            next: next.max(from + 1),
            reason: error.to_string(),
        }))
    }

    /// Logs damage at ERROR and counts it, once per batch position.
    pub(super) fn note_damage(&self, seg: &Segment, pos: u64, error: &dyn std::fmt::Display) {
        if self.damaged.locked().insert((seg.base_offset(), pos)) {
            metrics::counter!("strata_damaged_batches_total").increment(1);
            tracing::error!(partition = %self.name, segment = %seg.path().display(), position = pos, error = %error,
                "damaged batch: not served");
        }
    }

    /// Calls `f` with the header of every batch of an idempotent producer
    /// (producer id set) in the segments written to at or after `since`
    /// (their files' modification time: the broker's clock, not the
    /// records' timestamps), oldest first: one header read per batch, no
    /// record bytes. Stops at the first bytes of a segment that are no header.
    pub fn visit_producer_headers(
        &self,
        since: std::time::SystemTime,
        mut f: impl FnMut(&BatchHeader),
    ) -> std::io::Result<()> {
        let segments = self.all_segments();
        let last = segments.len().saturating_sub(1);
        for (i, seg) in segments.into_iter().enumerate() {
            // A segment deleted meanwhile (retention) has nothing to say.
            let Ok(written) = std::fs::metadata(seg.path()).and_then(|m| m.modified()) else { continue };
            if i < last && written < since {
                continue;
            }
            let (mut pos, end) = (0u64, seg.size());
            while pos < end {
                let Ok(h) = seg.checked_header_at(pos, end)? else { break };
                if h.producer_id >= 0 {
                    f(&h);
                }
                pos += u64::from(h.batch_len);
            }
        }
        Ok(())
    }

    /// Damaged batches found so far (since start-up).
    pub fn damaged_batches(&self) -> usize {
        self.damaged.locked().len()
    }

    /// The first record with timestamp >= `ts`: (offset, timestamp), or None
    /// if every record is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>, LogError> {
        self.offset_for_timestamp_upto(ts, u64::MAX)
    }

    /// As [`Log::offset_for_timestamp`], among offsets below `upto` only.
    ///
    /// A damaged batch met before the answer fails the lookup with
    /// [`LogError::DataLoss`], as a fetch does: its timestamps are unknown,
    /// so the first record at or after `ts` may be among its offsets, and
    /// answering with a later offset would skip it silently.
    pub fn offset_for_timestamp_upto(&self, ts: i64, upto: u64) -> Result<Option<(u64, i64)>, LogError> {
        let hw = self.end_offset().min(upto);
        let segments: Vec<Arc<Segment>> = self.segments.read_locked().values().cloned().collect();
        for (i, seg) in segments.iter().enumerate().filter(|(_, s)| s.max_timestamp() >= ts) {
            let limit = seg.size();
            let next_base = segments.get(i + 1).map_or(hw, |s| s.base_offset()).min(hw);
            let mut pos = seg.time_search_start(ts)?;
            // The first offset not yet looked at: where a damaged batch's loss starts.
            let mut from = match pos {
                0 => seg.base_offset(),
                p => seg.checked_header_at(p, limit)?.map_or(seg.base_offset(), |h| h.meta.base_offset),
            };
            while pos < limit {
                let (h, data) = match seg.verified_bytes_at(pos, limit)? {
                    Ok((h, data)) => (h, data),
                    Err(e) => {
                        self.note_damage(seg, pos, &e);
                        let next = seg.next_valid_batch(pos, 0, limit)?.map_or(next_base, |(_, h)| h.meta.base_offset);
                        if from >= hw {
                            return Ok(None);
                        }
                        return Err(self.data_loss(seg, pos, from, next.min(next_base), e));
                    }
                };
                if h.meta.base_offset >= hw {
                    return Ok(None);
                }
                if h.meta.max_timestamp >= ts {
                    let found = RecordIter::new(&data[h.header_len()..])
                        .find(|r| r.timestamp_ms >= ts)
                        .map(|r| (r.offset, r.timestamp_ms));
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                from = h.meta.next_offset();
                pos += u64::from(h.batch_len);
            }
        }
        Ok(None)
    }
}
