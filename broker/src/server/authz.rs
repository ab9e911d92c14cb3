//! Authorization: the one table that gives every RPC of every service the
//! operation it performs and on what kind of resource, the authentication
//! of each request, and the [`Caller`] its handler checks names against.
//!
//! For each request the RPC layer calls [`Authorizer::admit`]: it finds the
//! principal (an API token in `authorization: Bearer <token>`, a user in
//! `authorization: Basic <base64 user:password>`, else the client
//! certificate's with mutual TLS), refuses bad credentials with
//! UNAUTHENTICATED, and, with `auth.enabled`, a caller without a principal
//! on any RPC that is not public. Cluster rules are checked there; topic
//! and group rules need the names in the request, so the handler checks
//! each name it acts on with [`Caller::may`] before it looks the resource
//! up — a denial names the operation and the resource but never says
//! whether it exists. List RPCs show only what the caller may describe.
//! A test walks the services' descriptors and fails if an RPC has no row.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tonic::{Code, Status};

use super::connections::ConnInfo;
use super::status;
use crate::error::{Error, Reason};
use crate::security::acl::{self, Operation, ResourceType, CLUSTER};
use crate::security::{quota, Refused, Security};

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, authenticated or not (probes, discovery, identity).
    Public,
    /// Callers allowed `Operation` on the resource of that type the request
    /// names (the cluster: checked before the handler runs).
    Needs(Operation, ResourceType),
    /// Any authenticated caller; the reply lists only the resources of the
    /// type it may describe.
    Lists(ResourceType),
    /// Any authenticated caller, about itself (InitProducer: writer ids are
    /// scoped to the principal; producing still needs write).
    Authenticated,
}

use Operation::*;
use ResourceType::*;
use Rule::*;

/// Every RPC's rule, by its gRPC path. Heartbeat and CommitOffsets also
/// need read on each topic they name (checked by their handlers).
pub const RULES: &[(&str, Rule)] = &[
    ("/strata.v1.Broker/Produce", Needs(Write, Topic)),
    ("/strata.v1.Broker/ProduceStream", Needs(Write, Topic)),
    ("/strata.v1.Broker/Fetch", Needs(Read, Topic)),
    ("/strata.v1.Broker/Subscribe", Needs(Read, Topic)),
    ("/strata.v1.Broker/ListOffsets", Needs(Describe, Topic)),
    ("/strata.v1.Broker/InitProducer", Authenticated),
    ("/strata.v1.Admin/CreateTopic", Needs(Create, Topic)),
    ("/strata.v1.Admin/DeleteTopic", Needs(Delete, Topic)),
    ("/strata.v1.Admin/ListTopics", Lists(Topic)),
    ("/strata.v1.Admin/DescribeTopic", Needs(Describe, Topic)),
    ("/strata.v1.Admin/AlterTopicConfig", Needs(Alter, Topic)),
    ("/strata.v1.Admin/CreatePartitions", Needs(Alter, Topic)),
    ("/strata.v1.Admin/WhoAmI", Public),
    ("/strata.v1.Admin/CreateAcl", Needs(Alter, Cluster)),
    ("/strata.v1.Admin/ListAcls", Needs(Describe, Cluster)),
    ("/strata.v1.Admin/DeleteAcl", Needs(Alter, Cluster)),
    ("/strata.v1.Admin/CreateToken", Needs(Alter, Cluster)),
    ("/strata.v1.Admin/ListTokens", Needs(Describe, Cluster)),
    ("/strata.v1.Admin/RevokeToken", Needs(Alter, Cluster)),
    ("/strata.v1.Admin/SetUser", Needs(Alter, Cluster)),
    ("/strata.v1.Admin/DeleteUser", Needs(Alter, Cluster)),
    ("/strata.v1.Admin/ListUsers", Needs(Describe, Cluster)),
    ("/strata.v1.Groups/Heartbeat", Needs(Read, Group)),
    ("/strata.v1.Groups/CommitOffsets", Needs(Read, Group)),
    ("/strata.v1.Groups/FetchOffsets", Needs(Describe, Group)),
    ("/strata.v1.Groups/ListGroups", Lists(Group)),
    ("/strata.v1.Groups/DescribeGroup", Needs(Describe, Group)),
    ("/strata.v1.Groups/ResetOffsets", Needs(Alter, Group)),
    ("/strata.v1.Groups/DeleteGroup", Needs(Delete, Group)),
    ("/grpc.health.v1.Health/Check", Public),
    ("/grpc.health.v1.Health/Watch", Public),
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Public),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Public),
];

