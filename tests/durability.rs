//! Restarts, crashes and damaged files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use strata_client::proto::*;

#[tokio::test]
async fn clean_restart_keeps_topics_records_and_configs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    c.create_topic("kept", 3, [("segment.bytes".to_string(), "16384".to_string())]).await.unwrap();
    let mut expected: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for i in 0..300 {
        let key = format!("k{}", i % 17);
        let value = format!("value-{i}");
        let reply = c.produce("kept", None, vec![rec(Some(&key), &value)], Acks::Written).await.unwrap();
        expected.entry(reply.positions[0].partition).or_default().push(value);
    }
    let status = broker.stop().await;
    assert!(status.success(), "clean stop exits 0: {status:?}");
    assert!(dir.path().join(".clean-shutdown").exists(), "clean stop leaves the marker");

    let broker = Broker::start(dir.path());
    assert!(!dir.path().join(".clean-shutdown").exists(), "a running broker removes the marker");
    let mut c = broker.client().await;
    let d =
        c.admin.describe_topic(DescribeTopicRequest { name: "kept".into() }).await.unwrap().into_inner().topic.unwrap();
    assert_eq!(d.partitions.len(), 3);
    let seg = d.configs.iter().find(|c| c.key == "segment.bytes").unwrap();
    assert_eq!(seg.value, "16384");
    for (p, values) in &expected {
        let got: Vec<_> = read_all(&mut c, "kept", *p, 0)
            .await
            .into_iter()
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(&got, values, "partition {p}");
    }
    // And appends continue where they stopped.
    let reply = c.produce("kept", Some(0), vec![rec(None, "after")], Acks::Durable).await.unwrap();
    assert_eq!(reply.positions[0].offset, expected[&0].len() as u64);
}

/// Produces durable batches until stopped, recording what was acknowledged.
async fn produce_until_killed(
    addr: String,
    acked: Arc<Mutex<Vec<(u64, String)>>>,
    round: usize,
    enough: Arc<tokio::sync::Notify>,
) {
    let Ok(mut c) = strata_client::Client::connect(&addr).await else {
        return;
    };
    let mut n = 0;
    loop {
        let values: Vec<String> = (0..50).map(|i| format!("r{round}-b{n}-{i}-{}", "z".repeat(100))).collect();
        let records = values.iter().map(|v| rec(None, v)).collect();
        match c.produce("crash", Some(0), records, Acks::Durable).await {
            Ok(reply) => {
                let mut a = acked.lock().unwrap();
                for (p, v) in reply.positions.iter().zip(values) {
                    a.push((p.offset, v));
                }
                if n == 20 {
                    enough.notify_one();
                }
            }
            Err(_) => return, // the broker died under us
        }
        n += 1;
    }
}

#[tokio::test]
async fn kill_9_during_durable_produce_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    {
        let broker = Broker::start(dir.path());
        let mut c = broker.client().await;
        // Small segments: crashes also land near segment rolls.
        c.create_topic("crash", 1, [("segment.bytes".to_string(), "65536".to_string())]).await.unwrap();
    }
    for round in 0..4 {
        let broker = Broker::start(dir.path());
        let enough = Arc::new(tokio::sync::Notify::new());
        let producers: Vec<_> = (0..3)
            .map(|_| tokio::spawn(produce_until_killed(broker.addr.clone(), acked.clone(), round, enough.clone())))
            .collect();
        // Kill while the producers are mid-stream: after one of them has had 20 acks.
        tokio::time::timeout(Duration::from_secs(60), enough.notified()).await.expect("producers make progress");
        broker.kill9();
        for p in producers {
            p.await.unwrap();
        }

        let broker = Broker::start(dir.path());
        let mut c = broker.client().await;
        let all = read_all(&mut c, "crash", 0, 0).await;
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "offsets stay dense after recovery");
            let v = r.value.as_ref().expect("every record has its value");
            assert!(v.starts_with(b"r") && v.ends_with(&[b'z'; 100]), "no partial or corrupt record served");
        }
        let acked = acked.lock().unwrap();
        assert!(!acked.is_empty());
        for (offset, value) in acked.iter() {
            let got = all
                .get(*offset as usize)
                .unwrap_or_else(|| panic!("acknowledged offset {offset} lost in round {round}"));
            assert_eq!(got.value.as_deref(), Some(value.as_bytes()), "offset {offset}");
        }
        drop(broker);
    }
}

