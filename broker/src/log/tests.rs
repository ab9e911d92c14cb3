use super::batch::tests::{value_record, SharedRecord, TestRecord};
use super::batch::{BatchHeader, RecordIter};
use super::*;

fn config(segment_bytes: u64) -> LogConfig {
    config_with(segment_bytes, true)
}

fn config_with(segment_bytes: u64, direct_io: bool) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: u64::MAX,
        index: IndexConfig { interval_bytes: 256, max_bytes: 4096 },
        log_append_time: false,
        flush_records: 0,
        direct_io,
        truncate_damage: false,
        clean_stop: false,
    }
}

fn open(dir: &Path, segment_bytes: u64) -> (Log, OpenReport) {
    Log::open(dir, "t/0".into(), config(segment_bytes)).unwrap()
}

fn records(n: usize, tag: u8) -> Vec<TestRecord> {
    (0..n).map(|i| value_record(&[tag, i as u8, 0, 0, 0, 0, 0, 0, 0, 0])).collect()
}

/// Reads everything from `from`, returning (offset, value) pairs.
fn read_all(log: &Log, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.end_offset() {
        let r = log.read(offset, 300).unwrap();
        assert!(r.next_offset > offset, "read must make progress");
        for chunk in &r.chunks {
            for rec in RecordIter::new(chunk) {
                out.push((rec.offset, rec.value.unwrap().to_vec()));
            }
        }
        offset = r.next_offset;
    }
    out
}

/// Reading from each of `starts` returns every record up to `end`, with
/// the value `value` gives for its offset.
fn assert_reads_back(log: &Log, starts: &[u64], end: u64, value: impl Fn(u64) -> Vec<u8>) {
    for &start in starts {
        let all = read_all(log, start);
        assert_eq!(all.len() as u64, end - start);
        for (o, v) in all {
            assert_eq!(v, value(o), "record {o}");
        }
    }
}

/// Rolls the active segment now.
fn roll_now(log: &Log) {
    let (next, config) = (log.end_offset(), log.writer.lock().unwrap().config);
    log.roll(&mut log.sink.lock().unwrap(), next, &config).unwrap();
}

#[test]
fn append_read_roll_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = open(dir.path(), 1000);
    assert_eq!(report.segments, 1);
    for b in 0..40u8 {
        let a = log.append(&records(3, b), 1000 + i64::from(b)).unwrap();
        assert_eq!(a.base_offset, u64::from(b) * 3);
        assert_eq!(a.next_offset, a.base_offset + 3);
    }
    assert_eq!(log.end_offset(), 120);
    let (segments, _) = log.disk_usage();
    assert!(segments > 3, "small segments must roll, got {segments}");
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 120);
    for (i, (off, v)) in all.iter().enumerate() {
        assert_eq!(*off, i as u64);
        assert_eq!(v[..2], [(i / 3) as u8, (i % 3) as u8]);
    }
    // From the middle of a batch: starts exactly there.
    assert_eq!(read_all(&log, 61)[0].0, 61);
    log.close().unwrap();
    drop(log);

    let (log, report) = open(dir.path(), 1000);
    assert_eq!(report.tail.truncated, None);
    assert_eq!(log.end_offset(), 120);
    assert_eq!(read_all(&log, 0).len(), 120);
    assert_eq!(log.append(&records(1, 99), 5000).unwrap().base_offset, 120);
}

#[test]
fn out_of_range_reads_name_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 20);
    log.append(&records(5, 1), 1).unwrap();
    match log.read(6, 100) {
        Err(LogError::OffsetOutOfRange { offset: 6, log_start: 0, high_watermark: 5 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    let r = log.read(5, 100).unwrap();
    assert!(r.chunks.is_empty());
    assert_eq!(r.next_offset, 5);
    // max_bytes 0 validates without reading.
    let r = log.read(0, 0).unwrap();
    assert!(r.chunks.is_empty());
    assert_eq!((r.log_start, r.high_watermark), (0, 5));
    assert!(matches!(log.read(9, 0), Err(LogError::OffsetOutOfRange { .. })));
}

#[test]
fn max_bytes_limits_whole_batches_but_returns_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 20);
    for b in 0..10 {
        log.append(&records(10, b), 1).unwrap();
    }
    let r = log.read(0, 1).unwrap();
    assert_eq!(r.next_offset, 10, "one whole batch even if bigger than max_bytes");
    let r = log.read(0, 100_000).unwrap();
    assert_eq!(r.next_offset, 100);
}

