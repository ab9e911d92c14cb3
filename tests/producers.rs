//! Producers that retry safely, over the real broker: idempotent produce
//! across a paused and a killed broker, fencing of a stale instance by its
//! writer id, sequence gaps, and conditional appends racing.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, high_watermark, read_all, rec, Broker};
use strata_client::proto::*;
use strata_client::{Client, Producer, RetryPolicy};
use tonic::Code;

fn values(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()).collect()
}

fn batch_values(b: usize) -> Vec<Record> {
    (0..10).map(|i| rec(None, &format!("{b}-{i}"))).collect()
}

fn expected(batches: usize) -> Vec<String> {
    (0..batches).flat_map(|b| (0..10).map(move |i| format!("{b}-{i}"))).collect()
}

fn signal(b: &Broker, sig: &str) {
    assert!(Command::new("kill").args([sig, &b.pid().to_string()]).status().unwrap().success());
}

/// The broker is paused (SIGSTOP) for longer than the producer's attempt
/// timeout, so requests time out and are sent again; once it resumes it
/// sees every attempt. Each record is stored exactly once, in order.
#[tokio::test]
async fn retries_across_a_paused_broker_store_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    c.create_topic("events", 1, []).await.unwrap();
    let mut p = Producer::init(b.client().await, "").await.unwrap();
    p.retry = RetryPolicy { attempt_timeout: Duration::from_millis(300), ..RetryPolicy::default() };
    let sent = Arc::new(AtomicUsize::new(0));
    let batches = 60;
    let producing = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for n in 0..batches {
                p.produce("events", 0, batch_values(n), Acks::Written).await.unwrap();
                sent.store(n + 1, Ordering::SeqCst);
            }
        })
    };
    eventually(Duration::from_secs(30), "20 batches acknowledged", || {
        let n = sent.load(Ordering::SeqCst);
        async move { (n >= 20).then_some(()) }
    })
    .await;
    signal(&b, "-STOP");
    // The fault: paused for five attempt timeouts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&b, "-CONT");
    producing.await.unwrap();
    let stored = read_all(&mut c, "events", 0, 0).await;
    assert_eq!(values(&stored), expected(batches));
}

/// kill -9 while producing with acks=durable: the producer's in-doubt batch
/// is sent again to the restarted broker and stored once; a retry of an
/// old batch after the restart gets its first offsets; one older than the
/// last five is refused.
#[tokio::test]
async fn retries_across_a_killed_broker_store_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Some(Broker::start(dir.path()));
    let addr = |b: &Option<Broker>| b.as_ref().unwrap().addr.clone();
    Client::connect(&addr(&b)).await.unwrap().create_topic("events", 1, []).await.unwrap();
    let mut p = Producer::init(Client::connect(&addr(&b)).await.unwrap(), "").await.unwrap();
    p.retry = RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    let batches = 40;
    let mut firsts = Vec::new();
    for n in 0..batches {
        let batch = p.batch("events", 0, batch_values(n), Acks::Durable);
        if n == 25 {
            // Killed while this batch is on its way: it may or may not be
            // stored, and the producer cannot know.
            let broker = b.take().unwrap();
            let (in_doubt, ()) = tokio::join!(p.send(&batch), async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                broker.kill9();
            });
            println!("batch 25 before the kill: {:?}", in_doubt.map(|r| r.ranges));
            b = Some(Broker::start(dir.path()));
            p.set_client(Client::connect(&addr(&b)).await.unwrap());
        }
        let r = p.send(&batch).await.unwrap();
        firsts.push((batch.clone(), r.ranges[0].base_offset));
    }
    let b = b.unwrap();
    let mut c = b.client().await;
    assert_eq!(values(&read_all(&mut c, "events", 0, 0).await), expected(batches));
    // The last five batches are remembered: a retry returns the first offsets.
    let hw = high_watermark(&mut c, "events", 0).await;
    let (old, first_offset) = &firsts[batches - 2];
    assert_eq!(p.send(old).await.unwrap().ranges[0].base_offset, *first_offset);
    drop(c);
    b.kill9();
    let b = Broker::start(dir.path());
    p.set_client(b.client().await);
    let (old, first_offset) = &firsts[batches - 3];
    assert_eq!(p.send(old).await.unwrap().ranges[0].base_offset, *first_offset, "rebuilt from the log after kill -9");
    let mut c = b.client().await;
    assert_eq!(high_watermark(&mut c, "events", 0).await, hw, "retries stored nothing");
    let err = p.send(&firsts[batches - 10].0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("expected 40"), "{}", err.message());
}

