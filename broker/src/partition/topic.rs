//! A topic: its partitions' logs, its settings, and where produced records go.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use super::handle::{AppendIf, Appending, Partition};
use super::partitioner::partition_for_key;
use crate::config::{AckLevel, TimestampType, TopicSettings};
use crate::error::{Error, Result};
use crate::locks::RwLockExt;
use crate::log::batch::{stored_record_size, RecordSource};
use crate::log::format::BATCH_HEADER_LEN;
use crate::log::LogConfig;

/// Where a produce request's records landed.
#[derive(Default)]
pub struct Produced {
    /// (partition, offset) per record, in request order, when the request
    /// was split by key; empty when it went to one partition as one batch.
    split: Vec<(u32, u64)>,
    /// Each partition's append, in partition order: await
    /// [`Appending::acknowledged`] for the level of acknowledgement asked.
    pub appended: Vec<Appending>,
}

impl Produced {
    /// (partition, offset) per record, in request order.
    pub fn positions(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let whole = match (&self.split[..], &self.appended[..]) {
            ([], [a]) => Some((a.partition(), a.appended().base_offset..a.appended().next_offset)),
            _ => None,
        };
        whole.into_iter().flat_map(|(p, offsets)| offsets.map(move |o| (p, o))).chain(self.split.iter().copied())
    }

    /// (partition, first offset, record count) per partition appended to,
    /// in partition order.
    pub fn ranges(&self) -> impl Iterator<Item = (u32, u64, u32)> + '_ {
        self.appended
            .iter()
            .map(|a| (a.partition(), a.appended()))
            .map(|(p, a)| (p, a.base_offset, (a.next_offset - a.base_offset) as u32))
    }
}

struct State {
    overrides: BTreeMap<String, String>,
    settings: TopicSettings,
}

/// A topic and its partitions.
pub struct Topic {
    name: String,
    state: RwLock<State>,
    partitions: RwLock<Arc<Vec<Arc<Partition>>>>,
    round_robin: AtomicU32,
}

impl Topic {
    pub(super) fn new(
        name: String,
        overrides: BTreeMap<String, String>,
        settings: TopicSettings,
        partitions: Vec<Arc<Partition>>,
    ) -> Topic {
        Topic {
            name,
            state: RwLock::new(State { overrides, settings }),
            partitions: RwLock::new(Arc::new(partitions)),
            round_robin: AtomicU32::new(0),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.read_locked().len() as u32
    }

    /// A snapshot of the partitions.
    pub fn partitions(&self) -> Arc<Vec<Arc<Partition>>> {
        self.partitions.read_locked().clone()
    }

    /// One partition.
    pub fn partition(&self, partition: u32) -> Result<Arc<Partition>> {
        let logs = self.partitions();
        logs.get(partition as usize).cloned().ok_or_else(|| Error::PartitionNotFound {
            topic: self.name.clone(),
            partition,
            partitions: logs.len() as u32,
        })
    }

    /// Effective settings.
    pub fn settings(&self) -> TopicSettings {
        self.state.read_locked().settings.clone()
    }

    /// The topic's declared writer if `principal` (None: anonymous) is not
    /// it; None if it may produce (no declared writer, or it is the one).
    pub fn other_writer(&self, principal: Option<&str>) -> Option<String> {
        let state = self.state.read_locked();
        let writer = state.settings.writer_principal.declared()?;
        (principal != Some(writer)).then(|| writer.to_string())
    }

    /// Keys set on the topic itself.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.state.read_locked().overrides.clone()
    }

    pub(super) fn set_settings(
        &self,
        overrides: BTreeMap<String, String>,
        settings: TopicSettings,
        log_config: LogConfig,
    ) {
        *self.state.write_locked() = State { overrides, settings };
        for p in self.partitions().iter() {
            p.set_config(log_config);
        }
    }

    pub(super) fn add_partitions(&self, new: Vec<Arc<Partition>>) {
        let mut partitions = self.partitions.write_locked();
        let mut all = Vec::clone(&partitions);
        all.extend(new);
        *partitions = Arc::new(all);
    }

    pub(super) fn close(&self) {
        for p in self.partitions().iter() {
            if let Err(e) = p.close() {
                tracing::warn!(partition = p.name(), error = %e, "closing partition failed");
            }
        }
    }

