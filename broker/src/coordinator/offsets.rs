//! Committed offsets as events: each commit is a record in the internal,
//! compacted topic `__consumer_offsets` (one partition), keyed by
//! (group, topic, partition); deleting a group writes tombstones. At start-up
//! the table is rebuilt by replaying that topic.
//!
//! Key: `group \0 topic \0 partition` (UTF-8, partition in decimal).
//! Value: offset as u64 little-endian, then the commit metadata (UTF-8).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::log::batch::{RecordIter, RecordSource};
use crate::partition::Partition;

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

/// One change to the table, as a record of the offsets topic.
pub struct OffsetRecord {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

impl OffsetRecord {
    /// A commit.
    pub fn commit(key: &OffsetKey, c: &Committed) -> OffsetRecord {
        let mut value = c.offset.to_le_bytes().to_vec();
        value.extend_from_slice(c.metadata.as_bytes());
        OffsetRecord { key: encode_key(key), value: Some(value) }
    }

    /// A deletion (tombstone).
    pub fn delete(key: &OffsetKey) -> OffsetRecord {
        OffsetRecord { key: encode_key(key), value: None }
    }
}

impl RecordSource for OffsetRecord {
    fn timestamp_ms(&self) -> i64 {
        0
    }
    fn key(&self) -> Option<&[u8]> {
        Some(&self.key)
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        std::iter::empty()
    }
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
pub fn replay(log: &Partition) -> Result<BTreeMap<OffsetKey, Committed>> {
    let mut table = BTreeMap::new();
    let mut offset = log.log_start();
    while offset < log.high_watermark() {
        let r = log.read(offset, 4 << 20, usize::MAX, false)?;
        for chunk in &r.chunks {
            for rec in RecordIter::new(chunk) {
                let Some(key) = rec.key.and_then(decode_key) else { continue };
                match rec.value.and_then(decode_value) {
                    Some(c) => table.insert(key, c),
                    None => table.remove(&key),
                };
            }
        }
        offset = r.next_offset;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{IndexConfig, Log, LogConfig};

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
        log.append(&[OffsetRecord::commit(&k1, &c(5)), OffsetRecord::commit(&k2, &c(7))], 1).unwrap();
        log.append(&[OffsetRecord::commit(&k1, &c(9)), OffsetRecord::delete(&k2)], 1).unwrap();
        let table = replay(&Partition::new("o", 0, std::sync::Arc::new(log))).unwrap();
        assert_eq!(table, BTreeMap::from([(k1, c(9))]));
        assert_eq!(decode_key(b"a\0b\0x"), None);
    }
}
