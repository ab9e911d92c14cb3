//! Every on-disk constant of the log, in one place. docs/storage-format.md
//! describes the same layout for people; change both together.

use std::path::{Path, PathBuf};

/// Format version written in each new batch header. Bump on any layout change.
pub const BATCH_MAGIC: u8 = 2;
/// The first format version: still read (segments written before version 2
/// stay as they are), never written.
pub const BATCH_MAGIC_V1: u8 = 1;

// Batch header: fixed size, little-endian. Versions 1 and 2 share the first
// 57 bytes; version 2 adds the leader epoch and covers the whole header
// (but the CRC itself) with the CRC.
/// Absolute offset of the first record (u64).
pub const BASE_OFFSET_AT: usize = 0;
/// Total batch size in bytes, header included (u32).
pub const BATCH_LEN_AT: usize = 8;
/// Format version (u8).
pub const MAGIC_AT: usize = 12;
/// CRC32 (IEEE, crc32fast) (u32). Version 2: of bytes `0..CRC_AT` and
/// `CRC_END..batch_len` (everything but the CRC). Version 1: of bytes
/// `CRC_END..batch_len` only.
pub const CRC_AT: usize = 13;
/// First byte after the CRC.
pub const CRC_END: usize = 17;
/// Attribute bits (u16): see `ATTR_*`.
pub const ATTRIBUTES_AT: usize = 17;
/// Offset of the last record minus base offset (u32).
pub const LAST_OFFSET_DELTA_AT: usize = 19;
/// Number of records in the batch (u32).
pub const RECORD_COUNT_AT: usize = 23;
/// Smallest record timestamp, ms since epoch (i64).
pub const FIRST_TIMESTAMP_AT: usize = 27;
/// Largest record timestamp, ms since epoch (i64).
pub const MAX_TIMESTAMP_AT: usize = 35;
/// Producer id, -1 when none (i64): idempotent producers.
pub const PRODUCER_ID_AT: usize = 43;
/// Producer epoch, -1 when none (i16): fencing of stale producer instances.
pub const PRODUCER_EPOCH_AT: usize = 51;
/// Sequence of the first record, -1 when none (i32): de-duplication.
pub const BASE_SEQUENCE_AT: usize = 53;
/// Version 2: the partition leader's epoch when the batch was appended (i32):
/// replication. 0 on a single node.
pub const LEADER_EPOCH_AT: usize = 57;
/// Size of the version-2 header; records follow.
pub const BATCH_HEADER_LEN: usize = 61;
/// Size of the version-1 header.
pub const BATCH_HEADER_LEN_V1: usize = 57;

/// Attribute bits 0-2: compression codec. Only 0 (none) exists today.
pub const ATTR_COMPRESSION_MASK: u16 = 0b111;
/// Attribute bit 3: timestamps are the broker's append time.
pub const ATTR_LOG_APPEND_TIME: u16 = 1 << 3;
/// Attribute bit 4 (reserved): the batch is part of a transaction.
pub const ATTR_TRANSACTIONAL: u16 = 1 << 4;
/// Attribute bit 5 (reserved): a control batch (transaction markers), not
/// user records.
pub const ATTR_CONTROL: u16 = 1 << 5;

/// Protobuf field number that frames each record in a batch body; equals
/// `PartitionRecords.records` so fetch replies can splice stored bytes.
pub const RECORD_FIELD: u32 = 15;
/// The framing key byte: field 15, wire type 2 (length-delimited).
pub const RECORD_KEY_BYTE: u8 = ((RECORD_FIELD << 3) | 2) as u8;

// Record fields inside the body (protobuf `strata.v1.Record`).
/// `uint64 offset = 1` (always written, even when 0).
pub const REC_OFFSET: u32 = 1;
/// `int64 timestamp_ms = 2`.
pub const REC_TIMESTAMP: u32 = 2;
/// `optional bytes key = 3`.
pub const REC_KEY: u32 = 3;
/// `optional bytes value = 4`.
pub const REC_VALUE: u32 = 4;
/// `repeated Header headers = 5`.
pub const REC_HEADER: u32 = 5;
/// `string key = 1` inside `Header`.
pub const HDR_KEY: u32 = 1;
/// `bytes value = 2` inside `Header`.
pub const HDR_VALUE: u32 = 2;

/// Segment files are named by base offset, zero-padded to this many digits.
pub const SEGMENT_NAME_DIGITS: usize = 20;
/// Suffix of segment data files.
pub const LOG_SUFFIX: &str = "log";
/// Suffix of sparse offset index files.
pub const INDEX_SUFFIX: &str = "index";
/// Suffix of time index files.
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// Extra suffix of a compacted copy of a segment file while it is written
/// (`<base>.log.cleaned`, ...). See `compaction` for the swap protocol.
pub const CLEANED_SUFFIX: &str = "cleaned";

