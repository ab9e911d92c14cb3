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
