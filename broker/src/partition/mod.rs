//! The partition manager: topics → partitions → logs, with topic metadata on
//! disk and the clean-shutdown marker.
//!
//! On-disk layout under the data directory:
//! `topics/<topic>/topic.toml` (partition count and config overrides; its
//! presence commits the topic, see [`meta`]) and
//! `topics/<topic>/<partition>/` (the log). What start-up does with what a
//! crash left behind is `log::recovery`'s policy; [`Manager::open`] applies it.
//!
//! Everything above this module reaches a partition's storage through a
//! [`Partition`] handle.

mod admin;
pub mod fds;
mod handle;
pub mod internal;
mod keys;
pub mod lock;
mod meta;
pub mod partitioner;
pub mod producers;
mod topic;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use handle::{AppendIf, Appending, Partition, Retained};
pub use internal::{check_client_op, is_internal, validate_topic_name, ClientOp};
pub use topic::{Produced, Topic};

use crate::config::{Config, RecoveryMode, TimestampType, TopicDefaults, TopicSettings, SETTINGS};
use crate::error::{Error, Result};
use crate::locks::{LockExt, RwLockExt};
use crate::log::format::{CLEAN_SHUTDOWN_FILE, GROWTH_MARKER_FILE, TOPICS_DIR, TOPIC_META_FILE};
use crate::log::recovery::{self, PartitionDirs, TopicDir};
use crate::log::{sync_dir, IndexConfig, Log, LogConfig};
use meta::{GrowthMarker, MetaError, TopicMeta};

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
    /// Damaged batches readers met since start-up.
    pub damaged_batches: u32,
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
    /// Held for as long as the manager lives: one process per data directory.
    _lock: lock::DataDirLock,
    /// The last stop was clean (for recovery's judgement of holes).
    clean_stop: bool,
}

