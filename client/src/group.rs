//! A group consumer: joins a consumer group, heartbeats from `poll`, fetches
//! the partitions it owns from the group's committed offsets, commits, and
//! hands partitions back (committing first) when the coordinator revokes them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;

use crate::proto::*;
use crate::{refusal, Client};
use strata_proto::{tp_list, tp_set};

/// A topic partition.
pub use strata_proto::Tp;

/// A record with where it came from.
#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The record (its `offset` is set).
    pub record: Record,
}

/// How to join.
#[derive(Debug, Clone, Default)]
pub struct GroupOptions {
    /// Static membership id (e.g. a pod name).
    pub instance_id: Option<String>,
    /// Session timeout (0 = broker default).
    pub session_timeout_ms: u32,
    /// Glob over topic names instead of a topic list.
    pub topic_pattern: Option<String>,
    /// Go on past damaged stored bytes (`FetchPartition.skip_damaged`)
    /// instead of failing `poll` with DATA_LOSS.
    pub skip_damaged: bool,
}

/// Callback told which partitions are about to be handed back.
pub type RevokeCallback = Box<dyn FnMut(&[Tp]) + Send>;

/// A member of a consumer group.
pub struct GroupConsumer {
    client: Client,
    group: String,
    topics: Vec<String>,
    options: GroupOptions,
    member_id: String,
    epoch: i32,
    interval: Duration,
    next_heartbeat: Instant,
    owned: BTreeSet<Tp>,
    positions: BTreeMap<Tp, u64>,
    on_revoke: Option<RevokeCallback>,
}

impl GroupConsumer {
    /// Joins `group` subscribed to `topics` (or `options.topic_pattern`).
    pub async fn join(client: Client, group: &str, topics: &[&str], options: GroupOptions) -> Result<Self, Status> {
        let mut c = GroupConsumer {
            client,
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            options,
            member_id: String::new(),
            epoch: 0,
            interval: Duration::from_secs(3),
            next_heartbeat: Instant::now(),
            owned: BTreeSet::new(),
            positions: BTreeMap::new(),
            on_revoke: None,
        };
        c.heartbeat().await?;
        Ok(c)
    }

    /// Called with partitions about to be revoked, before their positions are committed.
    pub fn on_revoke(&mut self, f: impl FnMut(&[Tp]) + Send + 'static) {
        self.on_revoke = Some(Box::new(f));
    }

    /// The member id the coordinator gave.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The current member epoch.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Partitions owned now.
    pub fn assignment(&self) -> &BTreeSet<Tp> {
        &self.owned
    }

    /// Next offset to read per owned partition.
    pub fn positions(&self) -> &BTreeMap<Tp, u64> {
        &self.positions
    }

