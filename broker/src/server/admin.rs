//! `strata.v1.Admin`: topic lifecycle, identity, ACLs and API tokens.

use std::sync::Arc;

use strata_proto::server::admin_server::Admin;
use strata_proto::v1::*;
use tonic::{Request, Response, Status};

use super::authz::Caller;
use super::connections::ConnInfo;
use crate::error::{Error, Result};
use crate::partition::{Manager, TopicInfo};
use crate::security::acl::{self, Acl as AclRule};
use crate::security::{Security, Token};

/// The Admin service.
pub struct AdminService {
    manager: Arc<Manager>,
    security: Arc<Security>,
}

impl AdminService {
    /// Serves admin requests against `manager` and `security`.
    pub fn new(manager: Arc<Manager>, security: Arc<Security>) -> Self {
        AdminService { manager, security }
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

/// An ACL of the request, checked to have every field set.
fn acl_from(a: Option<Acl>) -> Result<AclRule> {
    let a = a.ok_or_else(|| Error::InvalidArgument("the request carries no acl".into()))?;
    let unset = |field: &str, valid: &str| {
        Error::InvalidArgument(format!("acl {field} is unspecified or unknown: use one of {valid}"))
    };
    Ok(AclRule {
        operation: match AclOperation::try_from(a.operation) {
            Ok(AclOperation::All) => acl::Operation::All,
            Ok(AclOperation::Read) => acl::Operation::Read,
            Ok(AclOperation::Write) => acl::Operation::Write,
            Ok(AclOperation::Create) => acl::Operation::Create,
            Ok(AclOperation::Delete) => acl::Operation::Delete,
            Ok(AclOperation::Alter) => acl::Operation::Alter,
            Ok(AclOperation::Describe) => acl::Operation::Describe,
            _ => return Err(unset("operation", "ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE")),
        },
        resource_type: resource_type_from(a.resource_type)?
            .ok_or_else(|| unset("resource_type", "TOPIC, GROUP, CLUSTER"))?,
        pattern_type: match PatternType::try_from(a.pattern_type) {
            Ok(PatternType::Literal) => acl::PatternType::Literal,
            Ok(PatternType::Prefixed) => acl::PatternType::Prefixed,
            _ => return Err(unset("pattern_type", "LITERAL, PREFIXED")),
        },
        permission: match AclPermission::try_from(a.permission) {
            Ok(AclPermission::Allow) => acl::Permission::Allow,
            Ok(AclPermission::Deny) => acl::Permission::Deny,
            _ => return Err(unset("permission", "ALLOW, DENY")),
        },
        principal: a.principal,
        host: a.host,
        resource_name: a.resource_name,
    })
}

/// A resource type field: None for UNSPECIFIED, an error for unknown values.
fn resource_type_from(v: i32) -> Result<Option<acl::ResourceType>> {
    match ResourceType::try_from(v) {
        Ok(ResourceType::Unspecified) => Ok(None),
        Ok(ResourceType::Topic) => Ok(Some(acl::ResourceType::Topic)),
        Ok(ResourceType::Group) => Ok(Some(acl::ResourceType::Group)),
        Ok(ResourceType::Cluster) => Ok(Some(acl::ResourceType::Cluster)),
        Err(_) => Err(Error::InvalidArgument(format!("resource_type {v} is unknown: use TOPIC, GROUP or CLUSTER"))),
    }
}

fn acl_to(a: AclRule) -> Acl {
    Acl {
        operation: match a.operation {
            acl::Operation::All => AclOperation::All,
            acl::Operation::Read => AclOperation::Read,
            acl::Operation::Write => AclOperation::Write,
            acl::Operation::Create => AclOperation::Create,
            acl::Operation::Delete => AclOperation::Delete,
            acl::Operation::Alter => AclOperation::Alter,
            acl::Operation::Describe => AclOperation::Describe,
        } as i32,
        resource_type: match a.resource_type {
            acl::ResourceType::Topic => ResourceType::Topic,
            acl::ResourceType::Group => ResourceType::Group,
            acl::ResourceType::Cluster => ResourceType::Cluster,
        } as i32,
        pattern_type: match a.pattern_type {
            acl::PatternType::Literal => PatternType::Literal,
            acl::PatternType::Prefixed => PatternType::Prefixed,
        } as i32,
        permission: match a.permission {
            acl::Permission::Allow => AclPermission::Allow,
            acl::Permission::Deny => AclPermission::Deny,
        } as i32,
        principal: a.principal,
        host: a.host,
        resource_name: a.resource_name,
    }
}

fn token_info(t: Token) -> TokenInfo {
    TokenInfo { token_id: t.id, principal: t.principal, created_at_ms: t.created_at_ms, expires_at_ms: t.expires_at_ms }
}

/// An optional filter field: empty = any.
fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let conn = req.extensions().get::<ConnInfo>();
        Ok(Response::new(WhoAmIResponse {
            principal: Caller::of(&req).principal().unwrap_or_default().to_string(),
            tls: conn.is_some_and(|c| c.tls),
            peer: conn.map(|c| c.peer.to_string()).unwrap_or_default(),
        }))
    }

