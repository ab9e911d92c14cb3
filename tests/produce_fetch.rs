//! Produce and consume over real gRPC against the real binary.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use strata::partition::partitioner::partition_for_key;
use strata_client::proto::*;

#[tokio::test]
async fn round_trip_keeps_key_value_headers_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "events", 1).await;

    let before = now_ms();
    let records = vec![
        Record {
            offset: 999, // ignored by the broker
            timestamp_ms: 1_600_000_000_000,
            key: Some(Bytes::from_static(b"user-1")),
            value: Some(Bytes::from_static(b"{\"clicked\":true}")),
            headers: vec![
                Header { key: "trace".into(), value: Bytes::from_static(b"abc") },
                Header { key: "trace".into(), value: Bytes::from_static(b"def") },
                Header { key: "empty".into(), value: Bytes::new() },
            ],
        },
        Record { timestamp_ms: 0, key: None, value: Some(Bytes::from(vec![0u8, 255, 7])), ..Default::default() },
        Record { key: Some(Bytes::from_static(b"gone")), value: None, ..Default::default() },
    ];
    let reply = c.produce("events", Some(0), records.clone(), Acks::Durable).await.unwrap();
    let positions: Vec<_> = reply.positions.iter().map(|p| (p.partition, p.offset)).collect();
    assert_eq!(positions, vec![(0, 0), (0, 1), (0, 2)]);

    let got = read_all(&mut c, "events", 0, 0).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].offset, 0);
    assert_eq!(got[0].timestamp_ms, 1_600_000_000_000, "producer timestamp kept");
    assert_eq!(got[0].key, records[0].key);
    assert_eq!(got[0].value, records[0].value);
    assert_eq!(got[0].headers, records[0].headers, "headers kept in order, duplicates included");
    assert!(got[1].timestamp_ms >= before && got[1].timestamp_ms <= now_ms(), "0 = broker append time");
    assert_eq!(got[1].key, None);
    assert_eq!(got[1].value.as_deref(), Some(&[0u8, 255, 7][..]));
    assert_eq!(got[2].value, None, "tombstone: key without value");
    assert_eq!(got[2].key.as_deref(), Some(&b"gone"[..]));
}

#[tokio::test]
async fn log_append_time_topics_use_the_broker_clock() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    c.create_topic("stamped", 1, [("timestamp.type".to_string(), "LogAppendTime".to_string())]).await.unwrap();
    let before = now_ms();
    let r = Record { timestamp_ms: 5, ..rec(None, "x") };
    c.produce("stamped", None, vec![r], Acks::Written).await.unwrap();
    let got = read_all(&mut c, "stamped", 0, 0).await;
    assert!(got[0].timestamp_ms >= before, "{} < {before}", got[0].timestamp_ms);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn same_key_same_partition_and_keyless_spread() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "keyed", 4).await;

    let keys: Vec<String> = (0..40).map(|i| format!("customer-{i}")).collect();
    let mut first_seen = std::collections::HashMap::new();
    for round in 0..3 {
        let records = keys.iter().map(|k| rec(Some(k), &format!("{k}-{round}"))).collect();
        let reply = c.produce("keyed", None, records, Acks::Written).await.unwrap();
        assert_eq!(reply.positions.len(), keys.len());
        // One range per partition, in partition order; each partition's
        // records took consecutive offsets from its base, in request order.
        let parts: Vec<u32> = reply.ranges.iter().map(|r| r.partition).collect();
        assert_eq!(parts, [0, 1, 2, 3]);
        for range in &reply.ranges {
            let offsets: Vec<u64> =
                reply.positions.iter().filter(|p| p.partition == range.partition).map(|p| p.offset).collect();
            let expected: Vec<u64> = (range.base_offset..).take(range.record_count as usize).collect();
            assert_eq!(offsets, expected, "partition {}", range.partition);
        }
        for (k, pos) in keys.iter().zip(&reply.positions) {
            assert_eq!(pos.partition, partition_for_key(k.as_bytes(), 4), "documented hash for {k}");
            let p = *first_seen.entry(k.clone()).or_insert(pos.partition);
            assert_eq!(p, pos.partition, "key {k} moved between requests");
        }
    }
    let used: std::collections::HashSet<_> = first_seen.values().collect();
    assert_eq!(used.len(), 4, "40 keys use all 4 partitions");
    // Every record is where the reply said, in per-key order.
    for p in 0..4 {
        for r in read_all(&mut c, "keyed", p, 0).await {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            assert_eq!(first_seen[&key], p);
        }
    }
    // Keyless requests rotate over the partitions.
    let mut partitions = std::collections::HashSet::new();
    for _ in 0..4 {
        let reply = c.produce("keyed", None, vec![rec(None, "a"), rec(None, "b")], Acks::Written).await.unwrap();
        assert_eq!(reply.positions[0].partition, reply.positions[1].partition, "one request, one partition");
        partitions.insert(reply.positions[0].partition);
    }
    assert_eq!(partitions.len(), 4);
}

