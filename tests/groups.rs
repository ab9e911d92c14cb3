//! Consumer groups over gRPC against the real broker.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;
use strata_client::group::{GroupConsumer, GroupOptions, Tp};
use strata_client::proto::*;
use strata_client::Client;
use tonic::Code;

const SESSION_MS: u32 = 1500;

fn start(dir: &Path) -> Broker {
    Broker::start_with(
        dir,
        &[],
        &[("STRATA_GROUPS__HEARTBEAT_INTERVAL_MS", "100"), ("STRATA_GROUPS__MIN_SESSION_TIMEOUT_MS", "500")],
    )
}

fn opts(instance: Option<&str>) -> GroupOptions {
    GroupOptions {
        instance_id: instance.map(str::to_string),
        session_timeout_ms: SESSION_MS,
        topic_pattern: None,
        skip_damaged: false,
    }
}

async fn member(c: &Client, group: &str, topic: &str, instance: Option<&str>) -> GroupConsumer {
    GroupConsumer::join(c.clone(), group, &[topic], opts(instance)).await.expect("join")
}

/// Heartbeats every member in rounds until the assignments are disjoint,
/// cover all `partitions` and each has the fair share.
async fn converge(members: &mut [&mut GroupConsumer], partitions: usize) {
    for _ in 0..20 {
        for m in members.iter_mut() {
            m.heartbeat().await.expect("heartbeat");
        }
        let sets: Vec<&BTreeSet<Tp>> = members.iter().map(|m| m.assignment()).collect();
        let union: BTreeSet<&Tp> = sets.iter().flat_map(|s| s.iter()).collect();
        let total: usize = sets.iter().map(|s| s.len()).sum();
        let fair =
            sets.iter().all(|s| s.len() >= partitions / sets.len() && s.len() <= partitions.div_ceil(sets.len()));
        if union.len() == partitions && total == partitions && fair {
            return;
        }
    }
    panic!("group did not converge");
}

/// Heartbeats `m` until it owns `n` partitions (bounded wait).
async fn heartbeat_until(m: &mut GroupConsumer, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        m.heartbeat().await.expect("heartbeat");
        if m.assignment().len() == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_disjoint(sets: &[&BTreeSet<Tp>]) {
    let mut seen = BTreeSet::new();
    for s in sets {
        for tp in *s {
            assert!(seen.insert(tp.clone()), "{tp:?} owned twice");
        }
    }
}

#[tokio::test]
async fn members_share_partitions_and_rebalance_on_leave_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let c = broker.client().await;
    create_topic(&mut c.clone(), "orders", 6).await;
    let mut a = member(&c, "billing", "orders", None).await;
    let mut b = member(&c, "billing", "orders", None).await;
    let mut m3 = member(&c, "billing", "orders", None).await;
    converge(&mut [&mut a, &mut b, &mut m3], 6).await;
    assert_eq!([a.assignment().len(), b.assignment().len(), m3.assignment().len()], [2, 2, 2]);
    assert_disjoint(&[a.assignment(), b.assignment(), m3.assignment()]);

    // A member leaves: its partitions move within one heartbeat round.
    let left: BTreeSet<Tp> = m3.assignment().clone();
    m3.leave(false).await.unwrap();
    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();
    assert_eq!((a.assignment().len(), b.assignment().len()), (3, 3));
    assert_disjoint(&[a.assignment(), b.assignment()]);
    let now: BTreeSet<Tp> = a.assignment().union(b.assignment()).cloned().collect();
    assert!(left.is_subset(&now));

    // A member stops heartbeating: after its session timeout, the other takes all.
    let t = tokio::time::Instant::now();
    heartbeat_until(&mut a, 6, "b's session to expire").await;
    assert!(t.elapsed() >= Duration::from_millis(SESSION_MS as u64 / 2), "not before the session timeout");
    let d = c
        .clone()
        .groups
        .describe_group(DescribeGroupRequest { group_id: "billing".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.state, "Stable");
}

#[tokio::test]
async fn an_expelled_zombie_cannot_overwrite_the_new_owners_commit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 2).await;
    for p in 0..2 {
        let records = (0..20).map(|i| rec(None, &format!("{i}"))).collect();
        c.produce("t", Some(p), records, Acks::Written).await.unwrap();
    }
    let mut a = member(&c, "g", "t", None).await;
    let mut zombie = member(&c, "g", "t", None).await;
    converge(&mut [&mut a, &mut zombie], 2).await;
    let (z_id, z_epoch) = (zombie.member_id().to_string(), zombie.epoch());
    let (tp, _) = zombie.assignment().iter().next().map(|tp| (tp.clone(), ())).unwrap();
    // The zombie pauses (no heartbeats) and is expelled; a takes its partition.
    heartbeat_until(&mut a, 2, "the zombie's expulsion").await;
    let commit = |member_id: String, epoch: i32, offset: u64| CommitOffsetsRequest {
        group_id: "g".into(),
        member_id,
        member_epoch: epoch,
        offsets: vec![OffsetCommit { topic: tp.0.clone(), partition: tp.1, offset, metadata: String::new() }],
    };
    c.groups.commit_offsets(commit(a.member_id().into(), a.epoch(), 15)).await.unwrap();
    let err = c.groups.commit_offsets(commit(z_id.clone(), z_epoch, 3)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains(&z_id));
    // Stale epoch of a live member is fenced too.
    let err = c.groups.commit_offsets(commit(a.member_id().into(), a.epoch() - 1, 4)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let got = c.groups.fetch_offsets(FetchOffsetsRequest { group_id: "g".into(), partitions: vec![] }).await.unwrap();
    let got: Vec<_> = got.into_inner().offsets.into_iter().map(|o| (o.topic, o.partition, o.offset)).collect();
    assert_eq!(got, vec![(tp.0.clone(), tp.1, 15)], "the new owner's commit stands");
}

