//! `strata bench --metrics`: what the broker's disk did during a phase, read
//! from its Prometheus endpoint before and after, so a run shows whether the
//! client waited on the disk (segment writes back to back) or on something
//! else.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::CliError;

/// The broker's storage counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Segment writes (each may carry several batches).
    writes: f64,
    /// Seconds spent in them.
    write_seconds: f64,
    /// Writes that took longer than 2.5 ms (the histogram bucket edge).
    writes_over_2_5ms: f64,
    /// fsyncs of segment data.
    fsyncs: f64,
    /// The broker's CPU seconds so far.
    cpu_seconds: f64,
}

/// Reads the counters from `GET http://addr/metrics`.
pub async fn scrape(addr: &str) -> Result<Snapshot, CliError> {
    Ok(parse(&metrics_text(addr).await?))
}

/// The broker's resident memory (`strata_resident_memory_bytes`).
pub async fn resident_bytes(addr: &str) -> Result<u64, CliError> {
    let text = metrics_text(addr).await?;
    let line = text.lines().find_map(|l| l.strip_prefix("strata_resident_memory_bytes "));
    let value =
        line.and_then(|v| v.trim().parse::<f64>().ok()).ok_or("the broker reports no strata_resident_memory_bytes")?;
    Ok(value as u64)
}

/// The Prometheus text of `GET http://addr/metrics`.
async fn metrics_text(addr: &str) -> Result<String, CliError> {
    let read = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| format!("metrics endpoint {addr} did not answer in 5 s"))?
        .map_err(|e| format!("cannot read metrics from {addr}: {e}"))?;
    Ok(text)
}

/// Picks the storage counters out of Prometheus text (absent ones are 0).
fn parse(text: &str) -> Snapshot {
    let mut s = Snapshot::default();
    let mut within_2_5ms = 0.0;
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        match name {
            "strata_segment_write_duration_seconds_count" => s.writes = value,
            "strata_segment_write_duration_seconds_sum" => s.write_seconds = value,
            "strata_segment_write_duration_seconds_bucket{le=\"0.0025\"}" => within_2_5ms = value,
            "strata_fsync_total" => s.fsyncs = value,
            "strata_process_cpu_seconds_total" => s.cpu_seconds = value,
            _ => {}
        }
    }
    s.writes_over_2_5ms = s.writes - within_2_5ms;
    s
}

/// One line on what the disk did between `before` and `after`, a phase of
/// `elapsed` moving `bytes` of record values, and for how many client
/// requests; and the broker's CPU time per GB.
pub fn report(before: Snapshot, after: Snapshot, elapsed: Duration, requests: usize, bytes: u64) -> String {
    let writes = after.writes - before.writes;
    let seconds = after.write_seconds - before.write_seconds;
    let mean_ms = if writes > 0.0 { seconds / writes * 1000.0 } else { 0.0 };
    format!(
        "broker   {writes:.0} segment writes for {requests} requests, mean {mean_ms:.2} ms, {:.0} over 2.5 ms; \
         writing {:.0}% of the phase; {:.0} fsyncs; CPU {:.2} s per GB",
        after.writes_over_2_5ms - before.writes_over_2_5ms,
        100.0 * seconds / elapsed.as_secs_f64(),
        after.fsyncs - before.fsyncs,
        per_gb(after.cpu_seconds - before.cpu_seconds, bytes),
    )
}

/// `seconds` per GB of `bytes` (0 for no bytes).
pub fn per_gb(seconds: f64, bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        seconds / (bytes as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE strata_fsync_total counter
strata_fsync_total 7
strata_process_cpu_seconds_total 1.5
# TYPE strata_segment_write_duration_seconds histogram
strata_segment_write_duration_seconds_bucket{le=\"0.001\"} 2
strata_segment_write_duration_seconds_bucket{le=\"0.0025\"} 9
strata_segment_write_duration_seconds_bucket{le=\"+Inf\"} 10
strata_segment_write_duration_seconds_sum 0.015
strata_segment_write_duration_seconds_count 10
strata_rpc_duration_seconds_count{method=\"/strata.v1.Broker/Produce\"} 99
";

    #[test]
    fn parses_the_storage_counters() {
        let s = parse(TEXT);
        assert_eq!(
            s,
            Snapshot { writes: 10.0, write_seconds: 0.015, writes_over_2_5ms: 1.0, fsyncs: 7.0, cpu_seconds: 1.5 }
        );
        assert_eq!(parse("garbage\n\n"), Snapshot::default());
    }

    #[test]
    fn reports_the_difference() {
        let line = report(Snapshot::default(), parse(TEXT), Duration::from_millis(30), 20, 500_000_000);
        assert_eq!(
            line,
            "broker   10 segment writes for 20 requests, mean 1.50 ms, 1 over 2.5 ms; writing 50% of the phase; \
             7 fsyncs; CPU 3.00 s per GB"
        );
    }
}
