//! The latest offset of each key of a partition, for conditional appends
//! per key (`expected_last_offset`): optimistic concurrency for an entity
//! or aggregate stored under its key, as event sourcing wants.
//!
//! Built from the log the first time a per-key condition reaches the
//! partition (every record read once), then kept current by every append
//! to the partition. A tombstone makes its key absent, so the answer is
//! the same before and after compaction (which keeps each key's latest
//! record and drops old tombstones) and after a restart. Bounded by
//! `storage.max_conditional_keys`; a partition with more keys refuses
//! per-key conditions (RESOURCE_EXHAUSTED) rather than grow. Pure.

use std::collections::HashMap;

use bytes::Bytes;

/// Keys and their latest offsets.
#[derive(Debug, Default)]
pub struct KeyIndex {
    latest: HashMap<Bytes, u64>,
    /// More keys than the bound were seen: the index is not used.
    overflowed: bool,
}

impl KeyIndex {
    /// Records that `key` was written at `offset` (`tombstone`: deleted).
    pub fn record(&mut self, key: &[u8], offset: u64, tombstone: bool, max_keys: usize) {
        if tombstone {
            self.latest.remove(key);
            return;
        }
        let room = self.latest.len() < max_keys;
        match self.latest.get_mut(key) {
            Some(o) => *o = offset,
            None if room => {
                self.latest.insert(Bytes::copy_from_slice(key), offset);
            }
            None => self.overflowed = true,
        }
    }

    /// The latest offset of `key`; None if absent. Err if the index
    /// overflowed its bound.
    pub fn latest(&self, key: &[u8]) -> Result<Option<u64>, usize> {
        match self.overflowed {
            true => Err(self.latest.len()),
            false => Ok(self.latest.get(key).copied()),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.latest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_per_key() {
        let mut k = KeyIndex::default();
        for i in 0..100_000u64 {
            k.record(format!("account-{i:08}").as_bytes(), i, false, usize::MAX);
        }
        let slot = std::mem::size_of::<(Bytes, u64)>() + 1;
        let per = (k.latest.capacity() * slot + k.latest.keys().map(|b| b.len()).sum::<usize>()) / k.len();
        println!("{per} bytes per key of 16 bytes");
        assert!(per <= 128, "{per}");
    }

    #[test]
    fn latest_offsets_tombstones_and_the_bound() {
        let mut k = KeyIndex::default();
        assert_eq!(k.latest(b"a"), Ok(None));
        k.record(b"a", 3, false, 2);
        k.record(b"a", 7, false, 2);
        k.record(b"b", 8, false, 2);
        assert_eq!(k.latest(b"a"), Ok(Some(7)));
        k.record(b"b", 9, true, 2);
        assert_eq!(k.latest(b"b"), Ok(None), "a tombstone makes the key absent");
        k.record(b"c", 10, false, 2);
        k.record(b"d", 11, false, 2);
        assert_eq!(k.latest(b"a"), Err(2), "past the bound the index refuses");
    }
}
