//! Pools of reusable buffers, shared by all partitions.
//!
//! Why: on the machines we measure on, fresh memory is slow the first time
//! it is touched (see `direct.rs`), and a buffer kept per partition would
//! hold each partition's largest batch in memory for good (1,000 partitions ×
//! 1 MB batches = 1 GB). Buffers instead cycle through a pool that keeps at
//! most a fixed number of bytes of them; appends and reads in flight at once
//! are few, so a few warm buffers serve them all.

use crate::locks::LockExt;
use std::sync::Mutex;

/// A buffer a [`Pool`] can keep.
pub trait Reusable: Default {
    /// Bytes of memory it holds.
    fn capacity(&self) -> usize;
    /// Empties it, keeping its memory.
    fn clear(&mut self);
}

/// Buffers kept for reuse, at most `max_bytes` of capacity in all.
pub struct Pool<T> {
    bufs: Mutex<Vec<T>>,
    max_bytes: usize,
}

impl<T: Reusable> Pool<T> {
    /// An empty pool that will keep at most `max_bytes`.
    pub const fn new(max_bytes: usize) -> Pool<T> {
        Pool { bufs: Mutex::new(Vec::new()), max_bytes }
    }

    /// An empty buffer: a warm one from the pool, or a new one.
    pub fn take(&self) -> T {
        let mut buf = self.bufs.locked().pop().unwrap_or_default();
        buf.clear();
        buf
    }

    /// Keeps `buf` for reuse if the pool has room for it, else frees it.
    pub fn give(&self, buf: T) {
        if buf.capacity() == 0 {
            return;
        }
        let mut bufs = self.bufs.locked();
        if bufs.iter().map(T::capacity).sum::<usize>() + buf.capacity() <= self.max_bytes {
            bufs.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct::AlignedBuf;
    use super::*;

    #[test]
    fn keeps_at_most_max_bytes_and_hands_out_empty_warm_buffers() {
        let pool: Pool<AlignedBuf> = Pool::new(6000);
        let mut a = AlignedBuf::default();
        a.extend_from_slice(b"old");
        pool.give(a);
        let mut b = AlignedBuf::default();
        b.reserve_total(4000);
        pool.give(b); // over 6000 in all: freed
        let b = pool.take();
        assert!(b.is_empty());
        assert!(b.capacity() >= 4096, "the kept buffer comes back");
        assert_eq!(pool.take().capacity(), 0, "nothing else was kept");
    }
}
