//! What an active direct segment keeps of its newest bytes, so readers at the
//! tail (subscribers, caught-up consumers) are served from memory instead of
//! reading back from the device what was just written (and competing with
//! the next write for it). Buffered segments have the page cache instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::direct::{self, AlignedBuf};
use super::pool::Reusable;

/// Size of the window of recent bytes (small batches, copied). Larger
/// batches are kept whole, one per segment ([`TailBatch`]).
const RECENT_BYTES: usize = 64 << 10;

/// Memory all segments together may keep in [`TailBatch`]es: 32 batches of
/// 1 MB. A partition whose newest batch finds the budget spent is read from
/// the device, as without it.
const TAIL_BATCH_BUDGET: usize = 32 << 20;

/// Bytes of [`TAIL_BATCH_BUDGET`] in use.
static TAIL_BATCH_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes `[start, start + data.len())` of a segment, at most [`RECENT_BYTES`],
/// and its newest batch larger than that.
#[derive(Default)]
pub(super) struct Recent {
    start: u64,
    data: Vec<u8>,
    last: Option<TailBatch>,
}

/// The newest large batch, in the buffer it was written from (no copy).
struct TailBatch {
    pos: u64,
    data: Bytes,
    kept_at: Instant,
    /// Its share of the budget, given back when it is dropped.
    charged: usize,
}

impl Drop for TailBatch {
    fn drop(&mut self) {
        TAIL_BATCH_BYTES.fetch_sub(self.charged, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recent({}..{}", self.start, self.start + self.data.len() as u64)?;
        match &self.last {
            Some(t) => write!(f, ", last {}..{})", t.pos, t.pos + t.data.len() as u64),
            None => write!(f, ")"),
        }
    }
}

impl Recent {
    /// Takes note of `batch`, just written at `pos`: a small one joins the
    /// window; a large one empties it (see [`Recent::keep_large`]).
    pub(super) fn remember(&mut self, pos: u64, batch: &[u8]) {
        if batch.len() > RECENT_BYTES || self.start + self.data.len() as u64 != pos {
            self.data.clear();
            self.start = pos;
            if batch.len() > RECENT_BYTES {
                self.start += batch.len() as u64;
                return;
            }
        }
        if self.data.len() + batch.len() > RECENT_BYTES {
            // Drop the older half or more: one move per half window, not per batch.
            let cut = (self.data.len() + batch.len() - RECENT_BYTES / 2).min(self.data.len());
            self.data.drain(..cut);
            self.start += cut as u64;
        }
        self.data.extend_from_slice(batch);
    }

    /// Keeps `buf[range]`, a batch just written at `pos`, as the newest large
    /// batch if it is one and the budget allows, taking `buf` (which goes
    /// back to the pool when the last reader drops it); replaces the one
    /// kept before. Small batches are left to [`Recent::remember`].
    pub(super) fn keep_large(&mut self, pos: u64, buf: &mut AlignedBuf, range: std::ops::Range<usize>) {
        if range.len() <= RECENT_BYTES {
            return;
        }
        self.last = None;
        let charge = buf.capacity();
        if TAIL_BATCH_BYTES.fetch_add(charge, Ordering::AcqRel) + charge > TAIL_BATCH_BUDGET {
            TAIL_BATCH_BYTES.fetch_sub(charge, Ordering::AcqRel);
            return;
        }
        let data = direct::share(std::mem::take(buf), range);
        self.last = Some(TailBatch { pos, data, kept_at: Instant::now(), charged: charge });
    }

    /// Drops the kept large batch if it is `age` old: an idle partition does
    /// not hold the budget others could use.
    pub(super) fn forget_large(&mut self, age: Duration) {
        if self.last.as_ref().is_some_and(|t| t.kept_at.elapsed() >= age) {
            self.last = None;
        }
    }

    /// `len` bytes at `pos` if the kept large batch or the window holds them all.
    pub(super) fn read(&self, pos: u64, len: usize) -> Option<Bytes> {
        if let Some(t) = &self.last {
            let from = pos.checked_sub(t.pos).and_then(|f| usize::try_from(f).ok());
            if let Some(range) = from.and_then(|f| Some(f..f.checked_add(len)?)).filter(|r| r.end <= t.data.len()) {
                return Some(t.data.slice(range));
            }
        }
        let from = pos.checked_sub(self.start)? as usize;
        self.data.get(from..from.checked_add(len)?).map(Bytes::copy_from_slice)
    }
}
