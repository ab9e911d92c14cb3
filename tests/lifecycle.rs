//! Topic lifecycle: retention by time and size, compaction of entity topics,
//! crashes during compaction.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use strata_client::proto::*;
use strata_client::Client;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

/// A broker whose cleaner runs every 100 ms.
fn fast_cleaner(dir: &Path, extra_env: &[(&str, &str)]) -> Broker {
    let mut env =
        vec![("STRATA_CLEANER__RETENTION_CHECK_INTERVAL_MS", "100"), ("STRATA_CLEANER__COMPACTION_INTERVAL_MS", "100")];
    env.extend_from_slice(extra_env);
    Broker::start_with(dir, &[], &env)
}

fn cfg(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn fill(c: &mut Client, topic: &str, batches: usize, timestamp_ms: i64) {
    for b in 0..batches {
        let records =
            (0..10).map(|i| Record { timestamp_ms, ..rec(None, &format!("{b}-{i}-{}", "p".repeat(80))) }).collect();
        c.produce(topic, Some(0), records, Acks::Written).await.unwrap();
    }
}

#[tokio::test]
async fn retention_by_size_deletes_oldest_segments_and_moves_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let broker = fast_cleaner(dir.path(), &[]);
    let mut c = broker.client().await;
    c.create_topic("sized", 1, cfg(&[("segment.bytes", "4096"), ("retention.bytes", "10000")])).await.unwrap();
    fill(&mut c, "sized", 60, 0).await; // ~60 KB
    let d = eventually(WAIT, "retention by size", || {
        let mut c = c.clone();
        async move {
            let d = describe(&mut c, "sized").await;
            (d.partitions[0].size_bytes <= 10_000 + 4096).then_some(d)
        }
    })
    .await;
    let p = &d.partitions[0];
    assert!(p.log_start_offset > 0, "log start moved");
    assert_eq!(p.high_watermark, 600, "appends are untouched");
    assert!(p.size_bytes >= 10_000 - 4096, "no more than needed deleted: {} bytes left", p.size_bytes);
    // Below the log start: OUT_OF_RANGE naming the new start.
    let err = c.fetch("sized", 0, 0, 1 << 20, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains(&format!("{}..=600", p.log_start_offset)), "{}", err.message());
    // From the log start on, everything is there and in order.
    let rest = read_all(&mut c, "sized", 0, p.log_start_offset).await;
    assert_eq!(rest.first().unwrap().offset, p.log_start_offset);
    assert_eq!(rest.last().unwrap().offset, 599);
    let earliest = ListOffsetsRequest {
        topic: "sized".into(),
        partition: 0,
        spec: Some(list_offsets_request::Spec::Earliest(true)),
    };
    assert_eq!(c.broker.list_offsets(earliest).await.unwrap().into_inner().offset, p.log_start_offset);
}

#[tokio::test]
async fn retention_by_time_deletes_old_segments_and_minus_one_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let broker = fast_cleaner(dir.path(), &[]);
    let mut c = broker.client().await;
    let small = ("segment.bytes", "4096");
    c.create_topic("timed", 1, cfg(&[small, ("retention.ms", "60000")])).await.unwrap();
    c.create_topic("forever", 1, cfg(&[small, ("retention.ms", "-1")])).await.unwrap();
    let hour_ago = now_ms() - 3_600_000;
    // Back-dated records fill several segments; fresh ones come after.
    fill(&mut c, "timed", 30, hour_ago).await;
    fill(&mut c, "timed", 10, 0).await;
    fill(&mut c, "forever", 30, 1).await; // timestamps in 1970

    let start = eventually(WAIT, "retention by time", || {
        let mut c = c.clone();
        async move {
            let d = describe(&mut c, "timed").await;
            (d.partitions[0].log_start_offset >= 290).then_some(d.partitions[0].log_start_offset)
        }
    })
    .await;
    assert!(start <= 300, "fresh records (offsets 300..) are kept, log start {start}");
    let kept = read_all(&mut c, "timed", 0, start).await;
    assert!(kept.iter().filter(|r| r.timestamp_ms > hour_ago).count() == 100);

    // Let retention delete once more on "timed" so at least one full pass
    // has gone over "forever" in between.
    fill(&mut c, "timed", 1, hour_ago).await;
    fill(&mut c, "timed", 30, 0).await;
    let hw_before = describe(&mut c, "timed").await.partitions[0].high_watermark;
    c.admin
        .alter_topic_config(AlterTopicConfigRequest {
            name: "timed".into(),
            set: cfg(&[("retention.bytes", "8000")]).into_iter().collect(),
            reset: vec![],
        })
        .await
        .unwrap();
    eventually(WAIT, "a second retention pass", || {
        let mut c = c.clone();
        async move { (describe(&mut c, "timed").await.partitions[0].log_start_offset > start).then_some(()) }
    })
    .await;
    assert!(hw_before > start);
    let forever = describe(&mut c, "forever").await;
    assert_eq!(forever.partitions[0].log_start_offset, 0, "retention.ms=-1 keeps everything");
    assert_eq!(read_all(&mut c, "forever", 0, 0).await.len(), 300);
}

