//! What the docs promise, over the real broker: behaviours a newcomer reads
//! in the README, config/strata.toml and the .proto comments.

mod common;

use std::time::Duration;

use common::*;
use strata_client::proto::*;
use tonic::Code;

#[tokio::test]
async fn the_heartbeat_interval_never_exceeds_a_third_of_the_members_session() {
    let dir = tempfile::tempdir().unwrap();
    // Defaults: groups.heartbeat_interval_ms = 3000, min_session_timeout_ms = 1000.
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    let join = HeartbeatRequest {
        group_id: "g".into(),
        member_epoch: 0,
        session_timeout_ms: 1500,
        topics: vec!["t".into()],
        ..Default::default()
    };
    let mut reply = c.groups.heartbeat(join).await.unwrap().into_inner();
    let interval = reply.heartbeat_interval_ms;
    assert!(interval > 0 && interval <= 500, "told {interval} ms for a 1,500 ms session");
    // A member heartbeating at the interval it is told stays in the group.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(4000) {
        tokio::time::sleep(Duration::from_millis(u64::from(reply.heartbeat_interval_ms))).await;
        let hb = HeartbeatRequest {
            group_id: "g".into(),
            member_id: reply.member_id.clone(),
            member_epoch: reply.member_epoch,
            owned: reply.assignment.clone(),
            ..Default::default()
        };
        reply = c.groups.heartbeat(hb).await.expect("still a member").into_inner();
    }
    // A long session still gets the configured interval.
    let join = HeartbeatRequest {
        group_id: "h".into(),
        member_epoch: 0,
        session_timeout_ms: 60_000,
        topics: vec!["t".into()],
        ..Default::default()
    };
    assert_eq!(c.groups.heartbeat(join).await.unwrap().into_inner().heartbeat_interval_ms, 3000);
}

#[tokio::test]
async fn internal_topics_refuse_changes_and_committed_offsets_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    let alter = AlterTopicConfigRequest {
        name: "__consumer_offsets".into(),
        set: [("cleanup.policy".to_string(), "compact,delete".to_string())].into(),
        reset: vec![],
    };
    let err = c.admin.alter_topic_config(alter).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("internal"), "{}", err.message());
    let grow = CreatePartitionsRequest { name: "__consumer_offsets".into(), total: 3 };
    let err = c.admin.create_partitions(grow).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("internal"), "{}", err.message());
    let commit = CommitOffsetsRequest {
        group_id: "g".into(),
        member_id: String::new(),
        member_epoch: 0,
        offsets: vec![OffsetCommit { topic: "t".into(), partition: 0, offset: 0, metadata: "m".into() }],
    };
    c.groups.commit_offsets(commit).await.unwrap();
    drop(c);
    assert!(b.stop().await.success());
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    let d = describe(&mut c, "__consumer_offsets").await;
    let policy = d.configs.iter().find(|e| e.key == "cleanup.policy").map(|e| e.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"), "unchanged");
    let offsets = c
        .groups
        .fetch_offsets(FetchOffsetsRequest { group_id: "g".into(), partitions: vec![] })
        .await
        .unwrap()
        .into_inner()
        .offsets;
    assert_eq!(offsets.iter().map(|o| (o.topic.as_str(), o.offset)).collect::<Vec<_>>(), vec![("t", 0)]);
}

#[tokio::test]
async fn server_reflection_v1alpha_lists_the_services() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", b.addr)).unwrap().connect().await.unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else { panic!("{reply:?}") };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["strata.v1.Broker", "strata.v1.Admin", "strata.v1.Groups", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}

#[tokio::test]
async fn a_subscribe_on_a_topic_then_deleted_ends_with_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "gone", 1).await;
    let req = SubscribeRequest { topic: "gone".into(), partition: 0, offset: None, max_bytes: 0, skip_damaged: false };
    let mut stream = c.broker.subscribe(req).await.unwrap().into_inner();
    c.admin.delete_topic(DeleteTopicRequest { name: "gone".into() }).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("the stream ends");
    let err = end.expect_err("an error, not a clean end");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("gone"), "{}", err.message());
}
