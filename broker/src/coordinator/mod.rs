//! Consumer groups: membership and assignment ([`group`], [`assignor`]),
//! committed offsets kept as events in an internal compacted topic
//! ([`offsets`]), and the [`Coordinator`] that ties them to the broker.
//!
//! Commits are serialised per group with the group's state: the fencing check,
//! the durable append to `__consumer_offsets` and the table update happen
//! under one lock, so a member expelled meanwhile can never overwrite the
//! commit of the partition's new owner.

pub mod assignor;
pub mod group;
pub mod offsets;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::GroupsConfig;
use crate::error::{Error, Result};
use crate::locks::LockExt;
use crate::partition::internal::{KeyedRecord, KeyedStore};
use crate::partition::{is_internal, Manager};
use crate::shutdown::stopped;
use assignor::Tp;
use group::{Group, GroupError, Heartbeat, HeartbeatReply};
use offsets::{commit_record, delete_record, Committed, OffsetKey, OFFSETS_TOPIC};

/// A group as `DescribeGroup` shows it.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    /// The group's state: Empty, Reconciling or Stable.
    pub state: &'static str,
    /// The group epoch.
    pub epoch: i32,
    /// Assignor name.
    pub assignor: &'static str,
    /// Members with their assigned and pending partitions.
    pub members: Vec<(group::Member, BTreeSet<Tp>)>,
    /// Per partition: committed offset, log end and start, owner.
    pub partitions: Vec<PartitionLag>,
}

/// One partition of a group, as `DescribeGroup` shows it.
#[derive(Debug, Clone)]
pub struct PartitionLag {
    /// The partition.
    pub tp: Tp,
    /// Committed offset, if any.
    pub committed: Option<u64>,
    /// High watermark.
    pub log_end: u64,
    /// Log start.
    pub log_start: u64,
    /// Member that owns it now.
    pub owner: Option<String>,
}

/// Where a reset moves offsets.
#[derive(Debug, Clone, Copy)]
pub enum ResetTo {
    /// Log start.
    Earliest,
    /// High watermark.
    Latest,
    /// First record at or after this timestamp.
    Timestamp(i64),
    /// This offset (must lie in [log start, high watermark]).
    Offset(u64),
}

/// The group coordinator.
pub struct Coordinator {
    manager: Arc<Manager>,
    /// The offsets topic.
    store: KeyedStore,
    config: GroupsConfig,
    groups: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Group>>>>,
    offsets: Mutex<BTreeMap<OffsetKey, Committed>>,
    clock: Instant,
}

fn validate_group_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 255 || id.contains('\0') {
        return Err(Error::InvalidArgument(format!("group id {id:?} must be 1-255 characters without NUL")));
    }
    Ok(())
}

impl Coordinator {
    /// Opens the offsets topic (creating it on first start) and rebuilds
    /// the committed-offsets table from it.
    pub fn open(manager: Arc<Manager>, config: GroupsConfig) -> Result<Coordinator> {
        let store = KeyedStore::open(&manager, OFFSETS_TOPIC)?;
        let table = offsets::replay(&store)?;
        let groups: BTreeSet<&String> = table.keys().map(|k| &k.0).collect();
        tracing::info!(groups = groups.len(), offsets = table.len(), "loaded committed offsets");
        Ok(Coordinator {
            manager,
            store,
            config,
            groups: Mutex::new(BTreeMap::new()),
            offsets: Mutex::new(table),
            clock: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// User topics and partition counts (internal topics are not consumable by groups).
    fn topics(&self) -> BTreeMap<String, u32> {
        self.manager.list_topics().into_iter().filter(|(t, _)| !is_internal(t)).collect()
    }

    fn group(&self, id: &str, create: bool) -> Option<Arc<tokio::sync::Mutex<Group>>> {
        let mut groups = self.groups.locked();
        if create {
            let assignor = self.config.assignor;
            Some(
                groups
                    .entry(id.to_string())
                    .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Group::new(id.to_string(), assignor))))
                    .clone(),
            )
        } else {
            groups.get(id).cloned()
        }
    }

    fn has_offsets(&self, group: &str) -> bool {
        self.offsets.locked().keys().any(|k| k.0 == group)
    }

    /// The heartbeat interval to tell a member whose session is
    /// `session_ms`: `groups.heartbeat_interval_ms`, but at most a third of
    /// the member's session (as Kafka advises), so a member that heartbeats
    /// at the interval it is told is never expired.
    pub fn heartbeat_interval_ms(&self, session_ms: u64) -> u64 {
        self.config.heartbeat_interval_ms.min((session_ms / 3).max(1))
    }

