//! Integrity over the real broker: one process per data directory, damage
//! detected and refused, nothing acknowledged lost.

mod common;

use common::*;

#[tokio::test]
async fn a_second_broker_on_the_same_directory_exits_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = Broker::start(dir.path());
    let mut c = first.client().await;
    create_topic(&mut c, "t", 1).await;
    c.produce("t", Some(0), vec![rec(None, "kept")], strata_client::proto::Acks::Durable).await.unwrap();

    let (status, stderr) = serve_refuses(dir.path(), &["--listen", "127.0.0.1:0"]);
    assert!(!status.success());
    assert!(stderr.contains("in use by another strata process"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    assert!(stderr.contains(&dir.path().display().to_string()), "{stderr}");

    // The first broker is untouched and still serves.
    let got = read_all(&mut c, "t", 0, 0).await;
    assert_eq!(got.len(), 1);
    drop(c);
    assert!(first.stop().await.success());
}

#[tokio::test]
async fn a_port_in_use_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let first = Broker::start(dir.path());
    let other = tempfile::tempdir().unwrap();
    let data = other.path().join("data");
    let (status, stderr) = serve_refuses(&data, &["--listen", &first.addr]);
    assert!(!status.success());
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!data.exists(), "the data directory was not created");
    drop(first);
}

#[tokio::test]
async fn a_missing_topic_toml_refuses_to_start_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "orders", 2).await;
    c.produce("orders", Some(1), vec![rec(None, "a"), rec(None, "b")], strata_client::proto::Acks::Durable)
        .await
        .unwrap();
    drop(c);
    assert!(b.stop().await.success());

    let topic_dir = dir.path().join("topics/orders");
    std::fs::remove_file(topic_dir.join("topic.toml")).unwrap();
    let before = tree(&topic_dir);
    let (status, stderr) = serve_refuses(dir.path(), &["--listen", "127.0.0.1:0"]);
    assert!(!status.success());
    assert!(stderr.contains("refusing to start") && stderr.contains("topic.toml"), "{stderr}");
    assert!(stderr.contains(&topic_dir.display().to_string()), "{stderr}");
    assert_eq!(tree(&topic_dir), before, "nothing under the topic was changed");
    // An unreadable one is refused the same way.
    std::fs::write(topic_dir.join("topic.toml"), "partitions = \"many\"\n").unwrap();
    let before = tree(&topic_dir);
    let (status, stderr) = serve_refuses(dir.path(), &["--listen", "127.0.0.1:0"]);
    assert!(!status.success());
    assert!(
        stderr.contains("refusing to start") && stderr.contains("topic.toml") && stderr.contains("nothing was deleted"),
        "{stderr}"
    );
    assert_eq!(tree(&topic_dir), before);

    // A crashed creation (its staging directory) is removed, and the topic
    // restored by hand opens with its records.
    std::fs::write(topic_dir.join("topic.toml"), "partitions = 2\n").unwrap();
    let staging = dir.path().join("topics/~creating-late-1");
    std::fs::create_dir_all(&staging).unwrap();
    let b = Broker::start(dir.path());
    assert!(!staging.exists());
    let mut c = b.client().await;
    assert_eq!(read_all(&mut c, "orders", 1, 0).await.len(), 2);
}

