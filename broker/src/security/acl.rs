//! ACLs: "principal P is allowed (or denied) operation O from host H on the
//! resources matching R", as Kafka has them, and the decision over a set of
//! them. Pure: no I/O, no clock.
//!
//! The decision for a request (principal, host, operation, resource):
//! - a resource that is an internal topic (`__` names) matches no ACL;
//! - any matching DENY: denied (deny wins);
//! - else any matching ALLOW: allowed;
//! - else denied (no ACL means deny).
//!
//! An ACL matches when its principal is the caller's or `*`, its host the
//! caller's IP or `*`, its resource type the resource's, its name equal to
//! the resource's (LITERAL; `*` = every resource of the type) or a prefix
//! of it (PREFIXED), and its operation the one asked, or ALL. As in Kafka,
//! an ALLOW of read, write, delete or alter also allows describe.

use std::fmt;
use std::net::IpAddr;

use crate::error::{Error, Result};

/// What a request does, as an ACL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Every operation (in ACLs only; no request asks for it).
    All,
    /// Read records, offsets or a group's progress; join a group.
    Read,
    /// Append records.
    Write,
    /// Create a topic.
    Create,
    /// Delete a topic or a group.
    Delete,
    /// Change settings, partitions, offsets, ACLs or tokens.
    Alter,
    /// See that a resource exists and how it is set up.
    Describe,
}

/// The kind of resource a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The broker as a whole; its one resource is named [`CLUSTER`].
    Cluster,
}

/// The name of the one cluster resource.
pub const CLUSTER: &str = "cluster";

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    /// Equal (or `*`: every resource of the type).
    Literal,
    /// A prefix of the resource's name.
    Prefixed,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Allows, unless a DENY also matches.
    Allow,
    /// Denies, whatever else matches.
    Deny,
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Acl {
    /// A principal, or `*` for every authenticated principal.
    pub principal: String,
    /// An IP address, or `*`.
    pub host: String,
    /// What it allows or denies.
    pub operation: Operation,
    /// On what kind of resource.
    pub resource_type: ResourceType,
    /// How `resource_name` matches.
    pub pattern_type: PatternType,
    /// The name (or prefix) of the resources.
    pub resource_name: String,
    /// Allow or deny.
    pub permission: Permission,
}

/// Longest principal, host or resource name an ACL takes.
pub const MAX_ACL_FIELD_BYTES: usize = 255;

/// Checks a name an ACL, token or user carries: 1 to
/// [`MAX_ACL_FIELD_BYTES`] bytes, no control character nor any of `also`.
pub fn check_name(what: &str, v: &str, also: &[char]) -> Result<()> {
    if v.is_empty() || v.len() > MAX_ACL_FIELD_BYTES || v.chars().any(|c| c.is_control() || also.contains(&c)) {
        let extra: String = also.iter().map(|c| format!(" or {c:?}")).collect();
        return Err(Error::InvalidArgument(format!(
            "{what} {v:?} must be 1-{MAX_ACL_FIELD_BYTES} bytes without control characters{extra}"
        )));
    }
    Ok(())
}

/// What a request asks for, for [`decide`].
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The authenticated principal.
    pub principal: &'a str,
    /// The client's address.
    pub host: IpAddr,
    /// The operation.
    pub operation: Operation,
    /// The resource's type.
    pub resource_type: ResourceType,
    /// The resource's name ([`CLUSTER`] for the cluster).
    pub resource_name: &'a str,
}

impl Acl {
    /// Checks the fields; normalises an empty host to `*`.
    pub fn validate(mut self) -> Result<Acl> {
        let field = |what: &str, v: &str| check_name(&format!("acl {what}"), v, &[]);
        field("principal", &self.principal)?;
        if self.host.is_empty() {
            self.host = "*".into();
        }
        if self.host != "*" {
            // Stored in one spelling, so an ACL is deleted by any spelling of it.
            let ip = self.host.parse::<IpAddr>().map_err(|_| {
                Error::InvalidArgument(format!("acl host {:?} must be an IP address (v4 or v6) or \"*\"", self.host))
            })?;
            self.host = canonical(ip).to_string();
        }
        field("resource_name", &self.resource_name)?;
        if self.resource_type == ResourceType::Cluster
            && (self.pattern_type != PatternType::Literal || self.resource_name != CLUSTER)
        {
            return Err(Error::InvalidArgument(format!(
                "a cluster acl's resource is the literal name {CLUSTER:?}, not {:?} {:?}",
                self.pattern_type, self.resource_name
            )));
        }
        Ok(self)
    }

