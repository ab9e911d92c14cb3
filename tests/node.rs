//! A node started in-process on port 0 with a temporary data directory:
//! produce, fetch, commit, and a clean stop — the way a second listener, or
//! an embedding test, uses the node.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::committed;
use strata::config::Config;
use strata::log::format::CLEAN_SHUTDOWN_FILE;
use strata::node::Node;
use strata::server::GrpcListener;
use strata_client::proto::*;
use strata_client::{record, Client};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.storage.data_dir = dir.to_path_buf();
    config.server.listen = "127.0.0.1:0".into();
    config.server.metrics_listen = String::new();
    config
}

/// Starts a node serving gRPC on a free port; returns its address, the stop
/// switch and the node's task.
async fn start(
    config: Config,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), strata::node::NodeError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let node = Node::open(config).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(node.run(vec![Box::new(GrpcListener::new(listener))], async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_process_produces_fetches_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop, task) = start(config(dir.path())).await;
    let mut c = Client::connect(&addr).await.unwrap();
    c.create_topic("events", 2, []).await.unwrap();
    let records: Vec<Record> =
        (0..10).map(|i| record(Some(Bytes::from(format!("k{i}"))), Bytes::from(format!("v{i}")))).collect();
    let reply = c.produce("events", Some(1), records, Acks::Durable).await.unwrap();
    assert_eq!(reply.ranges.len(), 1);
    assert_eq!((reply.ranges[0].partition, reply.ranges[0].base_offset, reply.ranges[0].record_count), (1, 0, 10));

    let got = c.fetch("events", 1, 3, 1 << 20, Duration::ZERO).await.unwrap();
    assert_eq!(got.high_watermark, 10);
    let values: Vec<_> =
        got.records.iter().map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()).collect();
    assert_eq!(values, (3..10).map(|i| format!("v{i}")).collect::<Vec<_>>());
    assert_eq!(got.records[0].offset, 3);

    // Groups go through the node's coordinator and its internal topic.
    c.groups
        .commit_offsets(CommitOffsetsRequest {
            group_id: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            offsets: vec![OffsetCommit { topic: "events".into(), partition: 1, offset: 7, metadata: "m".into() }],
        })
        .await
        .unwrap();

    drop(c);
    stop.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(30), task).await.expect("the node stops").unwrap();
    stopped.unwrap();
    assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists(), "a clean stop marks the data directory clean");

    // A second node on the same directory finds everything again.
    let (addr, stop, task) = start(config(dir.path())).await;
    let mut c = Client::connect(&addr).await.unwrap();
    let got = c.fetch("events", 1, 0, 1 << 20, Duration::ZERO).await.unwrap();
    assert_eq!(got.records.len(), 10);
    let offsets = committed(&mut c, "g").await;
    assert_eq!(offsets.iter().map(|o| (o.partition, o.offset)).collect::<Vec<_>>(), vec![(1, 7)]);
    drop(c);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