#[tokio::test]
async fn offsets_are_dense_and_ordered_across_requests_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    // Small segments so the log rolls many times.
    c.create_topic("dense", 1, [("segment.bytes".to_string(), "8192".to_string())]).await.unwrap();
    let mut next = 0u64;
    for batch in 0..50 {
        let records = (0..20).map(|i| rec(None, &format!("{batch}-{i}-{}", "x".repeat(40)))).collect();
        let reply = c.produce("dense", Some(0), records, Acks::Written).await.unwrap();
        for p in &reply.positions {
            assert_eq!(p.offset, next);
            next += 1;
        }
    }
    let all = read_all(&mut c, "dense", 0, 0).await;
    assert_eq!(all.len(), 1000);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
        assert!(v.starts_with(&format!("{}-{}-", i / 20, i % 20)), "{v} at {i}");
    }
    // Reading from the middle of a batch starts exactly there.
    assert_eq!(read_all(&mut c, "dense", 0, 517).await[0].offset, 517);
    let d = c.admin.describe_topic(DescribeTopicRequest { name: "dense".into() }).await.unwrap().into_inner();
    assert!(d.topic.unwrap().partitions[0].segments > 5, "segment.bytes=8192 rolls segments");
}

#[tokio::test]
async fn fetch_serves_several_partitions_within_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "multi", 3).await;
    for p in 0..3u32 {
        for _ in 0..5 {
            let records = (0..10).map(|i| rec(None, &format!("p{p}-{i}"))).collect();
            c.produce("multi", Some(p), records, Acks::Written).await.unwrap();
        }
    }
    let req = FetchRequest {
        partitions: (0..3)
            .map(|p| FetchPartition {
                topic: "multi".into(),
                partition: p,
                offset: 10,
                max_bytes: 0,
                skip_damaged: false,
            })
            .collect(),
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 0,
    };
    let reply = c.broker.fetch(req.clone()).await.unwrap().into_inner();
    assert_eq!(reply.partitions.len(), 3);
    for (p, part) in reply.partitions.iter().enumerate() {
        assert_eq!(part.partition, p as u32);
        assert_eq!(part.high_watermark, 50);
        assert_eq!(part.records.len(), 40);
        assert_eq!(part.records[0].offset, 10);
        assert_eq!(part.records[0].value.as_deref(), Some(format!("p{p}-0").as_bytes()));
    }
    // A tiny max_bytes still returns one whole batch, and no more.
    let small = FetchRequest { max_bytes: 1, ..req };
    let reply = c.broker.fetch(small).await.unwrap().into_inner();
    assert_eq!(reply.partitions[0].records.len(), 10, "one batch (offsets 10..20)");
    assert!(reply.partitions[1].records.is_empty(), "budget spent on partition 0");
}

