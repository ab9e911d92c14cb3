//! The writing side of a segment: appends (direct, small through the page
//! cache, or buffered), preallocation, fsync and sealing. Writer only.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use super::super::batch::BatchMeta;
use super::super::direct::{self, AlignedBuf, DirectWriter};
use super::super::format::{PREALLOCATE_BYTES, PREALLOCATE_MIN_BYTES, SMALL_WRITE_BYTES};
use super::super::recent::Recent;
use super::{IndexConfig, Segment};
use crate::failpoint;
use crate::locks::{LockExt, RwLockExt};

impl Segment {
    /// Appends encoded batches, in order, at the end, in one write (through
    /// `direct` if given). Each batch is given as its pieces (see
    /// `batch_pieces`), its length and its summary. Writer only.
    pub fn append<'a, I, P>(&self, batches: I, cfg: IndexConfig, direct: Option<&mut DirectWriter>) -> io::Result<()>
    where
        I: Iterator<Item = (P, u64, &'a BatchMeta)> + Clone,
        P: Iterator<Item = &'a [u8]> + Clone,
    {
        let start = self.size.load(Ordering::Relaxed);
        let len: u64 = batches.clone().map(|(_, len, _)| len).sum();
        let parts = batches.clone().flat_map(|(pieces, _, _)| pieces);
        match direct {
            Some(d) if len < SMALL_WRITE_BYTES => {
                self.reserve(direct::align_up(start + len))?;
                self.write_small(start, parts, d)?;
            }
            Some(d) => {
                // Direct writes cover whole blocks: reserve up to the padded end.
                self.reserve(direct::align_up(start + len))?;
                d.append(start, parts)?;
            }
            None => {
                // No fallocate and no early writeback here: ext4 allocates
                // blocks of buffered writes at writeback (delayed
                // allocation), off this thread; the writer reserving them
                // itself (fallocate, or sync_file_range submitting the
                // writeback) waited up to 0.8 s whenever the flusher's
                // fsync held the device, and stalled every producer of the
                // partition with it. A full disk still fails the write.
                // What a write that fails half-way leaves past `size` is
                // cut at seal time, as preallocated space is.
                self.allocated.fetch_max(start + len, Ordering::Relaxed);
                write_all_vectored_at(&self.file, parts, start)?;
            }
        }
        self.appended(start, batches, cfg);
        Ok(())
    }

    /// Appends the one batch in `buf[at..]` with a direct write, without copying
    /// it: `at` must be where the segment's end falls in its block (see
    /// [`DirectWriter::append_in_place`]). Writer only.
    pub fn append_in_place(
        &self,
        buf: &mut AlignedBuf,
        at: usize,
        meta: &BatchMeta,
        cfg: IndexConfig,
        direct: &mut DirectWriter,
    ) -> io::Result<()> {
        let start = self.size.load(Ordering::Relaxed);
        let len = buf.len() - at;
        self.reserve(direct::align_up(start + len as u64))?;
        direct.append_in_place(start, buf, at)?;
        self.appended(start, std::iter::once((std::iter::once(&buf[at..at + len]), len as u64, meta)), cfg);
        Ok(())
    }

    /// Writes `parts` at `start` through the page cache, though the segment
    /// is direct, and starts writing them back at once: a direct read or
    /// write of those blocks later finds them clean (the kernel keeps the
    /// two kinds of I/O coherent, writing dirty pages back first).
    fn write_small<'a>(
        &self,
        start: u64,
        parts: impl Iterator<Item = &'a [u8]> + Clone,
        direct: &mut DirectWriter,
    ) -> io::Result<()> {
        let mut buffered = self.buffered.locked();
        let file = match &mut *buffered {
            Some(f) => f,
            empty => empty.insert(OpenOptions::new().write(true).open(&self.path)?),
        };
        let mut pos = start;
        for part in parts.clone() {
            file.write_all_at(part, pos)?;
            pos += part.len() as u64;
        }
        start_writeback(file, start, pos);
        direct.absorb(start, parts);
        Ok(())
    }

