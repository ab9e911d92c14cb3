//! Storage faults over the real broker: injected EIO and ENOSPC (the
//! `STRATA_FAILPOINTS` I/O points) and a really full filesystem. The broker
//! answers with a clear error, stays up, never acknowledges what it did not
//! store, and goes on once the fault is gone.

mod common;

use common::*;
use strata_client::proto::*;
use tonic::Code;

fn records(n: usize, tag: &str, size: usize) -> Vec<Record> {
    (0..n).map(|i| rec(None, &format!("{tag}-{i}-{}", "x".repeat(size)))).collect()
}

#[tokio::test]
async fn after_a_failed_fsync_nothing_is_acknowledged_as_durable_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Only the first fsync fails: a retry would succeed, and must not be taken as one.
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_FAILPOINTS", "fsync=eio*1")]);
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    for acks in [Acks::Durable, Acks::Durable, Acks::Written] {
        let err = c.produce("t", Some(0), records(3, "lost", 10), acks).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{acks:?}: {err:?}");
        assert!(err.message().contains("read-only") && err.message().contains("fsync failed"), "{}", err.message());
    }
    // Reads go on.
    let got = c.fetch("t", 0, 0, 1 << 20, std::time::Duration::ZERO).await.unwrap();
    assert!(got.records.len() <= 3);
    b.log_lines_once(|l| l.contains("fsync failed: the partition is read-only"));
    // Health says so: a restart is the remedy.
    assert_eq!(health(&b.addr).await, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    drop(c);
    b.kill9();

    // A restart passes recovery and takes durable writes again.
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    let r = c.produce("t", Some(0), records(3, "after", 10), Acks::Durable).await.unwrap();
    let all = read_all(&mut c, "t", 0, 0).await;
    assert_eq!(all.len() as u64, r.ranges[0].base_offset + 3);
    assert_eq!(health(&b.addr).await, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

/// The broker's health as a whole ("").
async fn health(addr: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status
}

/// Two produces fail with a full disk (`write=enospc*2`); then space is
/// back and writes resume at the offsets the failed ones left free.
async fn writes_fail_twice_then_resume_at_the_freed_offsets(c: &mut strata_client::Client) {
    for _ in 0..2 {
        let err = c.produce("t", Some(0), records(3, "b", 10), Acks::Durable).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("No space left on device"), "{}", err.message());
    }
    let r = c.produce("t", Some(0), records(3, "c", 10), Acks::Durable).await.unwrap();
    assert_eq!(r.ranges[0].base_offset, 0);
    let values: Vec<_> = read_all(c, "t", 0, 0).await.into_iter().map(|r| r.value.unwrap()).collect();
    assert_eq!(values.len(), 3);
    assert!(values.iter().all(|v| v.starts_with(b"c-")), "only what was acknowledged is stored");
}

#[tokio::test]
async fn a_full_disk_from_a_failpoint_is_resource_exhausted_and_writes_resume() {
    // Buffered (the default): no preallocation, the write itself fails.
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_FAILPOINTS", "write=enospc*2")]);
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    writes_fail_twice_then_resume_at_the_freed_offsets(&mut c).await;
}

#[tokio::test]
async fn with_direct_io_a_full_disk_at_preallocation_is_resource_exhausted_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("STRATA_FAILPOINTS", "write=enospc*2,fallocate=enospc*3"), ("STRATA_STORAGE__DIRECT_IO", "true")];
    let b = Broker::start_with(dir.path(), &[], &env);
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    // fallocate fails for the first write's step ahead and then for what it
    // needs: RESOURCE_EXHAUSTED, naming the data directory.
    let err = c.produce("t", Some(0), records(3, "a", 10), Acks::Durable).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains(&dir.path().display().to_string()), "{}", err.message());
    // The third fallocate failure is only the step ahead: the batch fits,
    // so preallocation does not report the disk full; the write itself
    // then fails twice.
    writes_fail_twice_then_resume_at_the_freed_offsets(&mut c).await;
}

#[tokio::test]
async fn a_failed_rename_fails_topic_creation_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A first start creates the broker's internal topic.
    assert!(Broker::start(dir.path()).stop().await.success());
    let b = Broker::start_with(dir.path(), &[], &[("STRATA_FAILPOINTS", "rename=eio*1")]);
    let mut c = b.client().await;
    let err = c.create_topic("t", 3, []).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("topic t"), "{}", err.message());
    let left: Vec<_> = std::fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("__"))
        .collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
    c.create_topic("t", 3, []).await.unwrap();
}

