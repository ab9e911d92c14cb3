//! Read-ahead for sequential readers of a log under direct I/O.
//!
//! Why: a direct read waits on the device (a 4 MiB fetch ≈ 7 ms here), and a
//! consumer catching up fetches, decodes, and fetches again, so without the
//! kernel's page-cache read-ahead the device idles while the reply travels
//! and the device read and the network transfer add up. When a reader of a
//! log reads where its previous read ended (after its last whole batch), the
//! log reads the following span of the same size on a background thread; the
//! next fetch takes it from memory, or waits for the read in flight instead
//! of issuing its own.
//!
//! One slot per log (a partition's catching-up consumer); the slot is keyed by
//! segment id, so a segment swapped by compaction never serves stale bytes.
//! Memory is bounded: read-ahead only starts while all slots together hold
//! under [`MAX_HELD_BYTES`], and data nobody took within [`EXPIRE_AFTER`] is
//! dropped by the read-ahead thread.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::direct;
use crate::locks::LockExt;

/// Reads shorter than this do not start a read-ahead: they come from readers
/// at or near the tail, where there is nothing ahead to read.
pub const MIN_READAHEAD: usize = 256 << 10;
/// All slots together hold at most this much read-ahead data.
pub const MAX_HELD_BYTES: usize = 64 << 20;
/// Read-ahead data not taken within this long is dropped.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(2);

static HELD_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Where a span lives: (segment id, file position).
type Key = (u64, u64);

/// A slot's state. Each non-empty state carries the bytes it reserved
/// against [`MAX_HELD_BYTES`], released when the slot is cleared.
enum Slot {
    Empty,
    /// Handed to the thread, not started: a reader that wants it cancels it
    /// and reads itself rather than queue behind other logs' read-ahead.
    Queued {
        key: Key,
        reserved: usize,
    },
    /// Being read; a reader that wants it waits.
    Running {
        key: Key,
        reserved: usize,
    },
    Done {
        key: Key,
        reserved: usize,
        data: Bytes,
        at: Instant,
    },
}

impl Slot {
    /// Empties the slot, releasing its reservation; returns what it held.
    fn clear(&mut self) -> Slot {
        let old = std::mem::replace(self, Slot::Empty);
        if let Slot::Queued { reserved, .. } | Slot::Running { reserved, .. } | Slot::Done { reserved, .. } = old {
            HELD_BYTES.fetch_sub(reserved, Ordering::Relaxed);
        }
        old
    }
}

/// The read-ahead state of one log.
pub struct ReadAhead {
    state: Mutex<State>,
    ready: Condvar,
    /// Reads served from the slot.
    hits: AtomicU64,
}

struct State {
    slot: Slot,
    /// Where the reader said it reads next.
    next: Option<Key>,
    /// The last read was at `next`.
    in_order: bool,
}

struct Job {
    ra: Weak<ReadAhead>,
    file: Arc<File>,
    key: Key,
    len: usize,
}

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead {
            state: Mutex::new(State { slot: Slot::Empty, next: None, in_order: false }),
            ready: Condvar::new(),
            hits: AtomicU64::new(0),
        }
    }
}