#[tokio::test]
async fn a_static_member_restarting_keeps_its_partitions_without_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 4).await;
    let mut a = member(&c, "s", "t", Some("pod-a")).await;
    let mut b = member(&c, "s", "t", Some("pod-b")).await;
    converge(&mut [&mut a, &mut b], 4).await;
    let before = a.assignment().clone();
    let describe = |mut c: Client| async move {
        c.groups.describe_group(DescribeGroupRequest { group_id: "s".into() }).await.unwrap().into_inner()
    };
    let epoch = describe(c.clone()).await.group_epoch;
    a.leave(true).await.unwrap(); // restarting: temporary leave
    let a2 = member(&c, "s", "t", Some("pod-a")).await;
    assert_eq!(a2.assignment(), &before, "same partitions back at once");
    b.heartbeat().await.unwrap();
    assert_eq!(describe(c.clone()).await.group_epoch, epoch, "no rebalance");
    assert_disjoint(&[a2.assignment(), b.assignment()]);
}

#[tokio::test]
async fn committed_offsets_survive_restart_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let fetch = |mut c: Client| async move {
        let r = c.groups.fetch_offsets(FetchOffsetsRequest { group_id: "g".into(), partitions: vec![] }).await.unwrap();
        r.into_inner()
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), (o.offset, o.metadata)))
            .collect::<BTreeMap<_, _>>()
    };
    let commit = |p: u32, offset: u64| CommitOffsetsRequest {
        group_id: "g".into(),
        member_id: String::new(), // standalone: the group has no members
        member_epoch: 0,
        offsets: vec![OffsetCommit { topic: "t".into(), partition: p, offset, metadata: format!("at {offset}") }],
    };
    let broker = start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 2).await;
    for p in 0..2 {
        c.produce("t", Some(p), (0..100).map(|i| rec(None, &i.to_string())).collect(), Acks::Written).await.unwrap();
    }
    c.groups.commit_offsets(commit(0, 10)).await.unwrap();
    c.groups.commit_offsets(commit(1, 20)).await.unwrap();
    c.groups.commit_offsets(commit(0, 30)).await.unwrap();
    let expected = fetch(c.clone()).await;
    assert_eq!(expected.len(), 2);
    assert_eq!(expected[&("t".to_string(), 0)], (30, "at 30".to_string()));
    assert!(broker.stop().await.success());

    let broker = start(dir.path());
    let mut c = broker.client().await;
    assert_eq!(fetch(c.clone()).await, expected, "after a clean restart");
    for i in 0..50 {
        c.groups.commit_offsets(commit(i % 2, 40 + i as u64)).await.unwrap();
    }
    let expected = fetch(c.clone()).await;
    broker.kill9();
    let broker = start(dir.path());
    let c = broker.client().await;
    assert_eq!(fetch(c).await, expected, "after kill -9: exactly the last acknowledged commits");
}

/// One poll, then a commit of what it returned: (partition, offset) pairs.
async fn poll_commit(m: &mut GroupConsumer) -> Vec<(u32, u64)> {
    let records = m.poll(Duration::from_millis(50)).await.unwrap();
    m.commit().await.unwrap();
    records.into_iter().map(|r| (r.partition, r.record.offset)).collect()
}

#[tokio::test]
async fn at_least_once_across_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "events", 6).await;
    let mut produced = BTreeSet::new();
    for p in 0..6 {
        let reply = c
            .produce("events", Some(p), (0..100).map(|i| rec(None, &format!("{p}-{i}"))).collect(), Acks::Written)
            .await
            .unwrap();
        produced.extend(reply.positions.iter().map(|pos| (pos.partition, pos.offset)));
    }
    let mut consumed = BTreeSet::new();
    let mut a = member(&c, "once", "events", None).await;
    // a alone for a bit, then b joins, then a leaves, then c joins.
    for _ in 0..2 {
        consumed.extend(poll_commit(&mut a).await);
    }
    let mut b = member(&c, "once", "events", None).await;
    for _ in 0..3 {
        consumed.extend(poll_commit(&mut a).await);
        consumed.extend(poll_commit(&mut b).await);
    }
    a.leave(false).await.unwrap();
    let mut m3 = member(&c, "once", "events", None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while consumed.len() < produced.len() {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {} consumed", consumed.len(), produced.len());
        consumed.extend(poll_commit(&mut b).await);
        consumed.extend(poll_commit(&mut m3).await);
    }
    assert_eq!(consumed, produced, "every produced record was consumed by some member");
    // And the group's committed offsets are at the end of every partition.
    let d = c.groups.describe_group(DescribeGroupRequest { group_id: "once".into() }).await.unwrap().into_inner();
    assert!(d.partitions.iter().all(|p| p.lag == 0 && p.committed_offset == 100), "{:?}", d.partitions);
}