/// Every file under `dir` with its size, sorted.
fn tree(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), p.metadata().unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_anywhere_is_never_served_and_is_reported_as_data_loss() {
    use flips::*;
    let dir = tempfile::tempdir().unwrap();
    // Buffered I/O: the broker reads what this test writes into the files at once.
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_STORAGE__DIRECT_IO", "false")]);
    let mut c = b.client().await;
    c.create_topic("flip", 1, [("segment.bytes".to_string(), "8192".to_string())]).await.unwrap();
    let original = fill(&mut c, "flip", 60).await;
    let on_disk = batches(&dir.path().join("topics/flip/0"));
    assert_eq!(on_disk.last().unwrap().next, 300, "the test reads the layout it expects");
    let files: std::collections::BTreeSet<_> = on_disk.iter().map(|b| b.file.clone()).collect();
    assert!(files.len() >= 4, "sealed segments and an active one: {files:?}");

    // Whole headers and a spread of body bytes (framing, keys, values,
    // headers) of batches at the start, middle and end of sealed segments
    // and in the active segment.
    let mut targets = Vec::new();
    let picks = [0, 1, on_disk.len() / 2, on_disk.len() - 2, on_disk.len() - 1];
    let firsts: Vec<usize> = (1..on_disk.len()).filter(|&i| on_disk[i].file != on_disk[i - 1].file).collect();
    for &i in picks.iter().chain(&firsts) {
        let batch = &on_disk[i];
        for at in (0..61).chain((61..batch.len).step_by(7)) {
            targets.push((i, at, (at % 8) as u8));
        }
    }
    assert!(targets.len() >= 500, "{} positions", targets.len());

    let mut reported = 0;
    for &(i, at, bit) in &targets {
        let batch = &on_disk[i];
        let next_readable = on_disk.get(i + 1).map_or(300, |n| n.base);
        flip(&batch.file, batch.pos + at, bit);
        let what = format!("bit {bit} of byte {at} of the batch at {}:{}", batch.file.display(), batch.pos);

        // At the damaged batch: DATA_LOSS, naming where, what and where to go on.
        match fetch(&mut c, "flip", batch.base, false).await {
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::DataLoss, "{what}: {s:?}");
                let m = s.message();
                for needle in [
                    "flip/0".to_string(),
                    batch.file.file_name().unwrap().to_string_lossy().into_owned(),
                    format!("byte {}", batch.pos),
                    format!("offsets {}..{next_readable}", batch.base),
                    format!("next readable offset is {next_readable}"),
                ] {
                    assert!(m.contains(&needle), "{what}: {needle:?} not in {m}");
                }
                reported += 1;
            }
            Ok(got) => panic!("{what}: served {} records from a damaged batch", got.records.len()),
        }
        // Before it: the intact records, stopping in front of the damage.
        if i > 0 && on_disk[i - 1].file == batch.file {
            let got = fetch(&mut c, "flip", on_disk[i - 1].base, false).await.unwrap();
            check_served(&got, &original, &what);
            assert_eq!(got.records.last().unwrap().offset + 1, batch.base, "{what}: stops before the damage");
            assert_eq!(got.next_offset, batch.base, "{what}");
        }
        // Asked to skip: it goes on at the next readable offset.
        if next_readable < 300 {
            let got = fetch(&mut c, "flip", batch.base, true).await.unwrap();
            check_served(&got, &original, &what);
            assert_eq!(got.records.first().map(|r| r.offset), Some(next_readable), "{what}");
        }
        flip(&batch.file, batch.pos + at, bit);
    }
    assert_eq!(reported, targets.len());

    // Restored, everything reads back whole; the damage was counted.
    let mut offset = 0;
    while offset < 300 {
        let got = fetch(&mut c, "flip", offset, false).await.unwrap();
        check_served(&got, &original, "after restoring");
        offset = got.next_offset;
    }
    let d = describe(&mut c, "flip").await;
    let damaged: std::collections::BTreeSet<usize> = targets.iter().map(|t| t.0).collect();
    assert_eq!(d.partitions[0].damaged_batches as usize, damaged.len(), "each damaged batch counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_indexes_are_rebuilt_and_lookups_equal_a_full_scan() {
    use strata_client::proto::*;
    let dir = tempfile::tempdir().unwrap();
    // An index entry per batch, and several sealed segments.
    let env = [("STRATA_STORAGE__INDEX_INTERVAL_BYTES", "1")];
    let b = Broker::start_with(dir.path(), &[], &env);
    let mut c = b.client().await;
    c.create_topic("ix", 1, [("segment.bytes".to_string(), "4096".to_string())]).await.unwrap();
    let ts_of = |o: u64| 1_700_000_000_000i64 + o as i64 * 10;
    for batch in 0..40u64 {
        let records =
            (0..3).map(|i| Record { timestamp_ms: ts_of(batch * 3 + i), ..rec(None, &"v".repeat(60)) }).collect();
        c.produce("ix", Some(0), records, Acks::Written).await.unwrap();
    }
    drop(c);
    assert!(b.stop().await.success());
    let part = dir.path().join("topics/ix/0");
    let on_disk = flips::batches(&part);
    let seg = on_disk.iter().map(|b| b.file.clone()).collect::<std::collections::BTreeSet<_>>();
    assert!(seg.len() >= 3, "{seg:?}");
    // The second segment: sealed, with an entry per batch.
    let log = seg.iter().nth(1).unwrap().clone();
    let (index, time) = (log.with_extension("index"), log.with_extension("timeindex"));
    let (index0, time0) = (std::fs::read(&index).unwrap(), std::fs::read(&time).unwrap());
    assert!(index0.len() >= 8 * 4 && time0.len() >= 12 * 4);
    let swap = |b: &[u8], e: usize, i: usize, j: usize| {
        let mut v = b.to_vec();
        let (a, z) = (v[i * e..(i + 1) * e].to_vec(), v[j * e..(j + 1) * e].to_vec());
        v[i * e..(i + 1) * e].copy_from_slice(&z);
        v[j * e..(j + 1) * e].copy_from_slice(&a);
        v
    };
    let set_u32 = |b: &[u8], at: usize, f: &dyn Fn(u32) -> u32| {
        let mut v = b.to_vec();
        let x = u32::from_le_bytes(v[at..at + 4].try_into().unwrap());
        v[at..at + 4].copy_from_slice(&f(x).to_le_bytes());
        v
    };
    let entry_pos = |i: usize| u32::from_le_bytes(index0[i * 8 + 4..i * 8 + 8].try_into().unwrap());
    let set_i64 = |b: &[u8], at: usize, f: &dyn Fn(i64) -> i64| {
        let mut v = b.to_vec();
        let x = i64::from_le_bytes(v[at..at + 8].try_into().unwrap());
        v[at..at + 8].copy_from_slice(&f(x).to_le_bytes());
        v
    };
    // (what, new .index or None to delete, new .timeindex or None to delete)
    type Case = (&'static str, Option<Vec<u8>>, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        ("offset index cut to an odd size", Some(index0[..index0.len() - 3].to_vec()), Some(time0.clone())),
        ("time index cut to an odd size", Some(index0.clone()), Some(time0[..time0.len() - 5].to_vec())),
        (
            "offset index garbage",
            Some(index0.iter().enumerate().map(|(i, b)| b ^ (i as u8 | 0x41)).collect()),
            Some(time0.clone()),
        ),
        ("time index garbage", Some(index0.clone()), Some(time0.iter().map(|b| b ^ 0x5a).collect())),
        ("offset index entries swapped", Some(swap(&index0, 8, 1, 2)), Some(time0.clone())),
        ("time index entries swapped", Some(index0.clone()), Some(swap(&time0, 12, 1, 2))),
        // Still increasing, but naming the wrong batch: entry 2 points at entry 3's batch.
        ("a stale increasing offset entry", Some(set_u32(&index0, 2 * 8 + 4, &|_| entry_pos(3))), Some(time0.clone())),
        (
            "an offset entry into the middle of a batch",
            Some(set_u32(&index0, 2 * 8 + 4, &|p| p + 17)),
            Some(time0.clone()),
        ),
        ("a stale time entry", Some(index0.clone()), Some(set_i64(&time0, 12, &|t| t - 5))),
        ("offset index deleted", None, Some(time0.clone())),
        ("time index deleted", Some(index0.clone()), None),
    ];
    let total = on_disk.last().unwrap().next;
    for (what, new_index, new_time) in cases {
        for (path, content) in [(&index, new_index), (&time, new_time)] {
            match content {
                Some(bytes) => std::fs::write(path, bytes).unwrap(),
                None => std::fs::remove_file(path).unwrap(),
            }
        }
        let b = Broker::start_with(dir.path(), &[], &env);
        let mut c = b.client().await;
        for o in 0..total {
            let got = c.fetch("ix", 0, o, 1, std::time::Duration::ZERO).await.unwrap();
            assert_eq!(got.records.first().map(|r| r.offset), Some(o), "{what}: fetch at {o}");
        }
        for o in 0..total {
            for (ts, want) in [(ts_of(o), o), (ts_of(o) - 5, o)] {
                let req = ListOffsetsRequest {
                    topic: "ix".into(),
                    partition: 0,
                    spec: Some(list_offsets_request::Spec::TimestampMs(ts)),
                };
                let got = c.broker.list_offsets(req).await.unwrap().into_inner();
                assert_eq!((got.offset, got.timestamp_ms), (want, ts_of(want)), "{what}: timestamp {ts}");
            }
        }
        b.log_lines_once(|l| l.contains("rebuilt the indexes of a sealed segment"));
        drop(c);
        assert!(b.stop().await.success());
        std::fs::write(&index, &index0).unwrap();
        std::fs::write(&time, &time0).unwrap();
    }
}

