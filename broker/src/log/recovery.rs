//! The recovery policy, as code: what start-up checks, what it repairs, what
//! it removes, and what it logs. Callers do the I/O; the decisions are here,
//! so the policy can be read (and changed) in one place. `docs/storage-format.md`
//! ("Recovery") describes the same rules.
//!
//! 1. **Data directory** (`partition::Manager::open`): a directory named
//!    `~creating-*` is a creation that crashed, and one named `~deleted-*` a
//!    deletion that crashed: both are removed. A topic directory without its
//!    metadata file is damage (a topic is renamed into place only with it,
//!    and its partition directories):
//!    start-up is refused and nothing is deleted ([`topic_dir`]); so is a
//!    `topic.toml` whose checksum fails. Partition directories at or beyond
//!    the committed count are removed only when a growth marker says they
//!    are an unfinished growth; otherwise, and for a missing directory below
//!    the count, the topic is refused ([`partition_dirs`]).
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
//!    the rest of the file is cut; damage with a valid batch after it, damage
//!    at offsets reported durable (below the partition's recovery point —
//!    the offset its last fsync covered, `checkpoint::RecoveryPoint` — or anywhere
//!    after a clean stop), or a batch of a newer format version, is refused —
//!    that partition stays unavailable for writes and readable up to the
//!    damage, the rest of the broker serves, and nothing is changed — unless
//!    `storage.recovery = "truncate"`.
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
    cleaned_paths, CLEANED_SUFFIX, CREATING_TOPIC_PREFIX, DELETED_TOPIC_PREFIX, GROWTH_MARKER_FILE,
    SEGMENT_NAME_DIGITS, TOPIC_META_FILE,
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

/// What start-up does with a topic's partition directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionDirs {
    /// Open partitions `0..count`, after removing these directories (an
    /// unfinished growth's) and the growth marker, if there is one.
    Open {
        /// Partition directories to remove first.
        remove: Vec<u32>,
    },
    /// Refuse the topic, changing nothing (the reason and the choices).
    Refuse(String),
}

/// Judges the partition directories `found` of a topic whose `topic.toml`
/// commits `count` partitions, with the growth marker `growth` (from, to)
/// if one is there. Only a growth marker proves a directory is garbage: a
/// directory at or past the count without one, or a missing directory below
/// it, means the count or the directories are damaged, and nothing is
/// deleted.
pub fn partition_dirs(found: &[u32], count: u32, growth: Option<(u32, u32)>) -> PartitionDirs {
    let choices = "nothing was deleted: run `strata verify DATA_DIR`, and restore the file or the directories";
    let unfinished = match growth {
        None => 0..0,
        // Committed: only the marker is left to remove.
        Some((_, to)) if to == count => 0..0,
        Some((from, to)) if from == count && to > from => from..to,
        Some((from, to)) => {
            return PartitionDirs::Refuse(format!(
                "{GROWTH_MARKER_FILE} says the topic grows from {from} to {to} partitions, but {TOPIC_META_FILE} \
                 commits {count}; {choices}"
            ))
        }
    };
    if let Some(p) = found.iter().find(|&&p| p >= count && !unfinished.contains(&p)) {
        return PartitionDirs::Refuse(format!(
            "partition directory {p} is at or past the {count} partitions {TOPIC_META_FILE} commits, and no growth \
             marker says it is unfinished; {choices}"
        ));
    }
    if let Some(p) = (0..count).find(|p| !found.contains(p)) {
        return PartitionDirs::Refuse(format!(
            "partition directory {p} is missing, but {TOPIC_META_FILE} commits {count} partitions; {choices}"
        ));
    }
    PartitionDirs::Open { remove: found.iter().copied().filter(|p| unfinished.contains(p)).collect() }
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
/// `durable` says the offsets at this position were reported durable (below
/// the partition's recovery point, or anywhere after a clean stop);
/// `truncate` is `storage.recovery = "truncate"`.
///
/// - A valid batch is kept.
/// - Zeros with nothing valid after them are the preallocated tail: the end
///   (unless the offsets there were reported durable: then they are data
///   lost, refused as damage).
/// - Damage at offsets reported durable is refused: an fsync covered them,
///   so this is not a write cut short, and cutting would lose what was
///   acknowledged.
/// - A torn or corrupt batch, or one whose offsets go backwards, with
///   nothing valid after it is a torn tail: cut.
/// - A batch of a newer format version, or damage (zeros included) with a
///   valid batch after it, is refused, unless `truncate`: then cut.
pub fn tail_step(found: Found, valid_after: Option<u64>, durable: bool, truncate: bool) -> TailStep {
    let why = match &found {
        Found::Batch(_) | Found::Zeros => String::new(),
        Found::Overlap { base_offset, expected } => format!("batch at offset {base_offset} overlaps offset {expected}"),
        Found::Damaged(e) => e.to_string(),
    };
    let newer = matches!(&found, Found::Damaged(e) if e.is_newer_version());
    let damage = if why.is_empty() { "zeros where a batch header must be".to_string() } else { why.clone() };
    match found {
        Found::Batch(h) => TailStep::Keep(h),
        Found::Zeros if valid_after.is_none() && !durable => TailStep::End,
        _ if truncate => TailStep::Cut(damage),
        _ if newer => TailStep::Refuse(format!("{why}: written by a newer strata; upgrade, or {TRUNCATE_CHOICE}")),
        _ if durable => TailStep::Refuse(format!(
            "{damage}, at offsets reported durable (fsynced before the stop): this is damage, not a torn write; \
             run `strata verify DATA_DIR` for a report, or {TRUNCATE_CHOICE}"
        )),
        _ => match valid_after {
            Some(p) => TailStep::Refuse(format!(
                "{damage}, and a valid batch follows at byte {p}: this is damage, not a torn write; \
                 run `strata verify DATA_DIR` for a report, or {TRUNCATE_CHOICE}"
            )),
            None => TailStep::Cut(damage),
        },
    }
}

/// The end of the log as recovery found it, judged against the recovery
/// point: a log that ends (cleanly) before offsets an fsync covered has
/// lost them (a file cut at a batch boundary, a segment gone), and is
/// refused unless `truncate`. None: the end stands.
pub fn short_log(end_offset: u64, recovery_point: u64, truncate: bool) -> Option<String> {
    (end_offset < recovery_point && !truncate).then(|| {
        format!(
            "the log ends at offset {end_offset}, but offsets below {recovery_point} were fsynced (recovery-point): \
             they are lost from the files; run `strata verify DATA_DIR` for a report, or {TRUNCATE_CHOICE}"
        )
    })
}

const TRUNCATE_CHOICE: &str =
    "start with storage.recovery = \"truncate\" (STRATA_STORAGE__RECOVERY=truncate) to cut the log there, losing what follows; \
     until then the partition is unavailable for writes and readable up to the damage";

/// What a tail check found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TailRecovery {
    /// Batches checked (from the last trustworthy index entry on).
    pub batches_checked: u64,
    /// Bytes cut off the end of the log, and why.
    pub truncated: Option<(u64, String)>,
    /// Damage the policy refuses to cut: where and why. The log ends there
    /// and takes no appends; nothing was changed.
    pub refused: Option<String>,
}

