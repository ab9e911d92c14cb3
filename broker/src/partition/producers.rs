//! Idempotent producers on one partition: for each producer id, its epoch
//! and the last [`KEPT_BATCHES`] batches' sequence numbers with the offsets
//! they were given, so a retried batch is answered with its first offsets
//! instead of being stored again (as Kafka keeps 5).
//!
//! Sequences count requests per (producer, partition): 0, 1, 2, ... A batch
//! is the next (`last + 1`, or 0 for a producer this partition has not
//! seen, or the first of a newer epoch), a duplicate (one of the kept), or
//! refused: older than the kept ones, a gap, or from an older epoch than
//! the partition has seen (fenced). The table is rebuilt from the batch
//! headers of the log's tail when the partition first needs it, and forgets
//! producers idle longer than `storage.producer_expiry_ms`. Pure: no I/O.

use std::collections::{HashMap, VecDeque};

pub use crate::error::SeqError;

/// Batches remembered per producer.
pub const KEPT_BATCHES: usize = 5;

/// Most producers one partition keeps.
pub const MAX_PRODUCERS: usize = 10_000;

/// How often idle producers are looked for (ms).
const EXPIRE_EVERY_MS: i64 = 60_000;

/// A batch a producer appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqBatch {
    /// Its sequence number.
    pub sequence: i32,
    /// Its first offset.
    pub base_offset: u64,
    /// The offsets it took.
    pub records: u32,
    /// The log's failed writes when it was queued (see `Log::failed_writes`).
    pub failed_writes: u64,
}

#[derive(Debug)]
struct Entry {
    epoch: i16,
    batches: VecDeque<SeqBatch>,
    last_ms: i64,
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Append it.
    Append,
    /// A retry of this batch: answer with its offsets.
    Duplicate(SeqBatch),
}

/// The producers of one partition.
#[derive(Debug, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, Entry>,
    last_expire_ms: i64,
}

impl ProducerTable {
    /// Decides about a batch of `producer`/`epoch` numbered `sequence`.
    pub fn check(&self, producer: i64, epoch: i16, sequence: i32) -> Result<SeqCheck, SeqError> {
        let Some(e) = self.producers.get(&producer) else {
            return match sequence {
                0 => Ok(SeqCheck::Append),
                got => Err(SeqError::OutOfOrder { got, expected: 0 }),
            };
        };
        if epoch < e.epoch {
            return Err(SeqError::Fenced { epoch, current: e.epoch });
        }
        if epoch > e.epoch {
            return match sequence {
                0 => Ok(SeqCheck::Append),
                got => Err(SeqError::OutOfOrder { got, expected: 0 }),
            };
        }
        if let Some(b) = e.batches.iter().find(|b| b.sequence == sequence) {
            return Ok(SeqCheck::Duplicate(*b));
        }
        let expected = e.batches.back().map_or(0, |b| b.sequence.checked_add(1).unwrap_or(0));
        match sequence == expected {
            true => Ok(SeqCheck::Append),
            false => Err(SeqError::OutOfOrder { got: sequence, expected }),
        }
    }

    /// Records an appended batch (or one read back from the log).
    pub fn record(&mut self, producer: i64, epoch: i16, batch: SeqBatch, now_ms: i64) {
        let e = self.producers.entry(producer).or_insert(Entry { epoch, batches: VecDeque::new(), last_ms: now_ms });
        if epoch > e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        if e.batches.len() == KEPT_BATCHES {
            e.batches.pop_front();
        }
        e.batches.push_back(batch);
        e.last_ms = e.last_ms.max(now_ms);
    }

    /// Forgets `producer`'s batches from `base_offset` on (their write
    /// failed, and a failed write fails every one queued after it).
    pub fn forget_from(&mut self, producer: i64, base_offset: u64) {
        if let Some(e) = self.producers.get_mut(&producer) {
            e.batches.retain(|b| b.base_offset < base_offset);
        }
    }