/// Offset index entry: relative offset (u32) then file position (u32).
pub const INDEX_ENTRY_LEN: usize = 8;
/// Time index entry: max timestamp so far (i64) then relative offset (u32).
pub const TIME_INDEX_ENTRY_LEN: usize = 12;

/// The active segment's file grows by fallocate in steps that double from
/// `PREALLOCATE_MIN_BYTES` up to this many bytes.
pub const PREALLOCATE_BYTES: u64 = 32 << 20;
/// The first fallocate step of a segment.
pub const PREALLOCATE_MIN_BYTES: u64 = 1 << 20;

/// Alignment of direct I/O: file positions, lengths and buffer addresses are
/// multiples of it. 4 KiB covers every common device and filesystem block size.
pub const DIRECT_IO_ALIGN: usize = 4096;

/// With direct I/O, a write of fewer bytes than this (one small batch, or a
/// group of them) goes through the page cache instead: a direct write costs
/// a device round trip (≈ 185 µs for 100 KB on the development machine),
/// which a producer of small batches waits for on every batch.
pub const SMALL_WRITE_BYTES: u64 = 256 << 10;

/// Largest segment a u32 file position can address.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// Present in the data directory only while no broker runs on it after a
/// clean stop; its absence at start-up means the last stop was a crash.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// In each partition directory: the offset its last fsync covered, and its
/// CRC (see `log/checkpoint.rs`).
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Size of the recovery-point file: offset (u64) and CRC-32 (u32).
pub const RECOVERY_POINT_LEN: usize = 12;
/// Lock file in the data directory: `flock`ed by the one process using the
/// directory, holding its PID.
pub const LOCK_FILE: &str = ".lock";
/// Per-topic metadata file; its presence is the commit point of a topic.
pub const TOPIC_META_FILE: &str = "topic.toml";
/// Present in a topic directory only while its partition count grows: the
/// growth's old and new counts. Without it, a partition directory at or
/// past the committed count is damage, not an unfinished growth.
pub const GROWTH_MARKER_FILE: &str = "growth.toml";
/// The last line of `topic.toml` and `growth.toml`: this prefix, then the
/// CRC-32 (IEEE) of every byte before the line, as 8 hex digits.
pub const CHECKSUM_LINE_PREFIX: &str = "# strata-crc32 = ";
/// Directory under the data dir holding one directory per topic.
pub const TOPICS_DIR: &str = "topics";
/// Prefix of the directory a topic is created in: it gets its `topic.toml`
/// there and is then renamed to the topic's name, so a directory with a
/// topic's name always has one (a missing one is damage, not a crash).
pub const CREATING_TOPIC_PREFIX: &str = "~creating-";
/// Prefix a topic directory is renamed to before it is removed, so a crash
/// in between leaves a name recovery knows to remove.
pub const DELETED_TOPIC_PREFIX: &str = "~deleted-";

/// Paths of a segment's files: log, offset index, time index.
pub fn segment_paths(dir: &Path, base: u64) -> [PathBuf; 3] {
    [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX].map(|suffix| dir.join(segment_file_name(base, suffix)))
}

/// Paths of the compacted copy of a segment (log, index, time index), each
/// the segment's file name plus `.cleaned`.
pub fn cleaned_paths(dir: &Path, base: u64) -> [PathBuf; 3] {
    segment_paths(dir, base).map(|p| {
        let mut name = p.into_os_string();
        name.push(".");
        name.push(CLEANED_SUFFIX);
        PathBuf::from(name)
    })
}

/// File name of a segment file.
pub fn segment_file_name(base_offset: u64, suffix: &str) -> String {
    format!("{base_offset:0width$}.{suffix}", width = SEGMENT_NAME_DIGITS)
}

/// Parses `<digits>.log` into a base offset.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(LOG_SUFFIX)?.strip_suffix('.')?;
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let name = segment_file_name(42, LOG_SUFFIX);
        assert_eq!(name, "00000000000000000042.log");
        assert_eq!(parse_segment_file_name(&name), Some(42));
        assert_eq!(parse_segment_file_name("00000000000000000042.index"), None);
        assert_eq!(parse_segment_file_name("42.log"), None);
    }

    #[test]
    fn header_fields_are_contiguous() {
        assert_eq!(CRC_AT + 4, CRC_END);
        assert_eq!(BASE_SEQUENCE_AT + 4, BATCH_HEADER_LEN_V1);
        assert_eq!(BATCH_HEADER_LEN_V1, LEADER_EPOCH_AT);
        assert_eq!(LEADER_EPOCH_AT + 4, BATCH_HEADER_LEN);
        assert_eq!(RECORD_KEY_BYTE, 0x7a);
        // Splicing stored records into fetch replies relies on this.
        assert_eq!(RECORD_FIELD, strata_proto::PARTITION_RECORDS_RECORDS_FIELD);
    }
}
