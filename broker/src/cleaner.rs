//! The background cleaner: retention, compaction and scrub passes on
//! timers, off the async workers, stopping between batches on shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::CleanerConfig;
use crate::locks::LockExt;
use crate::log::compact::{CompactionPolicy, Throttle};
use crate::partition::Manager;
use crate::shutdown::stopped;

#[derive(Clone, Copy, Debug)]
enum Job {
    Retention,
    Compaction,
    Scrub,
}

/// Runs until `shutdown` turns true; an ongoing pass is asked to stop and awaited.
pub async fn run(manager: Arc<Manager>, config: CleanerConfig, mut shutdown: watch::Receiver<bool>) {
    let stop = Arc::new(AtomicBool::new(false));
    // First passes one interval after start: start-up stays quick.
    let every = |ms| {
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_millis(ms), Duration::from_millis(ms))
    };
    let mut retention = every(config.retention_check_interval_ms);
    let mut compaction = every(config.compaction_interval_ms);
    let scrubbing = config.scrub_interval_ms > 0;
    let mut scrub = every(config.scrub_interval_ms.max(1));
    for t in [&mut retention, &mut compaction, &mut scrub] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let compacted: Arc<Progress> = Arc::default();
    loop {
        let job = tokio::select! {
            _ = retention.tick() => Job::Retention,
            _ = compaction.tick() => Job::Compaction,
            _ = scrub.tick(), if scrubbing => Job::Scrub,
            _ = stopped(&mut shutdown) => return,
        };
        let (m, s, c) = (manager.clone(), stop.clone(), compacted.clone());
        metrics::counter!("strata_cleaner_passes_total", "kind" => format!("{job:?}").to_lowercase()).increment(1);
        let pass = tokio::task::spawn_blocking(move || match job {
            Job::Retention => retention_pass(&m),
            Job::Compaction => compaction_pass(&m, &s, config.io_bytes_per_sec, &c),
            Job::Scrub => scrub_pass(&m, &s, config.scrub_bytes_per_sec),
        });
        tokio::pin!(pass);
        tokio::select! {
            r = &mut pass => if let Err(e) = r { tracing::error!(?job, error = %e, "cleaner pass panicked") },
            _ = stopped(&mut shutdown) => {
                stop.store(true, Ordering::Release);
                let _ = pass.await;
                return;
            }
        }
    }
}

/// High watermark per partition at its last compaction that left nothing for
/// later (no young tombstones, no segment held back by the lag), so an
/// unchanged partition is not scanned again.
#[derive(Default)]
struct Progress(std::sync::Mutex<std::collections::HashMap<String, u64>>);

fn retention_pass(manager: &Manager) {
    let now = manager.now_ms();
    for topic in manager.topics_snapshot() {
        let s = topic.settings();
        if !s.cleanup_policy.delete || (s.retention_ms < 0 && s.retention_bytes < 0) {
            continue;
        }
        for p in topic.partitions().iter() {
            match p.enforce_retention(now, s.retention_ms, s.retention_bytes) {
                Ok(None) => {}
                Ok(Some(removed)) => {
                    metrics::counter!("strata_retention_segments_deleted_total").increment(removed.segments as u64);
                    tracing::info!(
                        partition = p.name(),
                        segments = removed.segments,
                        bytes = removed.bytes,
                        log_start = removed.log_start,
                        "retention deleted old segments"
                    )
                }
                Err(e) => tracing::error!(partition = p.name(), error = %e, "retention failed"),
            }
        }
    }
}

fn compaction_pass(manager: &Manager, stop: &AtomicBool, bytes_per_sec: u64, progress: &Progress) {
    let index = manager.index_config();
    for topic in manager.topics_snapshot() {
        let settings = topic.settings();
        if !settings.cleanup_policy.compact {
            continue;
        }
        let policy = CompactionPolicy {
            min_compaction_lag_ms: settings.min_compaction_lag_ms,
            delete_retention_ms: settings.delete_retention_ms,
        };
        for log in topic.partitions().iter() {
            let hw = log.log_end();
            if progress.0.locked().get(log.name()) == Some(&hw) {
                continue;
            }
            let started = Instant::now();
            let mut throttle = Throttle::new(bytes_per_sec, stop);
            match log.compact(&policy, index, manager.now_ms(), &mut throttle) {
                Ok(Some(stats)) => {
                    let secs = started.elapsed().as_secs_f64();
                    metrics::counter!("strata_compaction_bytes_read_total").increment(stats.bytes_before);
                    metrics::counter!("strata_compaction_bytes_written_total").increment(stats.bytes_after);
                    metrics::counter!("strata_compaction_records_dropped_total")
                        .increment(stats.records_dropped + stats.tombstones_dropped);
                    if stats.segments_rewritten > 0 {
                        tracing::info!(
                            partition = log.name(),
                            segments = stats.segments_rewritten,
                            bytes_before = stats.bytes_before,
                            bytes_after = stats.bytes_after,
                            records_dropped = stats.records_dropped,
                            tombstones_dropped = stats.tombstones_dropped,
                            mb_per_sec = format!("{:.1}", stats.bytes_before as f64 / 1e6 / secs.max(1e-9)),
                            "compacted"
                        );
                    }
                    if !stats.work_left {
                        progress.0.locked().insert(log.name().to_string(), hw);
                    }
                }
                Ok(None) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
                Err(e) => tracing::error!(partition = log.name(), error = %e, "compaction failed"),
            }
        }
    }
}

/// Verifies every sealed segment of every partition at `bytes_per_sec`.
fn scrub_pass(manager: &Manager, stop: &AtomicBool, bytes_per_sec: u64) {
    for topic in manager.topics_snapshot() {
        for p in topic.partitions().iter() {
            let mut throttle = Throttle::new(bytes_per_sec, stop);
            match p.scrub(|n| throttle.account(n)) {
                Ok(0) => {}
                Ok(n) => tracing::error!(partition = p.name(), damaged = n, "scrub found damaged batches"),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
                Err(e) => tracing::error!(partition = p.name(), error = %e, "scrub failed"),
            }
        }
    }
}
