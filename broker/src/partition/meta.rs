//! `topic.toml`: a topic's committed partition count and config overrides,
//! and `growth.toml`: the marker of a partition growth under way. Both are
//! written to a temporary file, fsynced and renamed into place, so a crash
//! leaves the old or the new version; the presence of `topic.toml` commits a
//! topic.
//!
//! Both end with a checksum line (`# strata-crc32 = xxxxxxxx`, the CRC-32 of
//! every byte before it): one flipped bit in a partition count must be
//! refused, never believed (a count one too low would read as an unfinished
//! growth; one too high as partitions never written). A `topic.toml` written
//! before checksums existed has no such line: it is read as it is and
//! rewritten with one at start-up.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::log::format::{CHECKSUM_LINE_PREFIX, GROWTH_MARKER_FILE, TOPIC_META_FILE};
use crate::log::sync_dir;

/// Persisted topic metadata.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TopicMeta {
    pub(super) partitions: u32,
    #[serde(default)]
    pub(super) configs: BTreeMap<String, String>,
}

/// A growth of a topic from `from` to `to` partitions, written before the
/// first new partition directory is made and removed once `topic.toml`
/// names `to`: the only proof that a partition directory at or past the
/// committed count is garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrowthMarker {
    pub(super) from: u32,
    pub(super) to: u32,
}

/// Why a metadata file cannot be believed.
#[derive(Debug)]
pub(super) enum MetaError {
    /// Reading failed.
    Io(std::io::Error),
    /// The bytes are damaged (checksum, text, or TOML): the reason.
    Damaged(String),
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaError::Io(e) => write!(f, "cannot be read: {e}"),
            MetaError::Damaged(why) => write!(f, "is damaged: {why}"),
        }
    }
}

/// The checksum line for `body`.
fn checksum_line(body: &str) -> String {
    format!("{CHECKSUM_LINE_PREFIX}{:08x}\n", crc32fast::hash(body.as_bytes()))
}

/// Splits a file's text into its body and whether it carried a checksum
/// (legacy files do not); a checksum that does not match is damage.
fn checked_body(text: &str) -> Result<(&str, bool), MetaError> {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let (body, last) = match trimmed.rfind('\n') {
        Some(i) => (&text[..i + 1], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    let Some(sum) = last.strip_prefix(CHECKSUM_LINE_PREFIX) else {
        return match text.contains(CHECKSUM_LINE_PREFIX.trim_end_matches(' ')) {
            // A checksum line, but not the last one: something was added or cut.
            true => Err(MetaError::Damaged("its checksum line is not the last line".into())),
            false => Ok((text, false)),
        };
    };
    let want = u32::from_str_radix(sum.trim(), 16).map_err(|_| MetaError::Damaged(format!("bad checksum {sum:?}")))?;
    let got = crc32fast::hash(body.as_bytes());
    if got != want {
        return Err(MetaError::Damaged(format!(
            "checksum mismatch (the file says {want:08x}, its contents hash to {got:08x})"
        )));
    }
    Ok((body, true))
}

/// Reads and checks a checksummed TOML file: Ok(None) if it does not exist;
/// the bool says whether it carried a checksum.
fn read_checked<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<(T, bool)>, MetaError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MetaError::Io(e)),
    };
    let text = String::from_utf8(bytes).map_err(|_| MetaError::Damaged("not UTF-8 text".into()))?;
    let (body, checked) = checked_body(&text)?;
    let value = toml::from_str(body).map_err(|e| MetaError::Damaged(e.to_string().trim().replace('\n', " ")))?;
    Ok(Some((value, checked)))
}

/// Writes `value` to `dir/file` with its checksum, crash-safely (temporary
/// file, fsync, rename, fsync of the directory).
fn write_checked<T: serde::Serialize>(value: &T, dir: &Path, file: &str) -> std::io::Result<()> {
    let body = toml::to_string(value).map_err(std::io::Error::other)?;
    let text = format!("{body}{}", checksum_line(&body));
    let tmp = dir.join(format!("{file}.tmp"));
    fs::write(&tmp, text.as_bytes())?;
    fs::File::open(&tmp)?.sync_all()?;
    crate::failpoint::io("rename")?;
    fs::rename(&tmp, dir.join(file))?;
    sync_dir(dir)
}

