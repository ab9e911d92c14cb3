//! [`Partition`]: the one handle on a partition's storage for everything
//! above `log/` (the server, the coordinator, the cleaner, metrics).
//!
//! It keeps two offsets apart, as a replicated log must:
//! - the **log end**: one past the last record written to the local log;
//! - the **high watermark**: one past the last record readers may see.
//!
//! A partition has one replica today, so the high watermark is the log end
//! (as in Kafka with one replica). Replication will make it the commit index
//! of the partition's Raft group; readers (fetch, subscribe, list offsets,
//! groups) already read only below it, so they will not change.

use std::io;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::keys::KeyIndex;
use super::producers::{ProducerTable, SeqBatch, SeqCheck, SeqError, MAX_PRODUCERS};
use crate::config::AckLevel;
use crate::error::{Error, Result, Unavailability};
use crate::locks::LockExt;
use crate::log::batch::{ProducerStamp, RecordSource};
use crate::log::compact::{compact_partition, CleanStats, CompactionPolicy, Throttle};
use crate::log::{AppendOptions, Appended, IndexConfig, Log, LogConfig, LogError, Pending, ReadResult};
use crate::retention::{segments_to_delete, SegmentStat};

/// One partition of a topic.
pub struct Partition {
    topic: String,
    id: u32,
    log: Arc<Log>,
    /// Idempotent producers' state, loaded from the log when first needed;
    /// held across the check and the submit of their appends.
    producers: SharedTable,
    /// `storage.producer_expiry_ms`.
    producer_expiry_ms: i64,
    /// Each key's latest offset, once a per-key condition needed it; kept
    /// current by every append (held across it) and dropped when a write
    /// fails (offsets are then given out again).
    keys: Mutex<Option<(KeyIndex, u64)>>,
    /// `storage.max_conditional_keys`.
    max_keys: usize,
}

/// A partition's producer table, None until first needed.
type SharedTable = Arc<Mutex<Option<ProducerTable>>>;

/// Conditions and identity of an append (see `Partition::append_with`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendIf {
    /// The idempotent producer, its epoch and the batch's sequence.
    pub producer: Option<ProducerStamp>,
    /// Append only if the partition's next offset is this.
    pub expected_offset: Option<u64>,
    /// Append only if the records' (one) key has its latest record at this
    /// offset (`Some(None)`: the key is absent).
    pub expected_key_offset: Option<Option<u64>>,
}

/// An append that has its offsets; [`Appending::acknowledged`] resolves once
/// it reached the level of acknowledgement asked for.
pub struct Appending {
    partition: u32,
    appended: Appended,
    /// None: a retried duplicate, answered once its first append is written.
    pending: Option<Pending>,
    /// For a duplicate: the log's failed writes when it was checked (a
    /// failure after that may be its first append's: the retry is refused).
    failed_writes: u64,
    /// Wait for the fsync too (`AckLevel::Durable`).
    durable: bool,
    log: Arc<Log>,
    topic: String,
}

/// A log error as the broker reports it, naming the partition (and, for
/// I/O errors such as a full disk, where its data lives).
fn log_error(topic: &str, id: u32, log: &Log, e: LogError) -> Error {
    match e {
        LogError::Io(e) => Error::storage(format!("partition {topic}/{id} (data in {})", log.dir().display()), e),
        e => Error::from_log(topic, id, e),
    }
}

impl Appending {
    /// The partition appended to.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Where the records go.
    pub fn appended(&self) -> Appended {
        self.appended
    }

    /// Waits until the batch is written and, for `Durable`, fsynced. A
    /// retried duplicate waits until its first append is written and
    /// durable; if a write fails meanwhile it is refused as UNAVAILABLE (the
    /// client retries, and the next attempt finds out whether it stands).
    pub async fn acknowledged(self) -> Result<Appended> {
        let error = |e| log_error(&self.topic, self.partition, &self.log, e);
        let Some(pending) = self.pending else {
            let retry = || {
                Error::Unavailable(
                    Unavailability::Retry,
                    format!(
                        "a write to {}/{} failed while this retry waited for its first append; send it again",
                        self.topic, self.partition
                    ),
                )
            };
            let mut end = self.log.watch_end_offset();
            loop {
                if self.log.failed_writes() != self.failed_writes {
                    return Err(retry());
                }
                if *end.borrow_and_update() >= self.appended.next_offset {
                    break;
                }
                end.changed().await.map_err(|_| error(LogError::Closed))?;
            }
            if self.log.failed_writes() != self.failed_writes {
                return Err(retry());
            }
            self.log.wait_durable(self.appended.next_offset).await.map_err(error)?;
            return Ok(self.appended);
        };
        let written = pending.written().await.map_err(error)?;
        if self.durable {
            self.log.wait_durable(written.next_offset).await.map_err(error)?;
        }
        Ok(written)
    }
}