    /// True if `producer` is known or there is room for one more.
    pub fn has_room_for(&self, producer: i64) -> bool {
        self.producers.len() < MAX_PRODUCERS || self.producers.contains_key(&producer)
    }

    /// Forgets producers idle for `expiry_ms` (looking at most once a minute).
    pub fn expire(&mut self, now_ms: i64, expiry_ms: i64) {
        if now_ms - self.last_expire_ms < EXPIRE_EVERY_MS && self.producers.len() < MAX_PRODUCERS {
            return;
        }
        self.last_expire_ms = now_ms;
        self.producers.retain(|_, e| e.last_ms >= now_ms - expiry_ms);
    }

    /// Forgets the producers `gone` says are gone; how many.
    pub fn forget_if(&mut self, gone: impl Fn(i64) -> bool) -> usize {
        let before = self.producers.len();
        self.producers.retain(|&id, _| !gone(id));
        before - self.producers.len()
    }

    /// Producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Bytes the table's allocations hold: its map's slots and each
    /// producer's kept batches (what docs/operations.md quotes).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(i64, Entry)>() + 1;
        self.producers.capacity() * slot
            + self.producers.values().map(|e| e.batches.capacity() * std::mem::size_of::<SeqBatch>()).sum::<usize>()
    }

    /// True if no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(sequence: i32, base_offset: u64) -> SeqBatch {
        SeqBatch { sequence, base_offset, records: 2, failed_writes: 0 }
    }

    #[test]
    fn memory_per_producer_is_bounded() {
        let mut t = ProducerTable::default();
        for p in 0..10_000 {
            for s in 0..10 {
                t.record(p, 0, b(s, 0), 1);
            }
        }
        let per = t.heap_bytes() / t.len();
        println!("{per} bytes per producer and partition");
        assert!(per <= 320, "{per} bytes per producer");
    }

    #[test]
    fn next_duplicate_gap_and_fencing() {
        let mut t = ProducerTable::default();
        assert_eq!(t.check(7, 0, 1), Err(SeqError::OutOfOrder { got: 1, expected: 0 }));
        assert_eq!(t.check(7, 0, 0), Ok(SeqCheck::Append));
        t.record(7, 0, b(0, 10), 1);
        assert_eq!(t.check(7, 0, 0), Ok(SeqCheck::Duplicate(b(0, 10))));
        assert_eq!(t.check(7, 0, 2), Err(SeqError::OutOfOrder { got: 2, expected: 1 }));
        for s in 1..=6 {
            assert_eq!(t.check(7, 0, s), Ok(SeqCheck::Append));
            t.record(7, 0, b(s, 10 + 2 * s as u64), 1);
        }
        // Only the last five are kept: 0 and 1 are now too old.
        assert_eq!(t.check(7, 0, 1), Err(SeqError::OutOfOrder { got: 1, expected: 7 }));
        assert_eq!(t.check(7, 0, 2), Ok(SeqCheck::Duplicate(b(2, 14))));
        // A newer epoch starts at 0 and fences the older one.
        assert_eq!(t.check(7, 1, 3), Err(SeqError::OutOfOrder { got: 3, expected: 0 }));
        assert_eq!(t.check(7, 1, 0), Ok(SeqCheck::Append));
        t.record(7, 1, b(0, 30), 2);
        assert_eq!(t.check(7, 0, 7), Err(SeqError::Fenced { epoch: 0, current: 1 }));
        assert_eq!(t.check(8, 0, 0), Ok(SeqCheck::Append), "producers are independent");
        t.forget_from(7, 30);
        assert_eq!(t.check(7, 1, 0), Ok(SeqCheck::Append), "a failed batch is forgotten");
        t.record(7, 1, b(0, 30), 2);
        t.expire(EXPIRE_EVERY_MS + 2, EXPIRE_EVERY_MS);
        assert_eq!(t.len(), 1);
        t.expire(2 * EXPIRE_EVERY_MS + 3, EXPIRE_EVERY_MS);
        assert!(t.is_empty());
    }
}
