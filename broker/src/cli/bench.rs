//! `strata bench`: produce then consume a fixed workload against a running
//! broker and report throughput and per-batch latency percentiles.
//!
//! Producers use ProduceStream with a window of requests in flight (as a real
//! high-throughput producer would); the consumer then reads everything back
//! with Subscribe streams (or Fetch). Latency is per batch: request sent →
//! reply received (for Subscribe: the wait for each pushed message).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use strata_client::proto::*;
use strata_client::Client;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::{broker_stats, connect, status_error, AcksArg, CliError, Connect};
use strata::metrics::process_cpu_seconds;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Topic to use (created if missing; default: a new bench-<time> topic, deleted afterwards).
    #[arg(long)]
    topic: Option<String>,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1000)]
    record_size: usize,
    /// Records per produce request.
    #[arg(long, default_value_t = 1000)]
    batch_records: usize,
    /// Produce requests in total (spread over the producers).
    #[arg(long, default_value_t = 1000)]
    batches: usize,
    /// Concurrent producers (each on its own connection).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Partitions of the topic; producer i writes partition i % partitions
    /// (with more partitions than producers, the broker spreads each
    /// producer's requests round-robin over all of them).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Durability each produce waits for.
    #[arg(long, value_enum, default_value = "durable")]
    acks: AcksArg,
    /// Produce requests in flight per producer.
    #[arg(long, default_value_t = 2)]
    in_flight: usize,
    /// Bytes per fetch.
    #[arg(long, default_value_t = 1 << 20)]
    fetch_bytes: u32,
    /// How the consume phase reads: Subscribe streams (one per partition,
    /// the broker pushing ahead of the reader) or Fetch requests (one at a
    /// time, each waiting for the previous reply).
    #[arg(long, value_enum, default_value = "subscribe")]
    consume_with: ConsumeWith,
    /// Consumers of the Subscribe phase, each on its own connection, the
    /// partitions dealt round-robin among them (default: one per producer,
    /// at most one per partition; `--consumers 1` puts every stream on one
    /// connection, as before 2026-12-02). Fetch reads use one connection.
    #[arg(long)]
    consumers: Option<usize>,
    /// Key records with this many distinct keys (0 = keyless), e.g. to load a compacted topic.
    #[arg(long, default_value_t = 0)]
    keys: usize,
    /// Only produce.
    #[arg(long)]
    skip_consume: bool,
    /// Idempotent producers: each gets a producer id (InitProducer) and
    /// numbers its requests per partition (it picks partitions itself,
    /// round-robin, where the broker would).
    #[arg(long)]
    idempotent: bool,
    /// Instead: measure end-to-end latency (produce sent -> subscriber
    /// received) with one producer pacing this many batches per second to
    /// partition 0 and one Subscribe stream.
    #[arg(long, value_name = "BATCHES_PER_SEC")]
    e2e_rate: Option<u32>,
    /// The broker's metrics endpoint (host:port): also report its segment
    /// writes and fsyncs during the produce phase.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    #[command(flatten)]
    pub connect: Connect,
}

/// The consume phase's API.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ConsumeWith {
    Subscribe,
    Fetch,
}