/// Logs what opening the log `name` did to it.
pub fn log_open(name: &str, tail: &TailRecovery, end_offset: u64) {
    if let Some(why) = &tail.refused {
        tracing::error!(partition = %name, end_offset, reason = %why,
            "recovery refused damage: the partition takes no writes and is readable up to the damage");
    }
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
    }

    #[test]
    fn only_a_growth_marker_proves_a_partition_directory_is_garbage() {
        let open = |remove: Vec<u32>| PartitionDirs::Open { remove };
        assert_eq!(partition_dirs(&[0, 1, 2], 3, None), open(vec![]));
        // A count damaged downwards, or upwards: refused, nothing removed.
        assert!(matches!(partition_dirs(&[0, 1, 2], 1, None), PartitionDirs::Refuse(w) if w.contains("directory 1")));
        assert!(matches!(partition_dirs(&[0, 1, 2], 7, None), PartitionDirs::Refuse(w) if w.contains("3 is missing")));
        // A growth from 3 to 5 that crashed before its commit; and after.
        assert_eq!(partition_dirs(&[0, 1, 2, 3, 4], 3, Some((3, 5))), open(vec![3, 4]));
        assert_eq!(partition_dirs(&[0, 1, 2, 3], 3, Some((3, 5))), open(vec![3]));
        assert_eq!(partition_dirs(&[0, 1, 2, 3, 4], 5, Some((3, 5))), open(vec![]));
        // A marker that does not fit the count, or dirs past the growth.
        assert!(matches!(partition_dirs(&[0, 1, 2, 3], 2, Some((3, 5))), PartitionDirs::Refuse(_)));
        assert!(matches!(partition_dirs(&[0, 1, 2, 3, 4, 5], 3, Some((3, 5))), PartitionDirs::Refuse(_)));
    }

    #[test]
    fn the_tail_is_cut_only_at_damage() {
        assert!(matches!(tail_step(Found::Zeros, None, false, false), TailStep::End));
        assert!(matches!(tail_step(Found::Damaged(BatchError::Truncated), None, false, false), TailStep::Cut(_)));
        match tail_step(Found::Overlap { base_offset: 3, expected: 5 }, None, false, false) {
            TailStep::Cut(why) => assert!(why.contains("overlaps offset 5"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn damage_with_valid_batches_after_it_or_a_newer_version_is_refused() {
        for found in [Found::Zeros, Found::Damaged(BatchError::CrcMismatch)] {
            match tail_step(found, Some(4096), false, false) {
                TailStep::Refuse(why) => {
                    assert!(why.contains("byte 4096") && why.contains("strata verify") && why.contains("truncate"))
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            matches!(tail_step(Found::Damaged(BatchError::BadMagic(3)), None, false, false), TailStep::Refuse(w) if w.contains("newer"))
        );
        assert!(matches!(tail_step(Found::Damaged(BatchError::BadMagic(3)), None, false, true), TailStep::Cut(_)));
        assert!(matches!(tail_step(Found::Zeros, Some(4096), false, true), TailStep::Cut(_)));
    }

    #[test]
    fn damage_at_durable_offsets_is_refused_even_as_a_tail() {
        for found in [Found::Damaged(BatchError::CrcMismatch), Found::Damaged(BatchError::Truncated)] {
            assert!(
                matches!(tail_step(found, None, true, false), TailStep::Refuse(w) if w.contains("reported durable"))
            );
        }
        assert!(
            matches!(tail_step(Found::Zeros, None, true, false), TailStep::Refuse(w) if w.contains("zeros")),
            "zeros where fsynced batches must be are data lost"
        );
        assert!(matches!(tail_step(Found::Zeros, None, false, false), TailStep::End));
        assert!(matches!(tail_step(Found::Damaged(BatchError::CrcMismatch), None, true, true), TailStep::Cut(_)));
    }
}