/// Produces `versions` updates of `keys` keys, then tombstones for keys 0 and
/// 1, then a filler that rolls the segment. Returns the expected table
/// (key -> (offset, value)) with tombstoned keys removed.
async fn produce_entity_updates(
    c: &mut Client,
    topic: &str,
    keys: usize,
    versions: usize,
) -> BTreeMap<String, (u64, Bytes)> {
    let mut table = BTreeMap::new();
    for v in 0..versions {
        let records: Vec<_> =
            (0..keys).map(|k| rec(Some(&format!("user-{k}")), &format!("{{\"version\":{v}}}"))).collect();
        let reply = c.produce(topic, Some(0), records, Acks::Written).await.unwrap();
        for (k, pos) in reply.positions.iter().enumerate() {
            table.insert(format!("user-{k}"), (pos.offset, Bytes::from(format!("{{\"version\":{v}}}"))));
        }
    }
    for k in 0..2 {
        let tombstone = Record { key: Some(format!("user-{k}").into()), value: None, ..Default::default() };
        c.produce(topic, Some(0), vec![tombstone], Acks::Written).await.unwrap();
        table.remove(&format!("user-{k}"));
    }
    // Bigger than a segment: the segment holding the last updates closes.
    let filler =
        Record { key: Some("filler".into()), value: Some(Bytes::from(vec![b'f'; 5000])), ..Default::default() };
    c.produce(topic, Some(0), vec![filler], Acks::Written).await.unwrap();
    table
}

/// Replays a topic from the start and materialises its table: the latest
/// value per key, tombstones deleting keys. Also returns how many records
/// were read and the offset of each key's surviving record.
async fn materialise(c: &mut Client, topic: &str) -> (BTreeMap<String, (u64, Bytes)>, usize) {
    let records = read_all(c, topic, 0, 0).await;
    let mut table = BTreeMap::new();
    for r in &records {
        let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
        match &r.value {
            Some(v) => table.insert(key, (r.offset, v.clone())),
            None => table.remove(&key),
        };
    }
    table.remove("filler");
    (table, records.len())
}

#[tokio::test]
async fn compacted_topic_replays_to_the_latest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = fast_cleaner(dir.path(), &[]);
    let mut c = broker.client().await;
    let topic_cfg = cfg(&[("cleanup.policy", "compact"), ("segment.bytes", "4096"), ("delete.retention.ms", "0")]);
    c.create_topic("users", 1, topic_cfg).await.unwrap();
    let expected = produce_entity_updates(&mut c, "users", 20, 30).await;
    let produced = 20 * 30 + 2 + 1;

    // Once cleaned: one record per live key (plus the filler), tombstoned keys gone.
    let live = expected.len();
    let (table, count) = eventually(WAIT, "compaction", || {
        let mut c = c.clone();
        async move {
            let (table, count) = materialise(&mut c, "users").await;
            (count == live + 1).then_some((table, count))
        }
    })
    .await;
    assert!(count < produced);
    assert_eq!(table, expected, "latest value per key, at the offset the producer was told");
    assert!(!table.contains_key("user-0") && !table.contains_key("user-1"), "tombstoned keys disappear");
    // Offsets are sparse now but the high watermark did not move.
    assert_eq!(high_watermark(&mut c, "users", 0).await, produced as u64);
    // Reading from an offset that was compacted away starts at the next kept record.
    let from_zero = c.fetch("users", 0, 0, 1 << 20, Duration::ZERO).await.unwrap();
    assert_eq!(from_zero.records[0].offset, expected.values().map(|(o, _)| *o).min().unwrap());

    // Keyless records are refused on a compacted topic, and change nothing.
    let err = c.produce("users", Some(0), vec![rec(None, "no key")], Acks::Written).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("no key") && err.message().contains("compact"), "{}", err.message());
    assert_eq!(high_watermark(&mut c, "users", 0).await, produced as u64);
}