/// The rule for `path` and the path as the table spells it; None for a
/// path no service has (tonic answers those UNIMPLEMENTED).
pub fn rule(path: &str) -> Option<(&'static str, Rule)> {
    RULES.iter().find(|(p, _)| *p == path).copied()
}

/// Authenticates requests and admits them to their services.
#[derive(Clone)]
pub struct Authorizer {
    security: Arc<Security>,
}

impl Authorizer {
    /// Over the node's security state.
    pub fn new(security: Arc<Security>) -> Self {
        Authorizer { security }
    }

    /// The caller of a request to `path`, or why it may not call it.
    pub fn admit(&self, path: &str, headers: &http::HeaderMap, conn: Option<&ConnInfo>) -> Result<Caller, Status> {
        let peer = conn.map(|c| c.peer);
        let Some((path, rule)) = rule(path) else {
            // Unknown paths: tonic says UNIMPLEMENTED, revealing nothing;
            // were one served, it would be allowed nothing.
            return Ok(Caller {
                principal: None,
                peer,
                checks: Checks::Deny,
                security: None,
                throttled: Duration::ZERO,
            });
        };
        let authenticated = match credentials(headers) {
            Some(Ok(Presented::Token(token))) => Some(self.security.authenticate_token(token)),
            Some(Ok(Presented::Password(user, password))) => {
                let client = peer.map_or_else(String::new, |p| p.ip().to_string());
                Some(self.security.authenticate_password(&user, &password, &client, rule == Public))
            }
            Some(Err(why)) => Some(Err(why)),
            None => None,
        };
        let principal = match authenticated {
            Some(Ok(p)) => Some(Arc::<str>::from(p)),
            // Probes and WhoAmI answer whatever the credentials: a probe
            // must not fail because a token expired.
            Some(Err(_)) if rule == Public => None,
            Some(Err(why)) => return Err(unauthenticated(why)),
            None => conn.and_then(|c| c.principal()).map(Arc::<str>::from),
        };
        let security = Some(self.security.clone());
        let off = Caller {
            principal: principal.clone(),
            peer,
            checks: Checks::Off,
            security: security.clone(),
            throttled: Duration::ZERO,
        };
        if rule == Public {
            return Ok(off);
        }
        let mut caller = self.authorize(path, rule, principal, peer, off)?;
        caller.throttled = caller.charge(quota::Kind::Requests, 1);
        Ok(caller)
    }