fn crash_copy(dir: &Path) -> tempfile::TempDir {
    // A copy of the files as they are now: what a kill -9 leaves behind.
    let copy = tempfile::tempdir().unwrap();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    copy
}

/// Where the written data ends in a (possibly preallocated) log file: after
/// the last non-zero byte (every batch ends with record bytes).
fn data_end(path: &Path) -> usize {
    let data = fs::read(path).unwrap();
    data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

fn last_log_file(dir: &Path) -> PathBuf {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// 20 batches of 4 records, then what a kill -9 leaves: (copy, last segment).
fn crashed_log_of_80_records() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 20);
    for b in 0..20 {
        log.append(&records(4, b), 1).unwrap();
    }
    let copy = crash_copy(dir.path());
    let path = last_log_file(copy.path());
    (copy, path)
}

#[test]
fn torn_tail_is_cut_to_last_good_batch() {
    let (copy, path) = crashed_log_of_80_records();
    assert!(fs::metadata(&path).unwrap().len() >= format::PREALLOCATE_MIN_BYTES, "active segment is preallocated");
    let len = data_end(&path) as u64;
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 7).unwrap();
    let (log2, report) = open(copy.path(), 1 << 20);
    let (cut, why) = report.tail.truncated.expect("the torn batch is cut");
    assert!(why.contains("truncated"), "{why}");
    assert!(cut > 0);
    assert_eq!(log2.end_offset(), 76);
    assert_eq!(read_all(&log2, 0).len(), 76);
    assert_eq!(log2.append(&records(1, 7), 1).unwrap().base_offset, 76);
}

#[test]
fn bit_flip_in_tail_is_cut_and_nothing_corrupt_is_served() {
    let (copy, path) = crashed_log_of_80_records();
    let mut data = fs::read(&path).unwrap();
    let n = data_end(&path);
    data[n - 3] ^= 0x10; // inside the last batch's records
    fs::write(&path, &data).unwrap();
    let (log2, report) = open(copy.path(), 1 << 20);
    let (_, why) = report.tail.truncated.expect("the corrupt batch is cut");
    assert!(why.contains("CRC"), "{why}");
    assert_eq!(log2.end_offset(), 76);
    let all = read_all(&log2, 0);
    assert_eq!(all.len(), 76);
    assert!(all.iter().enumerate().all(|(i, (o, v))| *o == i as u64 && v[1] == (i % 4) as u8));
}

#[test]
fn lost_index_entries_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 20);
    for b in 0..50 {
        log.append(&records(2, b), 1).unwrap();
    }
    let copy = crash_copy(dir.path());
    // Zero the whole offset index: recovery rescans from the start.
    let idx = last_log_file(copy.path()).with_extension("index");
    let len = fs::metadata(&idx).unwrap().len();
    fs::write(&idx, vec![0u8; len as usize]).unwrap();
    let (log2, report) = open(copy.path(), 1 << 20);
    assert_eq!(report.tail.truncated, None);
    assert_eq!(report.tail.batches_checked, 50);
    assert_eq!(read_all(&log2, 37)[0].0, 37);
    assert_eq!(log2.end_offset(), 100);
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 2000);
    // Batch b holds timestamps 1000+10b .. 1000+10b+4.
    for b in 0..30i64 {
        let recs: Vec<_> = (0..5).map(|i| TestRecord { ts: 1000 + 10 * b + i, ..value_record(b"x") }).collect();
        log.append(&recs, 0).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1003).unwrap(), Some((3, 1003)));
    assert_eq!(log.offset_for_timestamp(1006).unwrap(), Some((5, 1010)));
    assert_eq!(log.offset_for_timestamp(1172).unwrap(), Some((87, 1172)));
    assert_eq!(log.offset_for_timestamp(1295).unwrap(), None);
    log.close().unwrap();
    drop(log);
    let (log, _) = open(dir.path(), 2000);
    assert_eq!(log.offset_for_timestamp(1172).unwrap(), Some((87, 1172)));
}