/// Runs `strata verify DIR`: (success, stdout + stderr).
fn verify(dir: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata")).arg("verify").arg(dir).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn strata_verify_finds_every_damage_and_refuses_a_running_broker() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = durable_batches(dir.path(), 10).await;
    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("30 records checked; 0 problems"), "{out}");

    let b = Broker::start(dir.path());
    let (ok, out) = verify(dir.path());
    assert!(!ok && out.contains(&format!("in use by another strata process (pid {})", b.pid())), "{out}");
    drop(b);

    let file = on_disk[0].file.clone();
    let (index, time) = (file.with_extension("index"), file.with_extension("timeindex"));
    let meta = dir.path().join("topics/t/topic.toml");
    let (victim, last) = (on_disk[4].pos as usize, on_disk.last().unwrap().pos as usize);
    type Damage = (&'static str, Box<dyn Fn(&mut Vec<u8>)>, std::path::PathBuf, String);
    let cases: Vec<Damage> = vec![
        (
            "a flipped bit",
            Box::new(move |d| d[victim + 70] ^= 1),
            file.clone(),
            format!("damaged batch at byte {victim}"),
        ),
        (
            "a zeroed header",
            Box::new(move |d| d[victim..victim + 61].fill(0)),
            file.clone(),
            "zeros where a batch header must be".into(),
        ),
        ("a torn tail", Box::new(move |d| d.truncate(last + 20)), file.clone(), format!("torn tail at byte {last}")),
        ("a newer version", Box::new(move |d| d[last + 12] = 3), file.clone(), "unknown batch format version 3".into()),
        (
            "garbage in the offset index",
            Box::new(|d| d.iter_mut().for_each(|b| *b ^= 0x33)),
            index.clone(),
            "offset index".into(),
        ),
        ("a time index entry out of order", Box::new(|d| d[0] ^= 0x80), time.clone(), "time index".into()),
    ];
    for (what, damage, path, needle) in cases {
        let original = std::fs::read(&path).unwrap();
        let mut damaged = original.clone();
        damage(&mut damaged);
        std::fs::write(&path, &damaged).unwrap();
        let (ok, out) = verify(dir.path());
        assert!(!ok, "{what}: {out}");
        assert!(out.contains(&needle) && out.contains("DAMAGED"), "{what}: {needle:?} not in {out}");
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "{what}: verify changes nothing");
        std::fs::write(&path, &original).unwrap();
    }
    std::fs::remove_file(&meta).unwrap();
    let (ok, out) = verify(dir.path());
    assert!(!ok && out.contains("no topic.toml"), "{out}");
}

