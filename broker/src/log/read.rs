//! The read path of a [`Log`]: records from an offset, below a bound the
//! caller gives (the partition's high watermark), and lookups by timestamp.
//! Reads take no writer lock (see the module documentation of `log`).

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, RecordIter};
use super::format::BATCH_HEADER_LEN;
use super::{Log, LogError, Segment};

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
            let segs = self.segments.read().expect("segments lock");
            segs.range(..=offset)
                .next_back()
                .into_iter()
                .chain(segs.range(offset + 1..))
                .map(|(_, s)| s.clone())
                .collect()
        };
        for seg in segments {
            let limit = seg.size();
            let Some((pos, first)) = seg.find_batch(offset, limit)? else {
                continue;
            };
            if first.meta.base_offset >= hw {
                break;
            }
            let want = (limit - pos).min(max_bytes.max(first.batch_len as usize) as u64);
            let data = seg.read_through(pos, want as usize, Some(&self.readahead))?;
            let mut p = 0usize;
            while p + BATCH_HEADER_LEN <= data.len() {
                let h = BatchHeader::parse(&data[p..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", self.name)))?;
                let end = p + h.batch_len as usize;
                if end > data.len() || h.meta.base_offset >= hw {
                    break;
                }
                let mut body = data.slice(p + BATCH_HEADER_LEN..end);
                let mut records = h.meta.record_count as usize;
                if h.meta.base_offset < offset {
                    body = body.slice(batch::position_of_offset(&body, offset)..);
                    records = RecordIter::new(&body).count();
                }
                if p > 0 && result.records + records > max_records {
                    break;
                }
                result.records += records;
                result.bytes += body.len();
                if !body.is_empty() {
                    result.chunks.push(body);
                }
                result.next_offset = h.meta.next_offset();
                p = end;
            }
            if let Some(file) = seg.direct_file() {
                self.readahead.read_next(seg.id(), file, pos + p as u64, want as usize, limit);
            }
            break;
        }
        Ok(result)
    }

    /// The first record with timestamp >= `ts`: (offset, timestamp), or None
    /// if every record is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>, LogError> {
        self.offset_for_timestamp_upto(ts, u64::MAX)
    }

    /// As [`Log::offset_for_timestamp`], among offsets below `upto` only.
    pub fn offset_for_timestamp_upto(&self, ts: i64, upto: u64) -> Result<Option<(u64, i64)>, LogError> {
        let hw = self.end_offset().min(upto);
        let segments: Vec<Arc<Segment>> = self.segments.read().expect("segments lock").values().cloned().collect();
        for seg in segments.iter().filter(|s| s.max_timestamp() >= ts) {
            let limit = seg.size();
            let mut pos = seg.time_search_start(ts);
            while pos < limit {
                let h = seg.header_at(pos)?;
                if h.meta.base_offset >= hw {
                    return Ok(None);
                }
                if h.meta.max_timestamp >= ts {
                    let data = seg.read(pos, h.batch_len as usize)?;
                    let found = RecordIter::new(&data[BATCH_HEADER_LEN..])
                        .find(|r| r.timestamp_ms >= ts)
                        .map(|r| (r.offset, r.timestamp_ms));
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                pos += u64::from(h.batch_len);
            }
        }
        Ok(None)
    }
}
