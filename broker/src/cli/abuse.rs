//! `strata abuse`: a load and abuse run against a broker on this machine.
//!
//! One producer at a target rate and a few fast consumers run through every
//! phase; each phase after the baseline adds one kind of abuse: subscribers
//! that never read, idle and slow-header connections, and huge requests of
//! many tiny records. For each phase it reports the producer's throughput
//! and latency, what the consumers received, and the broker's RSS (peak
//! during the phase, and once the abuse has gone), all in the same run, so
//! the phases compare with each other and not with another day's figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use strata_client::proto::*;
use strata_client::Client;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{broker_stats, connect, status_error, AcksArg, CliError, Connect};

#[derive(clap::Args)]
pub struct AbuseArgs {
    /// Seconds each phase runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Producer target, in produce requests per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Records per produce request.
    #[arg(long, default_value_t = 100)]
    batch_records: usize,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1000)]
    record_size: usize,
    /// Durability each produce waits for.
    #[arg(long, value_enum, default_value = "written")]
    acks: AcksArg,
    /// Subscribers that keep up, in every phase.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Subscribers from offset 0 that never read (stalled phase).
    #[arg(long, default_value_t = 200)]
    stalled: usize,
    /// Connections that send nothing (idle phase).
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Connections that send a request's bytes one every 100 ms (idle phase).
    #[arg(long, default_value_t = 200)]
    slow: usize,
    /// Concurrent 32 MB requests of 16 M empty records, sent over and over
    /// (huge phase).
    #[arg(long, default_value_t = 3)]
    huge: usize,
    /// The broker's metrics endpoint, for its RSS.
    #[arg(long, default_value = "127.0.0.1:9400")]
    metrics: String,
    #[command(flatten)]
    pub connect: Connect,
}

/// What one phase measured.
struct Report {
    name: &'static str,
    produced: u64,
    latency_us: Histogram<u64>,
    consumed: u64,
    rss_peak: u64,
    rss_after: u64,
    note: String,
}

const MIB: f64 = (1u64 << 20) as f64;

pub async fn run(args: AbuseArgs) -> Result<(), CliError> {
    for addr in [&args.connect.addr, &args.metrics] {
        let loopback = tokio::net::lookup_host(addr.as_str()).await?.all(|a| a.ip().is_loopback());
        if !loopback {
            return Err(
                format!("{addr} is not a loopback address: abuse runs against a broker on this machine only").into()
            );
        }
    }
    let mut admin = connect(&args.connect).await?;
    let topic = format!("abuse-{}", std::process::id());
    admin.create_topic(&topic, 1, Vec::new()).await.map_err(status_error)?;
    let args = Arc::new(args);
    let mut reports = Vec::new();
    for phase in ["baseline", "stalled subscribers", "idle and slow connections", "huge requests", "baseline again"] {
        eprintln!("phase: {phase}");
        reports.push(run_phase(&args, &topic, phase).await?);
    }
    let _ = admin.admin.delete_topic(DeleteTopicRequest { name: topic }).await;
    print(&args, &reports);
    Ok(())
}