#[tokio::test]
async fn the_scrubber_finds_damage_in_a_running_broker_within_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_CLEANER__SCRUB_INTERVAL_MS", "200")]);
    let mut c = b.client().await;
    c.create_topic("s", 1, [("segment.bytes".to_string(), "4096".to_string())]).await.unwrap();
    for i in 0..30 {
        c.produce(
            "s",
            Some(0),
            vec![rec(Some("k"), &format!("{i}-{}", "v".repeat(300)))],
            strata_client::proto::Acks::Written,
        )
        .await
        .unwrap();
    }
    let on_disk = flips::batches(&dir.path().join("topics/s/0"));
    let sealed = &on_disk[1];
    assert_ne!(sealed.file, on_disk.last().unwrap().file, "a sealed segment");
    flips::flip(&sealed.file, sealed.pos + 100, 2);
    let damaged = eventually(std::time::Duration::from_secs(20), "the scrubber to find the damage", || {
        let mut c = c.clone();
        async move {
            let d = describe(&mut c, "s").await.partitions[0].damaged_batches;
            (d > 0).then_some(d)
        }
    })
    .await;
    assert_eq!(damaged, 1);
    let lines = b.log_lines_once(|l| l.contains("scrub found damaged batches"));
    assert!(lines
        .iter()
        .any(|l| l.contains("damaged batch: not served") && l.contains(&format!("position={}", sealed.pos))));
}

