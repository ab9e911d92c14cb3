//! Authentication (API tokens, passwords, the bootstrap token) and authorization
//! (ACLs) over the real broker, plaintext on loopback: every RPC for every
//! kind of caller, deny over allow, prefixes, the declared writer, the
//! internal topics, and ACLs and tokens across kill -9.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{eventually, Broker};
use prost::Message;
use strata_client::proto::*;
use strata_client::{Client, Credentials};
use tonic::Code;

const BOOTSTRAP: &str = "bootstrap-token-of-at-least-32-characters";

fn start(dir: &std::path::Path) -> Broker {
    Broker::start_with(dir, &[], &[("STRATA_AUTH__ENABLED", "true"), ("STRATA_AUTH__BOOTSTRAP_TOKEN", BOOTSTRAP)])
}

async fn client(addr: &str, token: Option<&str>) -> Client {
    let channel = strata_client::channel(addr, None).await.unwrap();
    Client::from_channel(channel, token.map_or_else(Credentials::none, |t| Credentials::token(t).unwrap()))
}

fn acl(principal: &str, op: AclOperation, rt: ResourceType, prefixed: bool, name: &str, deny: bool) -> Acl {
    Acl {
        principal: principal.into(),
        host: String::new(),
        operation: op as i32,
        resource_type: rt as i32,
        pattern_type: if prefixed { PatternType::Prefixed } else { PatternType::Literal } as i32,
        resource_name: name.into(),
        permission: if deny { AclPermission::Deny } else { AclPermission::Allow } as i32,
    }
}

async fn add_acl(admin: &mut Client, a: Acl) {
    assert!(admin.admin.create_acl(CreateAclRequest { acl: Some(a) }).await.unwrap().into_inner().created);
}

async fn token_for(admin: &mut Client, principal: &str, ttl_ms: u64) -> CreateTokenResponse {
    admin.admin.create_token(CreateTokenRequest { principal: principal.into(), ttl_ms }).await.unwrap().into_inner()
}

/// Every method of the strata services, from the descriptors.
fn strata_methods() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(strata_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = BTreeSet::new();
    for file in set.file {
        for s in &file.service {
            for m in &s.method {
                out.insert(m.name().to_string());
            }
        }
    }
    out
}