async fn run_phase(args: &Arc<AbuseArgs>, topic: &str, name: &'static str) -> Result<Report, CliError> {
    let abuse = Abuse::start(args, topic, name).await?;
    let consumed = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        consumers.push(tokio::spawn(consume(connect(&args.connect).await?, topic.to_string(), consumed.clone())));
    }
    let producer = tokio::spawn(produce(connect(&args.connect).await?, args.clone(), topic.to_string()));
    let mut rss_peak = 0;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < deadline {
        if let Ok(rss) = broker_stats::resident_bytes(&args.metrics).await {
            rss_peak = rss_peak.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (produced, latency_us) = producer.await??;
    consumers.iter().for_each(|c| c.abort());
    let note = abuse.stop().await;
    // Freed memory goes back within a trim interval (5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rss_after = broker_stats::resident_bytes(&args.metrics).await?;
    Ok(Report { name, produced, latency_us, consumed: consumed.load(Ordering::Relaxed), rss_peak, rss_after, note })
}

/// Produces at the target rate until the phase ends; returns the bytes and
/// the latency of each request.
async fn produce(mut client: Client, args: Arc<AbuseArgs>, topic: String) -> Result<(u64, Histogram<u64>), CliError> {
    let payload: Bytes = vec![b'a'; args.record_size].into();
    let mut latency = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut bytes = 0;
    while Instant::now() < end {
        tick.tick().await;
        let records = (0..args.batch_records).map(|_| strata_client::record(None, payload.clone())).collect();
        let sent = Instant::now();
        client.produce(&topic, Some(0), records, Acks::from(args.acks)).await.map_err(status_error)?;
        latency.record(sent.elapsed().as_micros().max(1) as u64)?;
        bytes += (args.batch_records * args.record_size) as u64;
    }
    Ok((bytes, latency))
}

/// A subscriber that keeps up from the end of the partition.
async fn consume(mut client: Client, topic: String, consumed: Arc<AtomicU64>) {
    let req = SubscribeRequest { topic, partition: 0, offset: None, ..Default::default() };
    let Ok(stream) = client.broker.subscribe(req).await else { return };
    let mut stream = stream.into_inner();
    while let Some(Ok(reply)) = stream.next().await {
        let bytes: usize =
            reply.records.iter().flat_map(|p| &p.records).map(|r| r.value.as_ref().map_or(0, Bytes::len)).sum();
        consumed.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// The abuse of one phase, held until stopped.
enum Abuse {
    None,
    Stalled(Vec<tonic::Streaming<SubscribeResponse>>),
    Connections(Vec<TcpStream>, Vec<tokio::task::JoinHandle<()>>),
    Huge(Vec<tokio::task::JoinHandle<()>>, Arc<AtomicU64>),
}

impl Abuse {
    async fn start(args: &AbuseArgs, topic: &str, phase: &str) -> Result<Abuse, CliError> {
        Ok(match phase {
            "stalled subscribers" => {
                let mut streams = Vec::new();
                // 50 streams per connection, as a few misbehaving clients would.
                let mut client = connect(&args.connect).await?;
                for i in 0..args.stalled {
                    if i % 50 == 0 {
                        client = connect(&args.connect).await?;
                    }
                    let req =
                        SubscribeRequest { topic: topic.into(), partition: 0, offset: Some(0), ..Default::default() };
                    streams.push(client.broker.subscribe(req).await.map_err(status_error)?.into_inner());
                }
                Abuse::Stalled(streams)
            }
            "idle and slow connections" => {
                let mut idle = Vec::new();
                for _ in 0..args.idle {
                    match TcpStream::connect(&args.connect.addr).await {
                        Ok(s) => idle.push(s),
                        Err(_) => break, // out of descriptors here: enough
                    }
                }
                let slow = (0..args.slow)
                    .map(|_| {
                        let addr = args.connect.addr.clone();
                        tokio::spawn(async move {
                            let Ok(mut s) = TcpStream::connect(&addr).await else { return };
                            for b in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0" {
                                if s.write_all(&[*b]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            // Then silence, holding the socket until aborted.
                            std::future::pending::<()>().await;
                        })
                    })
                    .collect();
                Abuse::Connections(idle, slow)
            }
            "huge requests" => {
                let body = strata_client::raw::empty_records(topic, 16_000_000);
                let refused = Arc::new(AtomicU64::new(0));
                let mut tasks = Vec::new();
                for _ in 0..args.huge {
                    let endpoint =
                        tonic::transport::Endpoint::from_shared(strata_client::endpoint_uri(&args.connect.addr))?;
                    let (channel, body, refused) = (endpoint.connect().await?, body.clone(), refused.clone());
                    tasks.push(tokio::spawn(async move {
                        // Each is refused; send it again at once, for the whole phase.
                        loop {
                            match strata_client::raw::unary(channel.clone(), "/strata.v1.Broker/Produce", body.clone())
                                .await
                            {
                                Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                                Ok(_) => return,
                            };
                        }
                    }));
                }
                Abuse::Huge(tasks, refused)
            }
            _ => Abuse::None,
        })
    }

    /// Ends the abuse; says what it was.
    async fn stop(self) -> String {
        match self {
            Abuse::None => String::new(),
            Abuse::Stalled(streams) => format!("{} subscribers from offset 0, never reading", streams.len()),
            Abuse::Connections(idle, slow) => {
                slow.iter().for_each(|t| t.abort());
                format!("{} idle connections, {} sending a byte every 100 ms", idle.len(), slow.len())
            }
            Abuse::Huge(tasks, refused) => {
                tasks.iter().for_each(|t| t.abort());
                format!(
                    "{} at a time, 32 MB of 16 M empty records each: {} refused",
                    tasks.len(),
                    refused.load(Ordering::Relaxed)
                )
            }
        }
    }
}

fn print(args: &AbuseArgs, reports: &[Report]) {
    println!(
        "load: 1 producer at {} requests/s of {} x {} B ({} acks), {} subscribers keeping up; {} s per phase",
        args.rate,
        args.batch_records,
        args.record_size,
        format!("{:?}", args.acks).to_lowercase(),
        args.consumers,
        args.seconds
    );
    println!(
        "{:<28} {:>10} {:>8} {:>8} {:>12} {:>10} {:>10}  abuse",
        "phase", "prod MB/s", "p50 ms", "p99 ms", "consumed MB/s", "RSS peak", "RSS after"
    );
    let secs = args.seconds as f64;
    for r in reports {
        println!(
            "{:<28} {:>10.1} {:>8.2} {:>8.2} {:>12.1} {:>7.0} MiB {:>6.0} MiB  {}",
            r.name,
            r.produced as f64 / 1e6 / secs,
            r.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
            r.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            r.consumed as f64 / 1e6 / secs,
            r.rss_peak as f64 / MIB,
            r.rss_after as f64 / MIB,
            r.note
        );
    }
}
