//! Prometheus metrics: the `metrics` facade everywhere, rendered by
//! metrics-exporter-prometheus, served on `server.metrics_listen`.
//!
//! Families (all prefixed `strata_`):
//! - `rpc_requests_total{method,code}`, `rpc_duration_seconds{method}`
//! - `records_in_total{topic}`, `bytes_in_total{topic}`, `records_out_total{topic}`, `bytes_out_total{topic}`
//! - `partition_size_bytes`, `partition_end_offset`, `partition_start_offset` `{topic,partition}`
//! - `consumer_group_lag{group,topic,partition}`
//! - `active_connections`, `connections_rejected_total`, `connections_closed_total{reason}`,
//!   `accept_errors_total{listener}`, `request_budget_waits_total`, `reply_budget_waits_total`,
//!   `subscribers_stalled_total`, `resident_memory_bytes`
//! - `fsync_total`, `fsync_duration_seconds`, `segment_write_duration_seconds`
//! - `retention_segments_deleted_total`, `compaction_bytes_read_total`,
//!   `compaction_bytes_written_total`, `compaction_records_dropped_total`, `cleaner_passes_total{kind}`
//! - `subscriptions_active`

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::coordinator::Coordinator;
use crate::partition::Manager;
use crate::shutdown::stopped;
use crate::tls::Tls;

/// Installs the global recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &buckets)
                .expect("non-empty buckets")
                .install_recorder()
                .expect("metrics recorder installed once")
        })
        .clone()
}

/// Sets the gauges that describe current state (sizes, offsets, lag).
async fn refresh(manager: &Manager, coordinator: &Coordinator) {
    if let Some(rss) = crate::memory::resident_bytes() {
        metrics::gauge!("strata_resident_memory_bytes").set(rss as f64);
    }
    metrics::gauge!("strata_process_cpu_seconds_total").set(process_cpu_seconds());
    metrics::gauge!("strata_log_lines_dropped_total").set(crate::logging::dropped_lines() as f64);
    let (mut refused, mut read_only) = (0usize, 0usize);
    for topic in manager.topics_snapshot() {
        for log in topic.partitions().iter() {
            refused += usize::from(log.refused().is_some());
            read_only += usize::from(log.read_only().is_some());
            let labels = [("topic", topic.name().to_string()), ("partition", log.id().to_string())];
            metrics::gauge!("strata_partition_size_bytes", &labels).set(log.disk_usage().1 as f64);
            metrics::gauge!("strata_partition_end_offset", &labels).set(log.high_watermark() as f64);
            metrics::gauge!("strata_partition_start_offset", &labels).set(log.log_start() as f64);
        }
    }
    // Partitions whose damage start-up refused to cut (writes refused until
    // repaired), and partitions read-only until a restart.
    metrics::gauge!("strata_partitions_refused").set(refused as f64);
    metrics::gauge!("strata_partitions_read_only").set(read_only as f64);
    for (group, _, _) in coordinator.list_groups().await {
        let Ok(info) = coordinator.describe(&group).await else { continue };
        for p in info.partitions {
            let lag = p.log_end.saturating_sub(p.committed.unwrap_or(p.log_start));
            let labels = [("group", group.clone()), ("topic", p.tp.0), ("partition", p.tp.1.to_string())];
            metrics::gauge!("strata_consumer_group_lag", &labels).set(lag as f64);
        }
    }
}

/// Most metrics connections open at once; more are closed at once. A
/// scraper needs one; the cap keeps a flood of idle connections from using
/// the descriptors the broker needs for clients and segments.
const MAX_CONNECTIONS: usize = 16;
/// A request must arrive, and the reply be written, within this long.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` (over TLS when `tls` is given:
/// `server.metrics_tls`) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    manager: Arc<Manager>,
    coordinator: Arc<Coordinator>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handle = handle();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = crate::net::accept(&listener, "metrics") => r,
            _ = stopped(&mut shutdown) => return,
        };
        let Some((stream, _)) = accepted else { continue };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("strata_connections_rejected_total", "listener" => "metrics").increment(1);
            continue; // dropping the stream closes it
        };
        let (handle, manager, coordinator) = (handle.clone(), manager.clone(), coordinator.clone());
        // The handshake and the answer share one deadline.
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(IO_TIMEOUT, async {
                match acceptor {
                    None => answer(stream, &handle, &manager, &coordinator).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => answer(stream, &handle, &manager, &coordinator).await,
                        Err(e) => {
                            metrics::counter!("strata_tls_handshake_failures_total", "listener" => "metrics")
                                .increment(1);
                            tracing::debug!(error = %e, "metrics TLS handshake failed");
                        }
                    },
                }
            })
            .await;
        });
    }
}

/// Reads one small HTTP/1.1 request (all Prometheus sends) and answers it.
async fn answer(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    handle: &PrometheusHandle,
    manager: &Manager,
    coordinator: &Coordinator,
) {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
    }
    let (status, body) = if buf.starts_with(b"GET /metrics ") || buf.starts_with(b"GET /metrics?") {
        refresh(manager, coordinator).await;
        ("200 OK", handle.render())
    } else {
        ("404 Not Found", "try GET /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// CPU time (user and system) this process has used, in seconds: the
/// broker exports it (`strata_process_cpu_seconds_total`), and `strata
/// bench` reports its own and the broker's per GB moved.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given, which outlives the call.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
