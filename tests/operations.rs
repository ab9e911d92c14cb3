//! Running it: health command, metrics endpoint, configuration precedence,
//! limits, logs.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use strata_client::proto::*;
use strata_client::Client;

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("run strata")
}

#[tokio::test]
async fn health_command_reports_serving_and_down() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let addr = broker.addr.clone();
    let ok = strata(&["health", "--addr", &addr]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "SERVING");
    let per_service = strata(&["health", "--addr", &addr, "--service", "strata.v1.Broker"]);
    assert!(per_service.status.success());
    let unknown = strata(&["health", "--addr", &addr, "--service", "no.Such"]);
    assert!(!unknown.status.success(), "an unknown service is not serving");
    assert!(broker.stop().await.success());
    let down = strata(&["health", "--addr", &addr, "--timeout-ms", "2000"]);
    assert!(!down.status.success(), "down: non-zero");
    assert!(String::from_utf8_lossy(&down.stderr).contains(&addr));
}

/// GET /metrics, checking the reply is well-formed Prometheus text; returns
/// sample name (with labels) → value.
fn scrape(addr: &str) -> std::collections::BTreeMap<String, f64> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"));
    let mut samples = std::collections::BTreeMap::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(comment.starts_with(" TYPE ") || comment.starts_with(" HELP "), "{line}");
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let metric = name.split('{').next().unwrap();
        assert!(metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "{line}");
        assert!(!name.contains('{') || name.ends_with('}'), "{line}");
        samples.insert(name.to_string(), value);
    }
    samples
}

fn sum(samples: &std::collections::BTreeMap<String, f64>, prefix: &str, label: &str) -> f64 {
    samples.iter().filter(|(k, _)| k.starts_with(prefix) && k.contains(label)).map(|(_, v)| v).sum()
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text_that_moves() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(dir.path(), &[], &[("STRATA_CLEANER__RETENTION_CHECK_INTERVAL_MS", "100")]);
    let mut c = broker.client().await;
    create_topic(&mut c, "m", 2).await;
    c.produce("m", Some(0), vec![rec(None, "warm-up")], Acks::Durable).await.unwrap();
    let before = scrape(&broker.metrics_addr);
    c.produce("m", Some(0), (0..10).map(|i| rec(None, &format!("{i}"))).collect(), Acks::Durable).await.unwrap();
    read_all(&mut c, "m", 0, 0).await;
    let commit = CommitOffsetsRequest {
        group_id: "lagging".into(),
        member_id: String::new(),
        member_epoch: 0,
        offsets: vec![OffsetCommit { topic: "m".into(), partition: 0, offset: 4, metadata: String::new() }],
    };
    c.groups.commit_offsets(commit).await.unwrap();
    let after = eventually(Duration::from_secs(30), "a cleaner pass", || {
        let addr = broker.metrics_addr.clone();
        async move {
            let s = scrape(&addr);
            (sum(&s, "strata_cleaner_passes_total", "retention") > 0.0).then_some(s)
        }
    })
    .await;
    let topic = "topic=\"m\"";
    assert_eq!(sum(&after, "strata_records_in_total", topic) - sum(&before, "strata_records_in_total", topic), 10.0);
    assert!(sum(&after, "strata_records_out_total", topic) >= sum(&before, "strata_records_out_total", topic) + 11.0);
    assert!(sum(&after, "strata_bytes_out_total", topic) > sum(&before, "strata_bytes_out_total", topic));
    assert!(sum(&after, "strata_fsync_total", "") > sum(&before, "strata_fsync_total", ""));
    let writes = "strata_segment_write_duration_seconds_count";
    assert!(sum(&after, writes, "") > sum(&before, writes, ""), "one write per durable produce");
    let produce_rpc = "method=\"/strata.v1.Broker/Produce\"";
    assert!(sum(&after, "strata_rpc_requests_total", produce_rpc) >= 2.0);
    assert!(sum(&after, "strata_rpc_duration_seconds_bucket", produce_rpc) > 0.0, "latency histogram per RPC");
    assert_eq!(after["strata_partition_end_offset{topic=\"m\",partition=\"0\"}"], 11.0);
    assert!(after["strata_partition_size_bytes{topic=\"m\",partition=\"0\"}"] > 0.0);
    assert_eq!(after["strata_consumer_group_lag{group=\"lagging\",topic=\"m\",partition=\"0\"}"], 7.0);
    assert!(sum(&after, "strata_active_connections", "") >= 1.0);
    // Anything else is a 404, not metrics.
    let mut s = std::net::TcpStream::connect(&broker.metrics_addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 404"));
}

#[tokio::test]
async fn bench_reports_throughput_latency_and_the_brokers_disk() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let common = ["--addr", &broker.addr, "--record-size", "100", "--batch-records", "10", "--batches", "6"];
    let out = strata(&[&["bench", "--acks", "durable", "--metrics", &broker.metrics_addr][..], &common].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        |phase: &str| text.lines().find(|l| l.starts_with(phase)).unwrap_or_else(|| panic!("no {phase} line: {text}"));
    // The number just before `word` in `line`.
    let before = |line: &str, word: &str| -> f64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == word).unwrap_or_else(|| panic!("no {word:?} in {line}"));
        words[at - 1].parse().unwrap_or_else(|_| panic!("no number before {word:?} in {line}"))
    };
    for phase in ["produce", "consume"] {
        assert!(line(phase).contains(" 60 records ") && line(phase).contains("p99"), "{text}");
        // CPU seconds per GB of the client itself: some, and not absurd
        // (6 KB moved: even 10 s of CPU would be 1.7e6 s per GB).
        let cpu = before(line(phase).split("client CPU").nth(1).unwrap_or_else(|| panic!("{text}")), "s");
        assert!(cpu > 0.0 && cpu < 2e6, "{text}");
    }
    // Every durable batch was written and fsynced; batches queued together
    // share a write and its fsync.
    let disk = line("broker");
    let (writes, fsyncs) = (before(disk, "segment"), before(disk, "fsyncs;"));
    assert!((1.0..=6.0).contains(&writes) && fsyncs >= 1.0, "{text}");
    assert!(disk.contains("for 6 requests"), "{text}");
    // The broker's CPU over the phase, from its metrics.
    let cpu = before(disk.split("CPU").nth(1).unwrap_or_else(|| panic!("{text}")), "s");
    assert!(cpu > 0.0 && cpu < 2e6, "{text}");
    // A metrics address that does not answer is an error, not a silent zero.
    let down = strata(&[&["bench", "--skip-consume", "--metrics", "127.0.0.1:1"][..], &common].concat());
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot read metrics from 127.0.0.1:1"));
}