    /// Checks every record before anything is appended, so a bad request
    /// changes nothing.
    fn validate<R: RecordSource>(&self, records: &[R], max_stored_bytes: usize, now_ms: i64) -> Result<()> {
        if records.is_empty() {
            return Err(Error::InvalidArgument("produce request has no records".into()));
        }
        let settings = self.settings();
        let limit = settings.max_message_bytes;
        // Stored size as one batch (an upper bound: the worst-case varints).
        let mut stored = BATCH_HEADER_LEN;
        for (index, r) in records.iter().enumerate() {
            if settings.cleanup_policy.compact && r.key().is_none() {
                return Err(Error::InvalidArgument(format!(
                    "record {index} has no key, but topic '{}' is compacted (cleanup.policy={}): every record needs a key",
                    self.name, settings.cleanup_policy
                )));
            }
            if r.timestamp_ms() < 0 {
                return Err(Error::InvalidArgument(format!(
                    "record {index} has timestamp {} ms; timestamps must be >= 0 (0 = broker append time)",
                    r.timestamp_ms()
                )));
            }
            let ahead = r.timestamp_ms().saturating_sub(now_ms);
            if settings.timestamp_type == TimestampType::CreateTime
                && ahead > 0
                && ahead as u64 > settings.message_timestamp_after_max_ms
            {
                return Err(Error::InvalidArgument(format!(
                    "record {index} has timestamp {} ms, {ahead} ms ahead of the broker's clock ({now_ms}); topic '{}' \
                     takes timestamps at most message.timestamp.after.max.ms = {} ms ahead",
                    r.timestamp_ms(),
                    self.name,
                    settings.message_timestamp_after_max_ms
                )));
            }
            let size = stored_record_size(r);
            if size as u64 > limit {
                return Err(Error::RecordTooLarge { index, size, limit });
            }
            stored += size;
        }
        if stored > max_stored_bytes {
            return Err(Error::RequestTooLarge { records: records.len(), stored, limit: max_stored_bytes });
        }
        Ok(())
    }

    /// Appends `records`, to `partition` or to partitions chosen by key
    /// (keyless records: one round-robin partition per request), to be
    /// acknowledged at the level `acks` asks. Refused whole, before anything
    /// is written, if the records stored would take more than
    /// `max_stored_bytes` (so that every stored batch fits a fetch reply).
    pub fn produce<R: RecordSource>(
        &self,
        partition: Option<u32>,
        records: &[R],
        now_ms: i64,
        acks: AckLevel,
        max_stored_bytes: usize,
        cond: AppendIf,
    ) -> Result<Produced> {
        self.validate(records, max_stored_bytes, now_ms)?;
        let logs = self.partitions();
        let n = logs.len() as u32;
        if (cond.producer.is_some() || cond.expected_offset.is_some()) && partition.is_none() {
            return Err(Error::InvalidArgument(
                "an idempotent (producer) or conditional (expected_offset) produce names its partition".into(),
            ));
        }
        let fixed = match partition {
            Some(p) => Some(self.partition(p).map(|_| p)?),
            // One key (checked by the caller): the key's partition.
            None if cond.expected_key_offset.is_some() => records[0].key().map(|k| partition_for_key(k, n)),
            None if records.iter().all(|r| r.key().is_none()) => {
                Some(self.round_robin.fetch_add(1, Ordering::Relaxed) % n)
            }
            None => None,
        };
        if let Some(p) = fixed {
            let a = logs[p as usize].append_with(records, now_ms, acks, cond)?;
            return Ok(Produced { split: Vec::new(), appended: vec![a] });
        }
        // Mixed keys: one batch per target partition, records in request order.
        let keyless = self.round_robin.fetch_add(1, Ordering::Relaxed) % n;
        let targets: Vec<u32> = records.iter().map(|r| r.key().map_or(keyless, |k| partition_for_key(k, n))).collect();
        let mut out = Produced { split: vec![(0, 0); records.len()], appended: Vec::new() };
        let mut partitions: Vec<u32> = targets.clone();
        partitions.sort_unstable();
        partitions.dedup();
        for p in partitions {
            let group: Vec<&R> = records.iter().zip(&targets).filter(|(_, &t)| t == p).map(|(r, _)| r).collect();
            let a = logs[p as usize].append(&group, now_ms, acks)?;
            let indexes = targets.iter().enumerate().filter(|(_, &t)| t == p).map(|(i, _)| i);
            for (offset, i) in (a.appended().base_offset..).zip(indexes) {
                out.split[i] = (p, offset);
            }
            out.appended.push(a);
        }
        Ok(out)
    }
}
