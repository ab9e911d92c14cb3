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

mod aligned;
mod append;
pub mod batch;
pub mod checkpoint;
pub mod compact;
pub mod direct;
pub mod format;
pub mod index;
mod pool;
mod read;
mod readahead;
mod recent;
pub mod recovery;
pub mod segment;
pub mod verify;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::locks::{LockExt, RwLockExt};
pub use append::{AppendOptions, Pending};
use append::{Sink, Writer};
use format::parse_segment_file_name;
pub use read::{Damage, ReadResult};
pub use recovery::TailRecovery;
pub use segment::{IndexConfig, Segment};

/// The flusher starts writeback of the active segment each time this many
/// more bytes were appended to it (buffered segments). By volume, not by
/// time: a busy partition's fsync finds little left to write, and a
/// partition taking a trickle (one of a thousand) costs no wakeups between
/// its fsyncs. Counted within the active segment: segments smaller than
/// this are never written back early (a roll fsyncs them anyway).
const WRITEBACK_BYTES: u64 = 8 << 20;

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
    /// At open, cut the last segment at damage that is not a torn tail
    /// instead of refusing (see `recovery`).
    pub truncate_damage: bool,
    /// At open: the broker stopped cleanly last time (everything was
    /// fsynced), so holes of zeros are damage, not unsynced writes lost.
    pub clean_stop: bool,
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
    /// The requested offset is outside [log start, the bound the read was
    /// given] (the partition's high watermark, at most the log end).
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
    /// An fsync failed: the log takes no more appends and acknowledges
    /// nothing as durable until the broker restarts (the error, as text).
    ReadOnly(String),
    /// Start-up found damage it refused to cut (where, why and what to do):
    /// the log takes no appends until the operator repairs it.
    Refused(String),
    /// The bytes at the requested offset are damaged; nothing wrong is served.
    DataLoss(Box<Damage>),
    /// The disk failed us.
    Io(io::Error),
    /// A conditional append found the log's next offset elsewhere.
    UnexpectedOffset {
        /// The next offset the append required.
        expected: u64,
        /// The log's next offset.
        actual: u64,
    },
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