/// Checks a stopped broker's topic directory `dir` as start-up would judge
/// it, changing nothing (for `strata verify`): its `topic.toml` (checksum,
/// contents), its growth marker, and its partition directories against the
/// committed count. Returns the problems found, and notes.
pub fn verify_topic_dir(dir: &Path) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    let meta = match TopicMeta::peek(dir) {
        Ok((meta, checked)) => {
            if !checked {
                notes
                    .push(format!("{TOPIC_META_FILE} has no checksum (written by an older strata; start-up adds one)"));
            }
            meta
        }
        Err(e) => {
            problems.push(format!("{TOPIC_META_FILE} {e}"));
            return (problems, notes);
        }
    };
    if let Err(e) = TopicSettings::resolve(&TopicDefaults::default().settings, &meta.configs) {
        problems.push(format!("{TOPIC_META_FILE}: {e}"));
    }
    let growth = match GrowthMarker::read(dir) {
        Ok(g) => g,
        Err(e) => {
            problems.push(format!("{GROWTH_MARKER_FILE} {e}"));
            return (problems, notes);
        }
    };
    let mut found: Vec<u32> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    found.sort_unstable();
    match recovery::partition_dirs(&found, meta.partitions, growth.map(|g| (g.from, g.to))) {
        PartitionDirs::Refuse(why) => problems.push(why),
        PartitionDirs::Open { remove } if !remove.is_empty() => {
            notes.push(format!("partition directories {remove:?} are an unfinished growth (start-up removes them)"))
        }
        PartitionDirs::Open { .. } => {}
    }
    (problems, notes)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Manager {
    /// Opens every topic under the configured data directory, recovering what
    /// a crash left behind, and spawns each partition's flusher. Must run
    /// inside a tokio runtime.
    pub fn open(config: &Config) -> Result<Manager> {
        let data_dir = &config.storage.data_dir;
        // Before anything in the directory is read or changed.
        let lock = lock::lock_data_dir(data_dir)?;
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
            _lock: lock,
            clean_stop: clean,
        };
        let entries = fs::read_dir(&root).map_err(|e| Error::storage(format!("listing {}", root.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::storage("listing topics", e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() {
                continue;
            }
            match recovery::topic_dir(&name, path.join(TOPIC_META_FILE).exists()) {
                TopicDir::Open => {
                    let topic = manager.open_topic(&name)?;
                    manager.topics.write_locked().insert(name, topic);
                }
                TopicDir::RemoveUnfinished => {
                    recovery::log_removal(&path, "an unfinished topic creation or deletion");
                    fs::remove_dir_all(&path).map_err(|e| Error::storage(format!("removing {}", path.display()), e))?;
                }
                TopicDir::Refuse(reason) => return Err(Error::RecoveryRefused { path, reason }),
            }
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

    /// The directory of topic `name` (for messages).
    pub fn topic_dir_of(&self, name: &str) -> PathBuf {
        self.topic_dir(name)
    }

    /// Index sizing for every segment.
    pub fn index_config(&self) -> IndexConfig {
        let st = &self.config.storage;
        IndexConfig { interval_bytes: st.index_interval_bytes, max_bytes: st.index_max_bytes as usize }
    }

    /// Every topic, by name.
    pub fn topics_snapshot(&self) -> Vec<Arc<Topic>> {
        self.topics.read_locked().values().cloned().collect()
    }

    fn log_config(&self, s: &TopicSettings) -> LogConfig {
        let st = &self.config.storage;
        LogConfig {
            segment_bytes: s.segment_bytes,
            segment_ms: s.segment_ms,
            index: self.index_config(),
            log_append_time: s.timestamp_type == TimestampType::LogAppendTime,
            flush_records: st.flush_records,
            direct_io: st.direct_io,
            truncate_damage: st.recovery == RecoveryMode::Truncate,
            clean_stop: self.clean_stop,
        }
    }

    fn open_partition(&self, topic: &str, dir: &Path, id: u32, settings: &TopicSettings) -> Result<Arc<Partition>> {
        let name = format!("{topic}/{id}");
        let (log, report) = Log::open(&dir.join(id.to_string()), name.clone(), self.log_config(settings))
            .map_err(|e| Error::storage(format!("opening partition {name}"), e))?;
        recovery::log_open(&name, &report.tail, log.end_offset());
        let log = Arc::new(log);
        let interval = Duration::from_millis(self.config.storage.flush_interval_ms);
        tokio::spawn(log.clone().run_flusher(interval));
        let storage = &self.config.storage;
        Ok(Arc::new(Partition::new(topic, id, log, storage.producer_expiry_ms, storage.max_conditional_keys)))
    }

    fn open_partitions(
        &self,
        topic: &str,
        ids: std::ops::Range<u32>,
        s: &TopicSettings,
    ) -> Result<Vec<Arc<Partition>>> {
        let dir = self.topic_dir(topic);
        let mut opened = Vec::with_capacity(ids.len());
        for id in ids {
            match self.open_partition(topic, &dir, id, s) {
                Ok(p) => opened.push(p),
                Err(e) => {
                    // Close what was opened (its flusher lets go of it), so
                    // a failed open leaves no descriptor behind.
                    opened.iter().for_each(|p| drop(p.close()));
                    return Err(e);
                }
            }
        }
        Ok(opened)
    }

    /// Refuses to open `partitions` more partitions when the descriptors
    /// they need are not there (see [`fds`]): client connections get theirs
    /// first.
    fn check_descriptors(&self, partitions: u32) -> Result<()> {
        let (Ok(limit), Ok(open)) = (fds::limit(), fds::open_now()) else { return Ok(()) };
        let needed = u64::from(partitions) * fds::FDS_PER_PARTITION;
        let reserved = fds::reserved(limit, self.config.server.max_connections);
        let available = limit.saturating_sub(open).saturating_sub(reserved);
        if needed > available {
            return Err(Error::LimitReached { limit: "RLIMIT_NOFILE", message: format!(
                "{partitions} new partitions need {needed} file descriptors ({} each), but only {available} are free: the limit (RLIMIT_NOFILE) is {limit}, {open} are open and {reserved} are kept for client connections (server.max_connections = {}, at most a quarter of the limit) and the broker itself; raise the limit (ulimit -n, docker run --ulimit nofile=...) or use fewer partitions",
                fds::FDS_PER_PARTITION,
                self.config.server.max_connections
            )});
        }
        Ok(())
    }

    fn open_topic(&self, name: &str) -> Result<Arc<Topic>> {
        let dir = self.topic_dir(name);
        // Unreadable or damaged metadata is refused like missing metadata:
        // nothing is deleted.
        let refused = |file: &str, e: MetaError| Error::RecoveryRefused {
            path: dir.join(file),
            reason: format!("{e}; nothing was deleted: fix or restore the file, or move the topic directory away"),
        };
        let meta = TopicMeta::read(&dir).map_err(|e| refused(TOPIC_META_FILE, e))?;
        let growth = GrowthMarker::read(&dir).map_err(|e| refused(GROWTH_MARKER_FILE, e))?;
        let settings = TopicSettings::resolve(&self.defaults.settings, &meta.configs)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::storage(format!("listing {}", dir.display()), e))? {
            let entry = entry.map_err(|e| Error::storage("listing partitions", e))?;
            if let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                found.push(p);
            }
        }
        found.sort_unstable();
        match recovery::partition_dirs(&found, meta.partitions, growth.map(|g| (g.from, g.to))) {
            PartitionDirs::Refuse(reason) => return Err(Error::RecoveryRefused { path: dir, reason }),
            PartitionDirs::Open { remove } => {
                for p in remove {
                    let path = dir.join(p.to_string());
                    recovery::log_removal(&path, "a partition of an unfinished growth (growth.toml says so)");
                    fs::remove_dir_all(&path).map_err(|e| Error::storage("removing partition", e))?;
                }
                if growth.is_some() {
                    GrowthMarker::remove(&dir, name)?;
                }
            }
        }
        let partitions = self.open_partitions(name, 0..meta.partitions, &settings)?;
        Ok(Arc::new(Topic::new(name.to_string(), meta.configs, settings, partitions)))
    }

    /// Looks a topic up.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics.read_locked().get(name).cloned().ok_or_else(|| Error::TopicNotFound { topic: name.to_string() })
    }

    /// Looks a partition up.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.topic(topic)?.partition(partition)
    }

    /// Topic names and partition counts, sorted by name.
    pub fn list_topics(&self) -> Vec<(String, u32)> {
        self.topics.read_locked().values().map(|t| (t.name().to_string(), t.partition_count())).collect()
    }

    fn info(&self, topic: &Topic) -> TopicInfo {
        let partitions = topic
            .partitions()
            .iter()
            .map(|p| {
                let (segments, size_bytes) = p.disk_usage();
                PartitionInfo {
                    partition: p.id(),
                    log_start: p.log_start(),
                    high_watermark: p.high_watermark(),
                    size_bytes,
                    segments: segments as u32,
                    damaged_batches: p.damaged_batches() as u32,
                }
            })
            .collect();
        let settings = topic.settings();
        let overrides = topic.overrides();
        let configs = SETTINGS
            .iter()
            .map(|s| (s.key.to_string(), settings.get(s.key).unwrap_or_default(), overrides.contains_key(s.key)))
            .collect();
        TopicInfo { name: topic.name().to_string(), partitions, configs }
    }

    /// The partitions that take no writes until a restart (an fsync failed,
    /// or a write panicked), by name: health reports NOT_SERVING while there
    /// is one, since a restart is the remedy.
    pub fn read_only_partitions(&self) -> Vec<String> {
        let topics = self.topics.read_locked();
        topics
            .values()
            .flat_map(|t| {
                t.partitions()
                    .iter()
                    .filter(|p| p.read_only().is_some())
                    .map(|p| p.name().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Partitions, offsets, sizes and effective configuration of a topic.
    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(self.info(&*self.topic(name)?))
    }

    /// Closes every log (fsync, seal indexes) and writes the clean-shutdown
    /// marker if all of them closed cleanly.
    pub fn shutdown(&self) -> Result<()> {
        let _admin = self.admin.locked();
        let mut first_error = None;
        for topic in self.topics.read_locked().values() {
            for p in topic.partitions().iter() {
                if let Err(e) = p.close() {
                    tracing::error!(partition = p.name(), error = %e, "closing partition failed");
                    first_error.get_or_insert(Error::storage(format!("closing {}", p.name()), e));
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
