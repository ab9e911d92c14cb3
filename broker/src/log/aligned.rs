//! Buffers aligned for direct I/O, their pool, and the raw reads into
//! them: all of the log's unsafe memory handling, in one file.

use std::alloc::{self, Layout};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes};

use super::format::DIRECT_IO_ALIGN;
use super::pool::{Pool, Reusable};

/// Rounds `n` up to a multiple of [`DIRECT_IO_ALIGN`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(DIRECT_IO_ALIGN as u64) * DIRECT_IO_ALIGN as u64
}

/// Rounds `n` down to a multiple of [`DIRECT_IO_ALIGN`].
pub fn align_down(n: u64) -> u64 {
    n - n % DIRECT_IO_ALIGN as u64
}

/// Reads up to `len` bytes at `pos` of `file` into memory at `dst`, which
/// may be uninitialised (a read is then one kernel copy, without zeroing the
/// buffer first). Retries interrupted and block-aligned short reads; a short
/// read that is not block-aligned is the end of the file (direct reads can
/// only continue at an aligned position). Returns the bytes read.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes that nothing else accesses
/// until this returns.
pub unsafe fn pread_into(file: &File, dst: *mut u8, len: usize, pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < len {
        // SAFETY: by the caller's promise, `len - done` bytes at `dst + done`
        // are ours to write; the kernel writes at most that many.
        let n = unsafe {
            libc::pread(file.as_raw_fd(), dst.add(done).cast(), len - done, (pos + done as u64) as libc::off_t)
        };
        match n {
            0 => break,
            n if n > 0 => {
                done += n as usize;
                if !(n as usize).is_multiple_of(DIRECT_IO_ALIGN) {
                    break;
                }
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(done)
}

/// A byte buffer whose start is aligned for direct I/O. It only grows, so a
/// buffer reused from the pool keeps its memory warm.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only read the initialised bytes.
unsafe impl Sync for AlignedBuf {}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf { ptr: NonNull::dangling(), cap: 0, len: 0 }
    }
}

impl AlignedBuf {
    fn layout(cap: usize) -> Layout {
        // Fails only for sizes near isize::MAX; buffers hold one request's
        // batch (at most `server.max_request_bytes`) or one fetch.
        Layout::from_size_align(cap, DIRECT_IO_ALIGN).expect("direct I/O buffer layout")
    }

    /// Makes room for at least `cap` bytes in all, keeping the contents.
    // Inlined: the encoder calls it for every field of every record.
    #[inline]
    pub fn reserve_total(&mut self, cap: usize) {
        if cap > self.cap {
            self.grow(cap);
        }
    }

    #[cold]
    fn grow(&mut self, cap: usize) {
        let new_cap = align_up(cap.max(self.cap * 2) as u64) as usize;
        // SAFETY: new_cap > 0 and the layout is valid (checked in `layout`).
        let ptr = unsafe { alloc::alloc(Self::layout(new_cap)) };
        let Some(ptr) = NonNull::new(ptr) else { alloc::handle_alloc_error(Self::layout(new_cap)) };
        if self.cap > 0 {
            // SAFETY: both regions are valid for `len` bytes and do not overlap;
            // the old allocation was made with `layout(self.cap)`.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), ptr.as_ptr(), self.len);
                alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap));
            }
        }
        self.ptr = ptr;
        self.cap = new_cap;
    }

    /// Appends `data`.
    #[inline]
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.reserve_total(self.len + data.len());
        // SAFETY: capacity covers len + data.len(); `data` cannot overlap the
        // spare capacity, which nobody else can reference.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(self.len), data.len()) };
        self.len += data.len();
    }

    /// Appends zeros up to the next aligned length.
    pub fn pad_to_alignment(&mut self) {
        let target = align_up(self.len as u64) as usize;
        self.reserve_total(target);
        // SAFETY: capacity covers `target`; the range is spare capacity.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, target - self.len) };
        self.len = target;
    }

    /// Reads into the buffer, after its contents, up to `len` bytes at file
    /// position `pos` (both aligned, as direct I/O needs), stopping early at
    /// the end of the file. Returns the bytes read.
    pub fn read_at(&mut self, file: &File, pos: u64, len: usize) -> io::Result<usize> {
        debug_assert!(pos.is_multiple_of(DIRECT_IO_ALIGN as u64) && len.is_multiple_of(DIRECT_IO_ALIGN));
        debug_assert!(self.len.is_multiple_of(DIRECT_IO_ALIGN));
        self.reserve_total(self.len + len);
        // SAFETY: `reserve_total` made `len` bytes of spare capacity after
        // `self.len`, which nothing else references while we hold `&mut self`.
        let n = unsafe { pread_into(file, self.ptr.as_ptr().add(self.len), len, pos)? };
        self.len += n;
        Ok(n)
    }

    /// Writes the whole contents at file position `pos` (aligned; the length
    /// must be aligned too: see [`AlignedBuf::pad_to_alignment`]).
    pub fn write_at(&self, file: &File, pos: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        debug_assert!(pos.is_multiple_of(DIRECT_IO_ALIGN as u64) && self.len.is_multiple_of(DIRECT_IO_ALIGN));
        file.write_all_at(self, pos)
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialised (dangling+0 is valid for empty).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

// SAFETY: `chunk_mut` hands out only the spare capacity after `len`, and
// `advance_mut` is only called (by contract) for bytes written there.
unsafe impl BufMut for AlignedBuf {
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize - self.len
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        debug_assert!(self.len + cnt <= self.cap);
        self.len += cnt;
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.len == self.cap {
            self.reserve_total((self.cap * 2).max(DIRECT_IO_ALIGN));
        }
        // SAFETY: `cap - len` bytes after `len` are allocated and referenced
        // by nothing else while we hold `&mut self`.
        unsafe { UninitSlice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), self.cap - self.len) }
    }

    // The encoder writes a byte or a payload at a time: one copy each.
    fn put_slice(&mut self, src: &[u8]) {
        self.extend_from_slice(src);
    }

    fn put_bytes(&mut self, val: u8, cnt: usize) {
        self.reserve_total(self.len + cnt);
        // SAFETY: capacity covers len + cnt; the range is spare capacity.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), val, cnt) };
        self.len += cnt;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated in `reserve_total` with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) };
        }
    }
}

/// Buffers for direct reads and writes and for encoding batches (see
/// `pool.rs` for why a pool).
pub(super) static POOL: Pool<AlignedBuf> = Pool::new(64 << 20);

impl Reusable for AlignedBuf {
    fn capacity(&self) -> usize {
        self.cap
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// A pooled buffer behind a `Bytes`; back to the pool when the last slice
/// of it is dropped.
pub(super) struct PooledBuf(pub(super) AlignedBuf);

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        POOL.give(std::mem::take(&mut self.0));
    }
}

/// `buf[range]` as `Bytes` that share `buf`; it goes back to the pool when
/// the last slice of it is dropped.
pub(super) fn share(buf: AlignedBuf, range: std::ops::Range<usize>) -> Bytes {
    Bytes::from_owner(PooledBuf(buf)).slice(range)
}