#[tokio::test]
async fn durable_waiters_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 20);
    let log = Arc::new(log);
    let flusher = tokio::spawn(log.clone().run_flusher(Duration::from_secs(3600)));
    let mut ends = Vec::new();
    for b in 0..10 {
        ends.push(log.append(&records(1, b), 1).unwrap().next_offset);
    }
    assert_eq!(log.durable_offset(), 0);
    let waits = ends.iter().map(|&e| log.wait_durable(e));
    for r in futures::future::join_all(waits).await {
        r.unwrap();
    }
    assert!(log.durable_offset() >= 10);
    log.close().unwrap();
    flusher.await.unwrap();
    assert!(matches!(log.append(&records(1, 0), 1), Err(LogError::Closed)));
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { segment_ms: 1, ..config(1 << 30) };
    let (log, _) = Log::open(dir.path(), "t/0".into(), cfg).unwrap();
    for b in 0..3 {
        log.append(&records(1, b), 1).unwrap();
        // The roll is about elapsed time itself: let 1 ms pass.
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(log.disk_usage().0, 3, "each append found a segment older than segment.ms");
}

#[tokio::test]
async fn flush_after_n_records_without_anyone_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { flush_records: 5, ..config(1 << 30) };
    let (log, _) = Log::open(dir.path(), "t/0".into(), cfg).unwrap();
    let log = Arc::new(log);
    // The timer alone would take an hour: only the record count can trigger this fsync.
    let flusher = tokio::spawn(log.clone().run_flusher(Duration::from_secs(3600)));
    let mut durable = log.durable.subscribe();
    log.append(&records(4, 0), 1).unwrap();
    assert_eq!(log.durable_offset(), 0);
    log.append(&records(1, 1), 1).unwrap();
    tokio::time::timeout(Duration::from_secs(30), durable.wait_for(|d| *d >= 5)).await.unwrap().unwrap();
    log.close().unwrap();
    flusher.await.unwrap();
}

#[test]
fn preallocated_tail_is_trimmed_without_reporting_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 30);
    for b in 0..5 {
        log.append(&records(3, b), 1).unwrap();
    }
    let path = last_log_file(dir.path());
    let logical = log.disk_usage().1;
    assert!(fs::metadata(&path).unwrap().len() >= format::PREALLOCATE_MIN_BYTES);
    // A crash: the zeros of the reserved space are still there.
    let copy = crash_copy(dir.path());
    let (crashed, report) = open(copy.path(), 1 << 30);
    assert_eq!(report.tail.truncated, None, "zeros are not damage");
    assert_eq!(crashed.end_offset(), 15);
    assert_eq!(fs::metadata(last_log_file(copy.path())).unwrap().len(), logical);
    // A clean close cuts the reserved space too.
    log.close().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), logical);
}

#[test]
fn in_order_reads_are_served_by_read_ahead_with_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 64 << 20);
    // 100 batches of 40 × 1,000-byte values: 4 MB in one segment.
    let value = |b: usize, i: usize| -> Vec<u8> { (0..1000).map(|j| (b * 7 + i * 3 + j) as u8).collect() };
    for b in 0..100 {
        let batch: Vec<TestRecord> = (0..40).map(|i| value_record(&value(b, i))).collect();
        log.append(&batch, 1).unwrap();
    }
    let direct = log.segments.read().unwrap().values().next().unwrap().direct_file().is_some();
    let mut offset = 0;
    let mut reads = 0;
    while offset < log.end_offset() {
        // 300 KB cuts batches: each read ends after its last whole batch.
        let r = log.read(offset, 300_000).unwrap();
        for chunk in &r.chunks {
            for rec in RecordIter::new(chunk) {
                let (b, i) = (rec.offset as usize / 40, rec.offset as usize % 40);
                assert_eq!(rec.value.unwrap(), &value(b, i)[..], "record {}", rec.offset);
                assert_eq!(rec.offset, offset, "records in order, none skipped");
                offset += 1;
            }
        }
        assert_eq!(r.next_offset, offset);
        reads += 1;
        log.readahead.wait_settled();
    }
    assert_eq!(offset, 4000);
    if direct {
        // The first two reads establish the order; the last one or two are
        // too close to the end to read ahead of.
        assert!(log.readahead.hits() >= reads - 4, "{} of {reads} reads hit", log.readahead.hits());
    }
    // Reading out of order again misses, and still returns the right bytes.
    let hits = log.readahead.hits();
    assert_eq!(read_all(&log, 1234)[0].0, 1234);
    assert_eq!(log.readahead.hits(), hits);
}

