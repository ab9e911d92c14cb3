//! The partition manager: topics → partitions → logs, with topic metadata on
//! disk and the clean-shutdown marker.
//!
//! On-disk layout under the data directory:
//! `topics/<topic>/topic.toml` (partition count and config overrides; its
//! presence commits the topic) and `topics/<topic>/<partition>/` (the log).
//! Recovery policy at start-up, as code in [`Manager::open`]:
//! - a topic directory without `topic.toml` is a creation that crashed: removed;
//! - a directory named `~deleted-*` is a deletion that crashed: removed;
//! - partition directories beyond the count are a crashed growth: removed;
//! - every partition log checks its own tail (see `log::Log::open`).

pub mod partitioner;
pub mod settings;
mod topic;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use settings::TopicSettings;
pub use topic::{Produced, Topic};

use crate::config::{Config, TopicDefaults};
use crate::error::{Error, Result};
use crate::log::format::{CLEAN_SHUTDOWN_FILE, TOPICS_DIR, TOPIC_META_FILE};
use crate::log::{sync_dir, Log, LogConfig};

/// Longest topic name (as Kafka).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Persisted topic metadata (`topic.toml`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicMeta {
    partitions: u32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// A partition as `DescribeTopic` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First readable offset.
    pub log_start: u64,
    /// One past the last readable offset.
    pub high_watermark: u64,
    /// Bytes in segment files.
    pub size_bytes: u64,
    /// Segment count.
    pub segments: u32,
}

/// A topic as `DescribeTopic` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Partitions in order.
    pub partitions: Vec<PartitionInfo>,
    /// Effective settings: (key, value, set on the topic?).
    pub configs: Vec<(String, String, bool)>,
}

/// Owns every topic of the broker.
pub struct Manager {
    root: PathBuf,
    defaults: TopicDefaults,
    config: Config,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation, deletion and changes.
    admin: Mutex<()>,
}

/// Topics whose names start with `__` are the broker's own (e.g. committed
/// offsets): clients cannot create, delete or produce to them.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