/// One partition's log.
pub struct Log {
    dir: PathBuf,
    name: String,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    writer: Mutex<Writer>,
    /// Writes that failed (each fails its batch and those queued after it,
    /// whose offsets are then given out again).
    failed_writes: AtomicU64,
    sink: Mutex<Sink>,
    /// One past the last written offset (the log end), watched by readers.
    end: watch::Sender<u64>,
    durable: watch::Sender<u64>,
    log_start: AtomicU64,
    flush_wanted: Notify,
    /// Another [`WRITEBACK_BYTES`] were appended (see `run_flusher`).
    writeback_wanted: Notify,
    closed: AtomicBool,
    /// Read-ahead for a consumer reading this log in order (direct I/O only).
    readahead: Arc<readahead::ReadAhead>,
    /// The first fsync error, once one failed: from then on the log is
    /// read-only (no appends, no durable acknowledgement) until restart.
    sync_error: Mutex<Option<String>>,
    /// Damage start-up refused to cut (where and why): the log takes no
    /// appends and ends, for readers, where the damage starts.
    refused: Option<String>,
    /// The offset the recovery-point file says (written under `syncing`).
    recovery_point: Mutex<u64>,
    /// Held for the length of an fsync: one at a time (see [`Log::sync`]).
    syncing: Mutex<()>,
    /// (segment base, position) of every damaged batch readers met, so
    /// each is logged and counted once.
    damaged: Mutex<std::collections::BTreeSet<(u64, u64)>>,
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
        crate::failpoint::io("open")?;
        recovery::recover_cleaned(dir)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        // An empty directory is a log with one empty segment at offset 0.
        let (last, sealed) = match bases.split_last() {
            Some((&last, sealed)) => (last, sealed),
            None => (0, &[][..]),
        };
        for (&base, seg) in sealed.iter().zip(open_sealed(dir, sealed, &config)?) {
            segments.insert(base, Arc::new(seg));
        }
        let active = Arc::new(Segment::open(dir, last, true, config.index, config.direct_io)?);
        let point = checkpoint::RecoveryPoint::read(dir)?;
        if let checkpoint::RecoveryPoint::Damaged(why) = &point {
            tracing::warn!(log = %name, reason = %why, "the recovery point is damaged: no damage in the tail will be cut");
        }
        let (next_offset, tail) =
            active.recover_tail(config.index, config.truncate_damage, config.clean_stop, point.trusted_below())?;
        // Created now (its later writes then need no new space), or moved
        // back to what was kept (`truncate` cut below it: it would refuse
        // the next crash's torn tail). A damaged one is rewritten by the
        // next fsync. Best effort: on a full disk the file may stay behind.
        // A damaged one is replaced by 0 (nothing known; the next fsync
        // raises it), fsynced like a new one.
        let (written, point_now) = match point {
            checkpoint::RecoveryPoint::Missing | checkpoint::RecoveryPoint::Damaged(_) if tail.refused.is_none() => {
                (checkpoint::RecoveryPoint::create(dir, 0), 0)
            }
            checkpoint::RecoveryPoint::At(p) if p > next_offset && tail.refused.is_none() => {
                (checkpoint::RecoveryPoint::create(dir, next_offset), next_offset)
            }
            checkpoint::RecoveryPoint::At(p) => (Ok(()), p),
            _ => (Ok(()), 0),
        };
        if let Err(e) = written {
            tracing::warn!(log = %name, error = %e, "could not write the recovery point");
        }
        let direct = active.direct_writer()?;
        segments.insert(last, active.clone());
        sync_dir(dir)?;
        let log_start = segments.keys().next().copied().unwrap_or(last);
        let refused = tail.refused.clone();
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
            failed_writes: AtomicU64::new(0),
            sink: Mutex::new(Sink { active, direct, active_since: Instant::now() }),
            end: watch::Sender::new(next_offset),
            // What recovery kept is on disk: it was fsynced or read back from it.
            durable: watch::Sender::new(next_offset),
            log_start: AtomicU64::new(log_start),
            flush_wanted: Notify::new(),
            writeback_wanted: Notify::new(),
            closed: AtomicBool::new(false),
            readahead: Arc::default(),
            damaged: Mutex::default(),
            sync_error: Mutex::new(None),
            refused,
            recovery_point: Mutex::new(point_now),
            syncing: Mutex::new(()),
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

    /// One past the last written offset (the log end). Everything below it
    /// is readable from the log; the partition decides what readers see.
    pub fn end_offset(&self) -> u64 {
        *self.end.borrow()
    }

    /// The offset the next append gets (past appends queued but not yet
    /// written).
    pub fn next_offset(&self) -> u64 {
        self.writer.locked().next_offset
    }

    /// How many writes failed since the log was opened: an append queued
    /// when this was N and seen after with N is not among the failed.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The header of the batch holding `offset`, if it is written and
    /// readable.
    pub fn batch_header_at(&self, offset: u64) -> io::Result<Option<batch::BatchHeader>> {
        if offset >= self.end_offset() {
            return Ok(None);
        }
        let seg = self.segments.read_locked().range(..=offset).next_back().map(|(_, s)| s.clone());
        let Some(seg) = seg else { return Ok(None) };
        Ok(match seg.find_batch(offset, seg.size())? {
            segment::Seek::At(_, h) if h.meta.base_offset <= offset => Some(h),
            _ => None,
        })
    }

