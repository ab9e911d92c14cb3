//! Test harness: runs the real `strata` binary on a free loopback port with a
//! temporary data directory, and talks to it over gRPC.
#![allow(dead_code)]

pub mod flips;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_client::proto::*;
use strata_client::Client;

/// How long a broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running broker process.
pub struct Broker {
    child: Child,
    /// "127.0.0.1:port"
    pub addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// "127.0.0.1:port" of the metrics endpoint.
    pub metrics_addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    /// Starts a broker on `data_dir` with extra `serve` arguments and environment.
    pub fn start_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Broker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("STRATA_LOGGING__LEVEL", "info")
            .env("STRATA_SERVER__METRICS_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn strata");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            // Keep draining stderr for the whole life of the broker so it never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    // The address ends where the log line (human or JSON) goes on.
                    let addr_after = |marker: &str| {
                        let rest = line.split(marker).nth(1)?;
                        rest.split(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)))
                            .next()
                            .map(str::to_string)
                    };
                    if let Some(addr) = addr_after("metrics listening on ") {
                        let _ = tx.send(("metrics", addr));
                    } else if let Some(addr) = addr_after("listening on ") {
                        let _ = tx.send(("grpc", addr));
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let (mut addr, mut metrics_addr) = (String::new(), String::new());
        while addr.is_empty() {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok(("metrics", a)) => metrics_addr = a,
                Ok((_, a)) => addr = a,
                Err(_) => {
                    let _ = child.kill();
                    panic!("broker did not start listening; log:\n{}", log.lock().unwrap().join("\n"));
                }
            }
        }
        Broker { child, addr, data_dir: data_dir.to_path_buf(), metrics_addr, log }
    }

    /// Starts a broker on `data_dir` with defaults.
    pub fn start(data_dir: &Path) -> Broker {
        Broker::start_with(data_dir, &[], &[])
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(&self.addr).await.expect("connect")
    }

    /// Log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The log lines once one matches `pred`: a line the broker wrote
    /// before answering may still be on its way through the stderr pipe
    /// and the reader thread. Panics after 10 s.
    pub fn log_lines_once(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let lines = self.log_lines();
            if lines.iter().any(|l| pred(l)) {
                return lines;
            }
            assert!(std::time::Instant::now() < deadline, "no matching log line; log:\n{}", lines.join("\n"));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// SIGKILL: no chance to flush or mark a clean stop.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then wait for the process to exit. Async, so this test's own
    /// connections keep running (answering the server's graceful-shutdown
    /// pings) while the broker stops.
    pub async fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM").success();
        assert!(ok, "kill -TERM failed");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "broker did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record with a value and an optional key.
pub fn rec(key: Option<&str>, value: &str) -> Record {
    strata_client::record(key.map(|k| k.to_string().into()), value.to_string().into())
}

/// Creates a topic, panicking on failure.
pub async fn create_topic(client: &mut Client, name: &str, partitions: u32) {
    client.create_topic(name, partitions, []).await.expect("create topic");
}

/// Reads a partition from `from` up to its high watermark.
pub async fn read_all(client: &mut Client, topic: &str, partition: u32, from: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let part = client.fetch(topic, partition, offset, 1 << 20, Duration::ZERO).await.expect("fetch");
        let asked = offset;
        if let Some(last) = part.records.last() {
            offset = last.offset + 1;
        }
        // Past offsets with no record (compacted away).
        offset = offset.max(part.next_offset);
        let done = offset >= part.high_watermark || offset == asked;
        out.extend(part.records);
        if done {
            return out;
        }
    }
}

/// A fetch of partition 0 of `topic` from offset 0 that does not wait.
pub fn fetch_request(topic: &str) -> FetchRequest {
    FetchRequest {
        partitions: vec![FetchPartition {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            max_bytes: 1024,
            skip_damaged: false,
        }],
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 0,
    }
}

/// The high watermark of a partition.
pub async fn high_watermark(client: &mut Client, topic: &str, partition: u32) -> u64 {
    let req =
        ListOffsetsRequest { topic: topic.into(), partition, spec: Some(list_offsets_request::Spec::Latest(true)) };
    client.broker.list_offsets(req).await.expect("list offsets").into_inner().offset
}

impl Broker {
    /// Waits for the process to exit on its own (e.g. at a failpoint).
    pub fn wait_exit(mut self, timeout: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "broker did not exit in {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Describes a topic.
pub async fn describe(client: &mut Client, topic: &str) -> TopicDescription {
    let req = DescribeTopicRequest { name: topic.into() };
    client.admin.describe_topic(req).await.expect("describe").into_inner().topic.expect("topic")
}

/// Runs `strata serve` on `data_dir` (and `args`) expecting it to refuse to
/// start: returns its exit status and everything it wrote to stderr. Panics
/// if it is still running after 30 s.
pub fn serve_refuses(data_dir: &Path, args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("STRATA_SERVER__METRICS_LISTEN", "")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("strata serve did not refuse to start; stderr:\n{}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

/// A group's committed offsets.
pub async fn committed(client: &mut Client, group: &str) -> Vec<CommittedOffset> {
    let req = FetchOffsetsRequest { group_id: group.into(), partitions: vec![] };
    client.groups.fetch_offsets(req).await.unwrap().into_inner().offsets
}

/// Produces `batches` durable batches of 3 records to `t`/0 and stops the
/// broker cleanly; returns the on-disk batches of the partition.
pub async fn durable_batches(dir: &std::path::Path, batches: u64) -> Vec<flips::OnDisk> {
    let b = Broker::start(dir);
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    for i in 0..batches {
        let records = (0..3).map(|j| rec(Some(&format!("k{i}")), &format!("value {i}/{j}"))).collect();
        c.produce("t", Some(0), records, strata_client::proto::Acks::Durable).await.unwrap();
    }
    drop(c);
    assert!(b.stop().await.success());
    flips::batches(&dir.join("topics/t/0"))
}

/// A MiB.
pub const MIB: u64 = 1 << 20;

/// The metrics endpoint's text ("" if it does not answer).
pub fn scrape(addr: &str) -> String {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    out
}

/// The most process `pid` ever had resident (VmHWM).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}