/// A new instance of a writer fences the old one on every partition; a
/// gap in sequence numbers is refused naming the expected one.
#[tokio::test]
async fn a_zombie_instance_is_fenced_and_a_sequence_gap_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    c.create_topic("orders", 2, []).await.unwrap();
    let mut old = Producer::init(b.client().await, "orders-writer").await.unwrap();
    old.produce("orders", 0, vec![rec(None, "a")], Acks::Written).await.unwrap();
    let mut new = Producer::init(b.client().await, "orders-writer").await.unwrap();
    assert_eq!(new.id().0, old.id().0, "the writer keeps its producer id");
    assert_eq!(new.id().1, old.id().1 + 1, "and gets the next epoch");
    for partition in [0, 1] {
        let err = old.produce("orders", partition, vec![rec(None, "zombie")], Acks::Written).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("fenced"), "{}", err.message());
    }
    new.produce("orders", 0, vec![rec(None, "b")], Acks::Written).await.unwrap();
    assert_eq!(values(&read_all(&mut c, "orders", 0, 0).await), ["a", "b"]);
    assert!(read_all(&mut c, "orders", 1, 0).await.is_empty());
    // Another principal's writer of the same name is another writer (here:
    // anonymous, so the same); the id survives a restart.
    drop(c);
    b.kill9();
    let b = Broker::start(dir.path());
    let again = Producer::init(b.client().await, "orders-writer").await.unwrap();
    assert_eq!(again.id(), (new.id().0, new.id().1 + 1));

    // A gap: sequence 0, then 2.
    let mut c = b.client().await;
    let (id, epoch) = Producer::init(b.client().await, "").await.unwrap().id();
    let req = |sequence: i32, value: &str| ProduceRequest {
        topic: "orders".into(),
        partition: Some(1),
        records: vec![rec(None, value)],
        producer: Some(ProducerBatch { producer_id: id, producer_epoch: epoch, sequence }),
        ..Default::default()
    };
    c.broker.produce(req(0, "x")).await.unwrap();
    let err = c.broker.produce(req(2, "y")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("sent sequence 2") && err.message().contains("expected 1"), "{}", err.message());
    let mut keyless = req(1, "z");
    keyless.partition = None;
    assert_eq!(c.broker.produce(keyless).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(values(&read_all(&mut c, "orders", 1, 0).await), ["x"]);
}

/// Two writers race with `expected_offset` on one partition, 1,000 rounds:
/// exactly one wins each round, the loser is told the actual next offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_appends_let_exactly_one_racer_win_each_round() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    c.create_topic("ledger", 1, []).await.unwrap();
    let attempt = |mut client: Client, who: &'static str, round: u64| async move {
        let req = ProduceRequest {
            topic: "ledger".into(),
            partition: Some(0),
            records: vec![rec(None, &format!("{round}-{who}"))],
            acks: Acks::Written as i32,
            expected_offset: Some(round),
            ..Default::default()
        };
        client.broker.produce(req).await
    };
    let (a, z) = (b.client().await, b.client().await);
    for round in 0..1000u64 {
        let (ra, rz) = tokio::join!(attempt(a.clone(), "a", round), attempt(z.clone(), "z", round));
        assert_eq!(ra.is_ok() as u8 + rz.is_ok() as u8, 1, "round {round}: {ra:?} {rz:?}");
        let loser = match (ra, rz) {
            (Err(e), _) | (_, Err(e)) => e,
            _ => unreachable!("one of the two lost"),
        };
        assert_eq!(loser.code(), Code::FailedPrecondition);
        assert!(loser.message().contains(&format!("next offset is {}", round + 1)), "{}", loser.message());
    }
    let stored = read_all(&mut c, "ledger", 0, 0).await;
    assert_eq!(stored.len(), 1000);
    for (i, v) in values(&stored).iter().enumerate() {
        assert!(v.starts_with(&format!("{i}-")), "offset {i} holds {v}");
    }
}

/// A batch whose write failed (the disk full once) is not remembered as
/// stored: after another client's records took its offsets, its retry is
/// appended, not answered with those offsets.
#[tokio::test]
async fn a_retry_of_a_batch_whose_write_failed_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    // The first write (InitProducer's record of the id it issues) passes,
    // the next fails.
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_FAILPOINTS", "write=enospc*1@1")]);
    let mut c = b.client().await;
    c.create_topic("t", 1, []).await.unwrap();
    let (id, epoch) = Producer::init(b.client().await, "").await.unwrap().id();
    let req = ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: vec![rec(None, "a")],
        acks: Acks::Written as i32,
        producer: Some(ProducerBatch { producer_id: id, producer_epoch: epoch, sequence: 0 }),
        ..Default::default()
    };
    let err = c.broker.produce(req.clone()).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok, "the first write fails: {err:?}");
    c.produce("t", Some(0), vec![rec(None, "x")], Acks::Written).await.unwrap();
    let retried = c.broker.produce(req).await.unwrap().into_inner();
    assert_eq!(retried.ranges[0].base_offset, 1, "appended after x, not answered with x's offset");
    assert_eq!(values(&read_all(&mut c, "t", 0, 0).await), ["x", "a"]);
}