#[test]
fn many_sealed_segments_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 100);
    // Every batch is over 100 bytes: one segment each, enough for the
    // threaded open (at least 64 sealed segments).
    for b in 0..150u8 {
        log.append(&records(3, b), 1).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let (log, report) = open(dir.path(), 100);
    assert_eq!(report.segments, 150);
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 450);
    for (i, (off, v)) in all.iter().enumerate() {
        assert_eq!(*off, i as u64);
        assert_eq!(v[..2], [(i / 3) as u8, (i % 3) as u8]);
    }
}

#[test]
fn tail_reads_are_served_from_recent_bytes_and_match_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 64 << 20);
    // 100 batches of 3 × 1,000 bytes: 300 KB, more than the recent window.
    let value = |o: u64| -> Vec<u8> { (0..1000).map(|j| (o * 13 + j) as u8).collect() };
    for b in 0..100u64 {
        let batch: Vec<TestRecord> = (0..3).map(|i| value_record(&value(b * 3 + i))).collect();
        log.append(&batch, 1).unwrap();
    }
    let seg = log.segments.read().unwrap().values().next().unwrap().clone();
    if seg.direct_file().is_some() {
        let size = seg.size();
        assert!(seg.read_recent(size - 1000, 1000).is_some(), "the newest bytes are in memory");
        assert!(seg.read_recent(0, 1000).is_none(), "the oldest are not");
    }
    // From the device, from the window, and across the two: the same records.
    assert_reads_back(&log, &[0, 150, 250, 290, 299], 300, value);
    // After a roll the sealed segment keeps no window.
    roll_now(&log);
    assert!(seg.read_recent(seg.size() - 1000, 1000).is_none());
    assert_eq!(read_all(&log, 299).len(), 1);
}

#[test]
fn the_newest_large_batch_is_read_from_memory_until_it_is_replaced_forgotten_or_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 64 << 20);
    // Batches of 100 × 1,000 bytes: larger than the window of small ones.
    let value = |o: u64| -> Vec<u8> { (0..1000).map(|j| (o * 7 + j) as u8).collect() };
    let seg = log.segments.read().unwrap().values().next().unwrap().clone();
    if seg.direct_file().is_none() {
        return; // no O_DIRECT here: the page cache serves the tail
    }
    let mut starts = Vec::new();
    for b in 0..4u64 {
        starts.push(seg.size());
        let batch: Vec<TestRecord> = (0..100).map(|i| value_record(&value(b * 100 + i))).collect();
        log.append(&batch, 1).unwrap();
        let (pos, len) = (starts[b as usize], (seg.size() - starts[b as usize]) as usize);
        let kept = seg.read_recent(pos, len).expect("the newest batch is in memory");
        assert_eq!(kept, direct::read(seg.direct_file().unwrap(), pos, len).unwrap(), "as on the device");
        assert!(seg.read_recent(pos + len as u64 - 1, 2).is_none(), "nothing after it");
        assert!(seg.read_recent(u64::MAX, 2).is_none());
        if b > 0 {
            assert!(seg.read_recent(pos - 1, 2).is_none(), "nothing before it");
            assert!(seg.read_recent(starts[b as usize - 1], 1000).is_none(), "the one before is replaced");
        }
    }
    seg.forget_tail_batch(Duration::from_secs(3600));
    assert!(seg.read_recent(starts[3], 1000).is_some(), "not old enough to forget");
    seg.forget_tail_batch(Duration::ZERO);
    assert!(seg.read_recent(starts[3], 1000).is_none(), "forgotten");
    // Every record reads back the same from memory, the device, and across.
    log.append(&[value_record(&value(400))], 1).unwrap();
    log.append(&(0..100).map(|i| value_record(&value(401 + i))).collect::<Vec<_>>(), 1).unwrap();
    assert_reads_back(&log, &[0, 150, 399, 400, 401, 450, 500], 501, value);
    roll_now(&log);
    assert!(seg.read_recent(seg.size() - 1000, 1000).is_none(), "a sealed segment keeps nothing");
}

