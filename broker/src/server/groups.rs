//! `strata.v1.Groups`: consumer groups over the coordinator.

use std::sync::Arc;

use strata_proto::server::groups_server::Groups;
use strata_proto::v1::*;
use strata_proto::{tp_list, tp_set};
use tonic::{Request, Response, Status};

use crate::coordinator::assignor::Tp;
use crate::coordinator::group::{Heartbeat, Subscription};
use crate::coordinator::offsets::Committed;
use crate::coordinator::{Coordinator, ResetTo};
use crate::error::Error;
use crate::security::acl::{Operation, ResourceType};

use super::authz::Caller;

/// Longest `topic_pattern` accepted.
const MAX_PATTERN_BYTES: usize = 1024;

/// The Groups service.
pub struct GroupsService {
    coordinator: Arc<Coordinator>,
}

impl GroupsService {
    /// Serves `coordinator`.
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        GroupsService { coordinator }
    }
}

fn committed(offsets: Vec<(Tp, Committed)>) -> Vec<CommittedOffset> {
    offsets
        .into_iter()
        .map(|((topic, partition), c)| CommittedOffset { topic, partition, offset: c.offset, metadata: c.metadata })
        .collect()
}

#[tonic::async_trait]
impl Groups for GroupsService {
    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let caller = Caller::of(&req);
        let r = req.into_inner();
        caller.may(&r.group_id)?;
        for t in &r.topics {
            caller.may_do(Operation::Read, ResourceType::Topic, t)?;
        }
        if !r.topic_pattern.is_empty() {
            if r.topic_pattern.len() > MAX_PATTERN_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "topic_pattern is {} bytes, at most {MAX_PATTERN_BYTES}",
                    r.topic_pattern.len()
                ))
                .into());
            }
            // A pattern may match any topic: it needs read on every topic
            // (an ACL on the literal name "*"), so an assignment never names
            // a topic the member may not read.
            caller.may_do(Operation::Read, ResourceType::Topic, "*")?;
        }
        let subscription = match (r.topics.is_empty(), r.topic_pattern.is_empty()) {
            (true, true) => None,
            (false, true) => Some(Subscription::Topics(r.topics.into_iter().collect())),
            (true, false) => Some(Subscription::Pattern(r.topic_pattern)),
            (false, false) => {
                return Err(Error::InvalidArgument("give either topics or topic_pattern, not both".into()).into())
            }
        };
        let hb = Heartbeat {
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            instance_id: r.instance_id.filter(|i| !i.is_empty()),
            subscription,
            session_timeout_ms: u64::from(r.session_timeout_ms),
            owned: tp_set(r.owned),
        };
        let (reply, interval_ms) = self.coordinator.heartbeat(&r.group_id, hb).await?;
        Ok(Response::new(HeartbeatResponse {
            member_id: reply.member_id,
            member_epoch: reply.member_epoch,
            heartbeat_interval_ms: interval_ms as u32,
            assignment: tp_list(&reply.assignment),
        }))
    }

    async fn commit_offsets(
        &self,
        req: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let caller = Caller::of(&req);
        let r = req.into_inner();
        caller.may(&r.group_id)?;
        for o in &r.offsets {
            caller.may_do(Operation::Read, ResourceType::Topic, &o.topic)?;
        }
        let commits = r
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), Committed { offset: o.offset, metadata: o.metadata }))
            .collect();
        self.coordinator.commit(&r.group_id, &r.member_id, r.member_epoch, commits).await?;
        Ok(Response::new(CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(&self, req: Request<FetchOffsetsRequest>) -> Result<Response<FetchOffsetsResponse>, Status> {
        let caller = Caller::of(&req);
        let r = req.into_inner();
        caller.may(&r.group_id)?;
        let mut offsets = self.coordinator.fetch_offsets(&r.group_id, &tp_set(r.partitions));
        offsets.retain(|((t, _), _)| caller.can_describe(ResourceType::Topic, t));
        Ok(Response::new(FetchOffsetsResponse { offsets: committed(offsets) }))
    }

    async fn list_groups(&self, req: Request<ListGroupsRequest>) -> Result<Response<ListGroupsResponse>, Status> {
        let caller = Caller::of(&req);
        let groups = self
            .coordinator
            .list_groups()
            .await
            .into_iter()
            .filter(|(group_id, _, _)| caller.can_describe(ResourceType::Group, group_id))
            .map(|(group_id, state, members)| GroupSummary { group_id, state: state.into(), members: members as u32 })
            .collect();
        Ok(Response::new(ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        req: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let caller = Caller::of(&req);
        let group_id = req.into_inner().group_id;
        caller.may(&group_id)?;
        let mut info = self.coordinator.describe(&group_id).await?;
        // Only the topics the caller may describe.
        let visible = |t: &str| caller.can_describe(ResourceType::Topic, t);
        info.partitions.retain(|p| visible(&p.tp.0));
        for (m, pending) in info.members.iter_mut() {
            m.assigned.retain(|(t, _)| visible(t));
            pending.retain(|(t, _)| visible(t));
            if let Subscription::Topics(topics) = &mut m.subscription {
                topics.retain(|t| visible(t));
            }
        }
        let members = info
            .members
            .iter()
            .map(|(m, pending)| {
                let (topics, topic_pattern) = match &m.subscription {
                    Subscription::Topics(t) => (t.iter().cloned().collect(), String::new()),
                    Subscription::Pattern(p) => (Vec::new(), p.clone()),
                };
                MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone().unwrap_or_default(),
                    member_epoch: m.epoch,
                    topics,
                    topic_pattern,
                    assignment: tp_list(&m.assigned),
                    pending: tp_list(pending),
                }
            })
            .collect();
        let partitions = info
            .partitions
            .into_iter()
            .map(|p| PartitionLag {
                committed_offset: p.committed.map_or(-1, |c| c as i64),
                log_end_offset: p.log_end,
                lag: p.log_end.saturating_sub(p.committed.unwrap_or(p.log_start)),
                member_id: p.owner.unwrap_or_default(),
                topic: p.tp.0,
                partition: p.tp.1,
            })
            .collect();
        Ok(Response::new(DescribeGroupResponse {
            group_id,
            state: info.state.into(),
            group_epoch: info.epoch,
            assignor: info.assignor.into(),
            members,
            partitions,
        }))
    }

    async fn reset_offsets(&self, req: Request<ResetOffsetsRequest>) -> Result<Response<ResetOffsetsResponse>, Status> {
        let caller = Caller::of(&req);
        let r = req.into_inner();
        caller.may(&r.group_id)?;
        let to = match r.to {
            Some(reset_offsets_request::To::Earliest(_)) => ResetTo::Earliest,
            Some(reset_offsets_request::To::Latest(_)) => ResetTo::Latest,
            Some(reset_offsets_request::To::TimestampMs(ts)) => ResetTo::Timestamp(ts),
            Some(reset_offsets_request::To::Offset(o)) => ResetTo::Offset(o),
            None => {
                return Err(Error::InvalidArgument(
                    "reset needs one of earliest, latest, timestamp_ms or offset".into(),
                )
                .into())
            }
        };
        let targets = tp_set(r.partitions);
        // Read on every topic reset: those named, or else every committed one.
        let committed_topics: Vec<String> = match targets.is_empty() {
            true => self.coordinator.fetch_offsets(&r.group_id, &targets).into_iter().map(|((t, _), _)| t).collect(),
            false => targets.iter().map(|(t, _)| t.clone()).collect(),
        };
        for t in &committed_topics {
            caller.may_do(Operation::Read, ResourceType::Topic, t)?;
        }
        let offsets = self.coordinator.reset_offsets(&r.group_id, targets, to, r.dry_run).await?;
        Ok(Response::new(ResetOffsetsResponse { offsets: committed(offsets) }))
    }

    async fn delete_group(&self, req: Request<DeleteGroupRequest>) -> Result<Response<DeleteGroupResponse>, Status> {
        let caller = Caller::of(&req);
        let group_id = req.into_inner().group_id;
        caller.may(&group_id)?;
        self.coordinator.delete_group(&group_id).await?;
        Ok(Response::new(DeleteGroupResponse {}))
    }
}