/// Calls every RPC once, on resources named after `i` (`t-i`, `g-i`): Ok,
/// or the status code (a produce stream's per-request error counts).
async fn every_rpc(c: &mut Client, i: usize, token_to_revoke: &str) -> Vec<(&'static str, Result<(), Code>)> {
    let code = |r: Result<(), tonic::Status>| r.map_err(|s| s.code());
    let (t, g) = (format!("t-{i}"), format!("g-{i}"));
    let rec = || vec![strata_client::record(None, bytes::Bytes::from_static(b"x"))];
    let produce = |topic: &str| ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        records: rec(),
        acks: Acks::Written as i32,
        request_id: 7,
        omit_record_positions: false,
        ..Default::default()
    };
    let tps = |topic: &str| vec![TopicPartitions { topic: topic.into(), partitions: vec![0] }];
    let probe = acl("someone", AclOperation::Read, ResourceType::Topic, false, &format!("x-{i}"), false);
    let mut out = Vec::new();
    out.push(("Produce", code(c.broker.produce(produce(&t)).await.map(|_| ()))));
    let stream = c.broker.produce_stream(tokio_stream::iter([produce(&t)])).await;
    out.push((
        "ProduceStream",
        match stream {
            Err(s) => Err(s.code()),
            Ok(r) => {
                let first = r.into_inner().message().await.unwrap().unwrap();
                match first.error {
                    Some(e) => Err(Code::from(e.code)),
                    None => Ok(()),
                }
            }
        },
    ));
    let fetch = common::fetch_request(&t);
    out.push(("Fetch", code(c.broker.fetch(fetch).await.map(|_| ()))));
    let sub = SubscribeRequest { topic: t.clone(), partition: 0, offset: Some(0), ..Default::default() };
    out.push(("Subscribe", code(c.broker.subscribe(sub).await.map(|_| ()))));
    let lo =
        ListOffsetsRequest { topic: t.clone(), partition: 0, spec: Some(list_offsets_request::Spec::Latest(true)) };
    out.push(("ListOffsets", code(c.broker.list_offsets(lo).await.map(|_| ()))));
    let init = InitProducerRequest { writer_id: format!("w-{i}") };
    out.push(("InitProducer", code(c.broker.init_producer(init).await.map(|_| ()))));
    let create = CreateTopicRequest { name: format!("t-{i}-new"), partitions: 1, configs: Default::default() };
    out.push(("CreateTopic", code(c.admin.create_topic(create).await.map(|_| ()))));
    out.push(("ListTopics", code(c.admin.list_topics(ListTopicsRequest::default()).await.map(|_| ()))));
    out.push((
        "DescribeTopic",
        code(c.admin.describe_topic(DescribeTopicRequest { name: t.clone() }).await.map(|_| ())),
    ));
    let alter = AlterTopicConfigRequest {
        name: t.clone(),
        set: [("retention.ms".to_string(), "-1".to_string())].into(),
        reset: vec![],
    };
    out.push(("AlterTopicConfig", code(c.admin.alter_topic_config(alter).await.map(|_| ()))));
    let grow = CreatePartitionsRequest { name: t.clone(), total: 2 };
    out.push(("CreatePartitions", code(c.admin.create_partitions(grow).await.map(|_| ()))));
    out.push(("WhoAmI", code(c.admin.who_am_i(WhoAmIRequest {}).await.map(|_| ()))));
    out.push(("CreateAcl", code(c.admin.create_acl(CreateAclRequest { acl: Some(probe.clone()) }).await.map(|_| ()))));
    out.push(("ListAcls", code(c.admin.list_acls(ListAclsRequest::default()).await.map(|_| ()))));
    out.push(("DeleteAcl", code(c.admin.delete_acl(DeleteAclRequest { acl: Some(probe) }).await.map(|_| ()))));
    let tok = CreateTokenRequest { principal: "someone".into(), ttl_ms: 0 };
    out.push(("CreateToken", code(c.admin.create_token(tok).await.map(|_| ()))));
    out.push(("ListTokens", code(c.admin.list_tokens(ListTokensRequest::default()).await.map(|_| ()))));
    let revoke = RevokeTokenRequest { token_id: token_to_revoke.into() };
    out.push(("RevokeToken", code(c.admin.revoke_token(revoke).await.map(|_| ()))));
    let user = SetUserRequest { username: format!("user-{i}"), password: "a long password".into() };
    out.push(("SetUser", code(c.admin.set_user(user).await.map(|_| ()))));
    out.push(("ListUsers", code(c.admin.list_users(ListUsersRequest {}).await.map(|_| ()))));
    let gone = DeleteUserRequest { username: format!("user-{i}") };
    out.push(("DeleteUser", code(c.admin.delete_user(gone).await.map(|_| ()))));
    let commit = CommitOffsetsRequest {
        group_id: g.clone(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: vec![OffsetCommit { topic: t.clone(), partition: 0, offset: 1, metadata: String::new() }],
    };
    out.push(("CommitOffsets", code(c.groups.commit_offsets(commit).await.map(|_| ()))));
    let fo = FetchOffsetsRequest { group_id: g.clone(), partitions: tps(&t) };
    out.push(("FetchOffsets", code(c.groups.fetch_offsets(fo).await.map(|_| ()))));
    out.push(("ListGroups", code(c.groups.list_groups(ListGroupsRequest {}).await.map(|_| ()))));
    out.push((
        "DescribeGroup",
        code(c.groups.describe_group(DescribeGroupRequest { group_id: g.clone() }).await.map(|_| ())),
    ));
    let reset = ResetOffsetsRequest {
        group_id: g.clone(),
        partitions: tps(&t),
        to: Some(reset_offsets_request::To::Earliest(true)),
        dry_run: false,
    };
    out.push(("ResetOffsets", code(c.groups.reset_offsets(reset).await.map(|_| ()))));
    let join = HeartbeatRequest {
        group_id: g.clone(),
        member_epoch: 0,
        topics: vec![t.clone()],
        session_timeout_ms: 30_000,
        ..Default::default()
    };
    let joined = c.groups.heartbeat(join).await;
    out.push(("Heartbeat", code(joined.as_ref().map(|_| ()).map_err(Clone::clone))));
    if let Ok(j) = joined {
        let leave = HeartbeatRequest {
            group_id: g.clone(),
            member_id: j.into_inner().member_id,
            member_epoch: -1,
            ..Default::default()
        };
        c.groups.heartbeat(leave).await.unwrap();
    }
    out.push((
        "DeleteGroup",
        code(c.groups.delete_group(DeleteGroupRequest { group_id: g.clone() }).await.map(|_| ())),
    ));
    out.push((
        "DeleteTopic",
        code(c.admin.delete_topic(DeleteTopicRequest { name: format!("t-{i}-new") }).await.map(|_| ())),
    ));
    out
}

