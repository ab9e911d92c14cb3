//! One segment: a `.log` file of batches plus its two indexes.
//!
//! Only the partition's writer appends, and it publishes `size` after each
//! complete batch; readers use positional reads below that size, so they never
//! wait for the writer and never see a partial batch.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::batch::{BatchError, BatchHeader};
use super::direct::{self, AlignedBuf, DirectWriter};
use super::format::*;
use super::index::{Indexes, OffsetIndex, TimeIndex};
use super::readahead::ReadAhead;
use super::recent::Recent;
use crate::locks::RwLockExt;

mod reindex;
mod tail;
mod write;

/// Where [`Segment::find_batch`] ended.
#[derive(Debug)]
pub enum Seek {
    /// The batch at this position holds the offset (or is the first after it).
    At(u64, BatchHeader),
    /// Every batch of this segment ends before the offset.
    NotHere,
    /// No valid header at this position, where one must be.
    Damaged {
        /// Byte position in the segment file.
        pos: u64,
        /// What is wrong there.
        error: BatchError,
    },
}

/// Source of [`Segment::id`].
static NEXT_SEGMENT_ID: AtomicU64 = AtomicU64::new(0);

/// Index sizing and placement, from the topic's configuration.
#[derive(Debug, Clone, Copy)]
pub struct IndexConfig {
    /// Add an offset index entry after at least this many bytes.
    pub interval_bytes: u64,
    /// Preallocated size of an active segment's offset index (the time index
    /// gets the same number of entries).
    pub max_bytes: usize,
}

/// A segment of a partition's log.
#[derive(Debug)]
pub struct Segment {
    base_offset: u64,
    path: PathBuf,
    /// Opened with O_DIRECT when `direct`: then every read and write of it
    /// is block-aligned (see `direct.rs`).
    file: Arc<File>,
    direct: bool,
    /// Unique among the segments this process opened: tells a segment apart
    /// from the compacted copy that replaces it under the same base offset.
    id: u64,
    /// Bytes of complete batches; readers stay below it.
    size: AtomicU64,
    /// File length reserved with fallocate ahead of `size` (writer only).
    allocated: AtomicU64,
    /// Largest record timestamp, i64::MIN while empty.
    max_timestamp: AtomicI64,
    indexes: RwLock<Indexes>,
    /// The newest bytes of the active segment, with direct I/O: readers at
    /// the tail (subscribers, caught-up consumers) are served from memory
    /// instead of waiting on the device for what was just written.
    recent: RwLock<Recent>,
    /// An offset index entry was found not to match the log (reported once).
    index_suspect: AtomicBool,
    /// Sealed: read-only for good, so its indexes can be rebuilt in place.
    sealed: AtomicBool,
    /// Bytes between offset index entries (for rebuilding the index).
    index_interval: u64,
    /// The same file opened without `O_DIRECT`, for small writes of a direct
    /// segment (see [`SMALL_WRITE_BYTES`]); opened at the first one, closed
    /// when the segment is sealed. Writer only.
    buffered: Mutex<Option<File>>,
}

