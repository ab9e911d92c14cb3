//! Recovery over the real broker: what start-up cuts (only what was never
//! reported durable: torn tails above the recovery point after a crash) and
//! what it refuses (damage at fsynced offsets, after a clean stop anywhere),
//! per partition, changing nothing; internal topics replayed whole or not
//! at all.

mod common;

use common::*;

/// A broker on `dir` whose partition `t`/0 start-up refused at `victim`:
/// it starts and serves other topics; `t`/0 refuses writes naming the file,
/// the byte and the choices, and serves what precedes the damage.
async fn assert_partition_refused(dir: &std::path::Path, victim: &flips::OnDisk, needles: &[&str]) {
    let b = Broker::start(dir);
    let mut c = b.client().await;
    let file_name = victim.file.file_name().unwrap().to_string_lossy().into_owned();
    let err = c.produce("t", Some(0), vec![rec(None, "new")], strata_client::proto::Acks::Durable).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    for needle in [file_name.as_str(), &format!("byte {}", victim.pos), "truncate"].iter().chain(needles) {
        assert!(err.message().contains(needle), "{needle:?} not in {}", err.message());
    }
    assert_eq!(high_watermark(&mut c, "t", 0).await, victim.base);
    let got = read_all(&mut c, "t", 0, 0).await;
    assert_eq!(got.len() as u64, victim.base, "readable up to the damage");
    // The rest of the broker serves.
    create_topic(&mut c, "other", 1).await;
    c.produce("other", Some(0), vec![rec(None, "x")], strata_client::proto::Acks::Durable).await.unwrap();
    b.log_lines_once(|l| l.contains("recovery refused damage"));
    drop(c);
    assert!(b.stop().await.success());
    // For the next round.
    std::fs::remove_dir_all(dir.join("topics/other")).unwrap();
}

#[tokio::test]
async fn damage_with_valid_batches_after_it_is_refused_for_its_partition_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = durable_batches(dir.path(), 10).await;
    let victim = &on_disk[4];
    for (what, damage) in [("a flipped bit", 0usize), ("a zeroed header", 1)] {
        let original = std::fs::read(&victim.file).unwrap();
        let mut damaged = original.clone();
        match damage {
            0 => damaged[victim.pos as usize + 70] ^= 0x10,
            _ => damaged[victim.pos as usize..victim.pos as usize + 61].fill(0),
        }
        std::fs::write(&victim.file, &damaged).unwrap();
        assert_partition_refused(dir.path(), victim, &["strata verify"]).await;
        assert_eq!(std::fs::read(&victim.file).unwrap(), damaged, "{what}: nothing was changed");
        std::fs::write(&victim.file, &original).unwrap();
    }

    // A batch of a newer format version is refused the same way.
    let last = on_disk.last().unwrap();
    flips::flip(&last.file, last.pos + 12, 0); // magic 2 -> 3
    assert_partition_refused(dir.path(), last, &["newer", "version 3"]).await;
    flips::flip(&last.file, last.pos + 12, 0);

    // The explicit setting cuts at the damage and starts; what came before stays.
    flips::flip(&victim.file, victim.pos + 70, 4);
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_STORAGE__RECOVERY", "truncate")]);
    let mut c = b.client().await;
    assert_eq!(high_watermark(&mut c, "t", 0).await, victim.base);
    assert_eq!(read_all(&mut c, "t", 0, 0).await.len() as u64, victim.base);
    c.produce("t", Some(0), vec![rec(None, "after the cut")], strata_client::proto::Acks::Durable).await.unwrap();
}

#[tokio::test]
async fn damage_in_the_last_batch_after_a_clean_stop_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = durable_batches(dir.path(), 20).await;
    let last = on_disk.last().unwrap();
    for at in [20u64, last.len - 1] {
        flips::flip(&last.file, last.pos + at, 3);
        let damaged = std::fs::read(&last.file).unwrap();
        assert_partition_refused(dir.path(), last, &["reported durable", "strata verify"]).await;
        assert_eq!(std::fs::read(&last.file).unwrap(), damaged, "nothing was cut");
        flips::flip(&last.file, last.pos + at, 3);
    }
    // The last batch zeroed, and the file cut just before it (at a batch
    // boundary: nothing torn to see, but fsynced offsets are missing).
    let pristine = std::fs::read(&last.file).unwrap();
    let mut zeroed = pristine.clone();
    zeroed[last.pos as usize..].fill(0);
    std::fs::write(&last.file, &zeroed).unwrap();
    assert_partition_refused(dir.path(), last, &["reported durable"]).await;
    assert_eq!(std::fs::read(&last.file).unwrap(), zeroed, "nothing was cut");
    std::fs::write(&last.file, &pristine[..last.pos as usize]).unwrap();
    assert_partition_refused(dir.path(), last, &["were fsynced"]).await;
    std::fs::write(&last.file, &pristine).unwrap();
    // Undamaged, every record is there.
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    assert_eq!(read_all(&mut c, "t", 0, 0).await.len(), 60);
}