/// The authorization matrix: every strata RPC × {anonymous, authenticated
/// without ACLs, allowed (by prefix ACLs), allowed but denied (deny wins),
/// super user}. List RPCs answer every authenticated caller with only what
/// it may describe.
#[tokio::test]
async fn every_rpc_for_every_kind_of_caller() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path());
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    use AclOperation::All;
    let nobody = token_for(&mut admin, "nobody", 0).await.token;
    let allowed = token_for(&mut admin, "allowed", 0).await.token;
    let denied = token_for(&mut admin, "denied", 0).await.token;
    for p in ["allowed", "denied"] {
        add_acl(&mut admin, acl(p, All, ResourceType::Topic, true, "t-", false)).await;
        add_acl(&mut admin, acl(p, All, ResourceType::Group, true, "g-", false)).await;
        add_acl(&mut admin, acl(p, All, ResourceType::Cluster, false, "cluster", false)).await;
    }
    add_acl(&mut admin, acl("denied", All, ResourceType::Topic, false, "*", true)).await;
    add_acl(&mut admin, acl("denied", All, ResourceType::Group, true, "g", true)).await;
    add_acl(&mut admin, acl("denied", AclOperation::Alter, ResourceType::Cluster, false, "cluster", true)).await;
    add_acl(&mut admin, acl("denied", AclOperation::Describe, ResourceType::Cluster, false, "cluster", true)).await;

    let callers: [(&str, Option<&str>); 5] = [
        ("anonymous", None),
        ("no ACLs", Some(&nobody)),
        ("allowed", Some(&allowed)),
        ("denied", Some(&denied)),
        ("super user", Some(BOOTSTRAP)),
    ];
    for (i, (who, token)) in callers.iter().enumerate() {
        admin.create_topic(&format!("t-{i}"), 1, []).await.unwrap();
        let victim = token_for(&mut admin, "victim", 0).await.info.unwrap().token_id;
        let mut c = client(&b.addr, *token).await;
        let results = every_rpc(&mut c, i, &victim).await;
        let called: BTreeSet<String> = results.iter().map(|(r, _)| r.to_string()).collect();
        assert_eq!(called, strata_methods(), "the matrix must call every strata RPC");
        for (rpc, got) in results {
            let public = rpc == "WhoAmI";
            // Lists answer with what the caller may describe; InitProducer
            // needs only a principal (writer ids are scoped to it).
            let lists = matches!(rpc, "ListTopics" | "ListGroups" | "InitProducer");
            let want = match *who {
                _ if public => Ok(()),
                "anonymous" => Err(Code::Unauthenticated),
                "no ACLs" | "denied" if lists => Ok(()),
                "no ACLs" | "denied" => Err(Code::PermissionDenied),
                _ => Ok(()),
            };
            assert_eq!(got, want, "{who}: {rpc}");
        }
        // Lists show only what the caller may describe.
        let topics: Vec<String> = match c.admin.list_topics(ListTopicsRequest::default()).await {
            Ok(r) => r.into_inner().topics.into_iter().map(|t| t.name).collect(),
            Err(_) => Vec::new(),
        };
        let sees_own = topics.contains(&format!("t-{i}"));
        assert_eq!(sees_own, matches!(*who, "allowed" | "super user"), "{who} lists {topics:?}");
        if *who == "allowed" {
            assert!(topics.iter().all(|t| t.starts_with("t-")), "{topics:?}");
        }
        // Denied calls changed nothing: the victim token still exists, the topic kept one partition.
        let d = admin.admin.describe_topic(DescribeTopicRequest { name: format!("t-{i}") }).await.unwrap().into_inner();
        let expect_changed = matches!(*who, "allowed" | "super user");
        assert_eq!(d.topic.unwrap().partitions.len() == 2, expect_changed, "{who}: CreatePartitions");
        let tokens = admin.admin.list_tokens(ListTokensRequest { principal: "victim".into() }).await.unwrap();
        assert_eq!(
            tokens.into_inner().tokens.iter().any(|t| t.token_id == victim),
            !expect_changed,
            "{who}: RevokeToken"
        );
    }
    // Health is public, whatever the credentials.
    for token in [None, Some("strata_not_a_real_token")] {
        let ch = strata_client::channel(&b.addr, None).await.unwrap();
        let creds = token.map_or_else(Credentials::none, |t| Credentials::token(t).unwrap());
        let mut h = tonic_health::pb::health_client::HealthClient::with_interceptor(ch, creds);
        h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    }
}

