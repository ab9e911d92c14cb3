//! Committed offsets as events: each commit is a record in the internal,
//! compacted topic `__consumer_offsets` (one partition), keyed by
//! (group, topic, partition); deleting a group writes tombstones. At start-up
//! the table is rebuilt by replaying that topic.
//!
//! Key: `group \0 topic \0 partition` (UTF-8, partition in decimal).
//! Value: offset as u64 little-endian, then the commit metadata (UTF-8).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::partition::internal::{KeyedRecord, KeyedStore};

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// (group, topic, partition)
pub type OffsetKey = (String, String, u32);

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Next offset to consume.
    pub offset: u64,
    /// Free text from the committer.
    pub metadata: String,
}

/// A commit, as a record of the offsets topic.
pub fn commit_record(key: &OffsetKey, c: &Committed) -> KeyedRecord {
    let mut value = c.offset.to_le_bytes().to_vec();
    value.extend_from_slice(c.metadata.as_bytes());
    KeyedRecord::set(encode_key(key), value)
}

/// A deletion (tombstone).
pub fn delete_record(key: &OffsetKey) -> KeyedRecord {
    KeyedRecord::delete(encode_key(key))
}

fn encode_key((group, topic, partition): &OffsetKey) -> Vec<u8> {
    format!("{group}\0{topic}\0{partition}").into_bytes()
}

fn decode_key(b: &[u8]) -> Option<OffsetKey> {
    let s = std::str::from_utf8(b).ok()?;
    let mut parts = s.split('\0');
    let (g, t, p) = (parts.next()?, parts.next()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then(|| (g.to_string(), t.to_string(), p))
}

fn decode_value(b: &[u8]) -> Option<Committed> {
    let offset = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let metadata = String::from_utf8(b[8..].to_vec()).ok()?;
    Some(Committed { offset, metadata })
}

/// Rebuilds the table by replaying the offsets log from its start.
pub fn replay(store: &KeyedStore) -> Result<BTreeMap<OffsetKey, Committed>> {
    let mut table = BTreeMap::new();
    store.replay(|_, key, value| {
        let Some(key) = decode_key(key) else { return };
        match value.and_then(decode_value) {
            Some(c) => table.insert(key, c),
            None => table.remove(&key),
        };
    })?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{IndexConfig, Log, LogConfig};
    use crate::partition::Partition;

    #[test]
    fn commits_and_deletes_replay_to_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: u64::MAX,
            index: IndexConfig { interval_bytes: 4096, max_bytes: 4096 },
            log_append_time: false,
            flush_records: 0,
            direct_io: true,
            truncate_damage: false,
            clean_stop: false,
        };
        let (log, _) = Log::open(dir.path(), "o/0".into(), cfg).unwrap();
        let k1: OffsetKey = ("g".into(), "t".into(), 0);
        let k2: OffsetKey = ("g".into(), "t".into(), 1);
        let c = |o: u64| Committed { offset: o, metadata: format!("m{o}") };
        log.append(&[commit_record(&k1, &c(5)), commit_record(&k2, &c(7))], 1).unwrap();
        log.append(&[commit_record(&k1, &c(9)), delete_record(&k2)], 1).unwrap();
        let partition = Partition::new("o", 0, std::sync::Arc::new(log), 1000, 10);
        let table = replay(&KeyedStore::over(std::sync::Arc::new(partition))).unwrap();
        assert_eq!(table, BTreeMap::from([(k1, c(9))]));
        assert_eq!(decode_key(b"a\0b\0x"), None);
    }
}