#[tokio::test]
async fn long_poll_fetch_wakes_on_new_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "poll", 1).await;
    let mut consumer = c.clone();
    let started = Instant::now();
    let poll =
        tokio::spawn(async move { consumer.fetch("poll", 0, 0, 1 << 20, Duration::from_secs(20)).await.unwrap() });
    // No broker-side signal says "the fetch is parked", so give it a moment;
    // if it was not yet parked the test still checks the record comes back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "an empty long poll must wait, not return at once");
    c.produce("poll", Some(0), vec![rec(None, "wake up")], Acks::Written).await.unwrap();
    let part = poll.await.unwrap();
    assert_eq!(part.records.len(), 1, "the poll returned the new record");
    assert_eq!(part.records[0].value.as_deref(), Some(&b"wake up"[..]));
    assert!(started.elapsed() < Duration::from_secs(15), "woke on data, not on the deadline");

    // With nothing to read, max_wait is honoured and the reply is empty.
    let t = Instant::now();
    let part = c.fetch("poll", 0, 1, 1 << 20, Duration::from_millis(300)).await.unwrap();
    assert!(part.records.is_empty());
    assert!(t.elapsed() >= Duration::from_millis(250), "returned after {:?}", t.elapsed());
}

#[tokio::test]
async fn subscribe_pushes_appended_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "push", 1).await;
    c.produce("push", Some(0), vec![rec(None, "old-0"), rec(None, "old-1")], Acks::Written).await.unwrap();

    // From offset 1: the backlog first, then live appends.
    let req =
        SubscribeRequest { topic: "push".into(), partition: 0, offset: Some(1), max_bytes: 0, skip_damaged: false };
    let mut stream = c.broker.subscribe(req).await.unwrap().into_inner();
    let mut seen = Vec::new();
    let mut producer = c.clone();
    let produce = tokio::spawn(async move {
        for i in 0..20 {
            producer.produce("push", Some(0), vec![rec(None, &format!("new-{i}"))], Acks::Written).await.unwrap();
        }
    });
    while seen.len() < 21 {
        let msg = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("records pushed in time")
            .expect("stream open")
            .expect("no error");
        for r in msg.records.unwrap().records {
            seen.push((r.offset, String::from_utf8(r.value.unwrap().to_vec()).unwrap()));
        }
    }
    produce.await.unwrap();
    assert_eq!(seen[0], (1, "old-1".to_string()));
    for (i, (offset, value)) in seen[1..].iter().enumerate() {
        assert_eq!(*offset, i as u64 + 2);
        assert_eq!(value, &format!("new-{i}"));
    }

    // Without an offset: only records appended after subscribing.
    let req = SubscribeRequest { topic: "push".into(), partition: 0, offset: None, max_bytes: 0, skip_damaged: false };
    let mut live = c.broker.subscribe(req).await.unwrap().into_inner();
    c.produce("push", Some(0), vec![rec(None, "latest")], Acks::Written).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(20), live.next()).await.unwrap().unwrap().unwrap();
    let records = msg.records.unwrap().records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].offset, 22);
}

#[tokio::test]
async fn list_offsets_earliest_latest_and_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    c.create_topic("times", 1, [("segment.bytes".to_string(), "4096".to_string())]).await.unwrap();
    // Record i has timestamp 1_000_000 + 10 * i.
    for b in 0..20i64 {
        let records = (0..10)
            .map(|i| Record { timestamp_ms: 1_000_000 + 10 * (b * 10 + i), ..rec(None, &"v".repeat(50)) })
            .collect();
        c.produce("times", Some(0), records, Acks::Written).await.unwrap();
    }
    let list = |spec| ListOffsetsRequest { topic: "times".into(), partition: 0, spec: Some(spec) };
    use list_offsets_request::Spec;
    let ask = |spec| {
        let mut b = c.broker.clone();
        let req = list(spec);
        async move { b.list_offsets(req).await.unwrap().into_inner() }
    };
    assert_eq!(ask(Spec::Earliest(true)).await.offset, 0);
    assert_eq!(ask(Spec::Latest(true)).await.offset, 200);
    for (ts, want_offset, want_ts) in [
        (0, 0, 1_000_000),
        (1_000_000, 0, 1_000_000),
        (1_000_001, 1, 1_000_010),
        (1_000_730, 73, 1_000_730),
        (1_001_990, 199, 1_001_990),
    ] {
        let r = ask(Spec::TimestampMs(ts)).await;
        assert_eq!((r.offset, r.timestamp_ms), (want_offset, want_ts), "timestamp {ts}");
    }
    let r = ask(Spec::TimestampMs(9_999_999)).await;
    assert_eq!((r.offset, r.timestamp_ms), (200, -1), "after the last record: the high watermark");
}