/// Each way a token can be bad is UNAUTHENTICATED, and the message says which.
#[tokio::test]
async fn unknown_malformed_revoked_and_expired_tokens_are_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path());
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    add_acl(&mut admin, acl("svc", AclOperation::Describe, ResourceType::Cluster, false, "cluster", false)).await;
    let good = token_for(&mut admin, "svc", 0).await;
    let list = |token: String| {
        let addr = b.addr.clone();
        async move { client(&addr, Some(&token)).await.admin.list_acls(ListAclsRequest::default()).await.map(|_| ()) }
    };
    list(good.token.clone()).await.unwrap();
    let (id, _) = good.token.strip_prefix("strata_").unwrap().split_once('_').unwrap();
    let wrong_secret = format!("strata_{id}_{}", "0".repeat(64));
    let unknown = format!("strata_{}_{}", "f".repeat(16), "0".repeat(64));
    for (case, token, says) in [
        ("wrong secret", wrong_secret, "unknown or revoked"),
        ("unknown id", unknown, "unknown or revoked"),
        ("malformed", "hunter2".to_string(), "not a Strata API token"),
    ] {
        let err = list(token).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{case}: {err:?}");
        assert!(err.message().contains(says), "{case}: {}", err.message());
    }
    // A header that is not "Bearer <token>".
    let mut raw = client(&b.addr, None).await;
    let mut req = tonic::Request::new(ListAclsRequest::default());
    req.metadata_mut().insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    assert_eq!(raw.admin.list_acls(req).await.unwrap_err().code(), Code::Unauthenticated);

    let id = good.info.unwrap().token_id;
    assert!(admin.admin.revoke_token(RevokeTokenRequest { token_id: id.clone() }).await.unwrap().into_inner().revoked);
    let err = list(good.token.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "revoked: {err:?}");
    assert!(!admin.admin.revoke_token(RevokeTokenRequest { token_id: id }).await.unwrap().into_inner().revoked);

    let short = token_for(&mut admin, "svc", 2_000).await;
    let expires = short.info.unwrap().expires_at_ms;
    assert!(expires > 0);
    list(short.token.clone()).await.unwrap();
    let err = eventually(Duration::from_secs(10), "the token to expire", || {
        let t = short.token.clone();
        let l = list(t);
        async move { l.await.err() }
    })
    .await;
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
}

