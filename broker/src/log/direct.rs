//! Direct I/O (`O_DIRECT`) for segment data.
//!
//! Why: on the machines we measure on (virtual machines whose memory the host
//! backs lazily and takes back when the guest frees it), every page the page
//! cache allocates for new data is first-touch memory: buffered writes of a new
//! log ran at 210–350 MB/s, nearly all of it in the kernel's copy into fresh
//! page-cache pages, while direct writes of the same data ran at 1.1–1.2 GB/s.
//! Like Redpanda, Strata therefore writes and reads log data with direct I/O
//! from a few long-lived, aligned buffers, and does not double-buffer it in the
//! page cache. Filesystems that refuse `O_DIRECT` (tmpfs on older kernels)
//! fall back to buffered I/O, and so does `storage.direct_io = false`.
//!
//! Direct I/O moves whole aligned blocks, so the writer keeps the partial last
//! block of the active segment in memory and rewrites it, with the same bytes
//! followed by the new batch, on the next append. The bytes after the logical
//! end of the last block are zeros, which recovery reads as the end of the log.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub(super) use super::aligned::share;
use super::aligned::PooledBuf;
pub(super) use super::aligned::POOL;
pub use super::aligned::{align_down, align_up, pread_into, AlignedBuf};
use super::format::DIRECT_IO_ALIGN;

/// Opens (creating if needed) `path` for direct reads and writes; `None` when
/// the filesystem does not support `O_DIRECT`.
pub fn open(path: &Path) -> io::Result<Option<File>> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false).custom_flags(libc::O_DIRECT);
    match opts.open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads `len` bytes at `pos` of `file` (opened by [`open`]) with direct I/O
/// into a pooled buffer. Fails with `UnexpectedEof` if the file is shorter.
pub fn read(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let start = align_down(pos);
    let span = (align_up(pos + len as u64) - start) as usize;
    let mut buf = PooledBuf(POOL.take());
    let n = buf.0.read_at(file, start, span)?;
    let skip = (pos - start) as usize;
    if n < skip + len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from_owner(buf).slice(skip..skip + len))
}

/// The write side of an active segment with direct I/O: its file and a copy
/// of its partial last block, rewritten with the next batch.
pub struct DirectWriter {
    file: Arc<File>,
    /// The bytes of the last, partial block (`size % DIRECT_IO_ALIGN` of them).
    tail: Vec<u8>,
}

impl DirectWriter {
    /// Starts appending to `file` whose data ends at `size`: loads the
    /// partial last block.
    pub fn new(file: Arc<File>, size: u64) -> io::Result<DirectWriter> {
        let block = align_down(size);
        let tail = (size - block) as usize;
        let mut buf = POOL.take();
        let n = if tail > 0 { buf.read_at(&file, block, DIRECT_IO_ALIGN)? } else { 0 };
        let loaded = buf[..tail.min(n)].to_vec();
        POOL.give(buf);
        if loaded.len() < tail {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment shorter than its recovered size"));
        }
        Ok(DirectWriter { file, tail: loaded })
    }

