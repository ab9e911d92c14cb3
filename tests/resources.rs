//! Bounded resources: no client can wedge, crash, starve or lock out the
//! broker. Each test plays an attacker against the real binary over real
//! gRPC (raw protobuf bytes where a well-behaved client could not send them)
//! and checks the broker answers clearly, stays within its budgets, and
//! keeps serving everyone else.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use strata_client::proto::*;
use strata_client::raw::{empty_records, RawCodec};
use strata_client::Client;
use tonic::{Code, Status};

async fn raw_grpc(addr: &str) -> tonic::client::Grpc<tonic::transport::Channel> {
    strata_client::raw::grpc(channel(addr).await)
}

async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

async fn raw_unary(addr: &str, method: &'static str, body: Bytes) -> Result<Bytes, Status> {
    strata_client::raw::unary(channel(addr).await, method, body).await
}

const PRODUCE: &str = "/strata.v1.Broker/Produce";

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn topic_dirs(data_dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("topics"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Samples the broker's RSS until `work` finishes; returns its result and the peak.
async fn peak_rss_during<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, u64) {
    let mut work = Box::pin(work);
    let mut peak = rss(pid);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            out = &mut work => return (out, peak.max(rss(pid))),
            _ = tick.tick() => peak = peak.max(rss(pid)),
        }
    }
}

#[tokio::test]
async fn produce_requests_are_bounded_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;

    // 16 M empty records in 32 MB (under server.max_request_bytes): refused
    // whole, before decoding, naming the limit.
    let err = raw_unary(&broker.addr, PRODUCE, empty_records("t", 16_000_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("100000 records"), "{}", err.message());
    assert_eq!(high_watermark(&mut c, "t", 0).await, 0, "nothing was stored");

    // At the limit it is stored, as one batch that reads back whole.
    raw_unary(&broker.addr, PRODUCE, empty_records("t", 100_000)).await.unwrap();
    assert_eq!(read_all(&mut c, "t", 0, 0).await.len(), 100_000);

    // Malformed protobuf: INVALID_ARGUMENT naming the message.
    for (method, body) in [
        (PRODUCE, &[0x0f][..]),                                   // field 1, wire type 7
        ("/strata.v1.Broker/Fetch", &[0x0a, 0x05, 0x01][..]),     // truncated
        ("/strata.v1.Admin/ListTopics", &[0xff, 0xff, 0xff][..]), // bad varint
    ] {
        let err = raw_unary(&broker.addr, method, Bytes::from_static(body)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{method}: {}", err.message());
        assert!(err.message().contains("does not decode"), "{method}: {}", err.message());
    }

    // A ProduceStream with a malformed message: the replies before it, then
    // the stream ends with INVALID_ARGUMENT.
    let mut grpc = raw_grpc(&broker.addr).await;
    grpc.ready().await.unwrap();
    let good = empty_records("t", 1);
    let requests = futures::stream::iter(vec![good, Bytes::from_static(&[0x0f])]);
    let path = http::uri::PathAndQuery::from_static("/strata.v1.Broker/ProduceStream");
    let mut replies = grpc.streaming(tonic::Request::new(requests), path, RawCodec).await.unwrap().into_inner();
    assert!(replies.next().await.unwrap().is_ok());
    let err = replies.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(high_watermark(&mut c, "t", 0).await, 100_001);
}

#[tokio::test]
async fn every_stored_batch_fits_a_reply_and_max_bytes_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("STRATA_SERVER__MAX_REQUEST_BYTES", "1048576"),
        ("STRATA_SERVER__FETCH_DEFAULT_MAX_BYTES", "1048576"),
        ("STRATA_TOPICS__MAX_MESSAGE_BYTES", "1000"),
    ];
    let broker = Broker::start_with(dir.path(), &[], &env);
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;

    // 80,000 empty records are 160 KB on the wire but would be stored as
    // more than 1 MiB: refused before anything is written, naming the key.
    let r = c.produce("t", Some(0), (0..80_000).map(|_| Record::default()).collect(), Acks::Written).await;
    let err = r.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("server.max_request_bytes = 1048576"), "{}", err.message());
    assert_eq!(high_watermark(&mut c, "t", 0).await, 0);

    // Three batches near the limit; max_bytes = 2^31 gets a capped reply.
    let value = Bytes::from(vec![7u8; 900]);
    for _ in 0..3 {
        let records = (0..1000).map(|_| Record { value: Some(value.clone()), ..Default::default() }).collect();
        c.produce("t", Some(0), records, Acks::Written).await.unwrap();
    }
    let part = c.fetch("t", 0, 0, 1 << 31, Duration::ZERO).await.unwrap();
    let bytes: usize = part.records.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len())).sum();
    assert!(!part.records.is_empty() && bytes <= 2 << 20, "{} records, {bytes} bytes", part.records.len());
    assert_eq!(read_all(&mut c, "t", 0, 0).await.len(), 3000);
}