/// Deny beats allow, prefixes and hosts apply, internal topics match no ACL,
/// the credentials topic is read by no one, and a declared writer is the
/// only principal that may produce whatever the ACLs allow.
#[tokio::test]
async fn deny_wins_prefixes_apply_internal_topics_are_out_of_reach_and_the_declared_writer_rules() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path());
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    for t in ["orders.eu", "orders.us", "payments"] {
        admin.create_topic(t, 1, []).await.unwrap();
    }
    admin.create_topic("ledger", 1, [("writer.principal".to_string(), "svc-ledger".to_string())]).await.unwrap();
    use AclOperation::*;
    add_acl(&mut admin, acl("svc", Write, ResourceType::Topic, true, "orders.", false)).await;
    add_acl(&mut admin, acl("svc", Write, ResourceType::Topic, false, "ledger", false)).await;
    add_acl(&mut admin, acl("*", Read, ResourceType::Topic, false, "*", false)).await;
    add_acl(&mut admin, acl("svc", Write, ResourceType::Topic, false, "orders.us", true)).await;
    add_acl(&mut admin, acl("svc-ledger", Write, ResourceType::Topic, false, "ledger", false)).await;
    add_acl(&mut admin, acl("svc", Read, ResourceType::Topic, false, "payments", false)).await;
    let mut other_host = acl("svc", Write, ResourceType::Topic, false, "payments", false);
    other_host.host = "10.9.9.9".into();
    add_acl(&mut admin, other_host).await;
    let svc = token_for(&mut admin, "svc", 0).await.token;
    let ledger = token_for(&mut admin, "svc-ledger", 0).await.token;
    let mut c = client(&b.addr, Some(&svc)).await;
    let rec = || vec![strata_client::record(None, bytes::Bytes::from_static(b"x"))];
    c.produce("orders.eu", Some(0), rec(), Acks::Written).await.unwrap();
    for (topic, says) in [
        ("orders.us", "may not write topic \"orders.us\""),
        ("payments", "may not write topic \"payments\""),
        ("no-such-topic", "may not write topic \"no-such-topic\""),
        ("ledger", "declared writer is \"svc-ledger\""),
    ] {
        let err = c.produce(topic, Some(0), rec(), Acks::Written).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{topic}: {err:?}");
        assert!(err.message().contains(says), "{topic}: {}", err.message());
    }
    client(&b.addr, Some(&ledger)).await.produce("ledger", Some(0), rec(), Acks::Written).await.unwrap();
    // Read on "*" reaches user topics, not internal ones; the credentials
    // topic is refused even to a super user.
    assert!(c.fetch("payments", 0, 0, 1024, Duration::ZERO).await.is_ok());
    let err = c.fetch("__consumer_offsets", 0, 0, 1024, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    admin.fetch("__consumer_offsets", 0, 0, 1024, Duration::ZERO).await.unwrap();
    let err = admin.fetch("__strata_auth", 0, 0, 1024, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("credentials"), "{}", err.message());
    // Exactly what was allowed was stored.
    for (topic, hw) in [("orders.eu", 1), ("orders.us", 0), ("payments", 0), ("ledger", 1)] {
        assert_eq!(common::high_watermark(&mut admin, topic, 0).await, hw, "{topic}");
    }
    // Bad ACLs are refused, naming the field, and change nothing.
    let before = admin.admin.list_acls(ListAclsRequest::default()).await.unwrap().into_inner().acls.len();
    let mut bad_host = acl("svc", Read, ResourceType::Topic, false, "x", false);
    bad_host.host = "not-an-ip".into();
    let mut no_op = acl("svc", Read, ResourceType::Topic, false, "x", false);
    no_op.operation = 0;
    for (a, says) in [
        (bad_host, "IP address"),
        (no_op, "operation"),
        (acl("svc", Read, ResourceType::Cluster, true, "cl", false), "cluster"),
        (acl("", Read, ResourceType::Topic, false, "x", false), "principal"),
    ] {
        let err = admin.admin.create_acl(CreateAclRequest { acl: Some(a) }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(says), "{}", err.message());
    }
    let after = admin.admin.list_acls(ListAclsRequest::default()).await.unwrap().into_inner().acls.len();
    assert_eq!(before, after);
}