#[test]
fn large_batches_kept_in_memory_share_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let batch: Vec<TestRecord> = (0..1100).map(|_| value_record(&[7u8; 1000])).collect();
    let kept = |logs: &[Log]| {
        logs.iter()
            .filter(|log| {
                let seg = log.sink.lock().unwrap().active.clone();
                seg.read_recent(seg.size() - 1000, 1000).is_some()
            })
            .count()
    };
    // 40 partitions each write a 1.1 MB batch: the 32 MiB budget keeps at
    // most 30 of them.
    let logs: Vec<Log> = (0..40).map(|i| open(&dir.path().join(format!("p{i}")), 64 << 20).0).collect();
    if logs[0].sink.lock().unwrap().direct.is_none() {
        return; // no O_DIRECT here
    }
    for log in &logs {
        log.append(&batch, 1).unwrap();
    }
    let n = kept(&logs);
    assert!((1..=30).contains(&n), "{n} batches kept");
    // Closing them gives the budget back: every one of a new set is kept
    // (up to what other tests hold at the same time).
    for log in &logs {
        log.close().unwrap();
    }
    drop(logs);
    let logs: Vec<Log> = (0..8).map(|i| open(&dir.path().join(format!("q{i}")), 64 << 20).0).collect();
    for log in &logs {
        log.append(&batch, 1).unwrap();
    }
    assert_eq!(kept(&logs), 8);
}

#[test]
fn direct_and_buffered_io_read_and_extend_each_others_logs() {
    let dir = tempfile::tempdir().unwrap();
    // Alternate the mode between opens; small segments so some roll.
    for (round, direct_io) in [true, false, true, false].into_iter().enumerate() {
        let (log, report) = Log::open(dir.path(), "t/0".into(), config_with(1000, direct_io)).unwrap();
        assert_eq!(report.tail.truncated, None, "round {round}");
        assert_eq!(log.end_offset(), round as u64 * 30);
        for b in 0..10u8 {
            log.append(&records(3, round as u8 * 10 + b), 1).unwrap();
        }
        log.close().unwrap();
    }
    for direct_io in [true, false] {
        let (log, _) = Log::open(dir.path(), "t/0".into(), config_with(1000, direct_io)).unwrap();
        let all = read_all(&log, 0);
        assert_eq!(all.len(), 120);
        for (i, (off, v)) in all.iter().enumerate() {
            assert_eq!(*off, i as u64);
            assert_eq!(v[..2], [(i / 3) as u8, (i % 3) as u8]);
        }
    }
}

/// Closes `log`, opens `dir` again and returns how many records it holds
/// from offset 0, checking recovery found a clean tail.
fn records_after_reopen(log: Arc<Log>, dir: &Path, segment_bytes: u64) -> usize {
    log.close().unwrap();
    drop(log);
    let (log, report) = open(dir, segment_bytes);
    assert_eq!(report.tail.truncated, None);
    read_all(&log, 0).len()
}

/// Submits `n` batches of 3 records while the sink is held, so they queue
/// and the drain finds them all at once.
fn submit_queued(log: &Arc<Log>, n: u8) -> Vec<Pending> {
    let _sink = log.sink.lock().unwrap();
    let before = log.end_offset();
    let pending = (0..n).map(|b| log.submit(&records(3, b), 1, false, AppendOptions::default()).unwrap()).collect();
    // Offsets are given at submit, before anything is written (checked
    // while the sink is held: once released, the drain may run at once).
    assert_eq!(log.end_offset(), before);
    pending
}