#[tokio::test]
async fn after_a_crash_only_what_was_never_fsynced_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    // No fsync but the ones durable produces ask for.
    let env = [("STRATA_STORAGE__FLUSH_INTERVAL_MS", "3600000")];
    let b = Broker::start_with(dir.path(), &[], &env);
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    for i in 0..10 {
        let acks = if i < 8 { strata_client::proto::Acks::Durable } else { strata_client::proto::Acks::Written };
        c.produce("t", Some(0), vec![rec(None, &format!("value {i}"))], acks).await.unwrap();
    }
    drop(c);
    b.kill9();
    let on_disk = flips::batches(&dir.path().join("topics/t/0"));
    assert_eq!(on_disk.len(), 10);
    let pristine = std::fs::read(&on_disk[0].file).unwrap();

    // The last durable batch damaged: below the recovery point, refused.
    let durable = &on_disk[7];
    flips::flip(&durable.file, durable.pos + 30, 1);
    assert_partition_refused(dir.path(), durable, &["reported durable", "strata verify"]).await;
    std::fs::write(&on_disk[0].file, &pristine).unwrap();
    std::fs::remove_file(dir.path().join(".clean-shutdown")).unwrap();

    // The last batch, acknowledged only as written (never fsynced), torn:
    // cut like any torn tail after a crash.
    let written = &on_disk[9];
    flips::flip(&written.file, written.pos + 30, 1);
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    assert_eq!(high_watermark(&mut c, "t", 0).await, written.base);
    b.log_lines_once(|l| l.contains("recovery cut"));
    c.produce("t", Some(0), vec![rec(None, "after")], strata_client::proto::Acks::Durable).await.unwrap();
}

#[tokio::test]
async fn a_damaged_recovery_point_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("STRATA_STORAGE__FLUSH_INTERVAL_MS", "3600000")];
    let b = Broker::start_with(dir.path(), &[], &env);
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    for i in 0..4 {
        // The first two fsynced (so there is a recovery point), the rest not.
        let acks = if i < 2 { strata_client::proto::Acks::Durable } else { strata_client::proto::Acks::Written };
        c.produce("t", Some(0), vec![rec(None, &format!("v{i}"))], acks).await.unwrap();
    }
    drop(c);
    b.kill9();
    let point = dir.path().join("topics/t/0/recovery-point");
    flips::flip(&point, 3, 5);
    let on_disk = flips::batches(&dir.path().join("topics/t/0"));
    let last = on_disk.last().unwrap();
    flips::flip(&last.file, last.pos + 30, 1);
    let b = Broker::start(dir.path());
    b.log_lines_once(|l| l.contains("recovery point is damaged"));
    let mut c = b.client().await;
    let err = c.produce("t", Some(0), vec![rec(None, "x")], strata_client::proto::Acks::Durable).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert_eq!(high_watermark(&mut c, "t", 0).await, last.base);
}

#[tokio::test]
async fn torn_tails_recover_to_the_last_complete_batch() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = durable_batches(dir.path(), 12).await;
    let file = on_disk[0].file.clone();
    let pristine = std::fs::read(&file).unwrap();
    // A tail torn at every length within the last two batches, and torn
    // writes followed by garbage or zeros (seeded, reproducible).
    let first_torn = on_disk.len() - 2;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for seed in 0..200u64 {
        let torn = &on_disk[first_torn + (seed % 2) as usize];
        let cut = torn.pos + 1 + next() % (torn.len - 1);
        let mut bytes = pristine[..cut as usize].to_vec();
        match seed % 3 {
            0 => {}
            1 => bytes.extend((0..next() % 5000).map(|_| next() as u8)),
            _ => bytes.extend(std::iter::repeat_n(0u8, (next() % 5000) as usize)),
        }
        std::fs::write(&file, &bytes).unwrap();
        // A crash before any fsync covered the torn batches (the batches
        // were fsynced before a clean stop: their torn tail is only a torn
        // write if the recovery point and the marker say nothing of them).
        let _ = std::fs::remove_file(dir.path().join(".clean-shutdown"));
        let _ = std::fs::remove_file(dir.path().join("topics/t/0/recovery-point"));
        let b = Broker::start(dir.path());
        let mut c = b.client().await;
        assert_eq!(high_watermark(&mut c, "t", 0).await, torn.base, "seed {seed}: cut at byte {cut}");
        b.log_lines_once(|l| l.contains("recovery cut"));
        let got = read_all(&mut c, "t", 0, 0).await;
        assert_eq!(got.len() as u64, torn.base, "seed {seed}");
        drop(c);
        b.kill9();
    }
}