/// A tmpfs of `mib` MiB mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Option<SmallDisk> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(root, "this test mounts a small tmpfs, which needs root: run the suite as root (CI does)");
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed");
        Some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_really_full_disk_is_resource_exhausted_without_a_crash_and_writes_resume() {
    let Some(disk) = SmallDisk::mount(32) else { return };
    let data = disk.dir.path().join("data");
    let b = Broker::start(&data);
    let mut c = b.client().await;
    c.create_topic("t", 1, [("segment.bytes".to_string(), (8u64 << 20).to_string())]).await.unwrap();
    // Fill the disk through the broker.
    let batch = |i: usize| vec![rec(None, &format!("{i}-{}", "v".repeat(256 << 10)))];
    let mut acked = 0u64;
    let err = loop {
        match c.produce("t", Some(0), batch(acked as usize), Acks::Durable).await {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 200, "a 32 MiB disk never filled");
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains(&data.display().to_string()), "{}", err.message());
    // Still up: it answers, and serves everything it acknowledged.
    assert_eq!(read_all(&mut c, "t", 0, 0).await.len() as u64, acked);

    // Another process takes what is left; the broker fills its own
    // reservation with small records, then finds the disk full again.
    let filler = disk.dir.path().join("filler");
    let _ = std::fs::write(&filler, vec![7u8; 64 << 20]);
    let err = loop {
        match c.produce("t", Some(0), vec![rec(None, &"s".repeat(1000))], Acks::Durable).await {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 50_000, "the disk never filled");
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Space is freed: writes resume where the acknowledged ones end.
    std::fs::remove_file(&filler).unwrap();
    let r = c.produce("t", Some(0), vec![rec(None, "after")], Acks::Durable).await.unwrap();
    assert_eq!(r.ranges[0].base_offset, acked);
    let got = read_all(&mut c, "t", 0, 0).await;
    assert_eq!(got.len() as u64, acked + 1);
    assert_eq!(got.last().unwrap().value.as_deref(), Some(&b"after"[..]));
    drop(c);
    assert!(b.stop().await.success(), "a clean stop after a full disk");
    // A write the disk cut short may leave bytes past the acknowledged
    // end (tmpfs writes what fits, then ENOSPC): overwritten by the next
    // append or cut at seal, they must be nowhere in the log after a restart.
    let b = Broker::start(&data);
    let mut c = b.client().await;
    let again = read_all(&mut c, "t", 0, 0).await;
    assert_eq!(again.len() as u64, acked + 1);
    assert_eq!(again.last().unwrap().value.as_deref(), Some(&b"after"[..]));
    let d = describe(&mut c, "t").await;
    assert_eq!(d.partitions[0].damaged_batches, 0, "{d:?}");
    assert_eq!(d.partitions[0].high_watermark, acked + 1);
}

/// A free loopback port (the broker's stderr is not ours to read here).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `strata serve` with its stderr going to `stderr`, logging at trace
/// level, until it answers.
async fn serve_logging_to(data: &std::path::Path, stderr: std::fs::File) -> (std::process::Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(data)
        .env("STRATA_LOGGING__LEVEL", "trace")
        .env("STRATA_SERVER__METRICS_LISTEN", "")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let a = addr.clone();
    eventually(std::time::Duration::from_secs(30), "the broker answers", || {
        let a = a.clone();
        async move { strata_client::Client::connect(&a).await.ok().map(|_| ()) }
    })
    .await;
    (child, addr)
}

/// Produces and reads back through `addr`; health must say SERVING.
async fn serves(addr: &str, topic: &str) {
    let mut c = strata_client::Client::connect(addr).await.unwrap();
    create_topic(&mut c, topic, 2).await;
    for i in 0..100 {
        c.produce(topic, Some(i % 2), records(5, "v", 100), Acks::Durable).await.unwrap();
    }
    assert_eq!(read_all(&mut c, topic, 0, 0).await.len() + read_all(&mut c, topic, 1, 0).await.len(), 500);
    assert_eq!(health(addr).await, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

/// The broker's own log output failing (stderr on a full filesystem, or
/// on /dev/full) stops neither a partition nor the process: lines that
/// cannot be written are dropped, and logging resumes once space is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_brokers_own_log_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(1).unwrap();
    let filler = disk.dir.path().join("filler");
    let _ = std::fs::write(&filler, vec![7u8; 2 << 20]);
    let log = disk.dir.path().join("stderr.log");
    let (mut child, addr) = serve_logging_to(&dir.path().join("a"), std::fs::File::create(&log).unwrap()).await;
    serves(&addr, "t").await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // Space again: the log goes on.
    std::fs::remove_file(&filler).unwrap();
    serves(&addr, "u").await;
    eventually(std::time::Duration::from_secs(10), "log lines after space came back", || {
        let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        async move { (len > 0).then_some(()) }
    })
    .await;
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success(), "a clean stop");

    // stderr on /dev/full from the start.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let (mut child, addr) = serve_logging_to(&dir.path().join("b"), full).await;
    serves(&addr, "t").await;
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success(), "a clean stop");
}
