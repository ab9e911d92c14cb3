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
//!    would be, with nothing valid after them, are the preallocated tail
//!    (the end, nothing is cut); a torn or corrupt batch (or one whose
//!    offsets go backwards) with nothing valid after it is a torn tail and
//!    the rest of the file is cut; damage with a valid batch after it, or a
//!    batch of a newer format version, is refused — the broker does not
//!    start and nothing is changed — unless `storage.recovery = "truncate"`.
//!    One exception: after an unclean stop, damage that spans a whole 4 KiB
//!    block of zeros is a hole left by writes not yet fsynced (after a power
//!    loss blocks reach the disk in any order) and is cut like a torn tail;
//!    nothing acknowledged as durable can lie after it, since an fsync
//!    covers everything written before it.
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
    /// Damage that is not a torn tail: refuse to start (the reason).
    Refuse(String),
}

/// The tail policy. `valid_after` is the position of a valid batch found
/// after this one (with offsets at or after the expected one), if any;
/// `truncate` is `storage.recovery = "truncate"`.
///
/// - A valid batch is kept.
/// - Zeros with nothing valid after them are the preallocated tail: the end.
/// - A torn or corrupt batch, or one whose offsets go backwards, with
///   nothing valid after it is a torn tail: cut.
/// - A batch of a newer format version, or damage (zeros included) with a
///   valid batch after it, is refused, unless `truncate`: then cut.
pub fn tail_step(found: Found, valid_after: Option<u64>, truncate: bool) -> TailStep {
    let why = match &found {
        Found::Batch(_) | Found::Zeros => String::new(),
        Found::Overlap { base_offset, expected } => format!("batch at offset {base_offset} overlaps offset {expected}"),
        Found::Damaged(e) => e.to_string(),
    };
    let newer = matches!(&found, Found::Damaged(e) if e.is_newer_version());
    match found {
        Found::Batch(h) => TailStep::Keep(h),
        _ if (newer || valid_after.is_some()) && !truncate => TailStep::Refuse(match valid_after {
            _ if newer => format!("{why}: written by a newer strata; upgrade, or {TRUNCATE_CHOICE}"),
            Some(p) => format!(
                "{}, and a valid batch follows at byte {p}: this is damage, not a torn write; \
                 run `strata verify DATA_DIR` for a report, or {TRUNCATE_CHOICE}",
                if why.is_empty() { "zeros where a batch header must be".to_string() } else { why }
            ),
            None => unreachable!("refused only with a batch after or a newer version"),
        }),
        Found::Zeros if valid_after.is_none() => TailStep::End,
        Found::Zeros => TailStep::Cut("zeros where a batch header must be".into()),
        _ => TailStep::Cut(why),
    }
}

const TRUNCATE_CHOICE: &str =
    "start with storage.recovery = \"truncate\" (STRATA_STORAGE__RECOVERY=truncate) to cut the log there, losing what follows";

/// Marks an I/O error as a refusal by the recovery policy.
pub fn refuse(path: &Path, position: u64, reason: String) -> io::Error {
    io::Error::other(Refused(format!("{} at byte {position}: {reason}", path.display())))
}

/// The reason, if `e` is a refusal by the recovery policy.
pub fn refusal(e: &io::Error) -> Option<String> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Refused>()).map(|r| r.0.clone())
}

#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

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
        assert!(matches!(tail_step(Found::Zeros, None, false), TailStep::End));
        assert!(matches!(tail_step(Found::Damaged(BatchError::Truncated), None, false), TailStep::Cut(_)));
        match tail_step(Found::Overlap { base_offset: 3, expected: 5 }, None, false) {
            TailStep::Cut(why) => assert!(why.contains("overlaps offset 5"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn damage_with_valid_batches_after_it_or_a_newer_version_is_refused() {
        for found in [Found::Zeros, Found::Damaged(BatchError::CrcMismatch)] {
            match tail_step(found, Some(4096), false) {
                TailStep::Refuse(why) => {
                    assert!(why.contains("byte 4096") && why.contains("strata verify") && why.contains("truncate"))
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            matches!(tail_step(Found::Damaged(BatchError::BadMagic(3)), None, false), TailStep::Refuse(w) if w.contains("newer"))
        );
        assert!(matches!(tail_step(Found::Damaged(BatchError::BadMagic(3)), None, true), TailStep::Cut(_)));
        assert!(matches!(tail_step(Found::Zeros, Some(4096), true), TailStep::Cut(_)));
    }
}