    /// Indexes and publishes batches just written from `start`.
    fn appended<'a, P: Iterator<Item = &'a [u8]>>(
        &self,
        start: u64,
        batches: impl Iterator<Item = (P, u64, &'a BatchMeta)>,
        cfg: IndexConfig,
    ) {
        let mut pos = start;
        for (pieces, len, meta) in batches {
            if self.direct {
                let mut recent = self.recent.write_locked();
                let mut at = pos;
                for piece in pieces {
                    recent.remember(at, piece);
                    at += piece.len() as u64;
                }
            }
            let rel = self.rel(meta.base_offset);
            let mut ix = self.indexes.write_locked();
            if ix.offset.is_empty() || ix.bytes_since_entry >= cfg.interval_bytes {
                ix.offset.push(rel, pos as u32);
                ix.bytes_since_entry = 0;
                if meta.max_timestamp > self.max_timestamp() {
                    ix.time.push(meta.max_timestamp, rel);
                }
            }
            ix.bytes_since_entry += len;
            drop(ix);
            self.max_timestamp.fetch_max(meta.max_timestamp, Ordering::AcqRel);
            pos += len;
        }
        self.size.store(pos, Ordering::Release);
    }

    /// Makes sure the file has blocks reserved up to `end`, fallocating
    /// ahead in growing steps: writing into reserved blocks is several
    /// times faster than growing a file with every write. The reserved tail
    /// is zeros, cut off when the segment is sealed or recovered.
    fn reserve(&self, end: u64) -> io::Result<()> {
        let allocated = self.allocated.load(Ordering::Relaxed);
        if end <= allocated {
            return Ok(());
        }
        // Reserve as much again as is already written, between 1 MiB and
        // PREALLOCATE_BYTES: busy partitions take few fallocate calls, and
        // thousands of small partitions do not reserve 32 MiB each.
        let step = allocated.clamp(PREALLOCATE_MIN_BYTES, PREALLOCATE_BYTES);
        let needed = end - allocated;
        let mut len = needed.max(step);
        loop {
            let rc = match failpoint::io("fallocate") {
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
                // SAFETY: a plain syscall on a file descriptor this segment owns.
                Ok(()) => unsafe {
                    use std::os::fd::AsRawFd;
                    libc::posix_fallocate(self.file.as_raw_fd(), allocated as libc::off_t, len as libc::off_t)
                },
            };
            match rc {
                0 => {
                    self.allocated.store(allocated + len, Ordering::Relaxed);
                    return Ok(());
                }
                // Filesystems without fallocate: just grow with the writes.
                libc::EOPNOTSUPP | libc::EINVAL => {
                    self.allocated.store(u64::MAX, Ordering::Relaxed);
                    return Ok(());
                }
                // The step ahead does not fit: reserve only what this write
                // needs, so the disk is full only when the batch does not fit.
                libc::ENOSPC if len > needed => len = needed,
                errno => return Err(io::Error::from_raw_os_error(errno)),
            }
        }
    }

    /// Starts writing back appended bytes `[from, to)`, without waiting
    /// (flusher only: see `Log::run_flusher`).
    pub fn start_writeback(&self, from: u64, to: u64) {
        if !self.direct {
            start_writeback(&self.file, from, to);
        }
    }

    /// fsyncs the log data (indexes are rebuilt from it if lost).
    pub fn sync(&self) -> io::Result<()> {
        failpoint::io("fsync")?;
        self.file.sync_data()
    }

    /// Makes the segment read-only for good: fsyncs the log, adds a final
    /// time index entry so the segment's largest timestamp survives, and cuts
    /// the indexes to size.
    pub fn seal(&self, last_offset: Option<u64>) -> io::Result<()> {
        let size = self.size();
        if self.allocated.load(Ordering::Relaxed) > size {
            self.file.set_len(size)?;
            self.allocated.store(size, Ordering::Relaxed);
        }
        self.sync()?;
        *self.buffered.locked() = None;
        // Sealed segments are read from the device (and read ahead).
        *self.recent.write_locked() = Recent::default();
        let mut ix = self.indexes.write_locked();
        let max_ts = self.max_timestamp();
        if let Some(last) = last_offset {
            if ix.time.last().is_none_or(|(ts, _)| ts < max_ts) && max_ts > 0 {
                let rel = self.rel(last);
                if ix.time.last().is_none_or(|(_, r)| r < rel) {
                    ix.time.push(max_ts, rel);
                }
            }
        }
        ix.offset.seal()?;
        ix.time.seal()?;
        self.sealed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Starts writing back the dirty pages of `file` in `[from, to)` without
/// waiting for them. Only a hint: the pages are written back later anyway.
fn start_writeback(file: &std::fs::File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor the caller owns.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "sync_file_range failed");
    }
}

/// Most pieces one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// Writes `parts`, in order, at `pos`: up to [`MAX_IOVECS`] per vectored
/// write, resuming after a short one.
fn write_all_vectored_at<'a>(
    file: &std::fs::File,
    parts: impl Iterator<Item = &'a [u8]>,
    mut pos: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut parts = parts.peekable();
    let mut iov: Vec<io::IoSlice<'a>> = Vec::new();
    while parts.peek().is_some() {
        iov.clear();
        iov.extend(parts.by_ref().take(MAX_IOVECS).map(io::IoSlice::new));
        let mut slices = &mut iov[..];
        while !slices.is_empty() {
            let count = slices.len() as libc::c_int;
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` (std
            // guarantees it on Unix), the slices borrow live buffers for the
            // length of the call, and the fd is open (`file` is borrowed).
            let n = unsafe {
                libc::pwritev64(file.as_raw_fd(), slices.as_ptr().cast::<libc::iovec>(), count, pos as libc::off64_t)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "segment write wrote nothing"));
            }
            pos += n as u64;
            io::IoSlice::advance_slices(&mut slices, n as usize);
        }
    }
    Ok(())
}