impl ReadAhead {
    /// Reads `len` bytes at `pos` of segment `seg_id` through `file` (its
    /// O_DIRECT handle): from the read-ahead slot when it holds them, else
    /// from the device.
    pub fn read(&self, seg_id: u64, file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
        let key = (seg_id, pos);
        let mut st = self.state.locked();
        st.in_order = st.next == Some(key);
        let mut st = self
            .ready
            .wait_while(st, |s| matches!(s.slot, Slot::Running { key: k, .. } if k == key))
            .unwrap_or_else(|p| p.into_inner());
        // Whatever the slot held is used now or never: a queued read is cancelled.
        let ahead = match st.slot.clear() {
            Slot::Done { key: k, data, .. } if k == key && data.len() >= len => Some(data.slice(..len)),
            _ => None,
        };
        drop(st);
        match ahead {
            Some(data) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Ok(data)
            }
            None => direct::read(file, pos, len),
        }
    }

    /// Tells the read-ahead that the reader's next read will be at `next` of
    /// segment `seg_id`, which has `limit` bytes. If the last read was where
    /// the one before said the next would be, this reader reads in order:
    /// start reading `len` bytes at `next`.
    pub fn read_next(self: &Arc<Self>, seg_id: u64, file: &Arc<File>, next: u64, len: usize, limit: u64) {
        let key = (seg_id, next);
        let in_order = {
            let mut st = self.state.locked();
            st.next = Some(key);
            st.in_order
        };
        let len = len.min(limit.saturating_sub(next) as usize);
        if in_order && len >= MIN_READAHEAD {
            self.start(file, key, len);
        }
    }

    /// Reads served from read-ahead so far.
    #[cfg(test)]
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Waits until no read-ahead is queued or running (tests: makes the next
    /// read's hit or miss deterministic).
    #[cfg(test)]
    pub fn wait_settled(&self) {
        let st = self.state.locked();
        drop(self.ready.wait_while(st, |s| matches!(s.slot, Slot::Queued { .. } | Slot::Running { .. })));
    }

    fn start(self: &Arc<Self>, file: &Arc<File>, key: Key, len: usize) {
        if HELD_BYTES.fetch_add(len, Ordering::Relaxed) + len > MAX_HELD_BYTES {
            HELD_BYTES.fetch_sub(len, Ordering::Relaxed);
            return;
        }
        let mut st = self.state.locked();
        st.slot.clear();
        st.slot = Slot::Queued { key, reserved: len };
        drop(st);
        let job = Job { ra: Arc::downgrade(self), file: file.clone(), key, len };
        if jobs().is_none_or(|jobs| jobs.send(job).is_err()) {
            self.state.locked().slot.clear();
        }
    }

    /// Runs `job` if its slot still wants it; true if it left data behind.
    fn run(&self, job: &Job) -> bool {
        {
            let mut st = self.state.locked();
            let Slot::Queued { key, reserved } = st.slot else { return false };
            if key != job.key {
                return false;
            }
            st.slot = Slot::Running { key, reserved };
        }
        // A failed read leaves nothing: the reader reads itself and sees the error.
        let data = direct::read(&job.file, job.key.1, job.len);
        let mut st = self.state.locked();
        if let Slot::Running { key, reserved } = st.slot {
            match data {
                Ok(data) => st.slot = Slot::Done { key, reserved, data, at: Instant::now() },
                Err(_) => {
                    st.slot.clear();
                }
            }
        }
        drop(st);
        self.ready.notify_all();
        true
    }

    /// Drops data that has waited longer than [`EXPIRE_AFTER`]; true if the
    /// slot still holds some.
    fn expire(&self) -> bool {
        let mut st = self.state.locked();
        match st.slot {
            Slot::Done { at, .. } if at.elapsed() >= EXPIRE_AFTER => {
                st.slot.clear();
                false
            }
            Slot::Empty => false,
            _ => true,
        }
    }
}

/// The queue of the read-ahead thread, started on first use; None if the
/// thread could not start (reads then go without read-ahead). One thread:
/// read-ahead only hides device time behind network time, and a second
/// device read at once would only slow the reader's own reads.
fn jobs() -> Option<&'static mpsc::Sender<Job>> {
    static JOBS: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        match std::thread::Builder::new().name("strata-readahead".into()).spawn(move || worker(rx)) {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the read-ahead thread: reading without read-ahead");
                None
            }
        }
    })
    .as_ref()
}

fn worker(rx: mpsc::Receiver<Job>) {
    // Slots holding data, checked for expiry on every wake-up.
    let mut holding: Vec<Weak<ReadAhead>> = Vec::new();
    loop {
        match rx.recv_timeout(EXPIRE_AFTER) {
            Ok(job) => {
                if let Some(ra) = job.ra.upgrade() {
                    if ra.run(&job) && !holding.iter().any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&ra))) {
                        holding.push(Arc::downgrade(&ra));
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        holding.retain(|w| w.upgrade().is_some_and(|ra| ra.expire()));
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Give back the reservation of whatever the slot holds.
        if let Ok(st) = self.state.get_mut() {
            st.slot.clear();
        }
    }
}