    /// The caller of a non-public RPC, or why it may not call it.
    fn authorize(
        &self,
        path: &'static str,
        rule: Rule,
        principal: Option<Arc<str>>,
        peer: Option<SocketAddr>,
        off: Caller,
    ) -> Result<Caller, Status> {
        if !self.security.enabled() {
            // Access control itself (ACLs, tokens, users: the cluster rules)
            // needs a super user even with auth off, so no one can plant
            // credentials to use once it is turned on.
            if let Needs(_, Cluster) = rule {
                match principal.as_deref() {
                    Some(p) if self.security.is_super_user(p) => {}
                    Some(p) => {
                        return Err(status::refusal(
                            Code::PermissionDenied,
                            Reason::PermissionDenied,
                            format!(
                                "principal {p:?} may not call {path}: access control is changed and shown only by super users (auth.super_users, auth.bootstrap_token), also while auth.enabled is false"
                            ),
                            vec![
                                ("principal", p.to_string()),
                                ("operation", "all".into()),
                                ("resource_type", "cluster".into()),
                                ("resource", CLUSTER.into()),
                            ],
                        ))
                    }
                    None => {
                        return Err(status::refusal(
                            Code::Unauthenticated,
                            Reason::Unauthenticated,
                            format!(
                                "{path} needs a super user (auth.super_users, or the auth.bootstrap_token as \"authorization: Bearer <token>\"), also while auth.enabled is false"
                            ),
                            Vec::new(),
                        ))
                    }
                }
            }
            return Ok(off);
        }
        let security = off.security.clone();
        let Some(p) = principal else {
            return Err(status::refusal(
                Code::Unauthenticated,
                Reason::Unauthenticated,
                format!(
                    "{path} needs an authenticated principal (an API token as \"authorization: Bearer <token>\", a user and password as \"authorization: Basic <base64 user:password>\", or a client certificate with mutual TLS): the broker has auth.enabled"
                ),
                Vec::new(),
            ));
        };
        if self.security.is_super_user(&p) {
            return Ok(off);
        }
        let caller =
            Caller { principal: Some(p), peer, checks: Checks::On { rule, path }, security, throttled: Duration::ZERO };
        if let Needs(operation, Cluster) = rule {
            caller.may_do(operation, Cluster, CLUSTER).map_err(Status::from)?;
        }
        Ok(caller)
    }
}

/// Credentials in an `authorization` header.
enum Presented<'a> {
    /// `Bearer <token>`.
    Token(&'a str),
    /// `Basic base64(user:password)`.
    Password(String, String),
}

/// An UNAUTHENTICATED status for credentials that did not prove anyone.
fn unauthenticated(why: Refused) -> Status {
    let (reason, metadata) = match why {
        Refused::TooManyAttempts => (Reason::TooManyPasswordChecks, Vec::new()),
        why => (Reason::BadCredentials, vec![("credential", why.credential().to_string())]),
    };
    status::refusal(Code::Unauthenticated, reason, why.to_string(), metadata)
}

/// The credentials of the request's `authorization` header, if it has one;
/// two or more are refused (which one a client meant is not guessed).
fn credentials(headers: &http::HeaderMap) -> Option<Result<Presented<'_>, Refused>> {
    use base64::Engine;
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return Some(Err(Refused::Ambiguous));
    }
    let Some((scheme, rest)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return Some(Err(Refused::MalformedToken));
    };
    let rest = rest.trim();
    Some(if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Presented::Token(rest))
    } else if scheme.eq_ignore_ascii_case("basic") {
        base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| Presented::Password(u.to_string(), p.to_string())))
            .ok_or(Refused::BadPassword)
    } else {
        Err(Refused::MalformedToken)
    })
}

/// Who made a request, as its handler sees it: its principal, and the
/// checks still to make on the names it acts on. The RPC layer puts one in
/// every admitted request's extensions.
#[derive(Clone)]
pub struct Caller {
    principal: Option<Arc<str>>,
    peer: Option<SocketAddr>,
    checks: Checks,
    /// For quotas (None only outside the RPC layer).
    security: Option<Arc<Security>>,
    /// How long the RPC layer held the request for the request-rate quota.
    pub throttled: Duration,
}

#[derive(Clone)]
enum Checks {
    /// Authorization off, a public RPC, or a super user.
    Off,
    /// A request that did not come through the RPC layer: nothing allowed.
    Deny,
    /// Each resource needs an ACL that allows it.
    On { rule: Rule, path: &'static str },
}

impl Caller {
    /// The caller of `req` (put there by the RPC layer).
    pub fn of<T>(req: &tonic::Request<T>) -> Caller {
        // Only a request that did not come through the RPC layer lacks one:
        // deny it everything rather than allow it anything.
        req.extensions().get::<Caller>().cloned().unwrap_or(Caller {
            principal: None,
            peer: None,
            checks: Checks::Deny,
            security: None,
            throttled: Duration::ZERO,
        })
    }

    /// The authenticated principal, if any.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The client's IP address (None outside the RPC layer).
    pub fn ip(&self) -> Option<IpAddr> {
        self.peer.map(|p| p.ip())
    }

