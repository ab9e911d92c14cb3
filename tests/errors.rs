//! Every bad request gets a clear gRPC error naming what was wrong, and
//! changes nothing.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::*;
use strata_client::proto::*;
use tonic::Code;

fn assert_status<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needles: &[&str]) {
    let s = r.expect_err("request must fail");
    assert_eq!(s.code(), code, "{}", s.message());
    for n in needles {
        assert!(s.message().contains(n), "message {:?} should mention {n:?}", s.message());
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(
        dir.path(),
        &[],
        &[
            ("STRATA_SERVER__MAX_REQUEST_BYTES", "1048576"),
            ("STRATA_SERVER__FETCH_DEFAULT_MAX_BYTES", "524288"),
            ("STRATA_TOPICS__MAX_MESSAGE_BYTES", "10000"),
        ],
    );
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 2).await;
    c.produce("t", Some(0), vec![rec(None, "a"), rec(None, "b")], Acks::Durable).await.unwrap();

    // Unknown topic, everywhere.
    assert_status(c.produce("nope", None, vec![rec(None, "x")], Acks::Durable).await, Code::NotFound, &["nope"]);
    assert_status(c.fetch("nope", 0, 0, 100, Default::default()).await, Code::NotFound, &["nope"]);
    let d = c.admin.describe_topic(DescribeTopicRequest { name: "nope".into() }).await;
    assert_status(d, Code::NotFound, &["nope"]);
    let del = c.admin.delete_topic(DeleteTopicRequest { name: "nope".into() }).await;
    assert_status(del, Code::NotFound, &["nope"]);
    let sub = c
        .broker
        .subscribe(SubscribeRequest {
            topic: "nope".into(),
            partition: 0,
            offset: None,
            max_bytes: 0,
            skip_damaged: false,
        })
        .await;
    assert_status(sub.map(|_| ()), Code::NotFound, &["nope"]);

    // Unknown partition names the valid range.
    assert_status(
        c.produce("t", Some(2), vec![rec(None, "x")], Acks::Durable).await,
        Code::NotFound,
        &["partition 2", "0..1"],
    );
    assert_status(c.fetch("t", 7, 0, 100, Default::default()).await, Code::NotFound, &["partition 7"]);

    // Offsets outside [log start, high watermark] name the range.
    assert_status(c.fetch("t", 0, 3, 100, Default::default()).await, Code::OutOfRange, &["offset 3", "0..=2"]);
    let sub = c
        .broker
        .subscribe(SubscribeRequest {
            topic: "t".into(),
            partition: 0,
            offset: Some(9),
            max_bytes: 0,
            skip_damaged: false,
        })
        .await;
    assert_status(sub.map(|_| ()), Code::OutOfRange, &["offset 9", "0..=2"]);
    // The high watermark itself is valid: an empty read.
    assert!(c.fetch("t", 0, 2, 100, Default::default()).await.unwrap().records.is_empty());

    // A record over max.message.bytes names the record and the limit; the
    // whole request is refused, including its good records.
    let big = Record { value: Some(Bytes::from(vec![7u8; 20_000])), ..Default::default() };
    let r = c.produce("t", Some(0), vec![rec(None, "fine"), big], Acks::Durable).await;
    assert_status(r, Code::InvalidArgument, &["record 1", "max.message.bytes", "10000"]);

    // A request over the server's message limit names the limit.
    let many: Vec<_> =
        (0..200).map(|_| Record { value: Some(Bytes::from(vec![1u8; 8000])), ..Default::default() }).collect();
    let r = c.produce("t", Some(0), many, Acks::Durable).await;
    assert_status(r, Code::ResourceExhausted, &["server.max_request_bytes", "1048576"]);

    // Empty produce, negative timestamp, bad acks.
    assert_status(c.produce("t", Some(0), vec![], Acks::Durable).await, Code::InvalidArgument, &["no records"]);
    let neg = Record { timestamp_ms: -5, ..rec(None, "x") };
    assert_status(
        c.produce("t", Some(0), vec![neg], Acks::Durable).await,
        Code::InvalidArgument,
        &["timestamp -5", ">= 0"],
    );
    let bad_acks = ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: vec![rec(None, "x")],
        acks: 9,
        request_id: 0,
        omit_record_positions: false,
        ..Default::default()
    };
    assert_status(c.broker.produce(bad_acks).await, Code::InvalidArgument, &["acks 9"]);

    // Nothing above changed the log.
    assert_eq!(high_watermark(&mut c, "t", 0).await, 2);
    assert_eq!(high_watermark(&mut c, "t", 1).await, 0);
    let values: Vec<_> = read_all(&mut c, "t", 0, 0).await.into_iter().map(|r| r.value.unwrap()).collect();
    assert_eq!(values, vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);

    // Topic names.
    for (name, needle) in [("", "empty"), ("a/b", "'/'"), ("..", "reserved"), (&"x".repeat(250)[..], "249")] {
        let r = c.create_topic(name, 1, []).await;
        assert_status(r, Code::InvalidArgument, &["invalid topic name", needle]);
    }
    // Partition counts.
    assert_status(c.create_topic("p", 100_000, []).await, Code::InvalidArgument, &["100000", "between 1 and 10000"]);
    let grow = c.admin.create_partitions(CreatePartitionsRequest { name: "t".into(), total: 1 }).await;
    assert_status(grow, Code::InvalidArgument, &["between 3 and 10000"]);
    // Configs.
    let cfg = |k: &str, v: &str| [(k.to_string(), v.to_string())];
    assert_status(
        c.create_topic("c", 1, cfg("segment.bytes", "1")).await,
        Code::InvalidArgument,
        &["segment.bytes", "between 4096"],
    );
    assert_status(
        c.create_topic("c", 1, cfg("retention.mss", "1")).await,
        Code::InvalidArgument,
        &["retention.mss", "valid keys"],
    );
    let alter = AlterTopicConfigRequest {
        name: "t".into(),
        set: HashMap::from([("timestamp.type".into(), "Later".into())]),
        reset: vec![],
    };
    assert_status(c.admin.alter_topic_config(alter).await, Code::InvalidArgument, &["timestamp.type", "CreateTime"]);
    // Existing topic.
    assert_status(c.create_topic("t", 1, []).await, Code::AlreadyExists, &["'t' already exists"]);

    // None of those created or changed a topic.
    let topics = c.admin.list_topics(ListTopicsRequest::default()).await.unwrap().into_inner().topics;
    assert_eq!(topics.iter().map(|t| (t.name.as_str(), t.partitions)).collect::<Vec<_>>(), vec![("t", 2)]);
    let d =
        c.admin.describe_topic(DescribeTopicRequest { name: "t".into() }).await.unwrap().into_inner().topic.unwrap();
    assert!(d.configs.iter().all(|c| c.source == ConfigSource::Default as i32));
}

