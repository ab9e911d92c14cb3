//! Quotas over the real broker: a principal over its produce rate is held
//! to it and told so; another principal producing at the same time is not.
//! Alone in its test binary, so no other test competes for the 2 cores.

mod common;

use std::time::Duration;

use common::Broker;
use strata_client::proto::*;
use strata_client::{Client, Credentials};
use tonic::Code;

const BOOTSTRAP: &str = "bootstrap-token-of-at-least-32-characters";

async fn client(addr: &str, token: Option<&str>) -> Client {
    let channel = strata_client::channel(addr, None).await.unwrap();
    Client::from_channel(channel, token.map_or_else(Credentials::none, |t| Credentials::token(t).unwrap()))
}

/// A principal limited to 10 MB/s of produce is held to it (±20 % over
/// 10 s) and told it was throttled, while another producing at the same
/// time is never throttled. Prints both rates (the README quotes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_quota_holds_one_principal_and_not_another() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with(
        dir.path(),
        &[],
        &[
            ("STRATA_QUOTAS__PRINCIPALS", "{ slow = { produce_bytes_per_sec = 10000000 } }"),
            ("STRATA_AUTH__BOOTSTRAP_TOKEN", BOOTSTRAP),
        ],
    );
    // Auth is off: anyone may produce, but only a super user makes tokens.
    let mut anonymous = client(&b.addr, None).await;
    let err = anonymous.admin.create_token(CreateTokenRequest { principal: "x".into(), ttl_ms: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let mut admin = client(&b.addr, Some(BOOTSTRAP)).await;
    admin.create_topic("q", 2, []).await.unwrap();
    let token_for = |principal: &str| CreateTokenRequest { principal: principal.into(), ttl_ms: 0 };
    let slow = admin.admin.create_token(token_for("slow")).await.unwrap().into_inner().token;
    let fast = admin.admin.create_token(token_for("fast")).await.unwrap().into_inner().token;
    // The unlimited principal is paced at 5 MB/s (20 requests of 250 KB a
    // second): the test is about its throttle time, not its speed, and a
    // debug-build broker on 2 cores must have room for both.
    let run = |token: String, partition: u32, pace: Option<Duration>| {
        let addr = b.addr.clone();
        tokio::spawn(async move {
            let mut c = client(&addr, Some(&token)).await;
            let value = bytes::Bytes::from(vec![b'x'; 10_000]);
            let start = std::time::Instant::now();
            let (mut bytes, mut throttled, mut replies) = (0u64, Vec::new(), 0u64);
            while start.elapsed() < Duration::from_secs(10) {
                let records = (0..25).map(|_| strata_client::record(None, value.clone())).collect();
                let r = c.produce("q", Some(partition), records, Acks::Written).await.unwrap();
                bytes += 25 * 10_000;
                replies += 1;
                if r.throttle_time_ms > 0 {
                    throttled.push(r.throttle_time_ms);
                }
                if let Some(p) = pace {
                    tokio::time::sleep(p).await;
                }
            }
            (bytes as f64 / start.elapsed().as_secs_f64(), throttled, replies)
        })
    };
    let (s, f) = (run(slow, 0, None), run(fast, 1, Some(Duration::from_millis(50))));
    let (slow_rate, slow_throttled, _) = s.await.unwrap();
    let (fast_rate, fast_throttled, fast_replies) = f.await.unwrap();
    println!(
        "slow: {:.2} MB/s, throttled {} times; fast: {:.2} MB/s",
        slow_rate / 1e6,
        slow_throttled.len(),
        fast_rate / 1e6
    );
    assert!((8e6..=12e6).contains(&slow_rate), "slow produced {:.2} MB/s, quota 10 MB/s", slow_rate / 1e6);
    assert!(!slow_throttled.is_empty(), "the slow principal was never told it was throttled");
    assert!(fast_throttled.is_empty(), "the fast principal was throttled: {fast_throttled:?}");
    assert!(fast_replies > 0);
}
