//! Reply memory in flight on one connection: handed to HTTP/2, not yet
//! written to the socket.
//!
//! HTTP/2 buffers whatever a client's window lets it send, so a reply handed
//! to it still takes memory until its bytes leave. Each reply's memory is
//! held here until the socket's byte count passes a mark: what it had
//! written when the reply was handed over, plus the reply's size, after
//! everything held before. A client that opens its windows wide and never
//! reads then holds the reply budget, not memory beyond it; its connection
//! is closed when it makes no progress (`stalled_for`), which gives the
//! memory back. Progress is counted per connection, not per stream.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::OwnedSemaphorePermit;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Bytes written to the socket.
    written: AtomicU64,
    /// Entries in `ledger.held` (read without the lock by every write).
    held: AtomicUsize,
    /// When the socket last wrote while memory was held (the caller's clock, ms).
    progress_ms: AtomicU64,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// The socket byte count by which everything held so far is written.
    promised: u64,
    /// (socket byte count, memory), in that order.
    held: VecDeque<(u64, OwnedSemaphorePermit)>,
}

impl InFlight {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes written to the socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Holds `permit` until the socket has written `bytes` more than it had
    /// at `from`, after everything held before.
    pub fn hold(&self, from: u64, bytes: u64, permit: OwnedSemaphorePermit, now_ms: u64) {
        let mut ledger = self.ledger();
        let mark = ledger.promised.max(from) + bytes;
        ledger.promised = mark;
        if self.written() >= mark {
            return;
        }
        ledger.held.push_back((mark, permit));
        if self.held.fetch_add(1, Ordering::SeqCst) == 0 {
            self.progress_ms.store(now_ms, Ordering::Relaxed);
        }
        // A write that counted its bytes before this entry was visible to it
        // released nothing: look again (SeqCst: that write's count is seen).
        self.release_written(&mut ledger);
    }

    /// `n` more bytes went out: memory held for them goes back.
    pub fn wrote(&self, n: usize, now_ms: u64) {
        self.written.fetch_add(n as u64, Ordering::SeqCst);
        if self.held.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.progress_ms.store(now_ms, Ordering::Relaxed);
        self.release_written(&mut self.ledger());
    }

    fn release_written(&self, ledger: &mut Ledger) {
        let written = self.written();
        while ledger.held.front().is_some_and(|(mark, _)| *mark <= written) {
            ledger.held.pop_front();
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// How long (ms, by the caller's clock) memory held has waited for the
    /// socket to write anything; None when none is held.
    pub fn stalled_for_ms(&self, now_ms: u64) -> Option<u64> {
        (self.held.load(Ordering::SeqCst) > 0).then(|| now_ms.saturating_sub(self.progress_ms.load(Ordering::Relaxed)))
    }

    /// The connection is closed: everything held goes back now.
    pub fn release(&self) {
        let mut ledger = self.ledger();
        let n = ledger.held.len();
        ledger.held.clear();
        self.held.fetch_sub(n, Ordering::SeqCst);
    }
}