fn last_segment(dir: &Path, topic: &str) -> PathBuf {
    let pdir = dir.join("topics").join(topic).join("0");
    let mut logs: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Writes 9 durable batches of 10 records and a 10th acknowledged only as
/// written (never fsynced: the flush interval is long), kills the broker,
/// damages the last segment with `damage` (the 10th batch: above the
/// recovery point, so a torn write), restarts and returns the broker and
/// what it serves.
async fn damaged_restart(dir: &Path, damage: impl FnOnce(&Path)) -> (Broker, Vec<Record>) {
    let broker = Broker::start_with(dir, &[], &[("STRATA_STORAGE__FLUSH_INTERVAL_MS", "3600000")]);
    let mut c = broker.client().await;
    create_topic(&mut c, "torn", 1).await;
    for b in 0..10 {
        let records = (0..10).map(|i| rec(None, &format!("b{b}-r{i}"))).collect();
        let acks = if b < 9 { Acks::Durable } else { Acks::Written };
        c.produce("torn", Some(0), records, acks).await.unwrap();
    }
    broker.kill9();
    damage(&last_segment(dir, "torn"));
    let broker = Broker::start(dir);
    let mut c = broker.client().await;
    let all = read_all(&mut c, "torn", 0, 0).await;
    (broker, all)
}

/// Where the written data ends in a (possibly preallocated) log file.
fn data_end(data: &[u8]) -> usize {
    data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

fn assert_first_90_intact(all: &[Record]) {
    assert_eq!(all.len(), 90, "cut back to the last good batch");
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.value.as_deref(), Some(format!("b{}-r{}", i / 10, i % 10).as_bytes()));
    }
}

#[tokio::test]
async fn truncated_tail_is_cut_back_to_the_last_good_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, all) = damaged_restart(dir.path(), |log| {
        let len = data_end(&std::fs::read(log).unwrap()) as u64;
        std::fs::OpenOptions::new().write(true).open(log).unwrap().set_len(len - 5).unwrap();
    })
    .await;
    assert_first_90_intact(&all);
    let lines = broker.log_lines();
    assert!(lines.iter().any(|l| l.contains("recovery cut") && l.contains("truncated")), "recovery logs what it cut");
    // New appends continue at the cut.
    let mut c = broker.client().await;
    let reply = c.produce("torn", Some(0), vec![rec(None, "next")], Acks::Durable).await.unwrap();
    assert_eq!(reply.positions[0].offset, 90);
}

#[tokio::test]
async fn bit_flipped_tail_is_cut_back_to_the_last_good_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, all) = damaged_restart(dir.path(), |log| {
        let mut data = std::fs::read(log).unwrap();
        let n = data_end(&data);
        data[n - 4] ^= 0x01;
        std::fs::write(log, data).unwrap();
    })
    .await;
    assert_first_90_intact(&all);
    assert!(broker.log_lines().iter().any(|l| l.contains("recovery cut") && l.contains("CRC")));
}

#[tokio::test]
async fn written_acks_survive_a_broker_crash() {
    // `written` means in the OS page cache: a process crash keeps it.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    create_topic(&mut c, "w", 1).await;
    let value = Bytes::from(vec![42u8; 3000]);
    for _ in 0..30 {
        let r = Record { value: Some(value.clone()), ..Default::default() };
        c.produce("w", Some(0), vec![r], Acks::Written).await.unwrap();
    }
    broker.kill9();
    let broker = Broker::start(dir.path());
    let mut c = broker.client().await;
    let all = read_all(&mut c, "w", 0, 0).await;
    assert_eq!(all.len(), 30);
    assert!(all.iter().all(|r| r.value.as_ref() == Some(&value)));
}