#[tokio::test]
async fn a_hole_of_unsynced_writes_after_a_crash_is_cut_but_refused_after_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    // One index entry for the whole segment: start-up checks all of it.
    // No fsync before the crash: the holed writes are above the recovery point.
    let env = [("STRATA_STORAGE__INDEX_INTERVAL_BYTES", "1048576"), ("STRATA_STORAGE__FLUSH_INTERVAL_MS", "3600000")];
    let b = Broker::start_with(dir.path(), &[], &env);
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    for i in 0..20 {
        let records = vec![rec(None, &format!("{i}-{}", "v".repeat(1000)))];
        c.produce("t", Some(0), records, strata_client::proto::Acks::Written).await.unwrap();
    }
    drop(c);
    b.kill9();
    let point = dir.path().join("topics/t/0/recovery-point");
    let point_at_crash = std::fs::read(&point).ok();
    let on_disk = flips::batches(&dir.path().join("topics/t/0"));
    let file = on_disk[0].file.clone();
    let original = std::fs::read(&file).unwrap();
    // A whole block that did not reach the disk, valid batches after it.
    let mut holed = original.clone();
    holed[4096..8192].fill(0);
    let first_hit = on_disk.iter().find(|b| b.pos + b.len > 4096).unwrap().clone();

    // After a clean stop the same hole is damage: refused.
    std::fs::write(&file, &original).unwrap();
    let b = Broker::start_with(dir.path(), &[], &env);
    assert!(b.stop().await.success());
    std::fs::write(&file, &holed).unwrap();
    let b = Broker::start_with(dir.path(), &[], &env);
    let mut c = b.client().await;
    let err = c.produce("t", Some(0), vec![rec(None, "x")], strata_client::proto::Acks::Durable).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert_eq!(high_watermark(&mut c, "t", 0).await, first_hit.base);
    drop(c);
    assert!(b.stop().await.success());
    assert_eq!(std::fs::read(&file).unwrap(), holed, "nothing was cut");

    // After a crash (no clean-shutdown marker) above the recovery point it
    // is a torn write: cut.
    std::fs::remove_file(dir.path().join(".clean-shutdown")).unwrap();
    match &point_at_crash {
        Some(bytes) => std::fs::write(&point, bytes).unwrap(),
        None => std::fs::remove_file(&point).unwrap(),
    }
    let b = Broker::start_with(dir.path(), &[], &env);
    let mut c = b.client().await;
    assert_eq!(high_watermark(&mut c, "t", 0).await, first_hit.base);
    b.log_lines_once(|l| l.contains("recovery cut"));
}

/// The broker's own state (writer epochs, ACLs and tokens, committed
/// offsets) is replayed whole or not at all: damage start-up refuses in an
/// internal topic stops the broker, naming it, rather than serving a
/// state cut short (an older epoch, a revoked token working again).
#[tokio::test]
async fn refused_damage_in_an_internal_topic_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    for _ in 0..3 {
        let req = strata_client::proto::InitProducerRequest { writer_id: "w".into() };
        c.broker.init_producer(req).await.unwrap();
    }
    drop(c);
    assert!(b.stop().await.success());
    let on_disk = flips::batches(&dir.path().join("topics/__strata_writers/0"));
    let last = on_disk.last().unwrap();
    flips::flip(&last.file, last.pos + 20, 2);
    let damaged = std::fs::read(&last.file).unwrap();
    let (status, stderr) = serve_refuses(dir.path(), &["--listen", "127.0.0.1:0"]);
    assert!(!status.success());
    assert!(stderr.contains("refusing to start") && stderr.contains("__strata_writers"), "{stderr}");
    assert_eq!(std::fs::read(&last.file).unwrap(), damaged, "nothing was cut");
}