#[tokio::test]
async fn environment_overrides_the_file_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    std::fs::write(&file, "[topics]\npartitions = 3\nmax_message_bytes = 2048\n").unwrap();
    let data = dir.path().join("data");
    let broker =
        Broker::start_with(&data, &["--config", file.to_str().unwrap()], &[("STRATA_TOPICS__PARTITIONS", "5")]);
    let mut c = broker.client().await;
    let d = c.create_topic("env", 0, []).await.unwrap();
    assert_eq!(d.partitions.len(), 5, "the environment wins over the file");
    let big = Record { value: Some(Bytes::from(vec![0u8; 4096])), ..Default::default() };
    let err = c.produce("env", Some(0), vec![big], Acks::Written).await.unwrap_err();
    assert!(err.message().contains("2048"), "the file wins over the defaults: {}", err.message());
    let lines = broker.log_lines();
    assert!(
        lines.iter().any(|l| l.contains("starting strata") && l.contains("partitions = 5")),
        "effective config logged"
    );

    std::fs::write(&file, "[topics]\npartitons = 3\n").unwrap();
    let check = strata(&["config", "check", file.to_str().unwrap()]);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("topics.partitons"));
    std::fs::write(&file, "[server]\nlisten = \"0.0.0.0:1\"\n").unwrap();
    let check = strata(&["config", "check", file.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(dir.path(), &["--log-format", "json"], &[]);
    let mut c = broker.client().await;
    create_topic(&mut c, "j", 1).await;
    let lines = broker.log_lines_once(|l| l.contains("created topic") && l.contains("\"topic\":\"j\""));
    assert!(lines.len() >= 3);
    for line in &lines {
        assert!(line.starts_with('{') && line.ends_with('}'), "not a JSON object: {line}");
        assert!(line.contains("\"level\":") && line.contains("\"timestamp\":"), "{line}");
    }
}

#[tokio::test]
async fn connection_stream_timeout_and_fetch_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(
        dir.path(),
        &[],
        &[
            ("STRATA_SERVER__MAX_CONNECTIONS", "2"),
            ("STRATA_SERVER__MAX_CONCURRENT_STREAMS", "2"),
            ("STRATA_SERVER__REQUEST_TIMEOUT_MS", "500"),
            ("STRATA_SERVER__FETCH_MAX_WAIT_MS", "300"),
            ("STRATA_SERVER__FETCH_MAX_RECORDS", "25"),
        ],
    );
    let mut c = broker.client().await;
    create_topic(&mut c, "l", 1).await;
    for _ in 0..10 {
        c.produce("l", Some(0), (0..10).map(|i| rec(None, &i.to_string())).collect(), Acks::Written).await.unwrap();
    }

    // At most 25 records per fetch, in whole batches (of 10).
    let part = c.fetch("l", 0, 0, 1 << 20, Duration::ZERO).await.unwrap();
    assert_eq!(part.records.len(), 20);

    // A long poll asking for longer than fetch_max_wait_ms (which must be
    // below request_timeout_ms) answers, empty, after fetch_max_wait_ms.
    let started = std::time::Instant::now();
    let part = c.fetch("l", 0, 100, 1 << 20, Duration::from_secs(5)).await.unwrap();
    assert!(part.records.is_empty());
    assert!(started.elapsed() < Duration::from_secs(3), "waited {:?}", started.elapsed());

    // Two streams per connection: a third waits until one closes.
    let sub = |c: &mut Client| {
        let req =
            SubscribeRequest { topic: "l".into(), partition: 0, offset: Some(0), max_bytes: 0, skip_damaged: false };
        let mut b = c.broker.clone();
        async move { b.subscribe(req).await.map(|r| r.into_inner()) }
    };
    let s1 = sub(&mut c).await.unwrap();
    let s2 = sub(&mut c).await.unwrap();
    let mut third = Box::pin(sub(&mut c));
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut third).await.is_err(), "third stream waits");
    drop(s1);
    let mut s3 = tokio::time::timeout(Duration::from_secs(10), third).await.expect("slot freed").unwrap();
    assert!(s3.next().await.unwrap().is_ok());
    drop((s2, s3));

    // Two connections at most. With a producing stream open on each (not a
    // long-lived Subscribe: a connection holding only those is closed to
    // make room, see tests/resources.rs), a third is closed at once, and
    // the refusal is logged.
    let producing = |c: &mut Client| {
        let (tx, rx) = tokio::sync::mpsc::channel::<ProduceRequest>(1);
        let mut b = c.broker.clone();
        async move {
            let replies = b.produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
            (tx, replies)
        }
    };
    let s1 = producing(&mut c).await;
    let mut second = broker.client().await;
    let s2 = producing(&mut second).await;
    let third = Client::connect(&broker.addr).await;
    let refused = match third {
        Err(_) => true,
        Ok(mut t) => t.admin.list_topics(ListTopicsRequest::default()).await.is_err(),
    };
    assert!(refused, "the third connection is refused");
    // (The line may arrive after the client saw the refusal.)
    broker.log_lines_once(|l| l.contains("max_connections"));

    // Once one of them is idle, a new client is served: the idle
    // connection is closed to make room.
    drop(s2);
    let mut fourth = eventually(Duration::from_secs(10), "a new client is served", || async {
        let mut t = Client::connect(&broker.addr).await.ok()?;
        t.admin.list_topics(ListTopicsRequest::default()).await.ok().map(|_| t)
    })
    .await;
    fourth.admin.list_topics(ListTopicsRequest::default()).await.unwrap();
    drop((s1, second));
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_grow_broker_memory() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(
        dir.path(),
        &[],
        &[("STRATA_SERVER__SUBSCRIBE_BUFFER", "2"), ("STRATA_SERVER__FETCH_DEFAULT_MAX_BYTES", "1048576")],
    );
    let mut c = broker.client().await;
    create_topic(&mut c, "flood", 1).await;
    // A subscriber on its own connection that never reads.
    let stalled = Client::connect(&broker.addr).await.unwrap();
    let req =
        SubscribeRequest { topic: "flood".into(), partition: 0, offset: Some(0), max_bytes: 0, skip_damaged: false };
    let _never_read = stalled.broker.clone().subscribe(req).await.unwrap().into_inner();
    let value = Bytes::from(vec![7u8; 1000]);
    let batch =
        |v: &Bytes| (0..1000).map(|_| Record { value: Some(v.clone()), ..Default::default() }).collect::<Vec<_>>();
    // Warm up, then measure while 200 MB more flow in.
    for _ in 0..20 {
        c.produce("flood", Some(0), batch(&value), Acks::Written).await.unwrap();
    }
    let base = rss_bytes(broker.pid());
    for _ in 0..200 {
        c.produce("flood", Some(0), batch(&value), Acks::Written).await.unwrap();
    }
    let grown = rss_bytes(broker.pid()).saturating_sub(base);
    // Bounded by the subscription buffer (2 x 1 MiB) plus HTTP/2 windows and
    // allocator slack; an unbounded queue would hold ~200 MB here.
    eprintln!("broker RSS grew by {} KiB", grown >> 10);
    assert!(grown < 64 << 20, "broker RSS grew by {} MiB", grown >> 20);
}
