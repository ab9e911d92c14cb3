//! Hand-made HTTP/2 clients as an attacker would write them, against the
//! real broker: windows kept shut or opened as wide as HTTP/2 allows, never
//! reading; connections pinned by long-lived streams from many addresses.
//! The broker stays within its reply budget and keeps a slot for new
//! clients.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use strata_client::proto::*;
use strata_client::Client;
use tonic::Code;

/// The HPACK block of a gRPC call to `path`: each header a literal field
/// without indexing, new name (no Huffman coding).
fn grpc_headers(path: &str) -> Vec<u8> {
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "strata"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        headers.push(0);
        headers.push(name.len() as u8);
        headers.extend_from_slice(name.as_bytes());
        headers.push(value.len() as u8);
        headers.extend_from_slice(value.as_bytes());
    }
    headers
}

/// An HTTP/2 frame: 9-byte header, then the payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn a_client_that_never_takes_its_fetch_reply_is_closed_and_its_memory_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("STRATA_SERVER__MAX_REQUEST_BYTES", "1048576"),
        ("STRATA_SERVER__FETCH_DEFAULT_MAX_BYTES", "1048576"),
        ("STRATA_SERVER__REPLY_MEMORY_BYTES", "1048576"),
        ("STRATA_SERVER__SUBSCRIBE_STALL_TIMEOUT_MS", "1000"),
        ("STRATA_TOPICS__MAX_MESSAGE_BYTES", "1000"),
    ];
    let broker = Broker::start_with(dir.path(), &[], &env);
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;
    let value = Bytes::from(vec![7u8; 900]);
    let records = (0..1000).map(|_| Record { value: Some(value.clone()), ..Default::default() }).collect();
    c.produce("t", Some(0), records, Acks::Written).await.unwrap();

    // A hand-made HTTP/2 client that opens with a stream window of 0 and
    // never raises it: the broker can build its reply but never send it.
    let mut raw = TcpStream::connect(&broker.addr).unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    raw.write_all(&h2_frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0])).unwrap(); // SETTINGS_INITIAL_WINDOW_SIZE = 0
    raw.write_all(&h2_frame(0x1, 0x4, 1, &grpc_headers("/strata.v1.Broker/Fetch"))).unwrap(); // HEADERS, END_HEADERS
    let partition = FetchPartition { topic: "t".into(), partition: 0, offset: 0, ..Default::default() };
    let fetch = prost::Message::encode_to_vec(&FetchRequest { partitions: vec![partition], ..Default::default() });
    let mut message = vec![0u8];
    message.extend_from_slice(&(fetch.len() as u32).to_be_bytes());
    message.extend_from_slice(&fetch);
    raw.write_all(&h2_frame(0x0, 0x1, 1, &message)).unwrap(); // DATA, END_STREAM

    // Once its reply is built (counted as answered), it holds most of the
    // 1 MiB reply budget, so another full fetch has to wait: until the
    // stalled connection is closed, about a second on.
    let metrics = broker.metrics_addr.clone();
    eventually(Duration::from_secs(10), "the stalled fetch answered", || {
        let metrics = metrics.clone();
        async move { scrape(&metrics).contains("method=\"/strata.v1.Broker/Fetch\",code=\"0\"").then_some(()) }
    })
    .await;
    let started = Instant::now();
    let part = tokio::time::timeout(Duration::from_secs(20), c.fetch("t", 0, 0, 1 << 20, Duration::ZERO))
        .await
        .expect("the fetch got the memory back")
        .unwrap();
    assert_eq!(part.records.len(), 1000);
    eprintln!("the other fetch waited {:?}", started.elapsed());
    assert!(scrape(&broker.metrics_addr).contains("reason=\"send_stalled\""), "the stalled connection was closed");
    drop(raw);
}

/// A hand-made HTTP/2 connection as an attacker would write it: it opens
/// its windows as wide as HTTP/2 allows, starts `streams` Subscribe calls
/// from offset 0 of `topic`, and never reads a byte.
fn wide_open_subscriber(addr: &str, topic: &str, streams: u32) -> TcpStream {
    subscribe_raw(TcpStream::connect(addr).unwrap(), topic, streams)
}

/// Starts `streams` Subscribe calls on `raw` as [`wide_open_subscriber`] does.
fn subscribe_raw(mut raw: TcpStream, topic: &str, streams: u32) -> TcpStream {
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE = 2^31 - 1; the connection window too.
    raw.write_all(&h2_frame(0x4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff])).unwrap();
    raw.write_all(&h2_frame(0x8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes())).unwrap();
    let req = SubscribeRequest {
        topic: topic.into(),
        partition: 0,
        offset: Some(0),
        max_bytes: 1 << 20,
        skip_damaged: false,
    };
    let body = prost::Message::encode_to_vec(&req);
    let mut message = vec![0u8];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes());
    message.extend_from_slice(&body);
    for i in 0..streams {
        let stream = 1 + 2 * i;
        raw.write_all(&h2_frame(0x1, 0x4, stream, &grpc_headers("/strata.v1.Broker/Subscribe"))).unwrap();
        raw.write_all(&h2_frame(0x0, 0x1, stream, &message)).unwrap();
    }
    raw
}