#[tokio::test]
async fn queued_appends_are_written_together_in_order_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1000);
    let log = Arc::new(log);
    let pending = submit_queued(&log, 40);
    // Offsets are given at submit, before anything is written.
    for (b, p) in pending.iter().enumerate() {
        assert_eq!(p.appended.base_offset, b as u64 * 3);
    }
    for p in pending {
        let base = p.appended.base_offset;
        assert_eq!(p.written().await.unwrap().base_offset, base);
        assert!(log.end_offset() >= base + 3, "written means readable");
    }
    assert!(log.disk_usage().0 > 3, "the queued batches span several segments");
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 120);
    for (i, (off, v)) in all.iter().enumerate() {
        assert_eq!((*off, v[..2].to_vec()), (i as u64, vec![(i / 3) as u8, (i % 3) as u8]));
    }
    // The same after a restart: the groups went to disk as written.
    assert_eq!(records_after_reopen(log, dir.path(), 1000), 120);
}

#[tokio::test]
async fn a_failed_write_fails_everything_queued_after_it_and_frees_the_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 20);
    let log = Arc::new(log);
    log.append(&records(3, 0), 1).unwrap();
    log.fail_writes.store(true, Ordering::Relaxed);
    let failed = submit_queued(&log, 4);
    for p in failed {
        assert!(matches!(p.written().await, Err(LogError::Io(_))));
    }
    assert!(log.append(&records(3, 9), 1).is_err(), "a blocking append fails the same way");
    assert_eq!(log.end_offset(), 3);
    log.fail_writes.store(false, Ordering::Relaxed);
    // The next append takes the offsets the failed ones had been given.
    let p = log.submit(&records(3, 7), 1, false, AppendOptions::default()).unwrap();
    assert_eq!(p.written().await.unwrap().base_offset, 3);
    assert_eq!(log.append(&records(3, 8), 1).unwrap().base_offset, 6);
    let all = read_all(&log, 0);
    let tags: Vec<u8> = all.iter().map(|(_, v)| v[0]).collect();
    assert_eq!(tags, [0, 0, 0, 7, 7, 7, 8, 8, 8]);
    assert_eq!(records_after_reopen(log, dir.path(), 1 << 20), 9);
}

#[tokio::test]
async fn a_durable_submit_is_fsynced_by_the_writer_without_the_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 20);
    let log = Arc::new(log);
    // No flusher runs: only the writing thread can make these durable.
    let plain = log.submit(&records(3, 0), 1, false, AppendOptions::default()).unwrap().written().await.unwrap();
    assert_eq!(log.durable_offset(), 0, "a plain append waits for the flusher");
    let durable = log.submit(&records(3, 1), 1, true, AppendOptions::default()).unwrap().written().await.unwrap();
    assert_eq!(durable.base_offset, plain.next_offset);
    assert_eq!(log.durable_offset(), 6, "one fsync covers both");
    log.wait_durable(6).await.unwrap();
}

#[test]
fn small_writes_through_the_page_cache_and_large_direct_writes_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 30);
    let big = |tag: u8| vec![value_record(&vec![tag; 300 << 10])];
    // Small batches go through the page cache, large ones are written
    // direct, rewriting the partial block the small ones left.
    let mut expected: Vec<(u8, usize)> = Vec::new(); // (tag, value length) per record
    for (i, large) in [false, true, false, false, true, true, false].into_iter().enumerate() {
        let tag = i as u8 + 1;
        if large {
            log.append(&big(tag), 1).unwrap();
            expected.push((tag, 300 << 10));
        } else {
            log.append(&records(3, tag), 1).unwrap();
            expected.extend([(tag, 10); 3]);
        }
        // Read back (direct reads) after every write.
        let all = read_all(&log, 0);
        assert_eq!(all.len(), expected.len(), "after write {i}");
    }
    let check = |log: &Log| {
        let all = read_all(log, 0);
        let got: Vec<(u8, usize)> = all.iter().map(|(_, v)| (v[0], v.len())).collect();
        assert_eq!(got, expected);
    };
    check(&log);
    log.close().unwrap();
    drop(log);
    for direct_io in [true, false] {
        let (log, report) = Log::open(dir.path(), "t/0".into(), config_with(1 << 30, direct_io)).unwrap();
        assert_eq!(report.tail.truncated, None);
        check(&log);
    }
}