impl Segment {
    /// Opens (creating if needed) the segment at `base_offset` in `dir`.
    /// `active` segments get writable, preallocated indexes; sealed ones are
    /// opened as they were cut at seal time.
    pub fn open(dir: &Path, base_offset: u64, active: bool, cfg: IndexConfig, direct_io: bool) -> io::Result<Segment> {
        let [log_path, index_path, time_path] = segment_paths(dir, base_offset);
        let direct_file = if direct_io { direct::open(&log_path)? } else { None };
        let direct = direct_file.is_some();
        if direct_io && !direct {
            tracing::debug!(path = %log_path.display(), "no O_DIRECT on this filesystem: buffered I/O");
        }
        let file = match direct_file {
            Some(f) => f,
            None => OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&log_path)?,
        };
        let size = file.metadata()?.len();
        let capacity = active.then_some(cfg.max_bytes);
        let time_capacity = capacity.map(|b| b / INDEX_ENTRY_LEN * TIME_INDEX_ENTRY_LEN);
        let offset = OffsetIndex::open(&index_path, capacity, size)?;
        let time = TimeIndex::open(&time_path, time_capacity)?;
        let max_ts = time.last().map_or(i64::MIN, |(ts, _)| ts);
        let segment = Segment {
            base_offset,
            path: log_path,
            file: Arc::new(file),
            direct,
            id: NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed),
            size: AtomicU64::new(size),
            allocated: AtomicU64::new(size),
            max_timestamp: AtomicI64::new(max_ts),
            indexes: RwLock::new(Indexes { offset, time, bytes_since_entry: 0 }),
            recent: RwLock::default(),
            buffered: Mutex::new(None),
            index_suspect: AtomicBool::new(false),
            sealed: AtomicBool::new(!active),
            index_interval: cfg.interval_bytes,
        };
        if !active {
            segment.check_indexes();
        }
        Ok(segment)
    }

    /// This segment's process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The segment's `.log` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// First offset this segment may hold.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Bytes of complete batches.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Largest record timestamp (i64::MIN if empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    fn rel(&self, offset: u64) -> u32 {
        // Segments roll before a relative offset could overflow (see Log::append).
        (offset - self.base_offset) as u32
    }

    /// How many more index entries surely fit (each batch adds at most one
    /// to each index); 0: the segment must roll.
    pub fn index_room(&self) -> usize {
        let ix = self.indexes.read_locked();
        ix.offset.room().min(ix.time.room())
    }

    /// The file, if it was opened for direct I/O.
    pub fn direct_file(&self) -> Option<&Arc<File>> {
        self.direct.then_some(&self.file)
    }

    /// The direct-I/O writer for this (active, recovered) segment; None when
    /// direct I/O is off or unsupported.
    pub fn direct_writer(&self) -> io::Result<Option<DirectWriter>> {
        match self.direct_file() {
            Some(file) => Ok(Some(DirectWriter::new(file.clone(), self.size())?)),
            None => Ok(None),
        }
    }

    /// Reads `len` bytes at `pos` (within `size()`).
    pub fn read(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.read_through(pos, len, None)
    }

    /// As [`Segment::read`]; with direct I/O, bytes not in the window of
    /// recent bytes come through `ahead` (the log's read-ahead) if given.
    pub(super) fn read_through(&self, pos: u64, len: usize, ahead: Option<&ReadAhead>) -> io::Result<Bytes> {
        if let Some(file) = self.direct_file() {
            if let Some(data) = self.read_recent(pos, len) {
                return Ok(data);
            }
            return match ahead {
                Some(ahead) => ahead.read(self.id, file, pos, len),
                None => direct::read(file, pos, len),
            };
        }
        let mut buf = BytesMut::with_capacity(len);
        // SAFETY: the spare capacity holds `len` bytes that only we can
        // reach; `set_len` marks initialised no more than was read into it.
        unsafe {
            let n = direct::pread_into(&self.file, buf.spare_capacity_mut().as_mut_ptr().cast(), len, pos)?;
            if n < len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.set_len(n);
        }
        Ok(buf.freeze())
    }

    /// Keeps `buf[range]`, the batch just written at `pos`, for readers at
    /// the tail if the segment is direct and the batch large (see
    /// [`Recent::keep_large`]); takes `buf` then. Writer only.
    pub(super) fn keep_tail_batch(&self, pos: u64, buf: &mut AlignedBuf, range: std::ops::Range<usize>) {
        if self.direct {
            self.recent.write_locked().keep_large(pos, buf, range);
        }
    }

    /// Drops the kept large batch if it is `age` old.
    pub(super) fn forget_tail_batch(&self, age: Duration) {
        self.recent.write_locked().forget_large(age);
    }

    /// `len` bytes at `pos` if the segment keeps them in memory.
    pub(super) fn read_recent(&self, pos: u64, len: usize) -> Option<Bytes> {
        self.recent.read_locked().read(pos, len)
    }

    /// The batch header at `pos`, checked to lie whole below `limit`. The
    /// outer error is I/O; the inner one says why the bytes are no header.
    pub fn checked_header_at(&self, pos: u64, limit: u64) -> io::Result<Result<BatchHeader, BatchError>> {
        if limit.saturating_sub(pos) < BATCH_HEADER_LEN_V1 as u64 {
            return Ok(Err(BatchError::Truncated));
        }
        Ok(if limit - pos < BATCH_HEADER_LEN as u64 {
            // A version-1 header at the very end (every real batch is longer).
            BatchHeader::parse_within(&self.read(pos, (limit - pos) as usize)?, limit - pos)
        } else {
            BatchHeader::parse_within(&self.header_bytes_at(pos)?, limit - pos)
        })
    }

    /// The raw header bytes at `pos`: straight into a stack array with
    /// buffered I/O, through an aligned read (or the recent bytes) with direct.
    fn header_bytes_at(&self, pos: u64) -> io::Result<[u8; BATCH_HEADER_LEN]> {
        let mut h = [0u8; BATCH_HEADER_LEN];
        if self.direct {
            h.copy_from_slice(&self.read(pos, BATCH_HEADER_LEN)?);
        } else {
            self.file.read_exact_at(&mut h, pos)?;
        }
        Ok(h)
    }

    /// The first batch that ends at or after `offset`, searching below byte
    /// `limit`. The offset index only says where to start: an entry that
    /// does not point at the batch it names is ignored (and reported once),
    /// and the search starts at the segment's beginning instead.
    pub fn find_batch(&self, offset: u64, limit: u64) -> io::Result<Seek> {
        let start = offset.saturating_sub(self.base_offset).min(u64::from(u32::MAX)) as u32;
        for retry in [false, true] {
            let Some((rel, p)) = self.indexes.read_locked().offset.lookup(start) else { break };
            // The hint's header is the walk's first: read once, checked there.
            match self.walk(u64::from(p), offset, limit, Some(self.base_offset + u64::from(rel)))? {
                Some(seek) => return Ok(seek),
                None if !retry && self.index_disagrees(rel, p)? => continue,
                None => break,
            }
        }
        self.find_batch_from(0, offset, limit)
    }

    /// As [`Segment::find_batch`], walking the batches from byte `pos`. A
    /// batch walked past is verified whole first: its header (which says
    /// which offsets it holds) is only trusted once its CRC holds.
    pub fn find_batch_from(&self, pos: u64, offset: u64, limit: u64) -> io::Result<Seek> {
        Ok(self.walk(pos, offset, limit, None)?.unwrap_or(Seek::NotHere))
    }

    /// The walk of [`Segment::find_batch_from`]; None if the batch at `pos`
    /// does not start at offset `first_base` (an index entry that is wrong).
    fn walk(&self, mut pos: u64, offset: u64, limit: u64, mut first_base: Option<u64>) -> io::Result<Option<Seek>> {
        while pos < limit {
            let h = match self.checked_header_at(pos, limit)? {
                Ok(h) if first_base.is_some_and(|b| b != h.meta.base_offset) => return Ok(None),
                Ok(h) => h,
                Err(_) if first_base.is_some() => return Ok(None),
                Err(error) => return Ok(Some(Seek::Damaged { pos, error })),
            };
            first_base = None;
            if h.meta.next_offset() > offset {
                return Ok(Some(Seek::At(pos, h)));
            }
            if let Err(error) = self.verified_batch(pos, h)? {
                return Ok(Some(Seek::Damaged { pos, error }));
            }
            pos += u64::from(h.batch_len);
        }
        Ok(Some(Seek::NotHere))
    }

    /// An index entry does not match the log: a sealed segment's indexes
    /// are rebuilt from the log (true: look again); an active segment's are
    /// not trusted for this lookup (reported once).
    fn index_disagrees(&self, rel: u32, pos: u32) -> io::Result<bool> {
        let why = format!("entry for relative offset {rel} at byte {pos} does not point at that batch");
        if self.sealed.load(Ordering::Acquire) {
            // A rebuild that fails (a full disk) leaves the lookup to a scan.
            match self.rebuild_indexes(&why) {
                Ok(()) => return Ok(true),
                Err(e) => tracing::warn!(segment = %self.path.display(), error = %e, "rebuilding the indexes failed"),
            }
        }
        if !self.index_suspect.swap(true, Ordering::Relaxed) {
            tracing::warn!(segment = %self.path.display(), reason = %why, "index of the active segment disagrees with the log; searching the log instead");
        }
        Ok(false)
    }

    /// Removes the segment's files.
    pub fn remove_files(&self) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let [log, index, time] = segment_paths(dir, self.base_offset);
        for p in [log, index, time] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}