/// Per-key conditional appends: a key's latest offset (or its absence)
/// decides, tombstones make keys absent, and the answers stay the same
/// after compaction rewrote the log and after a kill -9.
#[tokio::test]
async fn per_key_conditions_hold_across_compaction_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env =
        [("STRATA_CLEANER__COMPACTION_INTERVAL_MS", "100"), ("STRATA_CLEANER__RETENTION_CHECK_INTERVAL_MS", "100")];
    let b = Broker::start_with(dir.path(), &[], &env);
    let mut c = b.client().await;
    let compacted = [("cleanup.policy", "compact"), ("segment.bytes", "4096"), ("delete.retention.ms", "0")];
    c.create_topic("accounts", 1, compacted.iter().map(|(k, v)| (k.to_string(), v.to_string()))).await.unwrap();
    async fn put(
        c: &mut Client,
        key: &str,
        value: Option<&str>,
        expect: Option<Option<u64>>,
    ) -> Result<u64, tonic::Status> {
        let expected_key = expect.map(|e| KeyExpectation {
            expect: Some(match e {
                Some(o) => key_expectation::Expect::LastOffset(o),
                None => key_expectation::Expect::Absent(true),
            }),
        });
        let record = Record {
            key: Some(key.to_string().into()),
            value: value.map(|v| v.to_string().into()),
            ..Default::default()
        };
        let req = ProduceRequest {
            topic: "accounts".into(),
            records: vec![record],
            acks: Acks::Written as i32,
            expected_key,
            ..Default::default()
        };
        Ok(c.broker.produce(req).await?.into_inner().ranges[0].base_offset)
    }
    let refused = |r: Result<u64, tonic::Status>, says: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains(says), "{}", e.message());
    };
    let o1 = put(&mut c, "acct-1", Some("opened"), Some(None)).await.unwrap();
    refused(put(&mut c, "acct-1", Some("opened again"), Some(None)).await, &format!("is at offset {o1}"));
    let o2 = put(&mut c, "acct-1", Some("deposit 10"), Some(Some(o1))).await.unwrap();
    refused(put(&mut c, "acct-1", Some("stale writer"), Some(Some(o1))).await, &format!("is at offset {o2}"));
    put(&mut c, "acct-2", Some("opened"), Some(None)).await.unwrap();
    put(&mut c, "acct-2", None, None).await.unwrap();
    put(&mut c, "acct-2", Some("reopened"), Some(None)).await.expect("a tombstone makes the key absent");
    let bad = KeyExpectation { expect: None };
    let mut req = ProduceRequest {
        topic: "accounts".into(),
        records: vec![rec(Some("k"), "v")],
        expected_key: Some(bad),
        ..Default::default()
    };
    assert_eq!(c.broker.produce(req.clone()).await.unwrap_err().code(), Code::InvalidArgument);
    req.records.push(rec(Some("other key"), "v"));
    req.expected_key = Some(KeyExpectation { expect: Some(key_expectation::Expect::Absent(true)) });
    assert_eq!(c.broker.produce(req).await.unwrap_err().code(), Code::InvalidArgument);
    // Enough other records to roll segments, then wait for compaction to
    // drop acct-1's first record.
    for i in 0..40 {
        put(&mut c, &format!("filler-{}", i % 4), Some(&"f".repeat(400)), None).await.unwrap();
    }
    eventually(Duration::from_secs(30), "compaction", || {
        let mut c = c.clone();
        async move { read_all(&mut c, "accounts", 0, 0).await.iter().all(|r| r.offset != o1).then_some(()) }
    })
    .await;
    refused(put(&mut c, "acct-1", Some("stale"), Some(Some(o1))).await, &format!("is at offset {o2}"));
    drop(c);
    b.kill9();
    let b = Broker::start_with(dir.path(), &[], &env);
    let mut c = b.client().await;
    refused(put(&mut c, "acct-1", Some("stale"), Some(Some(o1))).await, &format!("is at offset {o2}"));
    refused(put(&mut c, "acct-2", Some("again"), Some(None)).await, "is at offset");
    let o3 = put(&mut c, "acct-1", Some("deposit 5"), Some(Some(o2))).await.expect("rebuilt from the compacted log");
    assert!(o3 > o2);
    put(&mut c, "acct-3", Some("opened"), Some(None)).await.unwrap();
}