/// ACLs, tokens and revocations are events in `__strata_auth`: after kill -9
/// the broker answers as before.
#[tokio::test]
async fn acls_and_tokens_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path());
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    admin.create_topic("orders", 1, []).await.unwrap();
    add_acl(&mut admin, acl("svc", AclOperation::Write, ResourceType::Topic, false, "orders", false)).await;
    add_acl(&mut admin, acl("svc", AclOperation::Read, ResourceType::Topic, false, "orders", false)).await;
    let del = acl("svc", AclOperation::Read, ResourceType::Topic, false, "orders", false);
    assert!(admin.admin.delete_acl(DeleteAclRequest { acl: Some(del) }).await.unwrap().into_inner().deleted);
    let kept = token_for(&mut admin, "svc", 0).await.token;
    let revoked = token_for(&mut admin, "svc", 0).await;
    let rid = revoked.info.unwrap().token_id;
    admin.admin.revoke_token(RevokeTokenRequest { token_id: rid }).await.unwrap();
    drop(admin);
    b.kill9();

    let b = start(dir.path());
    let mut c = client(&b.addr, Some(&kept)).await;
    let rec = vec![strata_client::record(None, bytes::Bytes::from_static(b"x"))];
    c.produce("orders", Some(0), rec, Acks::Written).await.unwrap();
    let err = c.fetch("orders", 0, 0, 1024, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "the deleted ACL stays deleted");
    let err = client(&b.addr, Some(&revoked.token)).await.admin.who_am_i(WhoAmIRequest {}).await.unwrap();
    assert_eq!(err.into_inner().principal, "", "WhoAmI treats a revoked token as no credential");
    let err = client(&b.addr, Some(&revoked.token))
        .await
        .produce("orders", Some(0), vec![strata_client::record(None, bytes::Bytes::from_static(b"y"))], Acks::Written)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the revoked token stays revoked");
    let me = c.admin.who_am_i(WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!(me.principal, "svc");
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    let acls = admin.admin.list_acls(ListAclsRequest { principal: "svc".into(), ..Default::default() }).await.unwrap();
    assert_eq!(acls.into_inner().acls.len(), 1);
    assert_eq!(admin.admin.list_tokens(ListTokensRequest::default()).await.unwrap().into_inner().tokens.len(), 1);
}

