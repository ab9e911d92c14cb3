//! `topic.toml`: a topic's committed partition count and config overrides.
//! Written to a temporary file, fsynced and renamed into place, so a crash
//! leaves the old or the new version; its presence commits a topic.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::log::format::TOPIC_META_FILE;
use crate::log::sync_dir;

/// Persisted topic metadata.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TopicMeta {
    pub(super) partitions: u32,
    #[serde(default)]
    pub(super) configs: BTreeMap<String, String>,
}

impl TopicMeta {
    /// Reads the metadata of the topic in `dir`.
    pub(super) fn read(dir: &Path) -> Result<TopicMeta> {
        let path = dir.join(TOPIC_META_FILE);
        let text = fs::read_to_string(&path).map_err(|e| Error::storage(format!("reading {}", path.display()), e))?;
        toml::from_str(&text)
            .map_err(|e| Error::storage(format!("parsing {}", path.display()), std::io::Error::other(e)))
    }

    /// Replaces the metadata of topic `name` in `dir`, crash-safely.
    pub(super) fn write(&self, dir: &Path, name: &str) -> Result<()> {
        let text =
            toml::to_string(self).map_err(|e| Error::storage("encoding topic metadata", std::io::Error::other(e)))?;
        let tmp = dir.join(format!("{TOPIC_META_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            fs::write(&tmp, text.as_bytes())?;
            fs::File::open(&tmp)?.sync_all()?;
            crate::failpoint::io("rename")?;
            fs::rename(&tmp, dir.join(TOPIC_META_FILE))?;
            sync_dir(dir)
        };
        write().map_err(|e| Error::storage(format!("writing metadata of topic {name}"), e))
    }
}
