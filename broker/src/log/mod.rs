//! A partition's log: an ordered set of segments with one writer.
//!
//! - Appends are two steps, so a producer's next batch is encoded while its
//!   last one is still being written. Under the writer lock an append takes
//!   its offsets, encodes its batch into a pooled buffer and queues it. A
//!   drain, holding the sink lock, writes everything queued, in order and
//!   with one positional write per segment, then publishes the new high
//!   watermark and completes the appends. `submit` leaves the drain to a
//!   blocking thread; `append` drains in the caller.
//! - Reads take no writer lock: they snapshot the segment list and read
//!   complete batches below each segment's published size.
//! - Durability: a batch submitted as durable is fsynced by the drain right
//!   after its write, and that one fsync covers everything written with it
//!   (group commit). Otherwise a flusher task fsyncs the active segment on a
//!   timer, after N records, or when a waiter asks; both publish the durable
//!   offset that producers waiting for `Acks::Durable` wait for.

mod append;
pub mod batch;
pub mod direct;
pub mod format;
pub mod index;
mod pool;
mod readahead;
mod recent;
pub mod segment;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

pub use append::Pending;
use append::{Sink, Writer};
use batch::{BatchHeader, RecordIter};
use format::{parse_segment_file_name, BATCH_HEADER_LEN};
pub use segment::{IndexConfig, Segment, TailRecovery};

/// Settings a log needs; taken from the topic's effective configuration.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// Roll the active segment before it would exceed this size.
    pub segment_bytes: u64,
    /// Roll the active segment once it is this old (and not empty).
    pub segment_ms: u64,
    /// Index sizing.
    pub index: IndexConfig,
    /// Stamp every record with the broker's append time.
    pub log_append_time: bool,
    /// Ask for an fsync after this many unflushed records (0 = never by count).
    pub flush_records: u64,
    /// Write segment data with direct I/O where the filesystem allows it.
    pub direct_io: bool,
}

/// Opens the sealed segments at `bases`, in order. Several threads share a
/// long list: with a cold cache each open waits on a few small reads (file
/// metadata, the time index's last entry) that the device serves at once.
fn open_sealed(dir: &Path, bases: &[u64], config: &LogConfig) -> io::Result<Vec<Segment>> {
    const THREADS: usize = 8;
    const PER_THREAD_AT_LEAST: usize = 32;
    let open = |chunk: &[u64]| -> io::Result<Vec<Segment>> {
        chunk.iter().map(|&b| Segment::open(dir, b, false, config.index, config.direct_io)).collect()
    };
    if bases.len() < 2 * PER_THREAD_AT_LEAST {
        return open(bases);
    }
    let chunk = bases.len().div_ceil(THREADS).max(PER_THREAD_AT_LEAST);
    std::thread::scope(|s| {
        let threads: Vec<_> = bases.chunks(chunk).map(|c| s.spawn(move || open(c))).collect();
        let mut all = Vec::with_capacity(bases.len());
        for t in threads {
            all.extend(t.join().map_err(|_| io::Error::other("segment open thread panicked"))??);
        }
        Ok(all)
    })
}

/// Errors from a log that a caller can act on.
#[derive(Debug)]
pub enum LogError {
    /// The requested offset is outside [log start, high watermark].
    OffsetOutOfRange {
        /// Requested offset.
        offset: u64,
        /// First readable offset.
        log_start: u64,
        /// One past the last readable offset.
        high_watermark: u64,
    },
    /// The log was closed (shutdown or topic deletion).
    Closed,
    /// The disk failed us.
    Io(io::Error),
}

impl From<io::Error> for LogError {
    fn from(e: io::Error) -> Self {
        LogError::Io(e)
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: u64,
    /// One past the last record.
    pub next_offset: u64,
}

/// Records read from a log, as stored (see `strata_proto::raw`).
#[derive(Debug, Default)]
pub struct ReadResult {
    /// Framed records, in offset order, starting at the requested offset.
    pub chunks: Vec<Bytes>,
    /// Offset to read next.
    pub next_offset: u64,
    /// High watermark at the time of the read.
    pub high_watermark: u64,
    /// Log start offset at the time of the read.
    pub log_start: u64,
    /// Total bytes in `chunks`.
    pub bytes: usize,
    /// Records in `chunks`.
    pub records: usize,
}

/// One partition's log.
pub struct Log {
    dir: PathBuf,
    name: String,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    writer: Mutex<Writer>,
    sink: Mutex<Sink>,
    high_watermark: watch::Sender<u64>,
    durable: watch::Sender<u64>,
    log_start: AtomicU64,
    flush_wanted: Notify,
    closed: AtomicBool,
    /// Read-ahead for a consumer reading this log in order (direct I/O only).
    readahead: Arc<readahead::ReadAhead>,
    /// Tests: make writes fail, as a full or failing disk would.
    #[cfg(test)]
    fail_writes: AtomicBool,
}

/// What opening a log found.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Segments found.
    pub segments: usize,
    /// The tail check of the last segment.
    pub tail: TailRecovery,
}