/// Throughput and latency of one phase.
struct Phase {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Phase {
    /// Prints the phase's line; `client_cpu`: this process's CPU seconds
    /// during it.
    fn report(&self, name: &str, client_cpu: f64) {
        let secs = self.elapsed.as_secs_f64();
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name:<8} {:>10} records {:>9.1} MB in {:>6.2} s = {:>7.1} MB/s {:>10.0} records/s | latency per batch ms: p50 {:.2} p99 {:.2} p999 {:.2} max {:.2} | client CPU {:.2} s per GB",
            self.records,
            self.bytes as f64 / 1e6,
            secs,
            self.bytes as f64 / 1e6 / secs,
            self.records as f64 / secs,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.latency_us.max() as f64 / 1000.0,
            broker_stats::per_gb(client_cpu, self.bytes),
        );
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Prints progress to stderr every second until dropped.
struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    fn start(name: &'static str, done: Arc<AtomicU64>, total: u64, record_size: usize) -> Progress {
        Progress(tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                let mb = (n as usize * record_size) as f64 / 1e6;
                eprintln!(
                    "{name}: {:>5.1}% {n}/{total} records, {:.1} MB/s",
                    100.0 * n as f64 / total as f64,
                    mb / start.elapsed().as_secs_f64()
                );
            }
        }))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn produce_one(
    addr: Connect,
    topic: String,
    partition: Option<u32>,
    batches: usize,
    args: Arc<BenchArgs>,
    payload: Bytes,
    done: Arc<AtomicU64>,
) -> Result<Histogram<u64>, CliError> {
    let mut client = connect(&addr).await?;
    let producer = match args.idempotent {
        true => {
            let r = client.broker.init_producer(InitProducerRequest::default()).await.map_err(status_error)?;
            Some(r.into_inner())
        }
        false => None,
    };
    let partitions = args.partitions.max(1);
    let (tx, rx) = mpsc::channel::<ProduceRequest>(args.in_flight);
    let mut replies = client.broker.produce_stream(ReceiverStream::new(rx)).await.map_err(status_error)?.into_inner();
    let window = Arc::new(Semaphore::new(args.in_flight));
    let acks: Acks = args.acks.into();
    let batch_records = args.batch_records;
    // Built once: each record shares a key's bytes, no per-record allocation.
    let keys: Vec<Bytes> = (0..args.keys).map(|k| Bytes::from(format!("key-{k:08}"))).collect();
    let sent_at = Arc::new(std::sync::Mutex::new(HashMap::with_capacity(args.in_flight * 2)));
    let sender = {
        let (window, sent_at) = (window.clone(), sent_at.clone());
        tokio::spawn(async move {
            let mut sequences = vec![0i32; partitions as usize];
            for id in 0..batches as u64 {
                let permit = window.acquire().await.expect("window open");
                permit.forget();
                let records = (0..batch_records)
                    .map(|i| {
                        let key =
                            (!keys.is_empty()).then(|| keys[(id as usize * batch_records + i) % keys.len()].clone());
                        strata_client::record(key, payload.clone())
                    })
                    .collect();
                let (partition, producer) = match &producer {
                    None => (partition, None),
                    Some(p) => {
                        let part = partition.unwrap_or((id % u64::from(partitions)) as u32);
                        let sequence = sequences[part as usize];
                        sequences[part as usize] += 1;
                        let batch =
                            ProducerBatch { producer_id: p.producer_id, producer_epoch: p.producer_epoch, sequence };
                        (Some(part), Some(batch))
                    }
                };
                let req =
                    // Ranges say where the records went: no position per record.
                    ProduceRequest {
                        topic: topic.clone(),
                        partition,
                        records,
                        acks: acks as i32,
                        request_id: id,
                        omit_record_positions: true,
                        producer,
                        ..Default::default()
                    };
                sent_at.lock().expect("sent_at").insert(id, Instant::now());
                if tx.send(req).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut latency = histogram();
    for _ in 0..batches {
        let reply = match replies.next().await {
            Some(r) => r.map_err(status_error)?,
            None => return Err("produce stream closed early".into()),
        };
        if let Some(e) = reply.error {
            return Err(format!("produce failed: code {}: {}", e.code, e.message).into());
        }
        let sent = sent_at.lock().expect("sent_at").remove(&reply.request_id).ok_or("reply to an unknown request")?;
        latency.record(sent.elapsed().as_micros().max(1) as u64)?;
        let records: u32 = reply.ranges.iter().map(|r| r.record_count).sum();
        if records as usize != batch_records {
            return Err(
                format!("reply to request {} covers {records} records, not {batch_records}", reply.request_id).into()
            );
        }
        done.fetch_add(u64::from(records), Ordering::Relaxed);
        window.add_permits(1);
    }
    sender.await?;
    Ok(latency)
}

async fn produce_phase(args: &Arc<BenchArgs>, topic: &str) -> Result<Phase, CliError> {
    let payload: Bytes = (0..args.record_size).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>().into();
    let total = (args.batches * args.batch_records) as u64;
    let done = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start("produce", done.clone(), total, args.record_size);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.producers {
        let batches = args.batches / args.producers + usize::from(i < args.batches % args.producers);
        // More partitions than producers: let the broker spread requests
        // round-robin over all of them.
        let partition = (args.partitions as usize <= args.producers).then_some(i as u32 % args.partitions);
        tasks.push(tokio::spawn(produce_one(
            args.connect.clone(),
            topic.to_string(),
            partition,
            batches,
            args.clone(),
            payload.clone(),
            done.clone(),
        )));
    }
    let mut latency = histogram();
    for t in tasks {
        latency.add(t.await??)?;
    }
    let elapsed = start.elapsed();
    Ok(Phase { records: total, bytes: total * args.record_size as u64, elapsed, latency_us: latency })
}

async fn consume_phase(client: &mut Client, args: &BenchArgs, topic: &str, expected: u64) -> Result<Phase, CliError> {
    let done = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start("consume", done.clone(), expected, args.record_size);
    let mut positions: Vec<FetchPartition> = (0..args.partitions)
        .map(|p| FetchPartition {
            topic: topic.to_string(),
            partition: p,
            offset: 0,
            max_bytes: args.fetch_bytes,
            skip_damaged: false,
        })
        .collect();
    let mut latency = histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    while records < expected {
        let req = FetchRequest {
            partitions: positions.clone(),
            max_wait_ms: 1000,
            min_bytes: 1,
            max_bytes: args.fetch_bytes.saturating_mul(args.partitions).min(16 << 20),
        };
        let t = Instant::now();
        let reply = client.broker.fetch(req).await.map_err(status_error)?.into_inner();
        latency.record(t.elapsed().as_micros().max(1) as u64)?;
        for (pos, part) in positions.iter_mut().zip(&reply.partitions) {
            if let Some(last) = part.records.last() {
                pos.offset = last.offset + 1;
            }
            records += part.records.len() as u64;
            bytes += part.records.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64).sum::<u64>();
        }
        done.store(records, Ordering::Relaxed);
    }
    Ok(Phase { records, bytes, elapsed: start.elapsed(), latency_us: latency })
}

/// Reads every partition to its high watermark with one Subscribe stream
/// each, the streams spread over `--consumers` connections (as consumers
/// of a group each have their own). Latency is per message: the wait for
/// each pushed reply.
async fn subscribe_phase(client: &Client, args: &BenchArgs, topic: &str) -> Result<Phase, CliError> {
    let ends: Vec<u64> = {
        let req = DescribeTopicRequest { name: topic.to_string() };
        let d = client.admin.clone().describe_topic(req).await.map_err(status_error)?.into_inner();
        d.topic.unwrap_or_default().partitions.iter().map(|p| p.high_watermark).collect()
    };
    let expected: u64 = ends.iter().sum();
    let consumers = args.consumers.unwrap_or(args.producers).clamp(1, ends.len().max(1));
    let mut connections = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        connections.push(connect(&args.connect).await?);
    }
    let done = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start("consume", done.clone(), expected, args.record_size);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (partition, end) in ends.into_iter().enumerate() {
        let req = SubscribeRequest {
            topic: topic.to_string(),
            partition: partition as u32,
            offset: Some(0),
            max_bytes: args.fetch_bytes,
            skip_damaged: false,
        };
        let (mut client, done) = (connections[partition % consumers].clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = client.broker.subscribe(req).await.map_err(status_error)?.into_inner();
            let (mut next, mut bytes, mut latency) = (0u64, 0u64, histogram());
            let mut t = Instant::now();
            while next < end {
                let msg = stream.next().await.ok_or("subscription ended early")?.map_err(status_error)?;
                latency.record(t.elapsed().as_micros().max(1) as u64)?;
                t = Instant::now();
                let part = msg.records.unwrap_or_default();
                bytes += part.records.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64).sum::<u64>();
                done.fetch_add(part.records.len() as u64, Ordering::Relaxed);
                next = part.next_offset;
            }
            Ok::<_, CliError>((bytes, latency))
        }));
    }
    let (mut bytes, mut latency) = (0u64, histogram());
    for t in tasks {
        let (b, l) = t.await??;
        bytes += b;
        latency.add(l)?;
    }
    Ok(Phase { records: done.load(Ordering::Relaxed), bytes, elapsed: start.elapsed(), latency_us: latency })
}