    fn request(&self) -> HeartbeatRequest {
        let joining = self.epoch == 0;
        HeartbeatRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            instance_id: self.options.instance_id.clone(),
            topics: if joining && self.options.topic_pattern.is_none() { self.topics.clone() } else { vec![] },
            topic_pattern: if joining { self.options.topic_pattern.clone().unwrap_or_default() } else { String::new() },
            session_timeout_ms: if joining { self.options.session_timeout_ms } else { 0 },
            owned: tp_list(&self.owned),
        }
    }

    /// Heartbeats now: applies revocations (committing their positions
    /// first) and picks up new partitions at their committed offsets. A
    /// fenced or expired member rejoins as a new member, losing its partitions.
    pub async fn heartbeat(&mut self) -> Result<(), Status> {
        let reply = match self.client.groups.heartbeat(self.request()).await {
            Ok(r) => r.into_inner(),
            Err(s) if fenced(&s) && self.epoch != 0 => {
                // Fenced: whatever we owned belongs to someone else now.
                self.owned.clear();
                self.positions.clear();
                self.epoch = 0;
                self.member_id.clear();
                self.client.groups.heartbeat(self.request()).await?.into_inner()
            }
            Err(s) => return Err(s),
        };
        self.member_id = reply.member_id;
        self.epoch = reply.member_epoch;
        self.interval = Duration::from_millis(u64::from(reply.heartbeat_interval_ms.max(1)));
        self.next_heartbeat = Instant::now() + self.interval;
        let target = tp_set(reply.assignment);
        let revoked: Vec<Tp> = self.owned.difference(&target).cloned().collect();
        if !revoked.is_empty() {
            if let Some(cb) = self.on_revoke.as_mut() {
                cb(&revoked);
            }
            self.commit_partitions(&revoked).await?;
            for tp in &revoked {
                self.owned.remove(tp);
                self.positions.remove(tp);
            }
            // Tell the coordinator at once, so the new owners need not wait a full interval.
            self.next_heartbeat = Instant::now();
        }
        let added: Vec<Tp> = target.difference(&self.owned).cloned().collect();
        if !added.is_empty() {
            self.start_positions(&added).await?;
            self.owned.extend(added);
            self.next_heartbeat = Instant::now();
        }
        Ok(())
    }

    async fn start_positions(&mut self, tps: &[Tp]) -> Result<(), Status> {
        let req = FetchOffsetsRequest { group_id: self.group.clone(), partitions: tp_list(tps) };
        let committed = self.client.groups.fetch_offsets(req).await?.into_inner().offsets;
        let committed: BTreeMap<Tp, u64> = committed.into_iter().map(|c| ((c.topic, c.partition), c.offset)).collect();
        for tp in tps {
            let offset = match committed.get(tp) {
                Some(&o) => o,
                None => {
                    let req = ListOffsetsRequest {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        spec: Some(list_offsets_request::Spec::Earliest(true)),
                    };
                    self.client.broker.list_offsets(req).await?.into_inner().offset
                }
            };
            self.positions.insert(tp.clone(), offset);
        }
        Ok(())
    }

    /// Heartbeats if due, then fetches from every owned partition, waiting up
    /// to `max_wait` for records.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, Status> {
        if Instant::now() >= self.next_heartbeat {
            self.heartbeat().await?;
        }
        let until_heartbeat = self.next_heartbeat.saturating_duration_since(Instant::now());
        let wait = max_wait.min(until_heartbeat);
        if self.owned.is_empty() {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let req = FetchRequest {
            partitions: self
                .positions
                .iter()
                .map(|((topic, partition), &offset)| FetchPartition {
                    topic: topic.clone(),
                    partition: *partition,
                    offset,
                    max_bytes: 0,
                    skip_damaged: self.options.skip_damaged,
                })
                .collect(),
            max_wait_ms: wait.as_millis() as u32,
            min_bytes: 1,
            max_bytes: 0,
        };
        let reply = match self.client.broker.fetch(req).await {
            Ok(r) => r.into_inner(),
            // A partition's log start moved past our position: start from the new log start.
            Err(s) if refusal::is(&s, ErrorReason::OffsetOutOfRange) => {
                let tps: Vec<Tp> = self.owned.iter().cloned().collect();
                self.start_positions(&tps).await?;
                return Ok(Vec::new());
            }
            Err(s) => return Err(s),
        };
        let mut out = Vec::new();
        for part in reply.partitions {
            let tp = (part.topic, part.partition);
            for record in part.records {
                self.positions.insert(tp.clone(), record.offset + 1);
                out.push(ConsumedRecord { topic: tp.0.clone(), partition: tp.1, record });
            }
            // Past offsets with no record (compacted away, or damage skipped).
            if let Some(pos) = self.positions.get_mut(&tp) {
                *pos = (*pos).max(part.next_offset);
            }
        }
        Ok(out)
    }

    async fn commit_partitions(&mut self, tps: &[Tp]) -> Result<(), Status> {
        let offsets: Vec<OffsetCommit> = tps
            .iter()
            .filter_map(|tp| self.positions.get(tp).map(|&offset| (tp, offset)))
            .map(|((topic, partition), offset)| OffsetCommit {
                topic: topic.clone(),
                partition: *partition,
                offset,
                metadata: String::new(),
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        let req = CommitOffsetsRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            offsets,
        };
        self.client.groups.commit_offsets(req).await?;
        Ok(())
    }

    /// Commits the position of every owned partition (the offset after the
    /// last record `poll` returned), and waits for it to be durable.
    pub async fn commit(&mut self) -> Result<(), Status> {
        let tps: Vec<Tp> = self.owned.iter().cloned().collect();
        self.commit_partitions(&tps).await
    }

    /// Leaves the group. `temporary` (static members only) keeps the
    /// partitions reserved for a quick restart with the same instance id.
    pub async fn leave(mut self, temporary: bool) -> Result<(), Status> {
        let mut req = self.request();
        req.member_epoch = if temporary { -2 } else { -1 };
        req.owned.clear();
        self.client.groups.heartbeat(req).await?;
        self.owned.clear();
        Ok(())
    }
}

/// Whether a heartbeat's refusal says the member lost its membership (it
/// rejoins as a new member).
fn fenced(s: &Status) -> bool {
    [ErrorReason::UnknownMember, ErrorReason::StaleMemberEpoch, ErrorReason::NotInGroup]
        .into_iter()
        .any(|r| refusal::is(s, r))
}