/// Checks a topic name against the rules.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason: String| Err(Error::InvalidTopicName { name: name.to_string(), reason });
    if name.is_empty() {
        return invalid("must not be empty".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid(format!("{} characters, at most {MAX_TOPIC_NAME_LEN} allowed", name.len()));
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return invalid(format!("character {c:?} is not allowed; use a-z, A-Z, 0-9, '.', '_' and '-'"));
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Manager {
    /// Opens every topic under the configured data directory, recovering what
    /// a crash left behind, and spawns each partition's flusher. Must run
    /// inside a tokio runtime.
    pub fn open(config: &Config) -> Result<Manager> {
        let data_dir = &config.storage.data_dir;
        let root = data_dir.join(TOPICS_DIR);
        fs::create_dir_all(&root).map_err(|e| Error::storage(format!("creating {}", root.display()), e))?;
        let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        tracing::info!(data_dir = %data_dir.display(), clean_shutdown = clean, "opening data directory");
        let manager = Manager {
            root: root.clone(),
            defaults: config.topics.clone(),
            config: config.clone(),
            topics: RwLock::new(BTreeMap::new()),
            admin: Mutex::new(()),
        };
        let entries = fs::read_dir(&root).map_err(|e| Error::storage(format!("listing {}", root.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::storage("listing topics", e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() {
                continue;
            }
            if name.starts_with("~deleted-") || !path.join(TOPIC_META_FILE).exists() {
                tracing::warn!(dir = %path.display(), "removing an unfinished topic creation or deletion");
                fs::remove_dir_all(&path).map_err(|e| Error::storage(format!("removing {}", path.display()), e))?;
                continue;
            }
            let topic = manager.open_topic(&name)?;
            manager.topics.write().expect("topics lock").insert(name, topic);
        }
        // From here on a crash is unclean until the next clean stop.
        if clean {
            fs::remove_file(&marker).map_err(|e| Error::storage("removing the clean-shutdown marker", e))?;
            sync_dir(data_dir).map_err(|e| Error::storage("syncing the data directory", e))?;
        }
        Ok(manager)
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Index sizing for every segment.
    pub fn index_config(&self) -> crate::log::IndexConfig {
        let st = &self.config.storage;
        crate::log::IndexConfig { interval_bytes: st.index_interval_bytes, max_bytes: st.index_max_bytes as usize }
    }

    /// Every topic, by name.
    pub fn topics_snapshot(&self) -> Vec<Arc<Topic>> {
        self.topics.read().expect("topics lock").values().cloned().collect()
    }

    fn log_config(&self, s: &TopicSettings) -> LogConfig {
        let st = &self.config.storage;
        LogConfig {
            segment_bytes: s.segment_bytes,
            segment_ms: s.segment_ms,
            index: self.index_config(),
            log_append_time: s.timestamp_type == crate::config::TimestampType::LogAppendTime,
            flush_records: st.flush_records,
            direct_io: st.direct_io,
        }
    }

    fn open_log(&self, topic: &str, dir: &Path, partition: u32, settings: &TopicSettings) -> Result<Arc<Log>> {
        let name = format!("{topic}/{partition}");
        let (log, report) = Log::open(&dir.join(partition.to_string()), name.clone(), self.log_config(settings))
            .map_err(|e| Error::storage(format!("opening partition {name}"), e))?;
        if let Some((bytes, why)) = &report.tail.truncated {
            tracing::warn!(partition = %name, cut_bytes = bytes, reason = %why, high_watermark = log.high_watermark(),
                "recovery cut a torn or corrupt tail");
        }
        let log = Arc::new(log);
        let interval = Duration::from_millis(self.config.storage.flush_interval_ms);
        tokio::spawn(log.clone().run_flusher(interval));
        Ok(log)
    }

    fn open_topic(&self, name: &str) -> Result<Arc<Topic>> {
        let dir = self.topic_dir(name);
        let meta_path = dir.join(TOPIC_META_FILE);
        let text = fs::read_to_string(&meta_path)
            .map_err(|e| Error::storage(format!("reading {}", meta_path.display()), e))?;
        let meta: TopicMeta = toml::from_str(&text)
            .map_err(|e| Error::storage(format!("parsing {}", meta_path.display()), std::io::Error::other(e)))?;
        let settings = TopicSettings::resolve(&self.defaults, &meta.configs)?;
        // Remove partitions of a crashed CreatePartitions beyond the committed count.
        for entry in fs::read_dir(&dir).map_err(|e| Error::storage(format!("listing {}", dir.display()), e))? {
            let entry = entry.map_err(|e| Error::storage("listing partitions", e))?;
            if let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if p >= meta.partitions {
                    tracing::warn!(topic = name, partition = p, "removing a partition of an unfinished growth");
                    fs::remove_dir_all(entry.path()).map_err(|e| Error::storage("removing partition", e))?;
                }
            }
        }
        let logs = (0..meta.partitions).map(|p| self.open_log(name, &dir, p, &settings)).collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Topic::new(name.to_string(), meta.configs, settings, logs)))
    }

    fn write_meta(&self, name: &str, meta: &TopicMeta) -> Result<()> {
        let dir = self.topic_dir(name);
        let text =
            toml::to_string(meta).map_err(|e| Error::storage("encoding topic metadata", std::io::Error::other(e)))?;
        let tmp = dir.join(format!("{TOPIC_META_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            fs::write(&tmp, text.as_bytes())?;
            fs::File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, dir.join(TOPIC_META_FILE))?;
            sync_dir(&dir)
        };
        write().map_err(|e| Error::storage(format!("writing metadata of topic {name}"), e))
    }

    /// Looks a topic up.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TopicNotFound { topic: name.to_string() })
    }

    fn check_partitions(&self, requested: u32) -> Result<()> {
        let max = self.defaults.max_partitions;
        if requested == 0 || requested > max {
            return Err(Error::InvalidPartitions { requested, min: 1, max });
        }
        Ok(())
    }

    /// Creates a topic; `partitions` 0 means the default count.
    pub fn create_topic(&self, name: &str, partitions: u32, configs: BTreeMap<String, String>) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        if is_internal(name) {
            return Err(Error::InvalidTopicName {
                name: name.into(),
                reason: "names starting with '__' are reserved for internal topics".into(),
            });
        }
        self.create_any_topic(name, partitions, configs)
    }

    /// Creates one of the broker's internal topics.
    pub fn create_internal_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        debug_assert!(is_internal(name));
        self.create_any_topic(name, partitions, configs)
    }

    fn create_any_topic(&self, name: &str, partitions: u32, configs: BTreeMap<String, String>) -> Result<TopicInfo> {
        let partitions = if partitions == 0 { self.defaults.partitions } else { partitions };
        self.check_partitions(partitions)?;
        let settings = TopicSettings::resolve(&self.defaults, &configs)?;
        let _admin = self.admin.lock().expect("admin lock");
        if self.topics.read().expect("topics lock").contains_key(name) {
            return Err(Error::TopicExists { topic: name.to_string() });
        }
        let dir = self.topic_dir(name);
        fs::create_dir_all(&dir).map_err(|e| Error::storage(format!("creating {}", dir.display()), e))?;
        let created = (|| {
            let logs = (0..partitions).map(|p| self.open_log(name, &dir, p, &settings)).collect::<Result<Vec<_>>>()?;
            self.write_meta(name, &TopicMeta { partitions, configs: configs.clone() })?;
            sync_dir(&self.root).map_err(|e| Error::storage("syncing topics directory", e))?;
            Ok(logs)
        })();
        let logs = match created {
            Ok(logs) => logs,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let topic = Arc::new(Topic::new(name.to_string(), configs, settings, logs));
        self.topics.write().expect("topics lock").insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(self.info(&topic))
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if is_internal(name) && self.topic(name).is_ok() {
            return Err(Error::InvalidArgument(format!("topic '{name}' is internal and cannot be deleted")));
        }
        let _admin = self.admin.lock().expect("admin lock");
        let topic = self
            .topics
            .write()
            .expect("topics lock")
            .remove(name)
            .ok_or_else(|| Error::TopicNotFound { topic: name.to_string() })?;
        topic.close();
        let dir = self.topic_dir(name);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let doomed = self.root.join(format!("~deleted-{name}-{nanos}"));
        let remove = || -> std::io::Result<()> {
            fs::rename(&dir, &doomed)?;
            sync_dir(&self.root)?;
            fs::remove_dir_all(&doomed)
        };
        remove().map_err(|e| Error::storage(format!("deleting topic {name}"), e))?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Topic names and partition counts, sorted by name.
    pub fn list_topics(&self) -> Vec<(String, u32)> {
        self.topics.read().expect("topics lock").values().map(|t| (t.name().to_string(), t.partition_count())).collect()
    }

    fn info(&self, topic: &Topic) -> TopicInfo {
        let partitions = topic
            .logs()
            .iter()
            .enumerate()
            .map(|(i, log)| {
                let (segments, size_bytes) = log.disk_usage();
                PartitionInfo {
                    partition: i as u32,
                    log_start: log.log_start(),
                    high_watermark: log.high_watermark(),
                    size_bytes,
                    segments: segments as u32,
                }
            })
            .collect();
        let settings = topic.settings();
        let overrides = topic.overrides();
        let configs =
            settings::KEYS.iter().map(|k| (k.to_string(), settings.get(k), overrides.contains_key(*k))).collect();
        TopicInfo { name: topic.name().to_string(), partitions, configs }
    }

    /// Partitions, offsets, sizes and effective configuration of a topic.
    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(self.info(&*self.topic(name)?))
    }

    /// Sets and resets per-topic config keys; all or nothing.
    pub fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        reset: Vec<String>,
    ) -> Result<TopicInfo> {
        let _admin = self.admin.lock().expect("admin lock");
        let topic = self.topic(name)?;
        let mut overrides = topic.overrides();
        for key in &reset {
            if !settings::KEYS.contains(&key.as_str()) {
                return Err(Error::InvalidConfig {
                    key: key.clone(),
                    reason: format!("unknown topic config key; valid keys are {}", settings::KEYS.join(", ")),
                });
            }
            overrides.remove(key);
        }
        overrides.extend(set);
        let settings = TopicSettings::resolve(&self.defaults, &overrides)?;
        self.write_meta(name, &TopicMeta { partitions: topic.partition_count(), configs: overrides.clone() })?;
        let log_config = self.log_config(&settings);
        topic.set_settings(overrides, settings, log_config);
        tracing::info!(topic = name, "altered topic config");
        Ok(self.info(&topic))
    }

    /// Grows a topic to `total` partitions.
    pub fn create_partitions(&self, name: &str, total: u32) -> Result<TopicInfo> {
        let _admin = self.admin.lock().expect("admin lock");
        let topic = self.topic(name)?;
        let current = topic.partition_count();
        if total <= current || total > self.defaults.max_partitions {
            return Err(Error::InvalidPartitions {
                requested: total,
                min: current + 1,
                max: self.defaults.max_partitions,
            });
        }
        let dir = self.topic_dir(name);
        let settings = topic.settings();
        let new_logs = (current..total).map(|p| self.open_log(name, &dir, p, &settings)).collect::<Result<Vec<_>>>()?;
        self.write_meta(name, &TopicMeta { partitions: total, configs: topic.overrides() })?;
        topic.add_partitions(new_logs);
        tracing::info!(topic = name, from = current, to = total, "added partitions");
        Ok(self.info(&topic))
    }

    /// Closes every log (fsync, seal indexes) and writes the clean-shutdown
    /// marker if all of them closed cleanly.
    pub fn shutdown(&self) -> Result<()> {
        let _admin = self.admin.lock().expect("admin lock");
        let mut first_error = None;
        for topic in self.topics.read().expect("topics lock").values() {
            for log in topic.logs().iter() {
                if let Err(e) = log.close() {
                    tracing::error!(partition = log.name(), error = %e, "closing partition failed");
                    first_error.get_or_insert(Error::storage(format!("closing {}", log.name()), e));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let data_dir = &self.config.storage.data_dir;
        let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
        fs::write(&marker, b"")
            .and_then(|_| sync_dir(data_dir))
            .map_err(|e| Error::storage("writing the clean-shutdown marker", e))?;
        tracing::info!("storage closed cleanly");
        Ok(())
    }

    /// Current time in ms since the epoch (the broker's append time).
    pub fn now_ms(&self) -> i64 {
        now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        for ok in ["a", "orders.v1", "A_b-9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for (bad, needle) in
            [("", "empty"), ("..", "reserved"), ("a/b", "'/'"), ("a b", "' '"), (&"x".repeat(250), "249")]
        {
            match validate_topic_name(bad) {
                Err(Error::InvalidTopicName { reason, .. }) => {
                    assert!(reason.contains(needle), "{reason}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