    /// Handles a heartbeat (join, stay, leave); also returns the heartbeat
    /// interval to tell the member.
    pub async fn heartbeat(&self, group_id: &str, mut hb: Heartbeat) -> Result<(HeartbeatReply, u64)> {
        validate_group_id(group_id)?;
        if hb.member_epoch == 0 {
            let c = &self.config;
            if hb.session_timeout_ms == 0 {
                hb.session_timeout_ms = c.session_timeout_ms;
            }
            if hb.session_timeout_ms < c.min_session_timeout_ms || hb.session_timeout_ms > c.max_session_timeout_ms {
                return Err(Error::InvalidArgument(format!(
                    "session_timeout_ms {} is outside the allowed range {}..={}",
                    hb.session_timeout_ms, c.min_session_timeout_ms, c.max_session_timeout_ms
                )));
            }
        }
        let group = self
            .group(group_id, hb.member_epoch == 0)
            .ok_or_else(|| GroupError::NotInGroup { member: hb.member_id.clone(), group: group_id.to_string() })?;
        let mut g = group.lock().await;
        let epoch = g.epoch;
        let reply = g.heartbeat(hb, self.now_ms(), &self.topics())?;
        if g.epoch != epoch {
            tracing::info!(group = group_id, epoch = g.epoch, members = g.members.len(), "group rebalanced");
        }
        let session = g.members.get(&reply.member_id).map_or(self.config.session_timeout_ms, |m| m.session_timeout_ms);
        Ok((reply, self.heartbeat_interval_ms(session)))
    }

