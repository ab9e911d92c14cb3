//! `strata produce`: one record per input line.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use strata_client::proto::Acks;
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
    #[command(flatten)]
    pub connect: Connect,
}

pub async fn run(args: ProduceArgs) -> Result<(), CliError> {
    let mut client = connect(&args.connect).await?;
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
        let reply = client.produce(&args.topic, args.partition, batch, acks).await.map_err(status_error)?;
        if let (Some(first), Some(last)) = (reply.positions.first(), reply.positions.last()) {
            eprintln!(
                "produced {n} records (first at partition {} offset {}, last at partition {} offset {})",
                first.partition, first.offset, last.partition, last.offset
            );
        }
        total += n;
    }
    eprintln!("done: {total} records to {}", args.topic);
    Ok(())
}