    /// Whether the caller may do its RPC's operation on `name` (a resource
    /// of the RPC's type): PERMISSION_DENIED naming both if not.
    pub fn may(&self, name: &str) -> Result<(), Error> {
        match &self.checks {
            Checks::Off => Ok(()),
            Checks::On { rule: Needs(operation, resource_type), .. } => self.may_do(*operation, *resource_type, name),
            Checks::On { rule: Lists(resource_type), .. } => self.may_do(Describe, *resource_type, name),
            Checks::On { rule: Authenticated, .. } => Ok(()),
            Checks::Deny | Checks::On { rule: Public, .. } => self.may_do(All, Cluster, name),
        }
    }

    /// Whether the caller may do `operation` on the resource `name` of type
    /// `resource_type`.
    pub fn may_do(&self, operation: Operation, resource_type: ResourceType, name: &str) -> Result<(), Error> {
        let path = match &self.checks {
            Checks::Off => return Ok(()),
            Checks::On { path, .. } => path,
            Checks::Deny => "(outside the RPC layer)",
        };
        if self.allows(operation, resource_type, name) {
            return Ok(());
        }
        let principal = self.principal.as_deref().unwrap_or("");
        let e = Error::PermissionDenied {
            principal: principal.to_string(),
            operation: operation.to_string(),
            resource_type: resource_type.to_string(),
            resource: name.to_string(),
        };
        log_denial(path, principal, self.peer, &e.to_string(), "PermissionDenied");
        Err(e)
    }

    /// Whether the caller may describe `name` (for filtering lists).
    pub fn can_describe(&self, resource_type: ResourceType, name: &str) -> bool {
        self.allows(Describe, resource_type, name)
    }

    fn allows(&self, operation: Operation, resource_type: ResourceType, resource_name: &str) -> bool {
        match &self.checks {
            Checks::Off => true,
            Checks::Deny => false,
            Checks::On { .. } => self.security.as_ref().is_some_and(|security| {
                security.allowed(&acl::Request {
                    principal: self.principal.as_deref().unwrap_or(""),
                    host: self.peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip()),
                    operation,
                    resource_type,
                    resource_name,
                })
            }),
        }
    }

    /// Charges `cost` of `kind` to the caller's quota (its principal's, or
    /// its IP's without one); returns how long to hold it back.
    pub fn charge(&self, kind: quota::Kind, cost: u64) -> Duration {
        let Some(security) = self.security.as_ref().filter(|s| s.quotas.any()) else { return Duration::ZERO };
        let who: std::borrow::Cow<'_, str> = match (&self.principal, self.peer) {
            (Some(p), _) => p.as_ref().into(),
            (None, Some(peer)) => format!("ip:{}", peer.ip()).into(),
            (None, None) => "".into(),
        };
        let wait = security.quotas.charge(&who, kind, cost, std::time::Instant::now());
        if !wait.is_zero() {
            let kind = match kind {
                quota::Kind::ProduceBytes => "produce_bytes",
                quota::Kind::FetchBytes => "fetch_bytes",
                quota::Kind::Requests => "requests",
            };
            metrics::counter!("strata_quota_throttled_total", "kind" => kind).increment(1);
            metrics::counter!("strata_quota_throttle_ms_total", "kind" => kind).increment(wait.as_millis() as u64);
        }
        wait
    }
}

/// Logs a denial: at most one line a second (the first denial of that
/// second, with its principal, RPC and peer, and how many were not logged
/// since the last line), and counts every one.
pub fn log_denial(path: &str, principal: &str, peer: Option<SocketAddr>, message: &str, code: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    metrics::counter!("strata_authorization_denied_total", "code" => code).increment(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    if LAST_SECOND.swap(now, Ordering::Relaxed) == now {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    tracing::warn!(
        rpc = path,
        principal = if principal.is_empty() { "(anonymous)" } else { principal },
        peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
        code,
        denied_since_last_line = SUPPRESSED.swap(0, Ordering::Relaxed),
        "request denied: {message}"
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
}