    /// Writes `batches` at logical position `size` (the current end): the
    /// partial last block, the batches and zeros to the next block boundary,
    /// in one direct write.
    pub fn append<'a>(&mut self, size: u64, batches: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        debug_assert_eq!(self.tail.len() as u64, size % DIRECT_IO_ALIGN as u64);
        let mut buf = POOL.take();
        buf.extend_from_slice(&self.tail);
        for batch in batches {
            buf.extend_from_slice(batch);
        }
        let written = self.write_blocks(&mut buf, size);
        POOL.give(buf);
        written
    }

    /// Writes the batch in `buf[at..]` at logical position `size`, where
    /// `at` is `size`'s offset in its block: the partial last block goes in
    /// front of the batch in the same buffer, so the batch is not copied.
    /// Zero padding is added to `buf`.
    pub fn append_in_place(&mut self, size: u64, buf: &mut AlignedBuf, at: usize) -> io::Result<()> {
        debug_assert_eq!(at, self.tail.len());
        debug_assert_eq!(at as u64, size % DIRECT_IO_ALIGN as u64);
        buf[..at].copy_from_slice(&self.tail);
        self.write_blocks(buf, size)
    }

    /// Writes `buf` (the partial last block, then the new bytes) at the
    /// block `size` falls in, padded with zeros to a whole block.
    fn write_blocks(&mut self, buf: &mut AlignedBuf, size: u64) -> io::Result<()> {
        let end = buf.len();
        buf.pad_to_alignment();
        let written = buf.write_at(&self.file, align_down(size));
        // Only a complete write moves the tail on: after a failed one the
        // old partial block is still what the next attempt must rewrite.
        if written.is_ok() {
            self.tail.clear();
            self.tail.extend_from_slice(&buf[align_down(end as u64) as usize..end]);
        }
        written
    }

    /// Takes note of `parts` written at logical position `size` (the
    /// current end) by other means, through the page cache: the partial
    /// last block now ends with them.
    pub fn absorb<'a>(&mut self, size: u64, parts: impl Iterator<Item = &'a [u8]>) {
        debug_assert_eq!(self.tail.len() as u64, size % DIRECT_IO_ALIGN as u64);
        for part in parts {
            let end = self.tail.len() + part.len();
            if end < DIRECT_IO_ALIGN {
                self.tail.extend_from_slice(part);
            } else {
                // The part fills the block: the new partial block is its end.
                self.tail.clear();
                self.tail.extend_from_slice(&part[part.len() - end % DIRECT_IO_ALIGN..]);
            }
        }
    }

    /// Bytes of the partial last block: where, in its block, the next
    /// batch starts.
    pub fn tail_len(&self) -> usize {
        self.tail.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use std::os::unix::fs::FileExt;

    #[test]
    fn appends_rewrite_the_partial_block_and_zero_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        File::create(&path).unwrap();
        let Some(file) = open(&path).unwrap() else {
            eprintln!("no O_DIRECT on this filesystem; nothing to test");
            return;
        };
        let mut w = DirectWriter::new(Arc::new(file), 0).unwrap();
        let mut expected = Vec::new();
        for (i, len) in [10usize, 4086, 1, 9000, 4096, 3].into_iter().enumerate() {
            let batch = vec![i as u8 + 1; len];
            // Odd rounds write the batch as two parts in one write.
            let (a, b) = batch.split_at(if i % 2 == 1 { len / 2 } else { len });
            w.append(expected.len() as u64, [a, b].into_iter()).unwrap();
            expected.extend_from_slice(&batch);
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(on_disk.len() as u64, align_up(expected.len() as u64));
            assert_eq!(&on_disk[..expected.len()], &expected[..]);
            assert!(on_disk[expected.len()..].iter().all(|&b| b == 0));
        }
        // In place: the batch is written from its own buffer, after room
        // for the partial block.
        for len in [5000usize, 100, 8192] {
            let mut buf = AlignedBuf::default();
            buf.put_bytes(0xee, w.tail_len()); // overwritten with the partial block
            let at = buf.len();
            buf.put_bytes(0x77, len);
            w.append_in_place(expected.len() as u64, &mut buf, at).unwrap();
            expected.extend(std::iter::repeat_n(0x77, len));
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(on_disk.len() as u64, align_up(expected.len() as u64));
            assert_eq!(&on_disk[..expected.len()], &expected[..]);
            assert!(on_disk[expected.len()..].iter().all(|&b| b == 0));
        }
        // Written through the page cache: the writer only takes note, and
        // the next direct write rewrites the right partial block.
        for len in [100usize, 5000, 4096 - 100, 1] {
            let part = vec![0x55; len];
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, &part, expected.len() as u64).unwrap();
            w.absorb(expected.len() as u64, std::iter::once(&part[..]));
            expected.extend_from_slice(&part);
            assert_eq!(w.tail_len(), expected.len() % DIRECT_IO_ALIGN);
        }
        w.append(expected.len() as u64, std::iter::once(&b"after"[..])).unwrap();
        expected.extend_from_slice(b"after");
        // A new writer picks the partial block up from the file.
        drop(w);
        let mut w = DirectWriter::new(Arc::new(open(&path).unwrap().unwrap()), expected.len() as u64).unwrap();
        w.append(expected.len() as u64, std::iter::once(&b"more"[..])).unwrap();
        expected.extend_from_slice(b"more");
        let f = File::open(&path).unwrap();
        let mut back = vec![0; expected.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, expected);
    }

    #[test]
    fn aligned_reads_stop_at_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let Some(file) = open(&path).unwrap() else { return };
        let mut buf = AlignedBuf::default();
        assert_eq!(buf.read_at(&file, 4096, 16384).unwrap(), 10_000 - 4096);
        assert_eq!(&buf[..], &data[4096..]);
        assert_eq!(buf.as_ptr() as usize % DIRECT_IO_ALIGN, 0);
    }
}
