//! Where the broker's log lines go: stderr, through a writer that can
//! neither fail nor block the broker.
//!
//! tracing-subscriber's fmt layer writes each event to its writer and, if
//! that fails, reports the failure with `eprintln!` — which panics when
//! stderr itself is what failed (a full disk, `/dev/full`). A panic in a
//! partition's writer thread closed the partition; one on the main thread
//! ended the process. A stderr pipe that nobody reads would block every
//! thread that logs. So lines go to a bounded queue, and one thread writes
//! them out: a line that does not fit in the queue, or that stderr refuses,
//! is dropped and counted (`strata_log_lines_dropped_total`), never waited
//! for.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

/// Lines queued for stderr at most; past that they are dropped.
const QUEUE_LINES: usize = 4096;

/// Log lines dropped since start: the queue was full, or stderr failed.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines queued, and lines the thread is done with (written or dropped).
static QUEUED: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);

/// Longest [`flush`] waits for the queue to drain.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (a bounded time) until every line queued so far is written out:
/// before the process exits, so its last lines are not lost.
pub fn flush() {
    let target = QUEUED.load(Ordering::Acquire);
    let deadline = std::time::Instant::now() + FLUSH_WAIT;
    while DONE.load(Ordering::Acquire) < target && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The process's last words (`strata: <error>`): queued like a log line,
/// then flushed for a bounded time — `eprintln!` panics when stderr fails,
/// and a direct write blocks on a pipe nobody reads.
pub fn last_words(line: &str) {
    // The line most worth keeping: it waits (bounded) for room in the queue.
    let w = LossyStderr::get();
    let mut line = format!("{line}\n").into_bytes();
    let deadline = std::time::Instant::now() + FLUSH_WAIT;
    loop {
        match w.queue.try_send(line) {
            Ok(()) => {
                QUEUED.fetch_add(1, Ordering::Release);
                break;
            }
            Err(TrySendError::Full(l)) if std::time::Instant::now() < deadline => {
                line = l;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(_) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    flush();
}

/// Panics are reported through the same queue: the default hook writes to
/// stderr directly, and a panic in a partition's writer (which holds the
/// partition's write lock) must not block on a stderr nobody reads.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let backtrace = std::backtrace::Backtrace::capture();
        let mut w = LossyStderr::get();
        let _ = w.write(format!("thread '{name}' {info}\n{backtrace}\n").as_bytes());
        // The process may be about to end: the message goes out first.
        flush();
    }));
}

/// Lines dropped so far (for metrics).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A writer of log lines to stderr that never fails and never blocks.
#[derive(Clone)]
pub struct LossyStderr {
    queue: SyncSender<Vec<u8>>,
}

impl LossyStderr {
    /// The process's one writer (its thread starts on first use).
    pub fn get() -> LossyStderr {
        static WRITER: OnceLock<LossyStderr> = OnceLock::new();
        WRITER
            .get_or_init(|| {
                let (queue, lines) = sync_channel(QUEUE_LINES);
                // If the thread cannot start, every line is dropped (counted).
                let _ = std::thread::Builder::new().name("strata-log".into()).spawn(move || write_out(lines));
                LossyStderr { queue }
            })
            .clone()
    }
}

fn write_out(lines: Receiver<Vec<u8>>) {
    let mut stderr = io::stderr();
    for line in lines {
        if stderr.write_all(&line).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        DONE.fetch_add(1, Ordering::Release);
    }
}

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.queue.try_send(buf.to_vec()) {
            Ok(()) => {
                QUEUED.fetch_add(1, Ordering::Release);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LossyStderr {
    type Writer = LossyStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