impl Log {
    /// Opens the log in `dir` (created if missing). Only the last segment's
    /// tail is checked; earlier segments were fsynced and sealed when they
    /// rolled, so they are trusted as they are.
    pub fn open(dir: &Path, name: String, config: LogConfig) -> io::Result<(Log, OpenReport)> {
        fs::create_dir_all(dir)?;
        crate::compaction::recover_cleaned(dir)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        let mut segments = BTreeMap::new();
        let last = *bases.last().expect("at least one segment");
        let sealed = &bases[..bases.len() - 1];
        for (&base, seg) in sealed.iter().zip(open_sealed(dir, sealed, &config)?) {
            segments.insert(base, Arc::new(seg));
        }
        let active = Arc::new(Segment::open(dir, last, true, config.index, config.direct_io)?);
        let (next_offset, tail) = active.recover_tail(config.index)?;
        let direct = active.direct_writer()?;
        segments.insert(last, active.clone());
        sync_dir(dir)?;
        let log_start = *segments.keys().next().expect("at least one segment");
        let report = OpenReport { segments: segments.len(), tail };
        let log = Log {
            dir: dir.to_path_buf(),
            name,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                next_offset,
                end_hint: active.size(),
                queue: Vec::new(),
                draining: false,
                unflushed_records: 0,
                config,
                closed: false,
                active: active.clone(),
            }),
            sink: Mutex::new(Sink { active, direct, active_since: Instant::now() }),
            high_watermark: watch::Sender::new(next_offset),
            // What recovery kept is on disk: it was fsynced or read back from it.
            durable: watch::Sender::new(next_offset),
            log_start: AtomicU64::new(log_start),
            flush_wanted: Notify::new(),
            closed: AtomicBool::new(false),
            readahead: Arc::default(),
            #[cfg(test)]
            fail_writes: AtomicBool::new(false),
        };
        Ok((log, report))
    }

    /// A name for log lines ("topic/partition").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One past the last readable offset.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// First readable offset.
    pub fn log_start(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Offsets below this are fsynced.
    pub fn durable_offset(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Watches the high watermark (for long polls and subscriptions).
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// Replaces the configuration used by later appends.
    pub fn set_config(&self, config: LogConfig) {
        self.writer.lock().expect("writer lock").config = config;
    }

    /// Number of segments and their total size in bytes.
    pub fn disk_usage(&self) -> (usize, u64) {
        let segs = self.segments.read().expect("segments lock");
        (segs.len(), segs.values().map(|s| s.size()).sum())
    }

    /// Closed segments (every one but the active), oldest first, and the
    /// total size of the log including the active segment.
    pub fn closed_segments(&self) -> (Vec<Arc<Segment>>, u64) {
        let segs = self.segments.read().expect("segments lock");
        let total = segs.values().map(|s| s.size()).sum();
        let closed = segs.values().take(segs.len() - 1).cloned().collect();
        (closed, total)
    }

    /// Every segment, oldest first (the active one last).
    pub fn all_segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().expect("segments lock").values().cloned().collect()
    }

    /// Deletes the `n` oldest segments (never the active one) and moves the
    /// log start to the first remaining segment. Readers that already hold a
    /// deleted segment finish their read from the unlinked file.
    pub fn delete_oldest_segments(&self, n: usize) -> io::Result<Vec<Arc<Segment>>> {
        let removed: Vec<Arc<Segment>> = {
            let mut segs = self.segments.write().expect("segments lock");
            let n = n.min(segs.len() - 1);
            let keys: Vec<u64> = segs.keys().take(n).copied().collect();
            let removed = keys.iter().filter_map(|k| segs.remove(k)).collect();
            if let Some(&first) = segs.keys().next() {
                self.log_start.fetch_max(first, Ordering::AcqRel);
            }
            removed
        };
        for s in &removed {
            s.remove_files()?;
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Swaps in the segment at `base` from its files on disk (after the
    /// compactor committed a cleaned copy). Readers holding the old one keep it.
    pub fn reload_segment(&self, base: u64, index: IndexConfig) -> io::Result<()> {
        let direct_io = self.writer.lock().expect("writer lock").config.direct_io;
        let seg = Arc::new(Segment::open(&self.dir, base, false, index, direct_io)?);
        let mut segs = self.segments.write().expect("segments lock");
        if segs.contains_key(&base) {
            segs.insert(base, seg);
        }
        Ok(())
    }

    /// Reads up to `max_bytes` of records from `offset` (at least one batch if
    /// any is available), from one segment. `max_bytes` 0 reads nothing but
    /// still checks the offset.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.read_limited(offset, max_bytes, usize::MAX)
    }

    /// As [`Log::read`], also stopping before a batch that would take the
    /// reply past `max_records` records (the first batch is always served).
    pub fn read_limited(&self, offset: u64, max_bytes: usize, max_records: usize) -> Result<ReadResult, LogError> {
        let hw = self.high_watermark();
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
        let hw = self.high_watermark();
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

    /// Waits until every offset below `offset` is fsynced.
    pub async fn wait_durable(&self, offset: u64) -> Result<(), LogError> {
        let mut rx = self.durable.subscribe();
        if *rx.borrow() >= offset {
            return Ok(());
        }
        self.flush_wanted.notify_one();
        tokio::select! {
            r = rx.wait_for(|d| *d >= offset) => r.map(|_| ()).map_err(|_| LogError::Closed),
            // A closed log has fsynced everything it acknowledged.
            _ = self.wait_closed() => if self.durable_offset() >= offset { Ok(()) } else { Err(LogError::Closed) },
        }
    }

    async fn wait_closed(&self) {
        let mut hw = self.high_watermark.subscribe();
        while !self.closed.load(Ordering::Acquire) {
            if hw.changed().await.is_err() {
                return;
            }
        }
    }

    /// fsyncs everything appended so far and publishes the durable offset.
    pub async fn flush(self: &Arc<Self>) -> Result<(), LogError> {
        // Under the writer lock, the high watermark is all written to
        // `active` or to segments sealed (and fsynced) before it.
        let (seg, target, records) = {
            let w = self.writer.lock().expect("writer lock");
            (w.active.clone(), self.high_watermark(), w.unflushed_records)
        };
        if target <= self.durable_offset() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || sync_segment(&seg))
            .await
            .map_err(|e| LogError::Io(io::Error::other(e)))??;
        let mut w = self.writer.lock().expect("writer lock");
        w.unflushed_records = w.unflushed_records.saturating_sub(records);
        drop(w);
        self.durable.send_if_modified(|d| raise(d, target));
        Ok(())
    }

    /// The flusher: fsyncs when asked (durable acks, record count) or every
    /// `interval`, until the log closes. One fsync covers every append before it.
    pub async fn run_flusher(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.closed.load(Ordering::Acquire) {
            tokio::select! {
                _ = self.flush_wanted.notified() => {}
                _ = tick.tick() => {}
            }
            if self.closed.load(Ordering::Acquire) {
                break;
            }
            if let Err(e) = self.flush().await {
                tracing::error!(log = %self.name, error = ?e, "fsync failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let active = self.writer.lock().expect("writer lock").active.clone();
            active.forget_tail_batch(interval);
        }
    }

    /// Stops appends, writes what is queued, fsyncs and seals the indexes.
    /// Reads keep working.
    pub fn close(&self) -> io::Result<()> {
        let mut sink = self.sink.lock().expect("sink lock");
        if std::mem::replace(&mut self.writer.lock().expect("writer lock").closed, true) {
            return Ok(());
        }
        self.drain_locked(&mut sink, false);
        let next = self.high_watermark();
        let last = next.checked_sub(1).filter(|&o| o >= sink.active.base_offset());
        let result = sink.active.seal(last);
        if result.is_ok() {
            self.durable.send_if_modified(|d| raise(d, next));
        }
        self.closed.store(true, Ordering::Release);
        self.flush_wanted.notify_one();
        // Wake waiters of the high watermark so they notice the close.
        self.high_watermark.send_modify(|_| {});
        result
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// fsyncs a segment's data, counted in the metrics.
fn sync_segment(seg: &Segment) -> io::Result<()> {
    let started = Instant::now();
    seg.sync()?;
    metrics::counter!("strata_fsync_total").increment(1);
    metrics::histogram!("strata_fsync_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

fn raise(current: &mut u64, to: u64) -> bool {
    if to > *current {
        *current = to;
        true
    } else {
        false
    }
}

/// fsyncs a directory so created, renamed or removed entries survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