fn micros_since_epoch() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

/// End-to-end latency: the first record of each batch carries its send time
/// (a header, so one small allocation per batch); the subscriber measures
/// when it arrives. Latency is per batch, send → pushed to the subscriber.
async fn e2e_phase(mut client: Client, args: &BenchArgs, topic: &str, rate: u32) -> Result<Phase, CliError> {
    let payload: Bytes = vec![b'e'; args.record_size].into();
    let req =
        SubscribeRequest { topic: topic.to_string(), partition: 0, offset: None, max_bytes: 0, skip_damaged: false };
    let mut stream = client.broker.subscribe(req).await.map_err(status_error)?.into_inner();
    let total = (args.batches * args.batch_records) as u64;
    let done = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start("e2e", done.clone(), total, args.record_size);
    let mut producer = connect(&args.connect).await?;
    let (batches, batch_records, acks) = (args.batches, args.batch_records, Acks::from(args.acks));
    let topic_name = topic.to_string();
    let send = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        for _ in 0..batches {
            tick.tick().await;
            let mut records: Vec<Record> =
                (0..batch_records).map(|_| strata_client::record(None, payload.clone())).collect();
            records[0].headers.push(Header {
                key: "sent-us".into(),
                value: Bytes::copy_from_slice(&micros_since_epoch().to_le_bytes()),
            });
            producer.produce(&topic_name, Some(0), records, acks).await.map_err(status_error)?;
        }
        Ok::<(), CliError>(())
    });
    let mut latency = histogram();
    let start = Instant::now();
    let mut received = 0u64;
    while received < total {
        let msg = stream.next().await.ok_or("subscription ended early")?.map_err(status_error)?;
        let now = micros_since_epoch();
        for r in msg.records.map(|p| p.records).unwrap_or_default() {
            if let Some(h) = r.headers.iter().find(|h| h.key == "sent-us") {
                let sent = u64::from_le_bytes(h.value[..8].try_into().map_err(|_| "bad sent-us header")?);
                latency.record(now.saturating_sub(sent).max(1))?;
            }
            received += 1;
        }
        done.store(received, Ordering::Relaxed);
    }
    send.await??;
    Ok(Phase {
        records: received,
        bytes: received * args.record_size as u64,
        elapsed: start.elapsed(),
        latency_us: latency,
    })
}

pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.producers == 0
        || args.partitions == 0
        || args.batch_records == 0
        || args.batches == 0
        || args.in_flight == 0
        || args.consumers == Some(0)
    {
        return Err(
            "--producers, --partitions, --batch-records, --batches, --in-flight and --consumers must be at least 1"
                .into(),
        );
    }
    let args = Arc::new(args);
    let mut client = connect(&args.connect).await?;
    // Read first: a wrong metrics address fails before anything is created.
    let disk_before = match &args.metrics {
        Some(addr) => Some(broker_stats::scrape(addr).await?),
        None => None,
    };
    let temporary = args.topic.is_none();
    let topic = args.topic.clone().unwrap_or_else(|| {
        format!(
            "bench-{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
        )
    });
    match client.create_topic(&topic, args.partitions, []).await {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => return Err(status_error(s)),
    }
    let before: u64 = {
        let d =
            client.admin.describe_topic(DescribeTopicRequest { name: topic.clone() }).await.map_err(status_error)?;
        d.into_inner().topic.unwrap_or_default().partitions.iter().map(|p| p.high_watermark).sum()
    };
    if before > 0 && !args.skip_consume {
        return Err(format!("topic {topic} is not empty; use a new topic to measure consumption").into());
    }
    println!(
        "workload: {} producer(s), {} partition(s), {} B records, {} records/batch, {} batches, acks={:?}, {} in flight, broker {}",
        args.producers, args.partitions, args.record_size, args.batch_records, args.batches, args.acks, args.in_flight, args.connect.addr
    );
    if let Some(rate) = args.e2e_rate {
        let cpu = process_cpu_seconds();
        let phase = e2e_phase(client.clone(), &args, &topic, rate).await?;
        phase.report("e2e", process_cpu_seconds() - cpu);
        if temporary {
            client.admin.delete_topic(DeleteTopicRequest { name: topic }).await.map_err(status_error)?;
        }
        return Ok(());
    }
    let cpu = process_cpu_seconds();
    let produced = produce_phase(&args, &topic).await?;
    produced.report("produce", process_cpu_seconds() - cpu);
    if let (Some(addr), Some(before)) = (&args.metrics, disk_before) {
        let after = broker_stats::scrape(addr).await?;
        println!("{}", broker_stats::report(before, after, produced.elapsed, args.batches, produced.bytes));
    }
    if !args.skip_consume {
        let cpu = process_cpu_seconds();
        let consumed = match args.consume_with {
            ConsumeWith::Subscribe => subscribe_phase(&client, &args, &topic).await?,
            ConsumeWith::Fetch => consume_phase(&mut client, &args, &topic, produced.records).await?,
        };
        consumed.report("consume", process_cpu_seconds() - cpu);
    }
    if temporary {
        client.admin.delete_topic(DeleteTopicRequest { name: topic }).await.map_err(status_error)?;
    }
    Ok(())
}
