//! `strata.v1.Admin`: topic lifecycle.

use std::sync::Arc;

use strata_proto::server::admin_server::Admin;
use strata_proto::v1::*;
use tonic::{Request, Response, Status};

use super::connections::ConnInfo;
use crate::error::{Error, Result};
use crate::partition::{Manager, TopicInfo};

/// The Admin service.
pub struct AdminService {
    manager: Arc<Manager>,
}

impl AdminService {
    /// Serves admin requests against `manager`.
    pub fn new(manager: Arc<Manager>) -> Self {
        AdminService { manager }
    }

    /// Runs a topic change off the async workers (it fsyncs files and dirs).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Manager) -> Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let manager = self.manager.clone();
        tokio::task::spawn_blocking(move || f(&manager))
            .await
            .map_err(|e| Error::Internal(format!("admin task failed: {e}")))
            .and_then(|r| r)
            .map_err(Status::from)
    }
}

fn describe(info: TopicInfo) -> TopicDescription {
    TopicDescription {
        name: info.name,
        partitions: info
            .partitions
            .into_iter()
            .map(|p| PartitionDescription {
                partition: p.partition,
                log_start_offset: p.log_start,
                high_watermark: p.high_watermark,
                size_bytes: p.size_bytes,
                segments: p.segments,
                damaged_batches: p.damaged_batches,
            })
            .collect(),
        configs: info
            .configs
            .into_iter()
            .map(|(key, value, on_topic)| ConfigEntry {
                key,
                value,
                source: if on_topic { ConfigSource::Topic } else { ConfigSource::Default } as i32,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let conn = req.extensions().get::<ConnInfo>();
        Ok(Response::new(WhoAmIResponse {
            principal: conn.and_then(|c| c.principal()).unwrap_or_default().to_string(),
            tls: conn.is_some_and(|c| c.tls),
            peer: conn.map(|c| c.peer.to_string()).unwrap_or_default(),
        }))
    }

    async fn create_topic(&self, req: Request<CreateTopicRequest>) -> Result<Response<CreateTopicResponse>, Status> {
        let r = req.into_inner();
        let configs = r.configs.into_iter().collect();
        let info = self.blocking(move |m| m.create_topic(&r.name, r.partitions, configs)).await?;
        Ok(Response::new(CreateTopicResponse { topic: Some(describe(info)) }))
    }

    async fn delete_topic(&self, req: Request<DeleteTopicRequest>) -> Result<Response<DeleteTopicResponse>, Status> {
        let name = req.into_inner().name;
        self.blocking(move |m| m.delete_topic(&name)).await?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn list_topics(&self, req: Request<ListTopicsRequest>) -> Result<Response<ListTopicsResponse>, Status> {
        let include_internal = req.into_inner().include_internal;
        let topics = self
            .manager
            .list_topics()
            .into_iter()
            .filter(|(name, _)| include_internal || !crate::partition::is_internal(name))
            .map(|(name, partitions)| TopicSummary { name, partitions })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        req: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let info = self.manager.describe_topic(&req.into_inner().name)?;
        Ok(Response::new(DescribeTopicResponse { topic: Some(describe(info)) }))
    }

    async fn alter_topic_config(
        &self,
        req: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        let r = req.into_inner();
        if r.set.is_empty() && r.reset.is_empty() {
            return Err(Error::InvalidArgument("nothing to change: give keys to set or reset".into()).into());
        }
        let set = r.set.into_iter().collect();
        let info = self.blocking(move |m| m.alter_topic_config(&r.name, set, r.reset)).await?;
        Ok(Response::new(AlterTopicConfigResponse { topic: Some(describe(info)) }))
    }

    async fn create_partitions(
        &self,
        req: Request<CreatePartitionsRequest>,
    ) -> Result<Response<CreatePartitionsResponse>, Status> {
        let r = req.into_inner();
        let info = self.blocking(move |m| m.create_partitions(&r.name, r.total)).await?;
        Ok(Response::new(CreatePartitionsResponse { topic: Some(describe(info)) }))
    }
}