#[tokio::test]
async fn concurrent_huge_requests_stay_within_the_request_budget() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest budget allowed: one 32 MiB request at a time.
    let env = [("STRATA_SERVER__REQUEST_MEMORY_BYTES", "33554432")];
    let broker = Broker::start_with(dir.path(), &[], &env);
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;
    let pid = broker.pid();
    let before = rss(pid);

    let body = empty_records("t", 16_000_000);
    let addr = broker.addr.clone();
    let three = futures::future::join_all((0..3).map(|_| raw_unary(&addr, PRODUCE, body.clone())));
    let (results, peak) = peak_rss_during(pid, three).await;
    for r in results {
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
    }
    let grew = peak.saturating_sub(before);
    eprintln!("RSS before {} MiB, peak {} MiB (+{} MiB)", before / MIB, peak / MIB, grew / MIB);
    // docs/operations.md: budget + 16 MiB per connection (HTTP/2 window) + 64 MiB.
    assert!(grew < 32 * MIB + 3 * 16 * MIB + 64 * MIB, "RSS grew by {} MiB", grew / MIB);

    // And the memory goes back afterwards.
    eventually(Duration::from_secs(20), "RSS back near where it was", || async {
        (rss(pid) < before + 32 * MIB).then_some(())
    })
    .await;
    assert_eq!(high_watermark(&mut c, "t", 0).await, 0);
}

#[tokio::test]
async fn stalled_subscribers_stay_within_the_reply_budget_while_producers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("STRATA_SERVER__REPLY_MEMORY_BYTES", "67108864")];
    let broker = Broker::start_with(dir.path(), &[], &env);
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;
    create_topic(&mut c, "p", 1).await;
    // 64 MB in batches of 100 KB.
    let value = Bytes::from(vec![1u8; 1000]);
    for _ in 0..640 {
        let records = (0..100).map(|_| Record { value: Some(value.clone()), ..Default::default() }).collect();
        c.produce("t", Some(0), records, Acks::Written).await.unwrap();
    }
    let pid = broker.pid();
    let before = rss(pid);

    // 200 subscribers from offset 0 that never read, on 4 connections.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let sc = broker.client().await;
        for _ in 0..50 {
            let req = SubscribeRequest {
                topic: "t".into(),
                partition: 0,
                offset: Some(0),
                max_bytes: 1 << 20,
                ..Default::default()
            };
            streams.push(sc.broker.clone().subscribe(req).await.unwrap().into_inner());
        }
    }
    // A subscriber that reads, from offset 0 of the same partition: the
    // stalled ones must not make it wait for memory.
    let req = SubscribeRequest { topic: "t".into(), partition: 0, offset: Some(0), ..Default::default() };
    let mut reader = c.broker.clone().subscribe(req).await.unwrap().into_inner();
    let read_all = tokio::spawn(async move {
        let mut n = 0;
        while n < 64_000 {
            n += reader.next().await.unwrap().unwrap().records.map_or(0, |p| p.records.len());
        }
    });

    // A producer makes progress every second for 5 s meanwhile.
    let produce = async {
        let start = Instant::now();
        let mut last_ack = Instant::now();
        let mut worst_gap = Duration::ZERO;
        let mut batches = 0u64;
        while start.elapsed() < Duration::from_secs(5) {
            let records = (0..1000).map(|_| Record { value: Some(value.clone()), ..Default::default() }).collect();
            c.produce("p", Some(0), records, Acks::Written).await.unwrap();
            worst_gap = worst_gap.max(last_ack.elapsed());
            last_ack = Instant::now();
            batches += 1;
        }
        (batches, worst_gap)
    };
    let ((batches, worst_gap), peak) = peak_rss_during(pid, produce).await;
    let grew = peak.saturating_sub(before);
    eprintln!(
        "200 stalled subscribers: RSS +{} MiB (before {} MiB); producer {batches} MB in 5 s, longest wait {worst_gap:?}",
        grew / MIB,
        before / MIB
    );
    assert!(worst_gap < Duration::from_secs(1), "the producer waited {worst_gap:?}");
    // docs/operations.md: the reply budget, plus per subscriber that stopped
    // reading its first small reply in HTTP/2 (64 KiB, or one batch) and its
    // stream's buffers, plus 64 MiB.
    assert!(grew < 64 * MIB + 200 * MIB / 2 + 64 * MIB, "RSS grew by {} MiB", grew / MIB);
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("the reading subscriber got everything")
        .unwrap();
    drop(streams);
}