    fn matches(&self, r: &Request<'_>) -> bool {
        (self.principal == "*" || self.principal == r.principal)
            && (self.host == "*" || self.host.parse::<IpAddr>().is_ok_and(|h| canonical(h) == canonical(r.host)))
            && self.resource_type == r.resource_type
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == "*" || self.resource_name == r.resource_name,
                PatternType::Prefixed => r.resource_name.starts_with(&self.resource_name),
            }
            && (self.operation == Operation::All
                || self.operation == r.operation
                || (self.permission == Permission::Allow
                    && r.operation == Operation::Describe
                    && matches!(
                        self.operation,
                        Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                    )))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// True if `acls` allow `r` (see the module documentation).
pub fn decide<'a>(acls: impl IntoIterator<Item = &'a Acl>, r: &Request<'_>) -> bool {
    if r.resource_type == ResourceType::Topic && crate::partition::is_internal(r.resource_name) {
        return false;
    }
    let mut allowed = false;
    for acl in acls {
        if acl.matches(r) {
            match acl.permission {
                Permission::Deny => return false,
                Permission::Allow => allowed = true,
            }
        }
    }
    allowed
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::All => "all",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Alter => "alter",
            Operation::Describe => "describe",
        })
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn acl(principal: &str, op: Operation, rt: ResourceType, pt: PatternType, name: &str, perm: Permission) -> Acl {
        Acl {
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            resource_type: rt,
            pattern_type: pt,
            resource_name: name.into(),
            permission: perm,
        }
    }

    fn req<'a>(principal: &'a str, op: Operation, rt: ResourceType, name: &'a str) -> Request<'a> {
        Request { principal, host: "10.0.0.1".parse().unwrap(), operation: op, resource_type: rt, resource_name: name }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn no_acl_denies_and_deny_beats_allow() {
        let r = req("svc", Write, Topic, "orders");
        assert!(!decide(&[], &r));
        let allow = acl("svc", Write, Topic, Literal, "orders", Allow);
        assert!(decide([&allow], &r));
        let deny = acl("*", All, Topic, Prefixed, "ord", Deny);
        assert!(!decide([&allow, &deny], &r));
        assert!(!decide([&deny, &allow], &r));
    }

    #[test]
    fn patterns_principals_hosts_and_implied_describe() {
        let prefix = acl("svc", Read, Topic, Prefixed, "orders.", Allow);
        assert!(decide([&prefix], &req("svc", Read, Topic, "orders.eu")));
        assert!(!decide([&prefix], &req("svc", Read, Topic, "orders")));
        assert!(!decide([&prefix], &req("other", Read, Topic, "orders.eu")));
        assert!(decide([&prefix], &req("svc", Describe, Topic, "orders.eu")), "read implies describe");
        assert!(!decide([&prefix], &req("svc", Write, Topic, "orders.eu")));
        assert!(!decide([&prefix], &req("svc", Read, Group, "orders.eu")), "type must match");
        let star = acl("*", All, Group, Literal, "*", Allow);
        assert!(decide([&star], &req("anyone", Delete, Group, "g")));
        let mut from = acl("svc", Write, Topic, Literal, "t", Allow);
        from.host = "10.0.0.2".into();
        assert!(!decide([&from], &req("svc", Write, Topic, "t")));
        from.host = "::ffff:10.0.0.1".into();
        assert!(decide([&from], &req("svc", Write, Topic, "t")), "a mapped v6 address is its v4 address");
        assert_eq!(from.validate().unwrap().host, "10.0.0.1", "stored in one spelling");
        let deny_describe = acl("svc", Describe, Topic, Literal, "t", Deny);
        let allow_read = acl("svc", Read, Topic, Literal, "t", Allow);
        assert!(decide([&deny_describe, &allow_read], &req("svc", Read, Topic, "t")));
        assert!(!decide([&deny_describe, &allow_read], &req("svc", Describe, Topic, "t")));
    }

    #[test]
    fn internal_topics_match_no_acl() {
        let all = acl("*", All, Topic, Literal, "*", Allow);
        assert!(!decide([&all], &req("svc", Read, Topic, "__consumer_offsets")));
        assert!(decide([&all], &req("svc", Read, Topic, "orders")));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |a: Acl, says: &str| {
            let e = a.validate().unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        };
        bad(acl("", Read, Topic, Literal, "t", Allow), "principal");
        bad(acl("p", Read, Topic, Literal, "", Allow), "resource_name");
        bad(acl("p", Read, Cluster, Prefixed, "c", Allow), "cluster");
        let mut h = acl("p", Read, Topic, Literal, "t", Allow);
        h.host = "example.com".into();
        bad(h, "IP address");
        let mut ok = acl("p", Read, Topic, Literal, "t", Allow);
        ok.host = String::new();
        assert_eq!(ok.validate().unwrap().host, "*");
    }

    fn op() -> impl Strategy<Value = Operation> {
        prop::sample::select(vec![All, Read, Write, Create, Delete, Alter, Describe])
    }

    fn any_acl() -> impl Strategy<Value = Acl> {
        (
            prop::sample::select(vec!["a", "b", "*"]),
            op(),
            prop::sample::select(vec![Topic, Group]),
            prop::sample::select(vec![Literal, Prefixed]),
            prop::sample::select(vec!["t", "t1", "*", "u"]),
            prop::sample::select(vec![Allow, Deny]),
        )
            .prop_map(|(p, o, rt, pt, n, perm)| acl(p, o, rt, pt, n, perm))
    }

    proptest! {
        /// Adding an ALLOW never denies what was allowed; adding a DENY
        /// never allows what was denied; the order of ACLs never matters.
        #[test]
        fn decisions_are_monotone_and_order_free(acls in prop::collection::vec(any_acl(), 0..8), extra in any_acl(),
                                                 p in prop::sample::select(vec!["a", "b"]), o in op(),
                                                 n in prop::sample::select(vec!["t", "t1", "u"])) {
            prop_assume!(o != All);
            let r = req(p, o, Topic, n);
            let before = decide(&acls, &r);
            let mut with = acls.clone();
            with.push(extra.clone());
            let after = decide(&with, &r);
            match extra.permission {
                Allow => prop_assert!(!before || after),
                Deny => prop_assert!(before || !after),
            }
            with.reverse();
            prop_assert_eq!(decide(&with, &r), after);
        }
    }
}
