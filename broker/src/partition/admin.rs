//! Topic lifecycle on the [`Manager`]: create, delete, reconfigure, grow.
//! Each is serialised by the admin lock and all-or-nothing on disk; clients'
//! requests pass the internal-topic rule ([`super::internal`]) first.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::internal::{check_client_op, validate_topic_name, ClientOp};
use super::meta::{GrowthMarker, TopicMeta};
use super::{Manager, Partition, Topic, TopicInfo};
use crate::config::{topic::check_keys, TopicSettings};
use crate::error::{Error, Result};
use crate::locks::{LockExt, RwLockExt};
use crate::log::format::{CREATING_TOPIC_PREFIX, DELETED_TOPIC_PREFIX};
use crate::log::sync_dir;

/// Crash point between a growth's new partition directories and its commit.
pub const GROWTH_CRASH_POINT: &str = "grow_before_commit";

/// A suffix that makes a staging or doomed directory's name unique.
fn unique() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

impl Manager {
    fn check_partitions(&self, requested: u32) -> Result<()> {
        let max = self.defaults.max_partitions;
        if requested == 0 || requested > max {
            return Err(Error::InvalidPartitions { requested, min: 1, max });
        }
        Ok(())
    }

    /// Creates a topic for a client; `partitions` 0 means the default count.
    pub fn create_topic(&self, name: &str, partitions: u32, configs: BTreeMap<String, String>) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        check_client_op(name, ClientOp::Create)?;
        self.create_any_topic(name, partitions, configs)
    }

    /// Creates one of the broker's internal topics.
    pub fn create_internal_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        debug_assert!(super::is_internal(name));
        self.create_any_topic(name, partitions, configs)
    }

    fn create_any_topic(&self, name: &str, partitions: u32, configs: BTreeMap<String, String>) -> Result<TopicInfo> {
        let partitions = if partitions == 0 { self.defaults.partitions } else { partitions };
        self.check_partitions(partitions)?;
        let settings = TopicSettings::resolve(&self.defaults.settings, &configs)?;
        let _admin = self.admin.locked();
        if self.topics.read_locked().contains_key(name) {
            return Err(Error::TopicExists { topic: name.to_string() });
        }
        self.check_descriptors(partitions)?;
        // The topic directory appears, by rename, with its topic.toml in it:
        // recovery can tell a crashed creation (`~creating-*`) from damage.
        let dir = self.topic_dir(name);
        // Named without the topic: a name of 249 characters plus a prefix
        // would pass the file-name limit (255 bytes).
        let staging = self.root.join(format!("{CREATING_TOPIC_PREFIX}{}", unique()));
        let committed = (|| {
            fs::create_dir_all(&staging).map_err(|e| Error::storage(format!("creating {}", staging.display()), e))?;
            // The partition directories come with the topic, so a committed
            // topic never lacks one (a missing one is damage).
            for id in 0..partitions {
                let p = staging.join(id.to_string());
                fs::create_dir(&p).map_err(|e| Error::storage(format!("creating {}", p.display()), e))?;
            }
            TopicMeta { partitions, configs: configs.clone() }.write(&staging, name)?;
            fs::rename(&staging, &dir)
                .and_then(|_| sync_dir(&self.root))
                .map_err(|e| Error::storage(format!("creating {}", dir.display()), e))
        })();
        if let Err(e) = committed {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        // The partition directories are created in the committed topic
        // directory: fsync it too, or a power loss could lose them.
        let opened = self.open_partitions(name, 0..partitions, &settings).and_then(|opened| match sync_dir(&dir) {
            Ok(()) => Ok(opened),
            Err(e) => {
                opened.iter().for_each(|p| drop(p.close()));
                Err(Error::storage(format!("syncing {}", dir.display()), e))
            }
        });
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let _ = self.remove_topic_dir(name);
                return Err(e);
            }
        };
        let topic = Arc::new(Topic::new(name.to_string(), configs, settings, opened));
        self.topics.write_locked().insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(self.info(&topic))
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if self.topic(name).is_ok() {
            check_client_op(name, ClientOp::Delete)?;
        }
        let _admin = self.admin.locked();
        let topic =
            self.topics.write_locked().remove(name).ok_or_else(|| Error::TopicNotFound { topic: name.to_string() })?;
        topic.close();
        self.remove_topic_dir(name)?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Removes a topic's directory crash-safely: renamed to `~deleted-*`
    /// first, so a crash midway leaves a name recovery removes.
    fn remove_topic_dir(&self, name: &str) -> Result<()> {
        let doomed = self.root.join(format!("{DELETED_TOPIC_PREFIX}{}", unique()));
        let remove = || -> std::io::Result<()> {
            fs::rename(self.topic_dir(name), &doomed)?;
            sync_dir(&self.root)?;
            fs::remove_dir_all(&doomed)
        };
        remove().map_err(|e| Error::storage(format!("deleting topic {name}"), e))
    }

    /// Sets and resets per-topic config keys; all or nothing.
    pub fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        reset: Vec<String>,
    ) -> Result<TopicInfo> {
        let _admin = self.admin.locked();
        let topic = self.topic(name)?;
        check_client_op(name, ClientOp::AlterConfig)?;
        check_keys(&reset)?;
        let mut overrides = topic.overrides();
        for key in &reset {
            overrides.remove(key);
        }
        overrides.extend(set);
        let settings = TopicSettings::resolve(&self.defaults.settings, &overrides)?;
        TopicMeta { partitions: topic.partition_count(), configs: overrides.clone() }
            .write(&self.topic_dir(name), name)?;
        let log_config = self.log_config(&settings);
        topic.set_settings(overrides, settings, log_config);
        tracing::info!(topic = name, "altered topic config");
        Ok(self.info(&topic))
    }

    /// Grows a topic to `total` partitions.
    pub fn create_partitions(&self, name: &str, total: u32) -> Result<TopicInfo> {
        let _admin = self.admin.locked();
        let topic = self.topic(name)?;
        check_client_op(name, ClientOp::AddPartitions)?;
        let current = topic.partition_count();
        if total <= current || total > self.defaults.max_partitions {
            return Err(Error::InvalidPartitions {
                requested: total,
                min: current + 1,
                max: self.defaults.max_partitions,
            });
        }
        self.check_descriptors(total - current)?;
        let dir = self.topic_dir(name);
        // The marker first: it is what lets recovery remove the new
        // directories if the growth does not commit.
        GrowthMarker { from: current, to: total }.write(&dir, name)?;
        let undo = |opened: &[Arc<Partition>]| {
            for p in opened {
                let _ = p.close();
            }
            // A failed commit may have renamed topic.toml into place: the
            // old count goes back first, or the directories stay (with the
            // marker, start-up decides by whichever count is on disk).
            let restored = TopicMeta { partitions: current, configs: topic.overrides() }.write(&dir, name);
            if let Err(e) = restored {
                tracing::warn!(topic = name, error = %e, "a failed growth is undone at the next start");
                return;
            }
            let removed = (current..total).all(|id| {
                let d = dir.join(id.to_string());
                std::fs::remove_dir_all(&d).is_ok() || !d.exists()
            });
            // The marker goes only once every new directory is gone;
            // otherwise it stays and start-up finishes the undo.
            if removed {
                let _ = sync_dir(&dir).and_then(|_| GrowthMarker::remove(&dir, name).map_err(std::io::Error::other));
            }
        };
        let opened = self.open_partitions(name, current..total, &topic.settings()).inspect_err(|_| undo(&[]))?;
        crate::failpoint::hit(GROWTH_CRASH_POINT);
        let committed = sync_dir(&dir)
            .map_err(|e| Error::storage(format!("syncing {}", dir.display()), e))
            .and_then(|_| TopicMeta { partitions: total, configs: topic.overrides() }.write(&dir, name));
        if let Err(e) = committed {
            undo(&opened);
            return Err(e);
        }
        // Committed: a marker left behind is removed at start-up.
        if let Err(e) = GrowthMarker::remove(&dir, name) {
            tracing::warn!(topic = name, error = %e, "the growth committed, but its marker stays until the next start");
        }
        topic.add_partitions(opened);
        tracing::info!(topic = name, from = current, to = total, "added partitions");
        Ok(self.info(&topic))
    }
}
