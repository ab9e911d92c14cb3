//! The append pipeline of a [`Log`]: appends get their offsets and are
//! encoded under the writer lock and queued; a drain, holding the sink lock,
//! writes what is queued, in order, and completes the appends (see the
//! module documentation of `log`).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BufMut;
use tokio::sync::oneshot;

use super::batch::{append_batch, append_batch_gather, BatchMeta, ProducerStamp, RecordSource, Shared, Stamp};
use super::direct::{self, AlignedBuf, DirectWriter};
use super::format::{DIRECT_IO_ALIGN, MAX_SEGMENT_BYTES, SMALL_WRITE_BYTES};
use super::{sync_dir, Appended, Log, LogConfig, LogError, Segment, WRITEBACK_BYTES};
use crate::locks::{LockExt, RwLockExt};

/// Appends that have their offsets (under `Log::writer`).
pub(super) struct Writer {
    /// Offset the next append gets.
    pub(super) next_offset: u64,
    /// Where in the active segment the next append will most likely start
    /// (its end once the queue is written): a batch is encoded at that
    /// position's offset in its block, so it can be written in place.
    pub(super) end_hint: u64,
    /// Encoded batches not yet written, in offset order.
    pub(super) queue: Vec<Queued>,
    /// A background drain is scheduled or running (it will see the queue).
    pub(super) draining: bool,
    /// Records written since the last fsync.
    pub(super) unflushed_records: u64,
    pub(super) config: LogConfig,
    pub(super) closed: bool,
    /// The sink's active segment, for the flusher (which must not wait
    /// behind a write for it).
    pub(super) active: Arc<Segment>,
}

/// One encoded batch waiting to be written: `buf[at..]` with `shared`
/// spliced in, `len` bytes in all.
pub(super) struct Queued {
    buf: AlignedBuf,
    at: usize,
    /// Values written from the request's own bytes (buffered segments
    /// only: a direct write needs the batch whole in an aligned buffer).
    shared: Shared,
    len: usize,
    meta: BatchMeta,
    /// Its producer waits for durability: fsync right after the write.
    sync: bool,
    done: oneshot::Sender<Result<(), LogError>>,
}

impl Queued {
    /// The batch's bytes, in order.
    fn pieces(&self) -> super::batch::Pieces<'_> {
        super::batch::batch_pieces(&self.buf[self.at..], &self.shared)
    }
}

/// The writing side of the active segment (under `Log::sink`, which is
/// held for the length of a write). Lock order: sink, then writer.
pub(super) struct Sink {
    pub(super) active: Arc<Segment>,
    /// Direct-I/O writer of the active segment (None: buffered writes).
    pub(super) direct: Option<DirectWriter>,
    pub(super) active_since: Instant,
}

/// An append that has its offsets and is queued to be written.
#[derive(Debug)]
pub struct Pending {
    /// Where the records go.
    pub appended: Appended,
    /// [`Log::failed_writes`] when it was queued.
    pub failed_writes: u64,
    done: oneshot::Receiver<Result<(), LogError>>,
}

impl Pending {
    /// Waits until the batch is written (readable; durable once an fsync
    /// covers it, see [`Log::wait_durable`]).
    pub async fn written(self) -> Result<Appended, LogError> {
        self.done.await.unwrap_or(Err(LogError::Closed))?;
        Ok(self.appended)
    }
}

/// What an append may require and carry besides its records.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendOptions {
    /// Append only if the log's next offset is this one, else fail with
    /// [`LogError::UnexpectedOffset`] (checked and appended atomically).
    pub expect_next_offset: Option<u64>,
    /// The idempotent producer of the batch, for its header.
    pub producer: Option<ProducerStamp>,
}

impl Log {
    /// Appends `records` (non-empty) as one batch and returns once it is
    /// written. Blocks the calling thread for the write.
    pub fn append<R: RecordSource>(&self, records: &[R], now_ms: i64) -> Result<Appended, LogError> {
        let (mut pending, _) = self.enqueue(records, now_ms, false, false, AppendOptions::default())?;
        self.drain_locked(&mut self.sink.locked(), false);
        // The drain above, or one before it, wrote the batch or failed it.
        pending.done.try_recv().unwrap_or(Err(LogError::Closed))?;
        Ok(pending.appended)
    }