    async fn create_topic(&self, req: Request<CreateTopicRequest>) -> Result<Response<CreateTopicResponse>, Status> {
        let caller = Caller::of(&req);
        let r = req.into_inner();
        caller.may(&r.name)?;
        let configs = r.configs.into_iter().collect();
        let info = self.blocking(move |m| m.create_topic(&r.name, r.partitions, configs)).await?;
        Ok(Response::new(CreateTopicResponse { topic: Some(describe(info)) }))
    }

    async fn delete_topic(&self, req: Request<DeleteTopicRequest>) -> Result<Response<DeleteTopicResponse>, Status> {
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        caller.may(&name)?;
        self.blocking(move |m| m.delete_topic(&name)).await?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn list_topics(&self, req: Request<ListTopicsRequest>) -> Result<Response<ListTopicsResponse>, Status> {
        let caller = Caller::of(&req);
        let include_internal = req.into_inner().include_internal;
        let topics = self
            .manager
            .list_topics()
            .into_iter()
            .filter(|(name, _)| include_internal || !crate::partition::is_internal(name))
            .filter(|(name, _)| caller.can_describe(acl::ResourceType::Topic, name))
            .map(|(name, partitions)| TopicSummary { name, partitions })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        req: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        caller.may(&name)?;
        let info = self.manager.describe_topic(&name)?;
        Ok(Response::new(DescribeTopicResponse { topic: Some(describe(info)) }))
    }

    async fn alter_topic_config(
        &self,
        req: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        let caller = Caller::of(&req);
        let r = req.into_inner();
        caller.may(&r.name)?;
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
        let caller = Caller::of(&req);
        let r = req.into_inner();
        caller.may(&r.name)?;
        let info = self.blocking(move |m| m.create_partitions(&r.name, r.total)).await?;
        Ok(Response::new(CreatePartitionsResponse { topic: Some(describe(info)) }))
    }

    async fn create_acl(&self, req: Request<CreateAclRequest>) -> Result<Response<CreateAclResponse>, Status> {
        let created = self.security.create_acl(acl_from(req.into_inner().acl)?).await?;
        Ok(Response::new(CreateAclResponse { created }))
    }

    async fn list_acls(&self, req: Request<ListAclsRequest>) -> Result<Response<ListAclsResponse>, Status> {
        let r = req.into_inner();
        let rt = resource_type_from(r.resource_type)?;
        let acls = self.security.list_acls(non_empty(&r.principal), rt, non_empty(&r.resource_name));
        Ok(Response::new(ListAclsResponse { acls: acls.into_iter().map(acl_to).collect() }))
    }

    async fn delete_acl(&self, req: Request<DeleteAclRequest>) -> Result<Response<DeleteAclResponse>, Status> {
        let deleted = self.security.delete_acl(acl_from(req.into_inner().acl)?).await?;
        Ok(Response::new(DeleteAclResponse { deleted }))
    }

    async fn create_token(&self, req: Request<CreateTokenRequest>) -> Result<Response<CreateTokenResponse>, Status> {
        let r = req.into_inner();
        let (token, info) = self.security.create_token(&r.principal, r.ttl_ms).await?;
        Ok(Response::new(CreateTokenResponse { token, info: Some(token_info(info)) }))
    }

    async fn list_tokens(&self, req: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        let tokens = self.security.list_tokens(non_empty(&req.into_inner().principal));
        Ok(Response::new(ListTokensResponse { tokens: tokens.into_iter().map(token_info).collect() }))
    }

    async fn revoke_token(&self, req: Request<RevokeTokenRequest>) -> Result<Response<RevokeTokenResponse>, Status> {
        let revoked = self.security.revoke_token(&req.into_inner().token_id).await?;
        Ok(Response::new(RevokeTokenResponse { revoked }))
    }

    async fn set_user(&self, req: Request<SetUserRequest>) -> Result<Response<SetUserResponse>, Status> {
        let r = req.into_inner();
        let created = self.security.set_user(&r.username, &r.password).await?;
        Ok(Response::new(SetUserResponse { created }))
    }

    async fn delete_user(&self, req: Request<DeleteUserRequest>) -> Result<Response<DeleteUserResponse>, Status> {
        let deleted = self.security.delete_user(&req.into_inner().username).await?;
        Ok(Response::new(DeleteUserResponse { deleted }))
    }

    async fn list_users(&self, _req: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        Ok(Response::new(ListUsersResponse { usernames: self.security.list_users() }))
    }
}
