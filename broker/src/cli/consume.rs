//! `strata consume`: print records as `partition<TAB>offset<TAB>key<TAB>value`.

use std::io::Write;
use strata_client::proto::*;

use super::{connect, status_error, CliError, Connect};

#[derive(clap::Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// One partition (default: all).
    #[arg(long, short)]
    partition: Option<u32>,
    /// Start: earliest, latest, or an offset.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Start at the first record with timestamp >= this (ms since epoch); overrides --from.
    #[arg(long)]
    timestamp: Option<i64>,
    /// Keep waiting for new records (until Ctrl-C).
    #[arg(long, short)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// Consume as a member of this consumer group: partitions are shared with
    /// the group's other members and progress is committed (--from, --timestamp
    /// and --partition do not apply; use `strata group reset`).
    #[arg(long)]
    group: Option<String>,
    /// Go on past damaged stored bytes (the broker skips to the next readable
    /// offset) instead of stopping with a DATA_LOSS error.
    #[arg(long)]
    skip_damaged: bool,
    #[command(flatten)]
    pub connect: Connect,
}

pub async fn run(args: ConsumeArgs) -> Result<(), CliError> {
    if let Some(group) = args.group.clone() {
        return consume_group(args, &group).await;
    }
    let mut client = connect(&args.connect).await?;
    let described = client
        .admin
        .describe_topic(DescribeTopicRequest { name: args.topic.clone() })
        .await
        .map_err(status_error)?
        .into_inner()
        .topic
        .unwrap_or_default();
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => described.partitions.iter().map(|p| p.partition).collect(),
    };
    let mut positions = Vec::new();
    for &p in &partitions {
        let spec = match (args.timestamp, args.from.as_str()) {
            (Some(ts), _) => Some(list_offsets_request::Spec::TimestampMs(ts)),
            (None, "earliest") => Some(list_offsets_request::Spec::Earliest(true)),
            (None, "latest") => Some(list_offsets_request::Spec::Latest(true)),
            (None, _) => None,
        };
        let offset = match spec {
            Some(spec) => {
                let req = ListOffsetsRequest { topic: args.topic.clone(), partition: p, spec: Some(spec) };
                client.broker.list_offsets(req).await.map_err(status_error)?.into_inner().offset
            }
            None => {
                let n = &args.from;
                n.parse().map_err(|_| format!("--from {n}: use earliest, latest or an offset"))?
            }
        };
        positions.push(FetchPartition {
            topic: args.topic.clone(),
            partition: p,
            offset,
            max_bytes: 0,
            skip_damaged: args.skip_damaged,
        });
    }
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        let req = FetchRequest {
            partitions: positions.clone(),
            max_wait_ms: if args.follow { 1000 } else { 0 },
            min_bytes: 1,
            max_bytes: 0,
        };
        let reply = client.broker.fetch(req).await.map_err(status_error)?.into_inner();
        let mut caught_up = true;
        let mut out = stdout.lock();
        for (pos, part) in positions.iter_mut().zip(&reply.partitions) {
            for r in &part.records {
                let key = r.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let value = r.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                writeln!(out, "{}\t{}\t{}\t{}", part.partition, r.offset, key, value)?;
                pos.offset = r.offset + 1;
                printed += 1;
                if args.max_records.is_some_and(|m| printed >= m) {
                    return Ok(());
                }
            }
            // Past offsets with no record (compacted away, or damage skipped).
            pos.offset = pos.offset.max(part.next_offset);
            caught_up &= pos.offset >= part.high_watermark;
        }
        out.flush()?;
        // In follow mode the next fetch long-polls for new records.
        if caught_up && !args.follow {
            return Ok(());
        }
    }
}

/// Group mode: poll, print, commit; stops when caught up unless --follow.
async fn consume_group(args: ConsumeArgs, group: &str) -> Result<(), CliError> {
    use strata_client::group::{GroupConsumer, GroupOptions};
    let client = connect(&args.connect).await?;
    let options = GroupOptions { skip_damaged: args.skip_damaged, ..GroupOptions::default() };
    let mut consumer =
        GroupConsumer::join(client.clone(), group, &[&args.topic], options).await.map_err(status_error)?;
    let mut printed = 0u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let records = tokio::select! {
            r = consumer.poll(std::time::Duration::from_millis(1000)) => r.map_err(status_error)?,
            _ = &mut stop => break,
        };
        let caught_up = records.is_empty() && !consumer.assignment().is_empty();
        {
            let mut out = std::io::stdout().lock();
            for r in &records {
                let key = r.record.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let value = r.record.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                writeln!(out, "{}\t{}\t{}\t{}", r.partition, r.record.offset, key, value)?;
            }
            out.flush()?;
        }
        printed += records.len() as u64;
        if !records.is_empty() {
            consumer.commit().await.map_err(status_error)?;
        }
        if args.max_records.is_some_and(|m| printed >= m) || (caught_up && !args.follow) {
            break;
        }
    }
    consumer.commit().await.map_err(status_error)?;
    consumer.leave(false).await.map_err(status_error)?;
    Ok(())
}