#[tokio::test]
async fn topic_admin_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    let d = c.create_topic("life", 0, []).await.unwrap();
    assert_eq!(d.partitions.len(), 1, "broker default partition count");

    let set = HashMap::from([("segment.bytes".to_string(), "65536".to_string())]);
    let alter = AlterTopicConfigRequest { name: "life".into(), set, reset: vec![] };
    let d = c.admin.alter_topic_config(alter).await.unwrap().into_inner().topic.unwrap();
    let seg = d.configs.iter().find(|c| c.key == "segment.bytes").unwrap();
    assert_eq!((seg.value.as_str(), seg.source), ("65536", ConfigSource::Topic as i32));

    let d = c.admin.create_partitions(CreatePartitionsRequest { name: "life".into(), total: 3 }).await.unwrap();
    assert_eq!(d.into_inner().topic.unwrap().partitions.len(), 3);
    c.produce("life", Some(2), vec![rec(None, "on the new partition")], Acks::Durable).await.unwrap();

    let reset =
        AlterTopicConfigRequest { name: "life".into(), set: HashMap::new(), reset: vec!["segment.bytes".into()] };
    let d = c.admin.alter_topic_config(reset).await.unwrap().into_inner().topic.unwrap();
    let seg = d.configs.iter().find(|c| c.key == "segment.bytes").unwrap();
    assert_eq!(seg.source, ConfigSource::Default as i32);

    c.admin.delete_topic(DeleteTopicRequest { name: "life".into() }).await.unwrap();
    assert!(c.admin.list_topics(ListTopicsRequest::default()).await.unwrap().into_inner().topics.is_empty());
    let all = c.admin.list_topics(ListTopicsRequest { include_internal: true }).await.unwrap().into_inner().topics;
    let internal = vec!["__consumer_offsets", "__strata_auth", "__strata_writers"];
    assert_eq!(all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), internal);
    // The name can be reused, starting empty.
    create_topic(&mut c, "life", 1).await;
    assert_eq!(high_watermark(&mut c, "life", 0).await, 0);
}

#[tokio::test]
async fn a_timestamp_far_in_the_future_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for ts in [i64::MAX, now + 2 * 3600 * 1000] {
        let r = Record { timestamp_ms: ts, value: Some("v".into()), ..Default::default() };
        let err = c.produce("t", Some(0), vec![rec(None, "ok"), r], Acks::Durable).await;
        assert_status(err, Code::InvalidArgument, &["record 1", "message.timestamp.after.max.ms = 3600000"]);
    }
    assert_eq!(high_watermark(&mut c, "t", 0).await, 0, "nothing was stored");
    // Within the bound, and with the bound raised, it is taken.
    let soon = Record { timestamp_ms: now + 60_000, value: Some("v".into()), ..Default::default() };
    c.produce("t", Some(0), vec![soon], Acks::Durable).await.unwrap();
    let far = [("message.timestamp.after.max.ms".to_string(), i64::MAX.to_string())];
    c.create_topic("future", 1, far).await.unwrap();
    let r = Record { timestamp_ms: i64::MAX, value: Some("v".into()), ..Default::default() };
    c.produce("future", Some(0), vec![r], Acks::Durable).await.unwrap();
}
