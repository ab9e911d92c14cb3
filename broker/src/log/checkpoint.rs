//! The recovery point: the offset below which a partition's log was covered
//! by a successful fsync, kept in `recovery-point` in the partition's
//! directory (as Kafka's `recovery-point-offset-checkpoint`).
//!
//! Written after each fsync and before anything it covers is reported
//! durable, so it is never ahead of the fsync. It is written in place and
//! not fsynced itself: after a power loss it may be behind (older), which is
//! safe — recovery then treats a little more of the tail as possibly torn,
//! as it did before the file existed. At start-up after a crash, damage
//! below it is refused instead of cut (see `recovery::tail_step`).
//!
//! The file is created (at offset 0) when the log is opened, so the writes
//! after fsyncs overwrite blocks already allocated: a full disk does not
//! stop them. An empty file is one whose first write never happened.
//!
//! Layout (`format::RECOVERY_POINT_LEN` bytes): the offset (u64, little
//! endian), then the CRC-32 of those 8 bytes (u32, little endian).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{RECOVERY_POINT_FILE, RECOVERY_POINT_LEN};

/// What the recovery-point file of a partition says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryPoint {
    /// No file: a partition never fsynced, or written by an older strata.
    Missing,
    /// Offsets below this were fsynced.
    At(u64),
    /// The file is damaged (why): nothing is known, so recovery cuts nothing.
    Damaged(String),
}

impl RecoveryPoint {
    /// Reads the recovery point of the log in `dir`.
    pub fn read(dir: &Path) -> io::Result<RecoveryPoint> {
        let bytes = match std::fs::read(dir.join(RECOVERY_POINT_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RecoveryPoint::Missing),
            Err(e) => return Err(e),
        };
        if bytes.iter().all(|&b| b == 0) {
            // Created, but its first write never happened or never reached
            // the disk (a crash, a full disk): nothing was recorded.
            return Ok(RecoveryPoint::Missing);
        }
        if bytes.len() != RECOVERY_POINT_LEN {
            return Ok(RecoveryPoint::Damaged(format!("{} bytes, not {RECOVERY_POINT_LEN}", bytes.len())));
        }
        let (offset, crc) = bytes.split_at(8);
        let (Ok(offset), Ok(crc)) = (<[u8; 8]>::try_from(offset), <[u8; 4]>::try_from(crc)) else {
            return Ok(RecoveryPoint::Damaged("bad length".into()));
        };
        if crc32fast::hash(&offset) != u32::from_le_bytes(crc) {
            return Ok(RecoveryPoint::Damaged("checksum mismatch".into()));
        }
        Ok(RecoveryPoint::At(u64::from_le_bytes(offset)))
    }

    /// The offset below which damage is refused at start-up after a crash:
    /// a damaged file claims everything (nothing may be cut on its word).
    pub fn trusted_below(&self) -> u64 {
        match self {
            RecoveryPoint::Missing => 0,
            RecoveryPoint::At(o) => *o,
            RecoveryPoint::Damaged(_) => u64::MAX,
        }
    }

    /// Writes the file anew (at start-up: `offset` 0 when nothing is known)
    /// and fsyncs it and its directory, so its later writes overwrite blocks
    /// already on disk, and a point moved back by `truncate` stays back.
    pub fn create(dir: &Path, offset: u64) -> io::Result<()> {
        RecoveryPoint::write(dir, offset)?;
        std::fs::File::open(dir.join(RECOVERY_POINT_FILE))?.sync_all()?;
        super::sync_dir(dir)
    }

    /// Records that offsets below `offset` of the log in `dir` are fsynced.
    /// One positional write of the whole record, no truncation: a crash
    /// leaves the old or the new bytes (both checked by the CRC).
    pub fn write(dir: &Path, offset: u64) -> io::Result<()> {
        let mut buf = [0u8; RECOVERY_POINT_LEN];
        buf[..8].copy_from_slice(&offset.to_le_bytes());
        let crc = crc32fast::hash(&buf[..8]);
        buf[8..].copy_from_slice(&crc.to_le_bytes());
        crate::failpoint::io("recovery_point")?;
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(dir.join(RECOVERY_POINT_FILE))?;
        file.write_all_at(&buf, 0)?;
        // A damaged file may be longer; cutting it needs no space.
        if file.metadata()?.len() != RECOVERY_POINT_LEN as u64 {
            file.set_len(RECOVERY_POINT_LEN as u64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_every_flipped_bit_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RecoveryPoint::read(dir.path()).unwrap(), RecoveryPoint::Missing);
        RecoveryPoint::write(dir.path(), 12345).unwrap();
        assert_eq!(RecoveryPoint::read(dir.path()).unwrap(), RecoveryPoint::At(12345));
        let path = dir.path().join(RECOVERY_POINT_FILE);
        let pristine = std::fs::read(&path).unwrap();
        for bit in 0..pristine.len() * 8 {
            let mut damaged = pristine.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &damaged).unwrap();
            let read = RecoveryPoint::read(dir.path()).unwrap();
            assert!(matches!(read, RecoveryPoint::Damaged(_)), "bit {bit}: {read:?}");
            assert_eq!(read.trusted_below(), u64::MAX);
        }
        std::fs::write(&path, &pristine[..5]).unwrap();
        assert!(matches!(RecoveryPoint::read(dir.path()).unwrap(), RecoveryPoint::Damaged(_)));
    }
}