#[tokio::test]
async fn a_subscriber_stalled_past_the_timeout_is_ended_with_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("STRATA_SERVER__SUBSCRIBE_STALL_TIMEOUT_MS", "1000")];
    let broker = Broker::start_with(dir.path(), &[], &env);
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;
    let value = Bytes::from(vec![1u8; 1000]);
    for _ in 0..40 {
        let records = (0..1000).map(|_| Record { value: Some(value.clone()), ..Default::default() }).collect();
        c.produce("t", Some(0), records, Acks::Written).await.unwrap();
    }
    let req = SubscribeRequest { topic: "t".into(), partition: 0, offset: Some(0), ..Default::default() };
    let mut stream = c.broker.clone().subscribe(req).await.unwrap().into_inner();
    let metrics = broker.metrics_addr.clone();
    eventually(Duration::from_secs(10), "the stalled subscriber is ended", || {
        let metrics = metrics.clone();
        async move { scrape(&metrics).contains("strata_subscribers_stalled_total 1").then_some(()) }
    })
    .await;
    // What reached the client before is delivered, then the status.
    let err = loop {
        match stream.next().await.expect("the stream ends with a status") {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("server.subscribe_stall_timeout_ms"), "{}", err.message());
}

#[tokio::test]
async fn idle_connections_do_not_lock_out_new_clients() {
    // This test holds 4,200 sockets: raise its own soft descriptor limit.
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;
    drop(c);

    // 2,000 connections that send nothing, and 200 that send only the
    // HTTP/2 preface, to the gRPC port; 2,000 idle ones to the metrics port.
    let mut idle: Vec<TcpStream> = (0..2000).filter_map(|_| TcpStream::connect(&broker.addr).ok()).collect();
    for _ in 0..200 {
        let Ok(mut s) = TcpStream::connect(&broker.addr) else { continue };
        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        idle.push(s);
    }
    idle.extend((0..2000).filter_map(|_| TcpStream::connect(&broker.metrics_addr).ok()));
    assert!(idle.len() > 4000, "only {} connections made", idle.len());

    // A new client connects and produces within 5 s; topic creation works.
    let start = Instant::now();
    let mut fresh = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(mut f) = Client::connect(&broker.addr).await {
                if f.produce("t", Some(0), vec![rec(None, "through")], Acks::Durable).await.is_ok() {
                    return f;
                }
            }
        }
    })
    .await
    .expect("a new client produced within 5 s");
    eprintln!("a new client produced {:?} after 4,200 idle connections", start.elapsed());
    create_topic(&mut fresh, "u", 2).await;

    // The metrics endpoint answers again once its idle connections time out.
    let metrics = broker.metrics_addr.clone();
    eventually(Duration::from_secs(15), "a metrics scrape", || {
        let metrics = metrics.clone();
        async move { scrape(&metrics).contains("strata_active_connections").then_some(()) }
    })
    .await;
    // Refusals and evictions are not logged one line each.
    let lines = broker.log_lines().iter().filter(|l| l.contains("connection")).count();
    assert!(lines < 50, "{lines} log lines about connections");
    drop(idle);
}

