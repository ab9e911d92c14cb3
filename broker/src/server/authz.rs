//! Authorization: the one table that gives every RPC of every service the
//! operation it performs and on what kind of resource, and the check the
//! RPC layer makes with it.
//!
//! With `auth.enabled`, a request is allowed only if its RPC is public
//! (health, reflection, `WhoAmI`), or its caller has a principal (mutual
//! TLS) that is a super user (`auth.super_users`). No matching rule means
//! deny: there are no ACLs yet, so every other principal is denied. A
//! caller without a principal gets UNAUTHENTICATED; one with a principal
//! PERMISSION_DENIED naming the operation and the kind of resource (not a
//! resource's name, which the caller may not be allowed to learn). A test
//! walks the services' descriptors and fails if an RPC has no row here.

use std::collections::HashSet;
use std::fmt;

use tonic::Status;

/// What an RPC does, as an ACL would name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Read records, offsets or a group's progress.
    Read,
    /// Append records.
    Write,
    /// Create a topic.
    Create,
    /// Delete a topic or a group.
    Delete,
    /// Change a topic's settings or partitions, or a group's offsets.
    Alter,
    /// See that a resource exists and how it is set up.
    Describe,
}

/// What kind of resource an RPC acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The broker as a whole (listing, creating).
    Cluster,
}

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, authenticated or not (probes, discovery, identity).
    Public,
    /// Callers allowed `Operation` on the `Resource` the request names.
    Needs(Operation, Resource),
}

use Operation::*;
use Resource::*;
use Rule::*;

/// Every RPC's rule, by its gRPC path.
pub const RULES: &[(&str, Rule)] = &[
    ("/strata.v1.Broker/Produce", Needs(Write, Topic)),
    ("/strata.v1.Broker/ProduceStream", Needs(Write, Topic)),
    ("/strata.v1.Broker/Fetch", Needs(Read, Topic)),
    ("/strata.v1.Broker/Subscribe", Needs(Read, Topic)),
    ("/strata.v1.Broker/ListOffsets", Needs(Describe, Topic)),
    ("/strata.v1.Admin/CreateTopic", Needs(Create, Cluster)),
    ("/strata.v1.Admin/DeleteTopic", Needs(Delete, Topic)),
    ("/strata.v1.Admin/ListTopics", Needs(Describe, Cluster)),
    ("/strata.v1.Admin/DescribeTopic", Needs(Describe, Topic)),
    ("/strata.v1.Admin/AlterTopicConfig", Needs(Alter, Topic)),
    ("/strata.v1.Admin/CreatePartitions", Needs(Alter, Topic)),
    ("/strata.v1.Admin/WhoAmI", Public),
    ("/strata.v1.Groups/Heartbeat", Needs(Read, Group)),
    ("/strata.v1.Groups/CommitOffsets", Needs(Read, Group)),
    ("/strata.v1.Groups/FetchOffsets", Needs(Describe, Group)),
    ("/strata.v1.Groups/ListGroups", Needs(Describe, Cluster)),
    ("/strata.v1.Groups/DescribeGroup", Needs(Describe, Group)),
    ("/strata.v1.Groups/ResetOffsets", Needs(Alter, Group)),
    ("/strata.v1.Groups/DeleteGroup", Needs(Delete, Group)),
    ("/grpc.health.v1.Health/Check", Public),
    ("/grpc.health.v1.Health/Watch", Public),
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Public),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Public),
];

/// The rule for `path`; None for a path no service has (tonic answers
/// those UNIMPLEMENTED).
pub fn rule(path: &str) -> Option<Rule> {
    RULES.iter().find(|(p, _)| *p == path).map(|(_, r)| *r)
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Read => "read",
            Write => "write",
            Create => "create",
            Delete => "delete",
            Alter => "alter",
            Describe => "describe",
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Topic => "topic",
            Group => "group",
            Cluster => "cluster",
        })
    }
}

/// `auth.*`: whether authorization is on, and who may do everything.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    enabled: bool,
    super_users: HashSet<String>,
}

impl Authorizer {
    /// From `auth.enabled` and `auth.super_users`.
    pub fn new(enabled: bool, super_users: &[String]) -> Self {
        Authorizer { enabled, super_users: super_users.iter().cloned().collect() }
    }

    /// Whether `principal` (None: anonymous) may call `path`.
    pub fn check(&self, path: &str, principal: Option<&str>) -> Result<(), Status> {
        if !self.enabled {
            return Ok(());
        }
        let (operation, resource) = match rule(path) {
            // Unknown paths: tonic says UNIMPLEMENTED, revealing nothing.
            None | Some(Public) => return Ok(()),
            Some(Needs(operation, resource)) => (operation, resource),
        };
        match principal {
            None => Err(Status::unauthenticated(format!(
                "{path} needs an authenticated principal (a client certificate: the broker has auth.enabled)"
            ))),
            Some(p) if self.super_users.contains(p) => Ok(()),
            Some(p) => Err(Status::permission_denied(format!(
                "principal {p:?} may not {operation} on this {resource} ({path}): no ACL allows it"
            ))),
        }
    }
}

/// Logs a denial: at most one line a second (the first denial of that
/// second, with its principal, RPC and peer, and how many were not logged
/// since the last line), and counts every one.
pub fn log_denial(path: &str, conn: Option<&super::connections::ConnInfo>, status: &Status) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    metrics::counter!("strata_authorization_denied_total", "code" => format!("{:?}", status.code())).increment(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    if LAST_SECOND.swap(now, Ordering::Relaxed) == now {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    tracing::warn!(
        rpc = path,
        principal = conn.and_then(|c| c.principal()).unwrap_or("(anonymous)"),
        peer = %conn.map(|c| c.peer.to_string()).unwrap_or_default(),
        code = ?status.code(),
        denied_since_last_line = SUPPRESSED.swap(0, Ordering::Relaxed),
        "request denied: {}", status.message()
    );
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every method of every service the listener serves, from descriptors.
    fn served_methods() -> Vec<String> {
        let sets = [
            strata_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = Vec::new();
        for bytes in sets {
            let set = prost_types::FileDescriptorSet::decode(bytes).unwrap();
            for file in set.file {
                for service in &file.service {
                    for m in &service.method {
                        methods.push(format!("/{}.{}/{}", file.package(), service.name(), m.name()));
                    }
                }
            }
        }
        methods
    }

    #[test]
    fn every_served_rpc_has_exactly_one_rule_and_every_rule_an_rpc() {
        let methods = served_methods();
        assert!(methods.len() >= RULES.len(), "{methods:?}");
        for m in &methods {
            assert_eq!(RULES.iter().filter(|(p, _)| p == m).count(), 1, "{m} needs exactly one row in RULES");
        }
        for (p, _) in RULES {
            assert!(methods.iter().any(|m| m == p), "RULES names {p}, which no service serves");
        }
    }

    #[test]
    fn default_deny_super_users_and_public_rpcs() {
        let a = Authorizer::new(true, &["admin".to_string()]);
        let produce = "/strata.v1.Broker/Produce";
        assert_eq!(a.check(produce, None).unwrap_err().code(), tonic::Code::Unauthenticated);
        let denied = a.check(produce, Some("svc")).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("write on this topic"), "{}", denied.message());
        assert!(a.check(produce, Some("admin")).is_ok());
        assert!(a.check("/grpc.health.v1.Health/Check", None).is_ok());
        assert!(a.check("/strata.v1.Admin/WhoAmI", None).is_ok());
        assert!(Authorizer::new(false, &[]).check(produce, None).is_ok());
    }
}