/// Subscribers that open their HTTP/2 windows fully and never read: what
/// HTTP/2 holds for them counts against the reply budget, so the broker's
/// memory stays near the budget, not one send buffer per stream beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_open_windows_that_never_read_stay_within_the_reply_budget() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("STRATA_SERVER__REPLY_MEMORY_BYTES", "67108864")];
    let broker = Broker::start_with(dir.path(), &[], &env);
    let mut c = broker.client().await;
    create_topic(&mut c, "t", 1).await;
    let value = Bytes::from(vec![1u8; 1000]);
    for _ in 0..640 {
        let records = (0..100).map(|_| Record { value: Some(value.clone()), ..Default::default() }).collect();
        c.produce("t", Some(0), records, Acks::Written).await.unwrap();
    }
    let pid = broker.pid();
    let before = peak_rss(pid);
    let attackers: Vec<TcpStream> = (0..3).map(|_| wide_open_subscriber(&broker.addr, "t", 100)).collect();
    // Until they are stuck: nothing more moves for a while.
    let mut last = 0;
    let settled = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = peak_rss(pid);
        if now == last || Instant::now() > settled {
            break;
        }
        last = now;
    }
    let grew = peak_rss(pid).saturating_sub(before);
    eprintln!("300 wide-open subscribers that never read: peak RSS +{} MiB", grew / MIB);
    // The budget (64 MiB) and what encoding a reply copies once more, plus 64 MiB.
    assert!(grew < 2 * 64 * MIB + 64 * MIB, "RSS grew by {} MiB", grew / MIB);
    // Everyone else is served meanwhile.
    let got = tokio::time::timeout(Duration::from_secs(20), c.fetch("t", 0, 0, 1 << 20, Duration::ZERO))
        .await
        .expect("a fetch is served")
        .unwrap();
    assert!(!got.records.is_empty());
    drop(attackers);
}

/// A TCP connection to `addr` from loopback address `from`.
async fn connect_from(addr: &str, from: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Long-lived streams are bounded per address, and connections holding
/// nothing but them never lock new clients out: attackers from several
/// addresses pin every connection slot with a Subscribe on a quiet
/// partition, and a new client still gets in and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_streams_are_bounded_and_never_lock_new_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("STRATA_SERVER__MAX_CONNECTIONS", "64"), ("STRATA_SERVER__MAX_STREAMS_PER_IP", "12")];
    let broker = Broker::start_with(dir.path(), &[], &env);
    let mut c = broker.client().await;
    create_topic(&mut c, "quiet", 1).await;

    // One address: 12 streams, and the 13th is refused naming the key.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", broker.addr))
        .unwrap()
        .local_address(Some("127.0.0.5".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let sc = Client::from_channel(channel, strata_client::Credentials::none());
    let req = SubscribeRequest { topic: "quiet".into(), partition: 0, offset: Some(0), ..Default::default() };
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(sc.broker.clone().subscribe(req.clone()).await.unwrap().into_inner());
    }
    let err = sc.broker.clone().subscribe(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("server.max_streams_per_ip = 12"), "{}", err.message());
    assert!(strata_client::refusal::is(&err, ErrorReason::Busy));
    drop(held);
    drop(sc);

    // 8 addresses, 10 connections each, one Subscribe on each: more than
    // the 64 slots.
    let mut pinned = Vec::new();
    for a in 0..8 {
        for _ in 0..10 {
            let raw = connect_from(&broker.addr, &format!("127.0.0.{}", 11 + a)).await;
            pinned.push(subscribe_raw(raw, "quiet", 1));
        }
    }
    let metrics = broker.metrics_addr.clone();
    eventually(Duration::from_secs(20), "connections evicted for new ones", || {
        let metrics = metrics.clone();
        async move { scrape(&metrics).contains("reason=\"evicted\"").then_some(()) }
    })
    .await;
    // A new client, from an address of its own, gets in and is served.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", broker.addr))
        .unwrap()
        .local_address(Some("127.0.0.9".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut fresh = Client::from_channel(channel, strata_client::Credentials::none());
    create_topic(&mut fresh, "new", 1).await;
    fresh.produce("new", Some(0), vec![rec(None, "in")], Acks::Durable).await.unwrap();
    assert_eq!(read_all(&mut fresh, "new", 0, 0).await.len(), 1);
    drop(pinned);
}