/// A client from loopback address `from` (127.0.0.0/8 is all loopback).
async fn client_from(b: &Broker, from: &str) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", b.addr))
        .unwrap()
        .local_address(Some(from.parse().unwrap()))
        .connect()
        .await
        .unwrap();
    Client::from_channel(channel, strata_client::Credentials::none())
}

fn stamped(id: i64, epoch: i32, sequence: i32, value: &str) -> ProduceRequest {
    ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: vec![rec(None, value)],
        acks: Acks::Durable as i32,
        producer: Some(ProducerBatch { producer_id: id, producer_epoch: epoch, sequence }),
        ..Default::default()
    }
}

fn unknown_producer(r: Result<tonic::Response<ProduceResponse>, tonic::Status>) {
    let err = r.expect_err("must be refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(strata_client::refusal::is(&err, ErrorReason::UnknownProducerId), "{err:?}");
}

/// Producer ids are the broker's to issue and are bound to their owner
/// (with auth off: the client's address), across a restart: another client
/// cannot write under one (and so make the owner's batch a "duplicate"),
/// and made-up ids cannot fill a partition's producer table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_are_issued_and_bound_to_their_owner_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (mut owner, mut other) = (client_from(&b, "127.0.0.1").await, client_from(&b, "127.0.0.2").await);
    owner.create_topic("t", 1, []).await.unwrap();
    let issued = owner.broker.init_producer(InitProducerRequest { writer_id: String::new() }).await.unwrap();
    let (id, epoch) = (issued.get_ref().producer_id, issued.get_ref().producer_epoch);

    // Another client, same id, epoch and next sequence: refused, and the
    // owner's own batch with that sequence is stored, not a "duplicate".
    unknown_producer(other.broker.produce(stamped(id, epoch, 0, "forged")).await);
    let mine = owner.broker.produce(stamped(id, epoch, 0, "mine")).await.unwrap().into_inner();
    assert_eq!(mine.ranges[0].base_offset, 0);
    // Ids never issued: refused, thousands of them, and the table stays
    // open to the real producers.
    for made_up in (0..2000).map(|i| 12_345 + i) {
        unknown_producer(other.broker.produce(stamped(made_up, 0, 0, "x")).await);
    }
    let later = Producer::init(other.clone(), "").await.unwrap();
    let mut later = later;
    later.produce("t", 0, vec![rec(None, "theirs")], Acks::Durable).await.unwrap();
    // An epoch the id never had.
    unknown_producer(owner.broker.produce(stamped(id, epoch + 1, 1, "x")).await);
    drop((owner, other));
    b.kill9();

    // The binding survives the restart.
    let b = Broker::start(dir.path());
    let (mut owner, mut other) = (client_from(&b, "127.0.0.1").await, client_from(&b, "127.0.0.2").await);
    unknown_producer(other.broker.produce(stamped(id, epoch, 1, "forged")).await);
    let next = owner.broker.produce(stamped(id, epoch, 1, "mine again")).await.unwrap().into_inner();
    assert_eq!(next.ranges[0].base_offset, 2);
    // A retry of the owner's first batch is still answered, not stored twice.
    let again = owner.broker.produce(stamped(id, epoch, 0, "mine")).await.unwrap().into_inner();
    assert_eq!(again.ranges[0].base_offset, 0);
    assert_eq!(values(&read_all(&mut owner, "t", 0, 0).await), ["mine", "theirs", "mine again"]);
}

/// One owner holds at most 1,000 producer ids issued without a writer id:
/// the 1,001st retires its oldest. The Rust producer whose id was retired
/// gets UNKNOWN_PRODUCER_ID (nothing stored), asks for a new id and sends
/// the batch under it: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_producer_id_is_renewed_by_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    c.create_topic("t", 1, []).await.unwrap();
    let mut producer = Producer::init(b.client().await, "").await.unwrap();
    let (first_id, _) = producer.id();
    producer.produce("t", 0, vec![rec(None, "before")], Acks::Durable).await.unwrap();
    for _ in 0..1000 {
        c.broker.init_producer(InitProducerRequest { writer_id: String::new() }).await.unwrap();
    }
    unknown_producer(c.broker.produce(stamped(first_id, 0, 1, "x")).await);
    producer.produce("t", 0, vec![rec(None, "after")], Acks::Durable).await.unwrap();
    assert_ne!(producer.id().0, first_id, "a new id");
    assert_eq!(values(&read_all(&mut c, "t", 0, 0).await), ["before", "after"]);
}