    /// Commits offsets, after checking the member may (see module docs).
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
        commits: Vec<(Tp, Committed)>,
    ) -> Result<()> {
        validate_group_id(group_id)?;
        if commits.is_empty() {
            return Err(Error::InvalidArgument("commit has no offsets".into()));
        }
        for ((topic, partition), c) in &commits {
            let log = self.manager.topic(topic)?.partition(*partition)?;
            let hw = log.high_watermark();
            if c.offset > hw {
                return Err(Error::OffsetOutOfRange {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: c.offset,
                    log_start: log.log_start(),
                    high_watermark: hw,
                });
            }
        }
        let group = self.group(group_id, member_id.is_empty());
        let Some(group) = group else {
            return Err(GroupError::UnknownMember(member_id.to_string()).into());
        };
        let g = group.lock().await;
        g.check_commit(member_id, epoch, commits.iter().map(|(tp, _)| tp))?;
        let keyed: Vec<(OffsetKey, Committed)> =
            commits.into_iter().map(|((t, p), c)| ((group_id.to_string(), t, p), c)).collect();
        self.write(keyed.iter().map(|(k, c)| commit_record(k, c)).collect()).await?;
        self.offsets.locked().extend(keyed);
        drop(g);
        Ok(())
    }

    /// Appends to the offsets topic and waits for fsync (the write happens
    /// on a blocking thread, not on this async worker).
    async fn write(&self, records: Vec<KeyedRecord>) -> Result<()> {
        self.store.append(&records, self.manager.now_ms()).await
    }

    /// Committed offsets of a group (all, or only `filter`).
    pub fn fetch_offsets(&self, group_id: &str, filter: &BTreeSet<Tp>) -> Vec<(Tp, Committed)> {
        self.offsets
            .locked()
            .iter()
            .filter(|(k, _)| k.0 == group_id)
            .map(|((_, t, p), c)| ((t.clone(), *p), c.clone()))
            .filter(|(tp, _)| filter.is_empty() || filter.contains(tp))
            .collect()
    }

    /// Every known group: (id, state, members).
    pub async fn list_groups(&self) -> Vec<(String, &'static str, usize)> {
        let mut ids: BTreeSet<String> = self.offsets.locked().keys().map(|k| k.0.clone()).collect();
        let live: Vec<_> = self.groups.locked().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut out = BTreeMap::new();
        for (id, g) in live {
            let g = g.lock().await;
            if !g.members.is_empty() {
                out.insert(id.clone(), (g.state(), g.members.len()));
            }
            ids.remove(&id);
            if g.members.is_empty() && self.has_offsets(&id) {
                out.insert(id, ("Empty", 0));
            }
        }
        for id in ids {
            out.insert(id, ("Empty", 0));
        }
        out.into_iter().map(|(id, (s, n))| (id, s, n)).collect()
    }

    /// Members, assignments and per-partition lag of a group.
    pub async fn describe(&self, group_id: &str) -> Result<GroupInfo> {
        let group = self.group(group_id, false);
        let committed = self.fetch_offsets(group_id, &BTreeSet::new());
        let mut info = GroupInfo {
            state: "Empty",
            epoch: 0,
            assignor: self.config.assignor.name(),
            members: vec![],
            partitions: vec![],
        };
        let mut owners: BTreeMap<Tp, String> = BTreeMap::new();
        match group {
            Some(g) => {
                let g = g.lock().await;
                if g.members.is_empty() && committed.is_empty() {
                    return Err(Error::GroupNotFound { group: group_id.to_string() });
                }
                info.state = g.state();
                info.epoch = g.epoch;
                for m in g.members.values() {
                    let target = g.target.get(&m.id).cloned().unwrap_or_default();
                    let pending = target.difference(&m.assigned).cloned().collect();
                    for tp in &m.assigned {
                        owners.insert(tp.clone(), m.id.clone());
                    }
                    info.members.push((m.clone(), pending));
                }
            }
            None if committed.is_empty() => return Err(Error::GroupNotFound { group: group_id.to_string() }),
            None => {}
        }
        let committed: BTreeMap<Tp, u64> = committed.into_iter().map(|(tp, c)| (tp, c.offset)).collect();
        let all: BTreeSet<Tp> = committed.keys().chain(owners.keys()).cloned().collect();
        for tp in all {
            let Ok(log) = self.manager.topic(&tp.0).and_then(|t| t.partition(tp.1)) else { continue };
            let owner = owners.get(&tp).cloned();
            info.partitions.push(PartitionLag {
                committed: committed.get(&tp).copied(),
                log_end: log.high_watermark(),
                log_start: log.log_start(),
                owner,
                tp,
            });
        }
        Ok(info)
    }

    fn require_empty(g: &Group, what: &'static str) -> Result<()> {
        if g.members.is_empty() {
            Ok(())
        } else {
            Err(GroupError::NotEmpty { group: g.id.clone(), members: g.members.len(), action: what }.into())
        }
    }

    /// Moves the group's offsets (only while it has no members).
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        partitions: BTreeSet<Tp>,
        to: ResetTo,
        dry_run: bool,
    ) -> Result<Vec<(Tp, Committed)>> {
        validate_group_id(group_id)?;
        // (Created if missing, so always there.)
        let Some(group) = self.group(group_id, true) else {
            return Err(Error::GroupNotFound { group: group_id.to_string() });
        };
        let g = group.lock().await;
        Self::require_empty(&g, "reset offsets of")?;
        let targets: BTreeSet<Tp> = if partitions.is_empty() {
            self.fetch_offsets(group_id, &BTreeSet::new()).into_iter().map(|(tp, _)| tp).collect()
        } else {
            partitions
        };
        if targets.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "group '{group_id}' has no committed offsets; name the partitions to reset"
            )));
        }
        let mut out = Vec::new();
        for (topic, partition) in targets {
            let log = self.manager.topic(&topic)?.partition(partition)?;
            let (start, hw) = (log.log_start(), log.high_watermark());
            let offset = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => hw,
                ResetTo::Timestamp(ts) => log.offset_for_timestamp(ts)?.map_or(hw, |(o, _)| o),
                ResetTo::Offset(o) if o < start || o > hw => {
                    return Err(Error::OffsetOutOfRange {
                        topic,
                        partition,
                        offset: o,
                        log_start: start,
                        high_watermark: hw,
                    })
                }
                ResetTo::Offset(o) => o,
            };
            out.push(((topic, partition), Committed { offset, metadata: "reset".into() }));
        }
        if !dry_run {
            let keyed: Vec<(OffsetKey, Committed)> =
                out.iter().map(|((t, p), c)| ((group_id.to_string(), t.clone(), *p), c.clone())).collect();
            self.write(keyed.iter().map(|(k, c)| commit_record(k, c)).collect()).await?;
            self.offsets.locked().extend(keyed);
            tracing::info!(group = group_id, partitions = out.len(), "reset offsets");
        }
        Ok(out)
    }

    /// Deletes a group without members, and its committed offsets.
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let group = self.group(group_id, false);
        if let Some(g) = &group {
            Self::require_empty(&*g.lock().await, "delete")?;
        }
        let keys: Vec<OffsetKey> = self.offsets.locked().keys().filter(|k| k.0 == group_id).cloned().collect();
        if keys.is_empty() && group.is_none() {
            return Err(Error::GroupNotFound { group: group_id.to_string() });
        }
        if !keys.is_empty() {
            self.write(keys.iter().map(delete_record).collect()).await?;
            let mut table = self.offsets.locked();
            for k in &keys {
                table.remove(k);
            }
        }
        self.groups.locked().remove(group_id);
        tracing::info!(group = group_id, "deleted group");
        Ok(())
    }

    /// Expires members that stopped heartbeating and rebalances groups whose
    /// subscribed topics changed, until `shutdown`.
    pub async fn run_reaper(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped(&mut shutdown) => return,
            }
            let topics = self.topics();
            let groups: Vec<_> = self.groups.locked().values().cloned().collect();
            for group in groups {
                let mut g = group.lock().await;
                let expired = g.expire(self.now_ms(), &topics);
                if !expired.is_empty() {
                    tracing::info!(group = %g.id, ?expired, epoch = g.epoch, "members expired; group rebalanced");
                }
                let epoch = g.epoch;
                g.refresh_metadata(&topics);
                if g.epoch != epoch {
                    tracing::info!(group = %g.id, epoch = g.epoch, "subscribed topics changed; group rebalanced");
                }
            }
        }
    }
}