#[tokio::test]
async fn tombstones_stay_until_delete_retention_ms() {
    let dir = tempfile::tempdir().unwrap();
    let broker = fast_cleaner(dir.path(), &[]);
    let mut c = broker.client().await;
    let topic_cfg =
        cfg(&[("cleanup.policy", "compact"), ("segment.bytes", "4096"), ("delete.retention.ms", "3600000")]);
    c.create_topic("slow", 1, topic_cfg).await.unwrap();
    let expected = produce_entity_updates(&mut c, "slow", 10, 20).await;
    // Compacted: live keys once each, plus the two young tombstones, plus the filler.
    let live = expected.len();
    let records = eventually(WAIT, "compaction", || {
        let mut c = c.clone();
        async move {
            let records = read_all(&mut c, "slow", 0, 0).await;
            (records.len() == live + 2 + 1).then_some(records)
        }
    })
    .await;
    let tombstones: Vec<_> = records.iter().filter(|r| r.value.is_none()).map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(
        tombstones,
        vec![Bytes::from("user-0"), Bytes::from("user-1")],
        "young tombstones are kept for replayers"
    );
}

#[tokio::test]
async fn crash_at_each_step_of_a_compaction_swap_leaves_a_correct_log() {
    for failpoint in strata::log::compact::FAILPOINTS {
        let dir = tempfile::tempdir().unwrap();
        // Write the data with compaction off, so the crash cannot hit mid-produce.
        let broker = Broker::start_with(dir.path(), &[], &[("STRATA_CLEANER__COMPACTION_INTERVAL_MS", "86400000")]);
        let mut c = broker.client().await;
        let topic_cfg = cfg(&[("cleanup.policy", "compact"), ("segment.bytes", "4096"), ("delete.retention.ms", "0")]);
        c.create_topic("crashy", 1, topic_cfg).await.unwrap();
        let expected = produce_entity_updates(&mut c, "crashy", 10, 20).await;
        drop(c);
        assert!(broker.stop().await.success());
        let broker = fast_cleaner(dir.path(), &[("STRATA_FAILPOINTS", failpoint)]);
        // The cleaner reaches the failpoint and the process aborts, like a kill -9.
        let status = broker.wait_exit(WAIT);
        assert!(!status.success(), "{failpoint}: aborted");

        // Restart with compaction effectively off: what recovery left must already be right.
        let broker = Broker::start_with(dir.path(), &[], &[("STRATA_CLEANER__COMPACTION_INTERVAL_MS", "86400000")]);
        let mut c = broker.client().await;
        let (table, _) = materialise(&mut c, "crashy").await;
        assert_eq!(table, expected, "{failpoint}: table intact after recovery");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("topics/crashy/0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cleaned"))
            .collect();
        assert!(leftovers.is_empty(), "{failpoint}: recovery resolved {leftovers:?}");
        drop(c);
        drop(broker);

        // And compaction then completes normally on the recovered log.
        let broker = fast_cleaner(dir.path(), &[]);
        let c = broker.client().await;
        let (table, _) = eventually(WAIT, "compaction after recovery", || {
            let mut c = c.clone();
            async move {
                let (table, count) = materialise(&mut c, "crashy").await;
                (count == table.len() + 1).then_some((table, count))
            }
        })
        .await;
        assert_eq!(table, expected, "{failpoint}: compacted after restart");
    }
}

#[tokio::test]
async fn lifecycle_config_is_validated_and_described() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    for (k, v, needle) in [
        ("cleanup.policy", "shred", "delete, compact or compact,delete"),
        ("retention.ms", "-7", "-1 (unlimited)"),
        ("retention.bytes", "lots", "-1 (unlimited)"),
        ("delete.retention.ms", "-1", "between 0"),
        ("min.compaction.lag.ms", "x", "whole number"),
    ] {
        let err = c.create_topic("bad", 1, cfg(&[(k, v)])).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{k}={v}");
        assert!(err.message().contains(k) && err.message().contains(needle), "{}", err.message());
    }
    let d = c
        .create_topic("ok", 1, cfg(&[("cleanup.policy", "compact,delete"), ("retention.ms", "86400000")]))
        .await
        .unwrap();
    let get = |k: &str| d.configs.iter().find(|c| c.key == k).map(|c| (c.value.clone(), c.source)).unwrap();
    assert_eq!(get("cleanup.policy"), ("compact,delete".into(), ConfigSource::Topic as i32));
    assert_eq!(get("retention.ms"), ("86400000".into(), ConfigSource::Topic as i32));
    assert_eq!(get("retention.bytes"), ("-1".into(), ConfigSource::Default as i32));
}