#[tokio::test]
async fn a_failed_create_topic_leaves_no_descriptors_or_directories() {
    let dir = tempfile::tempdir().unwrap();
    // Start-up opens one partition (the offsets topic), the warm-up topic
    // another; the 4th partition of the next creation then fails to open,
    // once, as if out of descriptors.
    let broker = Broker::start_with(dir.path(), &[], &[("STRATA_FAILPOINTS", "open=emfile*1@5")]);
    let mut c = broker.client().await;
    let pid = broker.pid();
    // Warmed up: whatever the first creation opens for good is open.
    create_topic(&mut c, "warm", 1).await;
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        v.sort();
        v
    };
    let (fds, dirs) = (listing(), topic_dirs(dir.path()));
    let req = CreateTopicRequest { name: "big".into(), partitions: 10, configs: Default::default() };
    let err = c.admin.create_topic(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    let settled = tokio::time::timeout(Duration::from_secs(10), async {
        while listing() != fds {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "descriptors before: {fds:?}\nafter: {:?}", listing());
    assert_eq!(topic_dirs(dir.path()), dirs, "no directory left behind");
    c.admin.create_topic(req).await.unwrap();
    assert_eq!(describe(&mut c, "big").await.partitions.len(), 10);

    // Under a low descriptor limit, a creation that would pass it is refused
    // up front, naming the numbers, and changes nothing.
    let out =
        std::process::Command::new("prlimit").args(["--pid", &pid.to_string(), "--nofile=400:400"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (fds, dirs) = (open_fds(pid), topic_dirs(dir.path()));
    let req = CreateTopicRequest { name: "huge".into(), partitions: 10_000, configs: Default::default() };
    let err = c.admin.create_topic(req).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("RLIMIT_NOFILE") && err.message().contains("400"), "{}", err.message());
    assert_eq!(open_fds(pid), fds);
    assert_eq!(topic_dirs(dir.path()), dirs);
    create_topic(&mut c, "small", 3).await;
}

#[tokio::test]
async fn sigterm_with_an_open_health_watch_exits_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", broker.addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let mut watch = health.watch(req).await.unwrap().into_inner();
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(watch.next().await.unwrap().unwrap().status, serving);

    let start = Instant::now();
    let watched = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(Ok(r)) = watch.next().await {
            seen.push(r.status);
        }
        seen
    });
    let status = broker.stop().await;
    let took = start.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "stopping took {took:?} (grace period is 10 s)");
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    assert_eq!(watched.await.unwrap(), vec![not_serving], "the watch saw NOT_SERVING, then ended");
}

/// A CommitOffsets of many tiny entries: about `bytes` on the wire.
fn tiny_commits(bytes: usize) -> CommitOffsetsRequest {
    let offsets = (0..bytes / 9)
        .map(|i| OffsetCommit { topic: "x".into(), partition: i as u32 % 100, offset: 1, metadata: String::new() })
        .collect();
    CommitOffsetsRequest { group_id: "g".into(), member_id: String::new(), member_epoch: 0, offsets }
}

/// Groups and Admin requests are bounded like Produce and Fetch: one past
/// `server.max_control_request_bytes` is RESOURCE_EXHAUSTED naming the key
/// (not tonic's OUT_OF_RANGE at 4 MiB), and many at once decode within the
/// request memory budget although each decodes to many times its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_admin_requests_are_bounded_and_decode_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_SERVER__REQUEST_MEMORY_BYTES", "67108864")]);
    let c = b.client().await;
    let err = c.groups.clone().commit_offsets(tiny_commits(1_200_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("server.max_control_request_bytes = 1048576"), "{}", err.message());
    assert!(strata_client::refusal::is(&err, ErrorReason::MessageTooLarge));
    let big_topic =
        CreateTopicRequest { name: "t".into(), partitions: 1, configs: [("k".repeat(1_100_000), "v".into())].into() };
    let err = c.admin.clone().create_topic(big_topic).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());

    // 16 just under the bound at once, on their own connections: each
    // decodes to ~30 times its size; the budget (64 MiB, each charged 40
    // times its size) lets one decode at a time.
    let body = Bytes::from(prost::Message::encode_to_vec(&tiny_commits(1_000_000)));
    let mut channels = Vec::new();
    for _ in 0..16 {
        channels.push(channel(&b.addr).await);
    }
    let before = peak_rss(b.pid());
    let work = futures::future::join_all(channels.into_iter().map(|ch| {
        let body = body.clone();
        async move { strata_client::raw::unary(ch, "/strata.v1.Groups/CommitOffsets", body).await.map(|_| ()) }
    }));
    let results = work.await;
    let peak = peak_rss(b.pid());
    for r in results {
        // Refused after decoding (no such topic), or BUSY if the budget
        // stayed spent for 5 s: never a memory blow-up.
        let e = r.unwrap_err();
        assert!(matches!(e.code(), Code::NotFound | Code::ResourceExhausted), "{e:?}");
    }
    let grew = peak.saturating_sub(before);
    assert!(grew < 160 << 20, "the broker grew by {} MiB decoding 16 MB of CommitOffsets", grew >> 20);
    // And it serves.
    let mut c = b.client().await;
    create_topic(&mut c, "after", 1).await;
}