    /// Gives `records` (non-empty) their offsets and queues them as one
    /// batch; a blocking thread writes it. Appends are written in the order
    /// they were submitted, and one that fails fails every one after it.
    /// With `durable`, the writing thread also fsyncs right after the write
    /// (one fsync for everything written with it), so
    /// [`Log::wait_durable`] does not have to wait for the flusher.
    pub fn submit<R: RecordSource>(
        self: &Arc<Self>,
        records: &[R],
        now_ms: i64,
        durable: bool,
        options: AppendOptions,
    ) -> Result<Pending, LogError> {
        let (pending, start_drain) = self.enqueue(records, now_ms, true, durable, options)?;
        if start_drain {
            let drain = {
                let log = self.clone();
                move || log.drain_locked(&mut log.sink.locked(), true)
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(drain)),
                Err(_) => drain(),
            }
        }
        Ok(pending)
    }

    /// Encodes and queues a batch. With `background`, also returns true if
    /// no background drain is under way: the caller must start one.
    fn enqueue<R: RecordSource>(
        &self,
        records: &[R],
        now_ms: i64,
        background: bool,
        sync: bool,
        options: AppendOptions,
    ) -> Result<(Pending, bool), LogError> {
        let mut w = self.writer.locked();
        if w.closed {
            return Err(LogError::Closed);
        }
        self.check_writable()?;
        let base = w.next_offset;
        if let Some(expected) = options.expect_next_offset.filter(|e| *e != base) {
            return Err(LogError::UnexpectedOffset { expected, actual: base });
        }
        let stamp =
            Stamp { append_time_ms: now_ms, log_append_time: w.config.log_append_time, producer: options.producer };
        let mut buf = direct::POOL.take();
        // Room for the partial last block, which a direct write puts in front.
        let at = (w.end_hint % DIRECT_IO_ALIGN as u64) as usize;
        buf.put_bytes(0, at);
        let mut shared = Shared::new();
        let (meta, spliced) = match w.active.direct_file() {
            Some(_) => (append_batch(&mut buf, base, records, stamp), 0),
            // Through the page cache large values are written from where
            // they are (the request's buffer): one copy of them fewer.
            None => append_batch_gather(&mut buf, &mut shared, base, records, stamp),
        };
        let len = buf.len() - at + spliced;
        w.next_offset = meta.next_offset();
        w.end_hint += len as u64;
        let (tx, rx) = oneshot::channel();
        w.queue.push(Queued { buf, at, shared, len, meta, sync, done: tx });
        let start_drain = background && !std::mem::replace(&mut w.draining, true);
        let appended = Appended { base_offset: base, next_offset: meta.next_offset() };
        let failed_writes = self.failed_writes.load(std::sync::atomic::Ordering::SeqCst);
        Ok((Pending { appended, failed_writes, done: rx }, start_drain))
    }

    /// Writes queued batches until the queue is empty; a `background` drain
    /// then clears `draining`, in the same look at the queue, so no batch is
    /// left without a drain to write it.
    pub(super) fn drain_locked(&self, sink: &mut Sink, background: bool) {
        loop {
            let (batches, config) = {
                let mut w = self.writer.locked();
                if w.queue.is_empty() {
                    if background {
                        w.draining = false;
                    }
                    return;
                }
                (std::mem::take(&mut w.queue), w.config)
            };
            let wrote =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write_queued(sink, batches, &config)));
            if let Err(panic) = wrote {
                return self.fail_after_panic(panic, background);
            }
        }
    }

    /// A write panicked (a bug): its batches' appends failed (they see the
    /// log closed). Rather than leave offsets given out and never written,
    /// with no drain ever running again, the log turns read-only, as after a
    /// failed fsync: appends and durable waits fail with the reason, health
    /// reports NOT_SERVING, and a restart runs recovery on the file.
    fn fail_after_panic(&self, panic: Box<dyn std::any::Any + Send>, background: bool) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        tracing::error!(log = %self.name, panic = %what, "a write panicked: the partition is read-only until the broker restarts");
        *self.sync_error.locked() = Some(format!("a write panicked ({what})"));
        self.durable.send_modify(|_| {});
        let later = {
            let mut w = self.writer.locked();
            if background {
                w.draining = false;
            }
            std::mem::take(&mut w.queue)
        };
        for q in later {
            direct::POOL.give(q.buf);
            let _ = q.done.send(Err(LogError::ReadOnly("a write panicked".into())));
        }
    }

    /// Writes `batches` (consecutive, in order): as many per write as fit in
    /// the active segment, rolling it in between when needed.
    fn write_queued(&self, sink: &mut Sink, mut batches: Vec<Queued>, config: &LogConfig) {
        while !batches.is_empty() {
            let n = match self.write_group(sink, &mut batches, config) {
                Ok(n) => n,
                Err(e) => return self.fail_from(batches.into_iter(), sink.active.size(), e),
            };
            let next = batches[n - 1].meta.next_offset();
            let records: u64 = batches[..n].iter().map(|q| u64::from(q.meta.record_count)).sum();
            // A producer waits for durability: fsync here, now, rather than
            // hand over to the flusher and back. If it fails the log goes
            // read-only and its durable waiters fail (see `Log::sync`).
            let synced = batches[..n].iter().any(|q| q.sync) && self.sync(&sink.active, next).is_ok();
            {
                let mut w = self.writer.locked();
                if synced {
                    w.unflushed_records = 0;
                } else {
                    w.unflushed_records += records;
                }
                if w.config.flush_records > 0 && w.unflushed_records >= w.config.flush_records {
                    self.flush_wanted.notify_one();
                }
            }
            // Before readers hear of it: a subscriber waiting at the tail
            // reads the newest large batch from memory.
            let last = &mut batches[n - 1];
            if last.shared.is_empty() {
                sink.active.keep_tail_batch(
                    sink.active.size() - last.len as u64,
                    &mut last.buf,
                    last.at..last.at + last.len,
                );
            }
            self.end.send_replace(next);
            let end = sink.active.size();
            let written: u64 = batches[..n].iter().map(|q| q.len as u64).sum();
            if sink.direct.is_none() && end / WRITEBACK_BYTES != (end - written) / WRITEBACK_BYTES {
                self.writeback_wanted.notify_one();
            }
            for q in batches.drain(..n) {
                direct::POOL.give(q.buf);
                let _ = q.done.send(Ok(()));
            }
        }
    }

    /// Rolls if the first batch needs it, then writes as many of `batches`
    /// as fit in the active segment; returns how many.
    fn write_group(&self, sink: &mut Sink, batches: &mut [Queued], config: &LogConfig) -> io::Result<usize> {
        let limit = config.segment_bytes.min(MAX_SEGMENT_BYTES);
        // Relative offsets are u32: roll long before they could overflow.
        let too_many = |s: &Sink, q: &Queued| q.meta.next_offset() - s.active.base_offset() > u64::from(u32::MAX / 2);
        let size = sink.active.size();
        let first = &batches[0];
        let too_big = size > 0 && size + first.len as u64 > limit;
        let too_old = size > 0 && sink.active_since.elapsed() >= Duration::from_millis(config.segment_ms);
        if too_big || too_old || too_many(sink, first) || sink.active.index_room() == 0 {
            self.roll(sink, first.meta.base_offset, config)?;
            // What is queued now starts at the new segment's beginning.
            let mut w = self.writer.locked();
            w.end_hint = batches.iter().chain(&w.queue).map(|q| q.len as u64).sum();
        }
        // The first batch always goes (a new segment takes any batch); the
        // rest while they fit.
        let room = sink.active.index_room();
        let mut end = sink.active.size() + first.len as u64;
        let n = 1 + batches[1..]
            .iter()
            .take(room.saturating_sub(1))
            .take_while(|q| {
                end += q.len as u64;
                end <= limit && !too_many(sink, q)
            })
            .count();
        #[cfg(test)]
        if self.fail_writes.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::other("injected write failure"));
        }
        crate::failpoint::io("write")?;
        let Sink { active, direct, .. } = sink;
        // The device's time per write: with a producer at full speed it is
        // what a batch mostly waits for (see the README's performance notes).
        let started = Instant::now();
        match direct {
            // One large batch, encoded where the segment's end falls in its
            // block (the usual case): written direct from its own buffer.
            // Small writes go through the page cache (`Segment::append`).
            Some(d)
                if n == 1
                    && d.tail_len() == batches[0].at
                    && batches[0].len as u64 >= SMALL_WRITE_BYTES
                    && batches[0].shared.is_empty() =>
            {
                let q = &mut batches[0];
                active.append_in_place(&mut q.buf, q.at, &q.meta, config.index, d)?;
            }
            _ => {
                let group = batches[..n].iter().map(|q| (q.pieces(), q.len as u64, &q.meta));
                active.append(group, config.index, direct.as_mut())?;
            }
        }
        metrics::histogram!("strata_segment_write_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(n)
    }

    /// A write failed: fails `failed` and everything queued after them, and
    /// gives their offsets (and the segment from `end`) to the next append.
    fn fail_from(&self, failed: impl Iterator<Item = Queued>, end: u64, e: io::Error) {
        tracing::error!(log = %self.name, error = %e, "write failed");
        let later = {
            let mut w = self.writer.locked();
            // Counted before the offsets are given out again.
            self.failed_writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            w.next_offset = self.end_offset();
            w.end_hint = end;
            std::mem::take(&mut w.queue)
        };
        for q in failed.chain(later) {
            direct::POOL.give(q.buf);
            let _ = q.done.send(Err(LogError::Io(io::Error::new(e.kind(), e.to_string()))));
        }
    }

    /// Seals the active segment and starts a new one at `next_offset` (every
    /// offset below it is written).
    pub(super) fn roll(&self, sink: &mut Sink, next_offset: u64, config: &LogConfig) -> io::Result<()> {
        let last = next_offset.checked_sub(1).filter(|&o| o >= sink.active.base_offset());
        // fsync first (everything so far becomes durable, or the log
        // read-only); a failure to seal after it (an index write on a full
        // disk) only fails this write.
        self.sync(&sink.active, next_offset)?;
        sink.active.seal(last)?;
        let seg = Arc::new(Segment::open(&self.dir, next_offset, true, config.index, config.direct_io)?);
        sink.direct = seg.direct_writer()?;
        sync_dir(&self.dir)?;
        self.segments.write_locked().insert(next_offset, seg.clone());
        tracing::debug!(log = %self.name, base_offset = next_offset, "rolled segment");
        self.writer.locked().active = seg.clone();
        sink.active = seg;
        sink.active_since = Instant::now();
        Ok(())
    }
}