#[tokio::test]
async fn produce_stream_pipelines_and_answers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "piped", 1).await;
    let requests: Vec<ProduceRequest> = (0..200u64)
        .map(|i| ProduceRequest {
            topic: if i == 100 { "missing".into() } else { "piped".into() },
            partition: Some(0),
            records: (0..5).map(|j| rec(None, &format!("{i}-{j}"))).collect(),
            acks: Acks::Durable as i32,
            request_id: i,
            // Odd requests ask for ranges only.
            omit_record_positions: i % 2 == 1,
            ..Default::default()
        })
        .collect();
    let replies: Vec<_> =
        c.broker.produce_stream(futures::stream::iter(requests)).await.unwrap().into_inner().collect().await;
    assert_eq!(replies.len(), 200);
    let mut next = 0;
    for (i, r) in replies.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.request_id, i as u64, "replies in request order");
        if i == 100 {
            let e = r.error.expect("a bad request fails alone");
            assert_eq!(e.code, tonic::Code::NotFound as i32);
            assert!(r.positions.is_empty());
            continue;
        }
        assert!(r.error.is_none());
        assert_eq!(r.ranges, [PartitionRange { partition: 0, base_offset: next, record_count: 5 }]);
        if i % 2 == 1 {
            assert!(r.positions.is_empty(), "positions omitted on request");
        } else {
            assert_eq!(r.positions.len(), 5);
        }
        for p in r.positions {
            assert_eq!(p.offset, next);
            next += 1;
        }
        next = r.ranges[0].base_offset + 5;
    }
    assert_eq!(high_watermark(&mut c, "piped", 0).await, 199 * 5);
}

/// A stop ends Subscribe streams (and a ProduceStream still open) with
/// UNAVAILABLE, reason BROKER_STOPPING: a client can tell a stop from the
/// end of the data, which an OK would look like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_streams_with_unavailable_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    c.produce("t", Some(0), vec![rec(None, "one")], Acks::Durable).await.unwrap();
    let req = SubscribeRequest { topic: "t".into(), partition: 0, offset: Some(0), ..Default::default() };
    let mut sub = c.broker.clone().subscribe(req).await.unwrap().into_inner();
    let first = sub.message().await.unwrap().unwrap();
    assert_eq!(first.records.unwrap().records.len(), 1);
    let (tx, rx) = tokio::sync::mpsc::channel::<ProduceRequest>(1);
    let mut produced =
        c.broker.clone().produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let stopping = tokio::spawn(b.stop());
    let err = tokio::time::timeout(std::time::Duration::from_secs(20), sub.message())
        .await
        .expect("the stream ends")
        .expect_err("with a status, not OK");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert!(strata_client::refusal::is(&err, ErrorReason::BrokerStopping), "{err:?}");
    let err = tokio::time::timeout(std::time::Duration::from_secs(20), produced.message())
        .await
        .expect("the stream ends")
        .expect_err("with a status, not OK");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    drop(tx);
    assert!(stopping.await.unwrap().success());
}

/// A long poll waits for `min_bytes` (or `max_wait_ms`), also when some
/// records are there already: it does not answer at the first record.
#[tokio::test]
async fn a_long_poll_waits_for_min_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    c.produce("t", Some(0), vec![rec(None, "small")], Acks::Durable).await.unwrap();
    let req = FetchRequest {
        partitions: vec![FetchPartition {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            skip_damaged: false,
        }],
        max_wait_ms: 700,
        min_bytes: 1 << 20,
        max_bytes: 0,
    };
    let started = Instant::now();
    let reply = c.broker.fetch(req).await.unwrap().into_inner();
    assert_eq!(reply.partitions[0].records.len(), 1);
    assert!(started.elapsed() >= Duration::from_millis(600), "answered after {:?}", started.elapsed());
}