    /// First readable offset.
    pub fn log_start(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Offsets below this are fsynced.
    pub fn durable_offset(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Watches the log end (for long polls and subscriptions).
    pub fn watch_end_offset(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Replaces the configuration used by later appends.
    pub fn set_config(&self, config: LogConfig) {
        self.writer.locked().config = config;
    }

    /// Number of segments and their total size in bytes.
    pub fn disk_usage(&self) -> (usize, u64) {
        let segs = self.segments.read_locked();
        (segs.len(), segs.values().map(|s| s.size()).sum())
    }

    /// Closed segments (every one but the active), oldest first, and the
    /// total size of the log including the active segment.
    pub fn closed_segments(&self) -> (Vec<Arc<Segment>>, u64) {
        let segs = self.segments.read_locked();
        let total = segs.values().map(|s| s.size()).sum();
        let closed = segs.values().take(segs.len() - 1).cloned().collect();
        (closed, total)
    }

    /// Every segment, oldest first (the active one last).
    pub fn all_segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read_locked().values().cloned().collect()
    }

    /// Deletes the `n` oldest segments (never the active one) and moves the
    /// log start to the first remaining segment. Readers that already hold a
    /// deleted segment finish their read from the unlinked file.
    pub fn delete_oldest_segments(&self, n: usize) -> io::Result<Vec<Arc<Segment>>> {
        let removed: Vec<Arc<Segment>> = {
            let mut segs = self.segments.write_locked();
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
        let direct_io = self.writer.locked().config.direct_io;
        let seg = Arc::new(Segment::open(&self.dir, base, false, index, direct_io)?);
        let mut segs = self.segments.write_locked();
        if segs.contains_key(&base) {
            segs.insert(base, seg);
        }
        Ok(())
    }

    /// Waits until every offset below `offset` is fsynced. Fails with
    /// `ReadOnly` once an fsync failed, for data not yet durable then.
    pub async fn wait_durable(&self, offset: u64) -> Result<(), LogError> {
        let mut rx = self.durable.subscribe();
        if *rx.borrow() >= offset {
            return Ok(());
        }
        self.check_writable()?;
        self.flush_wanted.notify_one();
        let durable_or_failed = rx.wait_for(|d| *d >= offset || self.sync_error.locked().is_some());
        tokio::select! {
            r = durable_or_failed => r.map_err(|_| LogError::Closed).and_then(|d| match *d >= offset {
                true => Ok(()),
                false => self.check_writable(),
            }),
            // A closed log has fsynced everything it acknowledged.
            _ = self.wait_closed() => if self.durable_offset() >= offset { Ok(()) } else { Err(LogError::Closed) },
        }
    }

    /// fsyncs `seg` and raises the durable offset to `upto` (every offset
    /// below it is written to `seg` or to segments sealed before it).
    /// Serialised per log (`syncing`), so no fsync can succeed beside one
    /// that failed and raise the durable offset past it. The error's own
    /// lock is held only to read or set it: appenders check it, and must
    /// not wait for an fsync in progress (a periodic fsync of hundreds of
    /// megabytes of page cache stalled every append for 0.7 s).
    /// A failure makes the log read-only for good: after a failed fsync the
    /// kernel may have dropped the dirty pages it could not write, so a
    /// later fsync that succeeds proves nothing ("fsyncgate"); nothing
    /// written before it is ever acknowledged as durable.
    pub(crate) fn sync(&self, seg: &Segment, upto: u64) -> io::Result<()> {
        let _serial = self.syncing.locked();
        if let Some(e) = &*self.sync_error.locked() {
            return Err(io::Error::other(format!("read-only after a failed fsync: {e}")));
        }
        let started = Instant::now();
        match seg.sync() {
            Ok(()) => {
                metrics::counter!("strata_fsync_total").increment(1);
                metrics::histogram!("strata_fsync_duration_seconds").record(started.elapsed().as_secs_f64());
                // Before anything is reported durable; never backwards (an
                // fsync asked for earlier may finish after a later one). A
                // failure only leaves the recovery point behind, which is safe.
                let mut point = self.recovery_point.locked();
                if upto > *point {
                    match checkpoint::RecoveryPoint::write(&self.dir, upto) {
                        Ok(()) => *point = upto,
                        Err(e) => tracing::warn!(log = %self.name, error = %e, "could not write the recovery point"),
                    }
                }
                drop(point);
                self.durable.send_if_modified(|d| raise(d, upto));
                Ok(())
            }
            Err(e) => {
                tracing::error!(log = %self.name, error = %e, "fsync failed: the partition is read-only until the broker restarts");
                metrics::counter!("strata_fsync_failures_total").increment(1);
                *self.sync_error.locked() = Some(format!("an fsync failed ({e})"));
                // Wake durable waiters: they fail now.
                self.durable.send_modify(|_| {});
                Err(e)
            }
        }
    }

    /// `Refused` for damage start-up did not cut; `ReadOnly` once an fsync failed.
    fn check_writable(&self) -> Result<(), LogError> {
        if let Some(why) = &self.refused {
            return Err(LogError::Refused(why.clone()));
        }
        match &*self.sync_error.locked() {
            Some(e) => Err(LogError::ReadOnly(e.clone())),
            None => Ok(()),
        }
    }

    async fn wait_closed(&self) {
        let mut hw = self.end.subscribe();
        while !self.closed.load(Ordering::Acquire) {
            if hw.changed().await.is_err() {
                return;
            }
        }
    }

    /// fsyncs everything appended so far and publishes the durable offset.
    pub async fn flush(self: &Arc<Self>) -> Result<(), LogError> {
        // Under the writer lock, the log end is all written to
        // `active` or to segments sealed (and fsynced) before it.
        let (seg, target, records) = {
            let w = self.writer.locked();
            (w.active.clone(), self.end_offset(), w.unflushed_records)
        };
        if target <= self.durable_offset() {
            return Ok(());
        }
        self.check_writable()?;
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.sync(&seg, target))
            .await
            .map_err(|e| LogError::Io(io::Error::other(e)))??;
        let mut w = self.writer.locked();
        w.unflushed_records = w.unflushed_records.saturating_sub(records);
        Ok(())
    }

    /// The flusher: starts writeback every [`WRITEBACK_BYTES`] appended,
    /// fsyncs when asked (durable acks, record count) or every
    /// `interval`, until the log closes. One fsync covers every append before it.
    pub async fn run_flusher(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Writeback starts early, off the writer's thread, so each fsync
        // finds little left to write: an fsync of a second's worth of
        // appends (hundreds of MB) slowed every write of the partition for
        // its 0.5 s, and with 8 partitions fsyncing together, every write.
        // (segment id, bytes) written back so far: each writeback covers
        // only what was appended since.
        let mut written_back = (0, 0);
        while !self.closed.load(Ordering::Acquire) {
            tokio::select! {
                _ = self.flush_wanted.notified() => {}
                _ = tick.tick() => {}
                _ = self.writeback_wanted.notified() => {
                    let seg = self.writer.locked().active.clone();
                    let from = if seg.id() == written_back.0 { written_back.1 } else { 0 };
                    let to = seg.size();
                    if to > from {
                        written_back = (seg.id(), to);
                        // A hint: if the task fails, the fsync writes it all.
                        let _ = tokio::task::spawn_blocking(move || seg.start_writeback(from, to)).await;
                    }
                    continue;
                }
            }
            if self.closed.load(Ordering::Acquire) {
                break;
            }
            if self.flush().await.is_err() {
                // Logged by `sync`; read-only from now on: nothing to flush.
                break;
            }
            let active = self.writer.locked().active.clone();
            active.forget_tail_batch(interval);
        }
    }

    /// Stops appends, writes what is queued, fsyncs and seals the indexes.
    /// Reads keep working.
    pub fn close(&self) -> io::Result<()> {
        let mut sink = self.sink.locked();
        if std::mem::replace(&mut self.writer.locked().closed, true) {
            return Ok(());
        }
        if self.refused.is_some() {
            // Nothing was appended, and nothing may be changed.
            self.closed.store(true, Ordering::Release);
            self.end.send_modify(|_| {});
            return Ok(());
        }
        self.drain_locked(&mut sink, false);
        let next = self.end_offset();
        let last = next.checked_sub(1).filter(|&o| o >= sink.active.base_offset());
        // Never durable past a failed fsync: sealing happens only after one
        // that succeeds (and raises the durable offset).
        let result = self.sync(&sink.active, next).and_then(|_| sink.active.seal(last));
        self.closed.store(true, Ordering::Release);
        self.flush_wanted.notify_one();
        // Wake waiters of the log end so they notice the close.
        self.end.send_modify(|_| {});
        result
    }

    /// Why the log takes no writes until a restart (an fsync failed, or a
    /// write panicked), if it does not.
    pub fn read_only(&self) -> Option<String> {
        self.sync_error.locked().clone()
    }

    /// The damage start-up refused to cut, if any (where, why, what to do).
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
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