/// Users with passwords: the right one passes, a wrong one or an unknown
/// user is UNAUTHENTICATED (the same answer), a changed password replaces
/// the old, and all of it survives kill -9.
#[tokio::test]
async fn passwords_authenticate_and_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // Derivations as fast as they come here: the answers are under test,
    // not the guessing budget (that is below, with one check a second).
    let fast_checks = [
        ("STRATA_AUTH__ENABLED", "true"),
        ("STRATA_AUTH__BOOTSTRAP_TOKEN", BOOTSTRAP),
        ("STRATA_AUTH__PASSWORD_CHECKS_PER_SEC", "100000"),
    ];
    let b = Broker::start_with(dir.path(), &[], &fast_checks);
    let slow_guesses = [
        ("STRATA_AUTH__ENABLED", "true"),
        ("STRATA_AUTH__BOOTSTRAP_TOKEN", BOOTSTRAP),
        ("STRATA_AUTH__PASSWORD_CHECKS_PER_SEC", "1"),
    ];
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    add_acl(&mut admin, acl("alice", AclOperation::Describe, ResourceType::Cluster, false, "cluster", false)).await;
    let set = |pw: &str| SetUserRequest { username: "alice".into(), password: pw.into() };
    assert!(admin.admin.set_user(set("first password")).await.unwrap().into_inner().created);
    let short = admin.admin.set_user(set("short")).await.unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    assert!(short.message().contains("8-1024"), "{}", short.message());
    let as_user = |addr: String, user: &'static str, pw: &'static str| async move {
        let channel = strata_client::channel(&addr, None).await.unwrap();
        Client::from_channel(channel, Credentials::password(user, pw).unwrap())
    };
    let mut alice = as_user(b.addr.clone(), "alice", "first password").await;
    alice.admin.list_users(ListUsersRequest {}).await.unwrap();
    assert_eq!(alice.admin.who_am_i(WhoAmIRequest {}).await.unwrap().into_inner().principal, "alice");
    for (user, pw) in [("alice", "wrong password"), ("mallory", "first password"), ("alice", "")] {
        let mut c = as_user(b.addr.clone(), user, pw).await;
        let err = c.admin.list_users(ListUsersRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{user}/{pw}: {err:?}");
        assert!(err.message().contains("unknown user or wrong password"), "{}", err.message());
    }
    assert!(!admin.admin.set_user(set("second password")).await.unwrap().into_inner().created);
    let err = alice.admin.list_users(ListUsersRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the old password no longer works");
    let users = admin.admin.list_users(ListUsersRequest {}).await.unwrap().into_inner().usernames;
    assert_eq!(users, ["alice"]);
    drop((admin, alice));
    b.kill9();

    let b = Broker::start_with(dir.path(), &[], &slow_guesses);
    let mut alice = as_user(b.addr.clone(), "alice", "second password").await;
    assert_eq!(alice.admin.list_users(ListUsersRequest {}).await.unwrap().into_inner().usernames, ["alice"]);
    let mut old = as_user(b.addr.clone(), "alice", "first password").await;
    assert_eq!(old.admin.list_users(ListUsersRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    // Guessing costs the guesser: past a few derivations a second from one
    // address, the broker refuses without hashing; a password proved
    // before still passes (no derivation).
    let mut refused = 0;
    for _ in 0..30 {
        let mut c = as_user(b.addr.clone(), "mallory", "guess guess").await;
        let err = c.admin.list_users(ListUsersRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        refused += err.message().contains("too many password checks") as usize;
    }
    assert!(refused >= 20, "only {refused} of 30 guesses were refused without a derivation");
    alice.admin.list_users(ListUsersRequest {}).await.unwrap();
    // A token issued for alice dies with her; another principal's lives.
    let alices = token_for(&mut admin, "alice", 0).await.token;
    let bobs = token_for(&mut admin, "bob", 0).await.token;
    let mut by_token = client(&b.addr, Some(&alices)).await;
    assert_eq!(by_token.admin.who_am_i(WhoAmIRequest {}).await.unwrap().into_inner().principal, "alice");
    let del = DeleteUserRequest { username: "alice".into() };
    assert!(admin.admin.delete_user(del).await.unwrap().into_inner().deleted);
    assert_eq!(alice.admin.list_users(ListUsersRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    let mut by_token = client(&b.addr, Some(&alices)).await;
    assert_eq!(by_token.admin.list_users(ListUsersRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    let listed = admin.admin.list_tokens(ListTokensRequest { principal: String::new() }).await.unwrap().into_inner();
    assert!(listed.tokens.iter().all(|t| t.principal != "alice"), "{listed:?}");
    let mut bob = client(&b.addr, Some(&bobs)).await;
    assert_eq!(bob.admin.who_am_i(WhoAmIRequest {}).await.unwrap().into_inner().principal, "bob");
    // Revoked for good: after a restart too.
    drop((admin, alice, by_token, bob));
    b.kill9();
    let b = Broker::start_with(dir.path(), &[], &slow_guesses);
    let mut by_token = client(&b.addr, Some(&alices)).await;
    assert_eq!(by_token.admin.list_users(ListUsersRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
}

/// Group RPCs act on and show only topics the caller may read: resetting
/// a group's offsets on an unreadable topic is denied, committed offsets
/// and a group's description leave such topics out, and a pattern
/// subscription needs read on every topic.
#[tokio::test]
async fn group_rpcs_touch_and_show_only_readable_topics() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path());
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    for t in ["mine", "secret"] {
        admin.create_topic(t, 1, []).await.unwrap();
    }
    let commit = CommitOffsetsRequest {
        group_id: "g".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: ["mine", "secret"]
            .iter()
            .map(|t| OffsetCommit { topic: t.to_string(), partition: 0, offset: 0, metadata: String::new() })
            .collect(),
    };
    admin.groups.commit_offsets(commit).await.unwrap();
    add_acl(&mut admin, acl("svc", AclOperation::All, ResourceType::Group, false, "g", false)).await;
    add_acl(&mut admin, acl("svc", AclOperation::Read, ResourceType::Topic, false, "mine", false)).await;
    let token = token_for(&mut admin, "svc", 0).await.token;
    let mut c = client(&b.addr, Some(&token)).await;
    let fo = c.groups.fetch_offsets(FetchOffsetsRequest { group_id: "g".into(), partitions: vec![] }).await.unwrap();
    let topics: Vec<String> = fo.into_inner().offsets.into_iter().map(|o| o.topic).collect();
    assert_eq!(topics, ["mine"]);
    let d = c.groups.describe_group(DescribeGroupRequest { group_id: "g".into() }).await.unwrap().into_inner();
    assert!(d.partitions.iter().all(|p| p.topic == "mine"), "{:?}", d.partitions);
    let reset = |partitions: Vec<TopicPartitions>| ResetOffsetsRequest {
        group_id: "g".into(),
        partitions,
        to: Some(reset_offsets_request::To::Latest(true)),
        dry_run: true,
    };
    for named in [vec![], vec![TopicPartitions { topic: "secret".into(), partitions: vec![0] }]] {
        let err = c.groups.reset_offsets(reset(named)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("\"secret\""), "{}", err.message());
    }
    let mine = vec![TopicPartitions { topic: "mine".into(), partitions: vec![0] }];
    c.groups.reset_offsets(reset(mine)).await.unwrap();
    let hb = HeartbeatRequest {
        group_id: "g".into(),
        topic_pattern: "*".into(),
        session_timeout_ms: 30_000,
        ..Default::default()
    };
    let err = c.groups.heartbeat(hb).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

/// The CLI takes credentials from flags, the environment or a client
/// config file (flags win over the file).
#[tokio::test]
async fn the_cli_takes_credentials_from_a_client_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(&dir.path().join("data"));
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    admin.create_topic("visible", 1, []).await.unwrap();
    let file = dir.path().join("client.toml");
    std::fs::write(&file, format!("addr = \"{}\"\ntoken = \"{BOOTSTRAP}\"\n", b.addr)).unwrap();
    let strata = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env_remove("STRATA_ADDR")
            .env_remove("STRATA_TOKEN")
            .output()
            .unwrap()
    };
    let out = strata(&["topic", "list", "--client-config", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("visible"));
    // A flag wins over the file: a bad token is refused.
    let out = strata(&["topic", "list", "--client-config", file.to_str().unwrap(), "--token", "strata_bad"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without credentials.
    let out = strata(&["topic", "list", "--addr", &b.addr]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown key in the file is named.
    std::fs::write(&file, "adress = \"x\"\n").unwrap();
    let out = strata(&["topic", "list", "--client-config", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("adress"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// With auth on a producer id is bound to the principal it was issued to:
/// another principal allowed to write the topic cannot use it.
#[tokio::test]
async fn a_producer_id_is_usable_only_by_its_principal() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path());
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    admin.create_topic("t", 1, []).await.unwrap();
    let mut tokens = Vec::new();
    for who in ["alice", "mallory"] {
        add_acl(&mut admin, acl(who, AclOperation::Write, ResourceType::Topic, false, "t", false)).await;
        add_acl(&mut admin, acl(who, AclOperation::Read, ResourceType::Topic, false, "t", false)).await;
        tokens.push(token_for(&mut admin, who, 0).await.token);
    }
    let (mut alice, mut mallory) = (client(&b.addr, Some(&tokens[0])).await, client(&b.addr, Some(&tokens[1])).await);
    let p = alice.broker.init_producer(InitProducerRequest { writer_id: "svc".into() }).await.unwrap().into_inner();
    let req = |value: &str| ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: vec![Record { value: Some(value.to_string().into()), ..Default::default() }],
        acks: Acks::Durable as i32,
        producer: Some(ProducerBatch { producer_id: p.producer_id, producer_epoch: p.producer_epoch, sequence: 0 }),
        ..Default::default()
    };
    let err = mallory.broker.produce(req("forged")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(strata_client::refusal::is(&err, ErrorReason::UnknownProducerId), "{err:?}");
    assert!(err.message().contains("another principal"), "{}", err.message());
    let stored = alice.broker.produce(req("mine")).await.unwrap().into_inner();
    assert_eq!(stored.ranges[0].base_offset, 0, "the owner's batch is stored, not taken for a duplicate");
    // Mallory's own writer id of the same name is hers, not alice's.
    let q = mallory.broker.init_producer(InitProducerRequest { writer_id: "svc".into() }).await.unwrap().into_inner();
    assert_ne!(q.producer_id, p.producer_id);
}