#[tokio::test]
async fn a_flipped_bit_in_topic_metadata_is_refused_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "orders", 3).await;
    for p in 0..3 {
        c.produce("orders", Some(p), vec![rec(None, "kept")], strata_client::proto::Acks::Durable).await.unwrap();
    }
    drop(c);
    assert!(b.stop().await.success());
    let topic_dir = dir.path().join("topics/orders");
    let meta = topic_dir.join("topic.toml");
    let pristine = std::fs::read(&meta).unwrap();
    let at = pristine.windows(14).position(|w| w == b"partitions = 3").unwrap() + 13;
    // '3' -> '1' (one partition: 1 and 2 would look like an unfinished
    // growth) and '3' -> '7' (four partitions never written).
    for bit in [1u8, 2] {
        let mut damaged = pristine.clone();
        damaged[at] ^= 1 << bit;
        std::fs::write(&meta, &damaged).unwrap();
        let before = tree(&topic_dir);
        let (status, stderr) = serve_refuses(dir.path(), &["--listen", "127.0.0.1:0"]);
        assert!(!status.success());
        assert!(stderr.contains("refusing to start") && stderr.contains("checksum mismatch"), "{stderr}");
        assert!(stderr.contains(&meta.display().to_string()), "{stderr}");
        assert_eq!(tree(&topic_dir), before, "nothing was deleted or added");
        let (ok, out) = verify(dir.path());
        assert!(!ok && out.contains("topic.toml is damaged: checksum mismatch"), "{out}");
    }
    std::fs::write(&meta, &pristine).unwrap();
    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");

    // A partition directory past the count with no growth marker is not
    // garbage; nor is a missing one below it.
    std::fs::create_dir(topic_dir.join("3")).unwrap();
    let (status, stderr) = serve_refuses(dir.path(), &["--listen", "127.0.0.1:0"]);
    assert!(!status.success() && stderr.contains("partition directory 3"), "{stderr}");
    assert!(topic_dir.join("3").exists());
    let (ok, out) = verify(dir.path());
    assert!(!ok && out.contains("partition directory 3"), "{out}");
    std::fs::remove_dir(topic_dir.join("3")).unwrap();
    std::fs::rename(topic_dir.join("2"), dir.path().join("moved")).unwrap();
    let (status, stderr) = serve_refuses(dir.path(), &["--listen", "127.0.0.1:0"]);
    assert!(!status.success() && stderr.contains("partition directory 2 is missing"), "{stderr}");
    std::fs::rename(dir.path().join("moved"), topic_dir.join("2")).unwrap();

    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    for p in 0..3 {
        assert_eq!(read_all(&mut c, "orders", p, 0).await.len(), 1);
    }
}

#[tokio::test]
async fn a_growth_that_crashed_before_its_commit_is_undone_by_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_FAILPOINTS", "grow_before_commit")]);
    let mut c = b.client().await;
    create_topic(&mut c, "g", 2).await;
    c.produce("g", Some(1), vec![rec(None, "kept")], strata_client::proto::Acks::Durable).await.unwrap();
    let grow = strata_client::proto::CreatePartitionsRequest { name: "g".into(), total: 5 };
    assert!(c.admin.create_partitions(grow).await.is_err(), "the broker aborts at the crash point");
    drop(c);
    assert!(!b.wait_exit(std::time::Duration::from_secs(10)).success());
    let topic_dir = dir.path().join("topics/g");
    assert!(topic_dir.join("growth.toml").exists() && topic_dir.join("4").exists());

    let b = Broker::start(dir.path());
    b.log_lines_once(|l| l.contains("unfinished growth"));
    let mut c = b.client().await;
    assert_eq!(describe(&mut c, "g").await.partitions.len(), 2);
    assert!(!topic_dir.join("growth.toml").exists() && !topic_dir.join("2").exists());
    assert_eq!(read_all(&mut c, "g", 1, 0).await.len(), 1);
    // And a growth that commits keeps its partitions across a restart.
    let grow = strata_client::proto::CreatePartitionsRequest { name: "g".into(), total: 4 };
    c.admin.create_partitions(grow).await.unwrap();
    c.produce("g", Some(3), vec![rec(None, "new")], strata_client::proto::Acks::Durable).await.unwrap();
    drop(c);
    assert!(b.stop().await.success());
    assert!(!topic_dir.join("growth.toml").exists());
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    assert_eq!(read_all(&mut c, "g", 3, 0).await.len(), 1);
}

#[tokio::test]
async fn list_offsets_by_timestamp_at_damage_is_data_loss_not_a_later_offset() {
    use flips::*;
    use strata_client::proto::*;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_STORAGE__DIRECT_IO", "false")]);
    let mut c = b.client().await;
    create_topic(&mut c, "ts", 1).await;
    fill(&mut c, "ts", 20).await;
    let on_disk = batches(&dir.path().join("topics/ts/0"));
    let victim = &on_disk[10];
    flip(&victim.file, victim.pos + 80, 3);
    let by_time = |ts: i64| ListOffsetsRequest {
        topic: "ts".into(),
        partition: 0,
        spec: Some(list_offsets_request::Spec::TimestampMs(ts)),
    };
    // Records before the damage are still found; one in or after it is not
    // answered with an offset past the damage.
    let before = c.broker.list_offsets(by_time(1_700_000_000_000 + 3)).await.unwrap().into_inner();
    assert_eq!(before.offset, 3);
    for record in [victim.base, victim.base + 2, victim.next + 1] {
        let err = c.broker.list_offsets(by_time(1_700_000_000_000 + record as i64)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::DataLoss, "record {record}: {}", err.message());
        assert!(err.message().contains(&format!("offsets {}..{}", victim.base, victim.next)), "{}", err.message());
    }
}