#[tokio::test]
async fn a_compacted_topic_with_gaps_replays_completely_through_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let broker = fast_cleaner(dir.path(), &[]);
    let mut c = broker.client().await;
    let topic_cfg = cfg(&[("cleanup.policy", "compact"), ("segment.bytes", "4096"), ("delete.retention.ms", "0")]);
    c.create_topic("gaps", 1, topic_cfg).await.unwrap();
    // Batch 0..=2, then newer values of b and c (3, 4): compaction keeps only
    // `a` of the first batch, whose offsets 1 and 2 become a gap at its end.
    let first = vec![rec(Some("a"), "1"), rec(Some("b"), "1"), rec(Some("c"), "1")];
    c.produce("gaps", Some(0), first, Acks::Written).await.unwrap();
    c.produce("gaps", Some(0), vec![rec(Some("b"), "2"), rec(Some("c"), "2")], Acks::Written).await.unwrap();
    let filler =
        Record { key: Some("filler".into()), value: Some(Bytes::from(vec![b'f'; 5000])), ..Default::default() };
    c.produce("gaps", Some(0), vec![filler], Acks::Written).await.unwrap();
    let want = vec![0, 3, 4, 5];

    // A fetch inside the gap, of no more than the batch holding it,
    // returns nothing but says where to go on.
    let at_gap = eventually(WAIT, "compaction", || {
        let mut c = c.clone();
        async move {
            let part = c.fetch("gaps", 0, 1, 1, Duration::ZERO).await.unwrap();
            (part.records.is_empty()).then_some(part)
        }
    })
    .await;
    assert_eq!(at_gap.next_offset, 3);
    assert_eq!(at_gap.high_watermark, 6);
    // A long poll there answers at once with where to go on, not after its
    // max_wait_ms (no record will ever arrive at offset 1).
    let started = std::time::Instant::now();
    let req = FetchRequest {
        partitions: vec![FetchPartition {
            topic: "gaps".into(),
            partition: 0,
            offset: 1,
            max_bytes: 1,
            skip_damaged: false,
        }],
        max_wait_ms: 30_000,
        min_bytes: 1,
        max_bytes: 0,
    };
    let polled = c.broker.fetch(req).await.unwrap().into_inner().partitions.remove(0);
    assert!(polled.records.is_empty() && polled.next_offset == 3, "{polled:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "the long poll waited {:?}", started.elapsed());

    // Fetch, following next_offset.
    let offsets: Vec<u64> = read_all(&mut c, "gaps", 0, 0).await.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, want);

    // Subscribe from the start.
    let req =
        SubscribeRequest { topic: "gaps".into(), partition: 0, offset: Some(0), max_bytes: 0, skip_damaged: false };
    let mut stream = c.broker.subscribe(req).await.unwrap().into_inner();
    let mut pushed = Vec::new();
    while pushed.last() != Some(&5) {
        let msg = tokio::time::timeout(WAIT, stream.message()).await.expect("pushed past the gap").unwrap().unwrap();
        pushed.extend(msg.records.unwrap().records.iter().map(|r| r.offset));
    }
    assert_eq!(pushed, want);

    // strata consume, which stops once caught up.
    let addr = broker.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_strata")).args(["consume", "gaps", "--addr", &addr]).output()
    });
    let out = tokio::time::timeout(WAIT, out).await.expect("strata consume finishes").unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(printed, want);

    // A group consumer.
    let mut consumer =
        strata_client::group::GroupConsumer::join(c.clone(), "readers", &["gaps"], Default::default()).await.unwrap();
    let mut consumed = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while consumed.last() != Some(&5) {
        assert!(tokio::time::Instant::now() < deadline, "group consumer got {consumed:?}");
        consumed.extend(consumer.poll(Duration::from_millis(200)).await.unwrap().iter().map(|r| r.record.offset));
    }
    assert_eq!(consumed, want);
}

#[tokio::test]
async fn a_topic_name_of_the_longest_valid_length_is_created_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    let name = "n".repeat(249);
    c.create_topic(&name, 2, []).await.expect("a 249-character name is valid");
    c.produce(&name, Some(1), vec![rec(None, "v")], strata_client::proto::Acks::Durable).await.unwrap();
    assert_eq!(read_all(&mut c, &name, 1, 0).await.len(), 1);
    c.admin.delete_topic(strata_client::proto::DeleteTopicRequest { name: name.clone() }).await.unwrap();
    let too_long = "n".repeat(250);
    let err = c.create_topic(&too_long, 1, []).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    let left: Vec<String> = std::fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("__"))
        .collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}