#[tokio::test]
async fn describe_shows_lag_and_reset_and_delete_need_an_empty_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 2).await;
    for p in 0..2 {
        c.produce("t", Some(p), (0..50).map(|i| rec(None, &i.to_string())).collect(), Acks::Written).await.unwrap();
    }
    let mut m = member(&c, "lag", "t", None).await;
    converge(&mut [&mut m], 2).await;
    let records = m.poll(Duration::from_millis(100)).await.unwrap();
    assert!(!records.is_empty());
    m.commit().await.unwrap();
    let d = c.groups.describe_group(DescribeGroupRequest { group_id: "lag".into() }).await.unwrap().into_inner();
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.partitions.len(), 2);
    let total_lag: u64 = d.partitions.iter().map(|p| p.lag).sum();
    assert_eq!(total_lag, 100 - records.len() as u64);
    for p in &d.partitions {
        assert_eq!(p.lag, p.log_end_offset - p.committed_offset.max(0) as u64);
        assert_eq!(p.member_id, m.member_id());
    }

    // With a member: reset and delete are refused.
    let reset = |dry_run| ResetOffsetsRequest {
        group_id: "lag".into(),
        partitions: vec![],
        to: Some(reset_offsets_request::To::Earliest(true)),
        dry_run,
    };
    let err = c.groups.reset_offsets(reset(true)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = c.groups.delete_group(DeleteGroupRequest { group_id: "lag".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    m.leave(false).await.unwrap();

    // Dry run changes nothing; a real reset does.
    let before = c
        .groups
        .fetch_offsets(FetchOffsetsRequest { group_id: "lag".into(), partitions: vec![] })
        .await
        .unwrap()
        .into_inner();
    let dry = c.groups.reset_offsets(reset(true)).await.unwrap().into_inner();
    assert!(dry.offsets.iter().all(|o| o.offset == 0));
    let after_dry = c
        .groups
        .fetch_offsets(FetchOffsetsRequest { group_id: "lag".into(), partitions: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before, after_dry);
    c.groups.reset_offsets(reset(false)).await.unwrap();
    let after = c
        .groups
        .fetch_offsets(FetchOffsetsRequest { group_id: "lag".into(), partitions: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert!(after.offsets.iter().all(|o| o.offset == 0));
    let lagged = c.groups.describe_group(DescribeGroupRequest { group_id: "lag".into() }).await.unwrap().into_inner();
    assert_eq!(lagged.partitions.iter().map(|p| p.lag).sum::<u64>(), 100);

    c.groups.delete_group(DeleteGroupRequest { group_id: "lag".into() }).await.unwrap();
    let err = c.groups.describe_group(DescribeGroupRequest { group_id: "lag".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(c.groups.list_groups(ListGroupsRequest {}).await.unwrap().into_inner().groups.is_empty());
}

#[tokio::test]
async fn group_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;
    c.produce("t", Some(0), vec![rec(None, "x")], Acks::Written).await.unwrap();
    let err = c.groups.describe_group(DescribeGroupRequest { group_id: "ghost".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("ghost"));
    let commit = |topic: &str, partition, offset| CommitOffsetsRequest {
        group_id: "g".into(),
        member_id: String::new(),
        member_epoch: 0,
        offsets: vec![OffsetCommit { topic: topic.into(), partition, offset, metadata: String::new() }],
    };
    assert_eq!(c.groups.commit_offsets(commit("t", 3, 0)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(c.groups.commit_offsets(commit("nope", 0, 0)).await.unwrap_err().code(), Code::NotFound);
    let err = c.groups.commit_offsets(commit("t", 0, 2)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains("0..=1"), "{}", err.message());
    let join = HeartbeatRequest {
        group_id: "g".into(),
        topics: vec!["t".into()],
        session_timeout_ms: 10,
        ..Default::default()
    };
    let err = c.groups.heartbeat(join).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("500..=300000"), "{}", err.message());
    // Nothing was committed by the failures.
    let got = c.groups.fetch_offsets(FetchOffsetsRequest { group_id: "g".into(), partitions: vec![] }).await.unwrap();
    assert!(got.into_inner().offsets.is_empty());
    // The offsets topic is the broker's own.
    let err = c.produce("__consumer_offsets", Some(0), vec![rec(Some("k"), "v")], Acks::Written).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c.admin.delete_topic(DeleteTopicRequest { name: "__consumer_offsets".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