/// `batch` (version 2) rewritten as the version-1 batch an older broker
/// wrote: no leader epoch, records at byte 57, CRC over bytes 17.. only.
fn as_version_1(batch: &[u8]) -> Vec<u8> {
    use super::format::{BATCH_HEADER_LEN_V1, BATCH_LEN_AT, BATCH_MAGIC_V1, CRC_AT, CRC_END, MAGIC_AT};
    let mut v1 = batch[..BATCH_HEADER_LEN_V1].to_vec();
    v1.extend_from_slice(&batch[super::format::BATCH_HEADER_LEN..]);
    let len = v1.len() as u32;
    v1[BATCH_LEN_AT..BATCH_LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
    v1[MAGIC_AT] = BATCH_MAGIC_V1;
    let crc = crc32fast::hash(&v1[CRC_END..]);
    v1[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    v1
}

#[test]
fn version_1_segments_stay_readable_beside_version_2_batches() {
    use super::batch::{encode_batch, Stamp};
    let dir = tempfile::tempdir().unwrap();
    // An older broker's segment: 10 version-1 batches of 3 records.
    let mut file = Vec::new();
    for b in 0..10u8 {
        let mut buf = bytes::BytesMut::new();
        encode_batch(
            &mut buf,
            u64::from(b) * 3,
            &records(3, b),
            Stamp { append_time_ms: 1000 + i64::from(b), log_append_time: false, producer: None },
        );
        file.extend(as_version_1(&buf));
    }
    let first = BatchHeader::parse(&file).unwrap();
    assert_eq!((first.version, first.header_len()), (1, 57));
    std::fs::write(dir.path().join(format::segment_file_name(0, format::LOG_SUFFIX)), &file).unwrap();
    // Opened, recovered (the tail check verifies version-1 CRCs), appended to.
    let (log, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.tail.truncated, None);
    assert_eq!(log.end_offset(), 30);
    log.append(&records(3, 10), 2000).unwrap();
    assert_reads_back(&log, &[0, 4, 29, 30, 32], 33, |o| vec![(o / 3) as u8, (o % 3) as u8, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(log.offset_for_timestamp(1004).unwrap(), Some((12, 1004)));
    // The same after a restart, with both versions in the one segment.
    drop(log);
    let (log, report) = open(dir.path(), 1 << 20);
    assert_eq!((report.tail.truncated, log.end_offset()), (None, 33));
    assert_reads_back(&log, &[0, 31], 33, |o| vec![(o / 3) as u8, (o % 3) as u8, 0, 0, 0, 0, 0, 0, 0, 0]);

    // A version-1 base offset is outside its CRC: a flipped one is caught by
    // the record offsets, never served.
    let mut damaged = file.clone();
    damaged[3 * first.batch_len as usize] ^= 0x40; // base offset of batch 3
    let h = BatchHeader::parse(&damaged[3 * first.batch_len as usize..]).unwrap();
    assert_eq!(
        h.verify(&damaged[3 * first.batch_len as usize..][..h.batch_len as usize]),
        Err(batch::BatchError::OffsetMismatch)
    );
}

/// Through the page cache, large values are written from the caller's
/// buffers: one batch needing several vectored writes (more pieces than
/// one takes), and batches queued behind it written together, read back
/// the same before and after a reopen (which verifies every CRC).
#[tokio::test]
async fn shared_values_are_written_in_place_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), "t/0".into(), config_with(1 << 30, false)).unwrap();
    let log = Arc::new(log);
    let value = |o: u64| vec![o as u8; 600 + (o % 7) as usize];
    let batch = |from: u64, n: u64| -> Vec<SharedRecord> {
        (from..from + n).map(|o| SharedRecord(TestRecord::default(), Some(value(o).into()))).collect()
    };
    log.submit(&batch(0, 1500), 1, false, AppendOptions::default()).unwrap().written().await.unwrap();
    let pending: Vec<Pending> = {
        let _sink = log.sink.lock().unwrap();
        (0..5).map(|b| log.submit(&batch(1500 + b * 3, 3), 1, false, AppendOptions::default()).unwrap()).collect()
    };
    for p in pending {
        p.written().await.unwrap();
    }
    assert_reads_back(&log, &[0, 700, 1501], 1515, value);
    log.close().unwrap();
    drop(log);
    let (log, report) = Log::open(dir.path(), "t/0".into(), config_with(1 << 30, false)).unwrap();
    assert_eq!(report.tail.truncated, None);
    assert_reads_back(&log, &[0], 1515, value);
}
