//! The recovery policy, as code: what start-up checks, what it repairs, what
//! it removes, and what it logs. Callers do the I/O; the decisions are here,
//! so the policy can be read (and changed) in one place. `docs/storage-format.md`
//! ("Recovery") describes the same rules.
//!
//! 1. **Data directory** (`partition::Manager::open`): a directory named
//!    `~creating-*` is a creation that crashed, and one named `~deleted-*` a
//!    deletion that crashed: both are removed. A topic directory without its
//!    metadata file is damage (a topic is renamed into place only with it):
//!    start-up is refused and nothing is deleted ([`topic_dir`]). Partition
//!    directories at or beyond the committed count are a growth that
//!    crashed: removed ([`partition_dir_unfinished`]).
//! 2. **Compaction swaps** ([`recover_cleaned`]), per partition, before its
//!    segments are opened: an uncommitted copy is discarded, a committed one
//!    finished.
//! 3. **Segments**: sealed segments were fsynced and cut to size when they
//!    rolled, so they are opened as they are. Only the active (last) segment
//!    can hold a partial write: its tail is scanned batch by batch from the
//!    last index entry that points at a valid batch, and each finding is
//!    judged by [`tail_step`]: a valid batch is kept; zeros where a header
//!    would be are the preallocated tail (the end, nothing is cut); anything
//!    else — a torn or corrupt batch, or one whose offsets go backwards —
//!    ends the log there and the rest of the file is cut.
//! 4. **Logging**: every removal and every cut is logged at WARN with the
//!    path or partition, the bytes cut and the reason ([`log_open`]).

use std::fs;
use std::io;
use std::path::Path;

use super::batch::{BatchError, BatchHeader};
use super::format::{
    cleaned_paths, CLEANED_SUFFIX, CREATING_TOPIC_PREFIX, DELETED_TOPIC_PREFIX, SEGMENT_NAME_DIGITS, TOPIC_META_FILE,
};
use super::sync_dir;

/// What to do with a directory found under `topics/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicDir {
    /// A committed topic: open it.
    Open,
    /// A creation or deletion that a crash interrupted: remove it.
    RemoveUnfinished,
    /// Damage: refuse to start, change nothing (the reason and the choices).
    Refuse(String),
}

/// Judges a directory under `topics/` by its name and whether its metadata
/// file exists.
pub fn topic_dir(name: &str, has_meta: bool) -> TopicDir {
    if name.starts_with(DELETED_TOPIC_PREFIX) || name.starts_with(CREATING_TOPIC_PREFIX) {
        TopicDir::RemoveUnfinished
    } else if !has_meta {
        TopicDir::Refuse(format!(
            "the topic directory has no {TOPIC_META_FILE} (it is lost or was never this broker's); \
             nothing was deleted: restore the file, or move the directory out of the data directory to drop the topic"
        ))
    } else {
        TopicDir::Open
    }
}

/// True if partition directory `partition` of a topic with `count` committed
/// partitions is left over from a growth that crashed, and must be removed.
pub fn partition_dir_unfinished(partition: u32, count: u32) -> bool {
    partition >= count
}

/// What the tail scan of the active segment found at one position.
#[derive(Debug)]
pub enum Found {
    /// A complete batch whose checksum holds and whose offsets follow on.
    Batch(BatchHeader),
    /// A valid batch whose base offset is below the offset expected next.
    Overlap {
        /// The batch's base offset.
        base_offset: u64,
        /// The offset expected next.
        expected: u64,
    },
    /// Zeros where a header would be.
    Zeros,
    /// Bytes that are not a valid batch.
    Damaged(BatchError),
}

/// What recovery does about one [`Found`].
#[derive(Debug)]
pub enum TailStep {
    /// Keep the batch and go on after it.
    Keep(BatchHeader),
    /// The log ends here; nothing to cut but the preallocated zeros.
    End,
    /// The log ends here; cut the rest of the file, for this reason.
    Cut(String),
}

/// The tail policy: keep valid batches, stop at the preallocated zeros, and
/// cut at the first torn, corrupt or out-of-order batch.
pub fn tail_step(found: Found) -> TailStep {
    match found {
        Found::Batch(h) => TailStep::Keep(h),
        // Zeros where a header would be: the preallocated tail, not damage.
        Found::Zeros => TailStep::End,
        Found::Overlap { base_offset, expected } => {
            TailStep::Cut(format!("batch at offset {base_offset} overlaps offset {expected}"))
        }
        Found::Damaged(e) => TailStep::Cut(e.to_string()),
    }
}

/// What a tail check found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TailRecovery {
    /// Batches checked (from the last trustworthy index entry on).
    pub batches_checked: u64,
    /// Bytes cut off the end of the log, and why.
    pub truncated: Option<(u64, String)>,
}

/// Logs what opening the log `name` did to it.
pub fn log_open(name: &str, tail: &TailRecovery, end_offset: u64) {
    if let Some((bytes, why)) = &tail.truncated {
        tracing::warn!(partition = %name, cut_bytes = bytes, reason = %why, end_offset,
            "recovery cut a torn or corrupt tail");
    }
}

/// Logs the removal of an unfinished topic creation, deletion or growth.
pub fn log_removal(path: &Path, what: &str) {
    tracing::warn!(dir = %path.display(), "removing {what}");
}

/// Finishes or discards a swap that a crash interrupted, for every segment
/// of the partition in `dir`: if `B.log.cleaned` still exists the copy was
/// never committed, so all of `B.*.cleaned` is removed; otherwise the log was
/// swapped and the remaining index copies are renamed into place.
pub fn recover_cleaned(dir: &Path) -> io::Result<()> {
    let suffix = format!(".{CLEANED_SUFFIX}");
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(&suffix) {
            if let Some(base) = name.get(..SEGMENT_NAME_DIGITS).and_then(|d| d.parse::<u64>().ok()) {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    bases.dedup();
    for base in bases {
        let copies = cleaned_paths(dir, base);
        let committed = !copies[0].exists();
        for copy in copies.iter().filter(|p| p.exists()) {
            if committed {
                let target = copy.with_extension("");
                tracing::warn!(file = %target.display(), "finishing an interrupted compaction swap");
                fs::rename(copy, target)?;
            } else {
                tracing::warn!(file = %copy.display(), "discarding an uncommitted compaction copy");
                fs::remove_file(copy)?;
            }
        }
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_topics_and_partitions_are_removed() {
        assert_eq!(topic_dir("orders", true), TopicDir::Open);
        assert!(matches!(topic_dir("orders", false), TopicDir::Refuse(why) if why.contains("nothing was deleted")));
        assert_eq!(topic_dir(&format!("{DELETED_TOPIC_PREFIX}orders-1"), true), TopicDir::RemoveUnfinished);
        assert_eq!(topic_dir(&format!("{CREATING_TOPIC_PREFIX}orders-1"), false), TopicDir::RemoveUnfinished);
        assert!(!partition_dir_unfinished(2, 3));
        assert!(partition_dir_unfinished(3, 3));
    }

    #[test]
    fn the_tail_is_cut_only_at_damage() {
        assert!(matches!(tail_step(Found::Zeros), TailStep::End));
        assert!(matches!(tail_step(Found::Damaged(BatchError::Truncated)), TailStep::Cut(_)));
        match tail_step(Found::Overlap { base_offset: 3, expected: 5 }) {
            TailStep::Cut(why) => assert!(why.contains("overlaps offset 5"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