impl TopicMeta {
    /// Reads the metadata of the topic in `dir`, checking its checksum; a
    /// file without one (written before checksums) is rewritten with one.
    pub(super) fn read(dir: &Path) -> Result<TopicMeta, MetaError> {
        let path = dir.join(TOPIC_META_FILE);
        let (meta, checked): (TopicMeta, bool) =
            read_checked(&path)?.ok_or_else(|| MetaError::Io(std::io::Error::from(std::io::ErrorKind::NotFound)))?;
        if !checked {
            // Best effort: on a full disk the file stays as it is (and is
            // read the same way next time).
            match write_checked(&meta, dir, TOPIC_META_FILE) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "added a checksum to topic metadata written before checksums")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "could not add a checksum to topic metadata")
                }
            }
        }
        Ok(meta)
    }

    /// Reads and checks the metadata without changing anything (for `strata
    /// verify`): the bool says whether the file carried a checksum.
    pub(super) fn peek(dir: &Path) -> Result<(TopicMeta, bool), MetaError> {
        read_checked(&dir.join(TOPIC_META_FILE))?
            .ok_or_else(|| MetaError::Io(std::io::Error::from(std::io::ErrorKind::NotFound)))
    }

    /// Replaces the metadata of topic `name` in `dir`, crash-safely.
    pub(super) fn write(&self, dir: &Path, name: &str) -> Result<()> {
        write_checked(self, dir, TOPIC_META_FILE)
            .map_err(|e| Error::storage(format!("writing metadata of topic {name}"), e))
    }
}

impl GrowthMarker {
    /// The growth marker of the topic in `dir`, if one is there.
    pub(super) fn read(dir: &Path) -> Result<Option<GrowthMarker>, MetaError> {
        match read_checked(&dir.join(GROWTH_MARKER_FILE))? {
            None => Ok(None),
            Some((m, true)) => Ok(Some(m)),
            // Markers were written with checksums from the start.
            Some((_, false)) => Err(MetaError::Damaged("its checksum line is missing".into())),
        }
    }

    /// Writes the marker, crash-safely, before any new partition directory.
    pub(super) fn write(&self, dir: &Path, name: &str) -> Result<()> {
        write_checked(self, dir, GROWTH_MARKER_FILE)
            .map_err(|e| Error::storage(format!("writing the growth marker of topic {name}"), e))
    }

    /// Removes the marker once the growth is committed or undone.
    pub(super) fn remove(dir: &Path, name: &str) -> Result<()> {
        fs::remove_file(dir.join(GROWTH_MARKER_FILE))
            .and_then(|_| sync_dir(dir))
            .map_err(|e| Error::storage(format!("removing the growth marker of topic {name}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flipped_bit_of_a_checksummed_file_is_refused_or_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let meta = TopicMeta { partitions: 3, configs: BTreeMap::from([("retention.ms".into(), "1000".into())]) };
        meta.write(dir.path(), "t").unwrap();
        let path = dir.path().join(TOPIC_META_FILE);
        let pristine = fs::read(&path).unwrap();
        for byte in 0..pristine.len() {
            for bit in 0..8 {
                let mut damaged = pristine.clone();
                damaged[byte] ^= 1 << bit;
                fs::write(&path, &damaged).unwrap();
                // Either refused, or read back exactly as written (a flip
                // inside the checksum line's own marker text makes it a
                // legacy file whose body is intact).
                if let Ok((m, _)) = read_checked::<TopicMeta>(&path).map(Option::unwrap) {
                    assert_eq!((m.partitions, &m.configs), (3, &meta.configs), "byte {byte} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn a_legacy_file_is_read_and_gets_a_checksum() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOPIC_META_FILE), "partitions = 2\n").unwrap();
        assert_eq!(TopicMeta::read(dir.path()).unwrap().partitions, 2);
        let text = fs::read_to_string(dir.path().join(TOPIC_META_FILE)).unwrap();
        assert!(text.contains(CHECKSUM_LINE_PREFIX), "{text}");
        assert_eq!(TopicMeta::read(dir.path()).unwrap().partitions, 2);
    }
}
