//! `strata produce`: one record per input line.

use std::path::PathBuf;
use std::time::Duration;

use std::collections::BTreeMap;

use bytes::Bytes;
use strata_client::partitioner::partition_for_key;
use strata_client::proto::{Acks, DescribeTopicRequest, PartitionRange, Record};
use strata_client::Producer;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{connect, status_error, AcksArg, CliError, Connect};

#[derive(clap::Args)]
pub struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Partition (default: by key, keyless round-robin).
    #[arg(long, short)]
    partition: Option<u32>,
    /// Split each line at the first SEP into key and value (lines without it are keyless).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Read lines from this file instead of stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Durability to wait for.
    #[arg(long, value_enum, default_value = "durable")]
    acks: AcksArg,
    /// Most lines per produce request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Conditional append: store the first request only if the partition's
    /// next offset is this (each later request expects the offset after the
    /// records before it). Needs --partition.
    #[arg(long, requires = "partition")]
    expected_offset: Option<u64>,
    /// A stable writer id: this run fences earlier producers of the same id.
    #[arg(long)]
    writer_id: Option<String>,
    /// Plain produce requests: no producer id, so a retried request may be
    /// stored twice. By default requests are idempotent and retried.
    #[arg(long, conflicts_with_all = ["writer_id", "expected_offset"])]
    no_idempotence: bool,
    #[command(flatten)]
    pub connect: Connect,
}

pub async fn run(args: ProduceArgs) -> Result<(), CliError> {
    let mut client = connect(&args.connect).await?;
    let mut producer = match args.no_idempotence {
        true => None,
        false => {
            let writer = args.writer_id.as_deref().unwrap_or("");
            Some(Producer::init(client.clone(), writer).await.map_err(status_error)?)
        }
    };
    // An idempotent producer names partitions itself: by key, as the broker would.
    let partitions = match (&producer, args.partition) {
        (Some(_), None) => {
            let req = DescribeTopicRequest { name: args.topic.clone() };
            let d = client.admin.describe_topic(req).await.map_err(status_error)?.into_inner();
            d.topic.map_or(1, |t| t.partitions.len() as u32).max(1)
        }
        _ => 1,
    };
    let mut round_robin = 0u32;
    let mut expected = args.expected_offset;
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        Some(f) => Box::new(tokio::fs::File::open(f).await.map_err(|e| format!("{}: {e}", f.display()))?),
        None => Box::new(tokio::io::stdin()),
    };
    let mut lines = BufReader::new(input).lines();
    let acks: Acks = args.acks.into();
    let mut total = 0usize;
    let mut done = false;
    while !done {
        let mut batch = Vec::new();
        // Send what has arrived once the input pauses, so typed lines go out at once.
        while batch.len() < args.batch.max(1) {
            let next = if batch.is_empty() {
                lines.next_line().await?
            } else {
                match tokio::time::timeout(Duration::from_millis(20), lines.next_line()).await {
                    Ok(line) => line?,
                    Err(_) => break,
                }
            };
            let Some(line) = next else {
                done = true;
                break;
            };
            let (key, value) = match args.key_separator.as_deref().and_then(|sep| line.split_once(sep)) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                None => (None, Bytes::from(line)),
            };
            batch.push(strata_client::record(key, value));
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        let Some(producer) = producer.as_mut() else {
            let reply = client.produce(&args.topic, args.partition, batch, acks).await.map_err(status_error)?;
            report(&reply.ranges);
            total += n;
            continue;
        };
        // One request per partition, in partition order; keyless lines of a
        // batch share one partition, the next batch's the next.
        let keyless = args.partition.unwrap_or(round_robin % partitions);
        round_robin = round_robin.wrapping_add(1);
        let mut groups: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        for r in batch {
            let p = match (args.partition, &r.key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, partitions),
                (None, None) => keyless,
            };
            groups.entry(p).or_default().push(r);
        }
        for (p, records) in groups {
            let count = records.len() as u64;
            let mut b = producer.batch(&args.topic, p, records, acks);
            if let Some(e) = expected {
                b = b.with_expected_offset(e);
                expected = Some(e + count);
            }
            let reply = producer.send(&b).await.map_err(status_error)?;
            report(&reply.ranges);
        }
        total += n;
    }
    eprintln!("done: {total} records to {}", args.topic);
    Ok(())
}

/// Where a request's records went, on stderr.
fn report(ranges: &[PartitionRange]) {
    for r in ranges {
        let end = r.base_offset + u64::from(r.record_count);
        eprintln!(
            "produced {} records to partition {} at offsets {}..{end}",
            r.record_count, r.partition, r.base_offset
        );
    }
}