/// What a retention pass removed from a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    /// Segments deleted.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The log start after them.
    pub log_start: u64,
}

impl Partition {
    /// Wraps partition `id` of `topic`, whose log is open.
    pub(crate) fn new(topic: &str, id: u32, log: Arc<Log>, producer_expiry_ms: u64, max_keys: u64) -> Partition {
        Partition {
            topic: topic.to_string(),
            id,
            log,
            producers: Arc::new(Mutex::new(None)),
            producer_expiry_ms: producer_expiry_ms as i64,
            keys: Mutex::new(None),
            max_keys: max_keys as usize,
        }
    }

    fn error(&self, e: LogError) -> Error {
        log_error(&self.topic, self.id, &self.log, e)
    }

    /// "topic/partition", for log lines.
    pub fn name(&self) -> &str {
        self.log.name()
    }

    /// The partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// One past the last offset readers may see.
    pub fn high_watermark(&self) -> u64 {
        // One replica: everything written is committed.
        self.log.end_offset()
    }

    /// One past the last offset written to the local log.
    pub fn log_end(&self) -> u64 {
        self.log.end_offset()
    }

    /// First readable offset.
    pub fn log_start(&self) -> u64 {
        self.log.log_start()
    }

    /// Watches the high watermark (long polls, subscriptions).
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.log.watch_end_offset()
    }

    /// Number of segments and their total size in bytes.
    pub fn disk_usage(&self) -> (usize, u64) {
        self.log.disk_usage()
    }

    /// True once the partition was closed (shutdown or topic deletion).
    pub fn is_closed(&self) -> bool {
        self.log.is_closed()
    }

    /// Gives `records` their offsets and queues them as one batch, in call
    /// order; the returned [`Appending`] resolves at the level `acks` asks.
    pub fn append<R: RecordSource>(&self, records: &[R], now_ms: i64, acks: AckLevel) -> Result<Appending> {
        self.append_with(records, now_ms, acks, AppendIf::default())
    }

    /// As [`Partition::append`], if `cond` holds: the partition's next
    /// offset is `expected_offset`, and the batch is its producer's next
    /// (a retried one is answered with its first offsets, not stored again).
    /// Checked and queued atomically.
    pub fn append_with<R: RecordSource>(
        &self,
        records: &[R],
        now_ms: i64,
        acks: AckLevel,
        cond: AppendIf,
    ) -> Result<Appending> {
        let durable = acks == AckLevel::Durable;
        let options = AppendOptions { expect_next_offset: cond.expected_offset, producer: cond.producer };
        let appending = |pending: Option<Pending>, appended, failed_writes| Appending {
            partition: self.id,
            appended,
            pending,
            failed_writes,
            durable,
            log: self.log.clone(),
            topic: self.topic.clone(),
        };
        let Some(p) = cond.producer else {
            let pending = self.submit_keyed(records, now_ms, durable, options, cond.expected_key_offset)?;
            let appended = pending.appended;
            return Ok(appending(Some(pending), appended, 0));
        };
        let mut table = self.producers.locked();
        let table = match &mut *table {
            Some(t) => t,
            None => table.insert(self.load_producers(now_ms)?),
        };
        table.expire(now_ms, self.producer_expiry_ms);
        loop {
            match table.check(p.id, p.epoch, p.sequence).map_err(|e| self.producer_error(p, e))? {
                SeqCheck::Duplicate(b) if !self.first_write_stands(&b, p)? => {
                    // Its first write failed (and its offsets may be someone
                    // else's now): forget it and what followed, and decide again.
                    table.forget_from(p.id, b.base_offset);
                }
                SeqCheck::Duplicate(b) => {
                    let next_offset = b.base_offset + u64::from(b.records);
                    let appended = Appended { base_offset: b.base_offset, next_offset };
                    return Ok(appending(None, appended, self.log.failed_writes()));
                }
                SeqCheck::Append => {
                    if !table.has_room_for(p.id) {
                        return Err(Error::LimitReached {
                            limit: crate::error::PRODUCER_TABLE_LIMIT,
                            message: format!(
                            "partition {} keeps at most {MAX_PRODUCERS} idempotent producers (storage.producer_expiry_ms forgets idle ones)",
                            self.name()
                        )});
                    }
                    let pending = self.submit_keyed(records, now_ms, durable, options, cond.expected_key_offset)?;
                    let appended = pending.appended;
                    let batch = SeqBatch {
                        sequence: p.sequence,
                        base_offset: appended.base_offset,
                        records: records.len() as u32,
                        failed_writes: pending.failed_writes,
                    };
                    table.record(p.id, p.epoch, batch, now_ms);
                    return Ok(appending(Some(pending), appended, 0));
                }
            }
        }
    }

    /// Submits an append with the key index held across it: checks the
    /// per-key condition (building the index first if needed), and records
    /// the records' keys if the partition has an index.
    fn submit_keyed<R: RecordSource>(
        &self,
        records: &[R],
        now_ms: i64,
        durable: bool,
        options: AppendOptions,
        expected_key_offset: Option<Option<u64>>,
    ) -> Result<Pending> {
        let mut keys = self.keys.locked();
        // A failed write gave its offsets out again: the index is stale.
        if keys.as_ref().is_some_and(|(_, failed)| *failed != self.log.failed_writes()) {
            *keys = None;
        }
        if let Some(expected) = expected_key_offset {
            let index = match &mut *keys {
                Some((index, _)) => index,
                None => &mut keys.insert(self.load_keys()?).0,
            };
            let key = records.first().and_then(|r| r.key()).unwrap_or_default();
            let actual = index.latest(key).map_err(|held| {
                Error::LimitReached {
                    limit: "storage.max_conditional_keys",
                    message: format!(
                    "partition {} has more than storage.max_conditional_keys = {held} keys: per-key conditions are off for it",
                    self.name()
                )}
            })?;
            if actual != expected {
                return Err(Error::KeyMismatch { topic: self.topic.clone(), partition: self.id, expected, actual });
            }
        }
        let pending = self.log.submit(records, now_ms, durable, options).map_err(|e| self.error(e))?;
        if let Some((index, _)) = keys.as_mut() {
            for (offset, r) in (pending.appended.base_offset..).zip(records) {
                if let Some(k) = r.key() {
                    index.record(k, offset, r.value().is_none(), self.max_keys);
                }
            }
        }
        Ok(pending)
    }

    /// The key index from the whole log (every record read once), with the
    /// log's failed-write count it is valid for.
    fn load_keys(&self) -> Result<(KeyIndex, u64)> {
        let failed = self.log.failed_writes();
        let mut index = KeyIndex::default();
        super::internal::replay_keyed(self, |offset, key, value| {
            index.record(key, offset, value.is_none(), self.max_keys)
        })?;
        // Appends queued before the index existed and not yet written are
        // not in it: the caller tries again once they are.
        if self.log.end_offset() != self.log.next_offset() || self.log.failed_writes() != failed {
            return Err(Error::Unavailable(
                Unavailability::Retry,
                format!(
                    "partition {} was being written while its key index was built; send the request again",
                    self.name()
                ),
            ));
        }
        tracing::debug!(partition = self.name(), keys = index.len(), "key index built from the log");
        Ok((index, failed))
    }

    /// Whether the first append of a batch the table remembers stands: no
    /// write failed since it was queued (it is written, or will be, or fails
    /// a waiting duplicate), or it is in the log, header and all.
    fn first_write_stands(&self, b: &SeqBatch, p: ProducerStamp) -> Result<bool> {
        if self.log.failed_writes() == b.failed_writes {
            return Ok(true);
        }
        let h = self
            .log
            .batch_header_at(b.base_offset)
            .map_err(|e| Error::storage(format!("reading a batch header of {}", self.name()), e))?;
        Ok(h.is_some_and(|h| {
            (h.meta.base_offset, h.producer_id, h.producer_epoch, h.base_sequence)
                == (b.base_offset, p.id, p.epoch, p.sequence)
        }))
    }

    /// The producer table from the batch headers of the segments written
    /// (by the broker's clock: file modification times) within
    /// `storage.producer_expiry_ms`; each producer found counts as active now.
    fn load_producers(&self, now_ms: i64) -> Result<ProducerTable> {
        let mut table = ProducerTable::default();
        let since = std::time::SystemTime::now() - std::time::Duration::from_millis(self.producer_expiry_ms as u64);
        let failed_writes = self.log.failed_writes();
        self.log
            .visit_producer_headers(since, |h| {
                let batch = SeqBatch {
                    sequence: h.base_sequence,
                    base_offset: h.meta.base_offset,
                    // The offsets it took (compaction may have removed some records).
                    records: h.meta.last_offset_delta + 1,
                    failed_writes,
                };
                table.record(h.producer_id, h.producer_epoch, batch, now_ms);
            })
            .map_err(|e| Error::storage(format!("reading producer state of {}", self.name()), e))?;
        tracing::debug!(partition = self.name(), producers = table.len(), "producer state loaded from the log");
        Ok(table)
    }

    fn producer_error(&self, p: ProducerStamp, e: SeqError) -> Error {
        Error::Producer { topic: self.topic.clone(), partition: self.id, producer_id: p.id, error: e }
    }

    /// Reads up to `max_bytes` (at least one batch if any is there) and at
    /// most `max_records` (past the first batch) from `offset`, below the
    /// high watermark. Offsets outside [log start, high watermark] are
    /// `OffsetOutOfRange`. Damaged bytes are never served: a read starting
    /// at them is `DataLoss`, or with `skip_damaged` goes on at the next
    /// readable offset.
    pub fn read(&self, offset: u64, max_bytes: usize, max_records: usize, skip_damaged: bool) -> Result<ReadResult> {
        let hw = self.high_watermark();
        let mut from = offset;
        loop {
            match self.log.read_upto(from, max_bytes, max_records, hw) {
                Err(LogError::DataLoss(d)) if skip_damaged && d.next > from && d.next <= hw => from = d.next,
                r => return r.map_err(|e| self.error(e)),
            }
        }
    }

    /// Forgets the idempotent producers `retired` says are no longer
    /// issued (their ids are refused before they reach a partition); the
    /// number forgotten.
    pub fn forget_producers(&self, retired: impl Fn(i64) -> bool) -> usize {
        let mut table = self.producers.locked();
        let Some(table) = table.as_mut() else { return 0 };
        table.forget_if(retired)
    }

    /// The damage start-up refused to cut in this partition's log, if any
    /// (where, why, what to do): it takes no writes.
    pub fn refused(&self) -> Option<&str> {
        self.log.refused()
    }

    /// Why the partition takes no writes until a restart, if it does not
    /// (an fsync failed, or a write panicked).
    pub fn read_only(&self) -> Option<String> {
        self.log.read_only()
    }

    /// Damaged batches readers met since start-up.
    pub fn damaged_batches(&self) -> usize {
        self.log.damaged_batches()
    }

    /// The first record with timestamp >= `ts` below the high watermark:
    /// (offset, timestamp), or None if every record is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>> {
        self.log.offset_for_timestamp_upto(ts, self.high_watermark()).map_err(|e| self.error(e))
    }

    /// Deletes the oldest closed segments that retention no longer keeps
    /// (see [`segments_to_delete`]); None if none.
    pub fn enforce_retention(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> io::Result<Option<Retained>> {
        let (closed, total) = self.log.closed_segments();
        let stats: Vec<_> =
            closed.iter().map(|c| SegmentStat { size: c.size(), max_timestamp: c.max_timestamp() }).collect();
        let n = segments_to_delete(&stats, total, now_ms, retention_ms, retention_bytes);
        if n == 0 {
            return Ok(None);
        }
        let removed = self.log.delete_oldest_segments(n)?;
        Ok(Some(Retained {
            segments: removed.len(),
            bytes: removed.iter().map(|s| s.size()).sum(),
            log_start: self.log.log_start(),
        }))
    }

    /// One compaction pass over the closed segments (see `log::compact`).
    pub fn compact(
        &self,
        policy: &CompactionPolicy,
        index: IndexConfig,
        now_ms: i64,
        throttle: &mut Throttle,
    ) -> io::Result<Option<CleanStats>> {
        compact_partition(&self.log, policy, index, now_ms, throttle)
    }

    /// Verifies every sealed segment (see `Log::scrub`); the damaged places found.
    pub fn scrub(&self, pace: impl FnMut(usize) -> io::Result<()>) -> io::Result<usize> {
        self.log.scrub(pace)
    }

    pub(super) fn set_config(&self, config: LogConfig) {
        self.log.set_config(config);
    }

    /// Stops appends, writes what is queued, fsyncs and seals. Reads go on.
    pub(super) fn close(&self) -> io::Result<()> {
        self.log.close()
    }
}
