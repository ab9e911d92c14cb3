//! The segment scanner and recovery: arbitrary bytes as the last segment of
//! a partition — `strata verify`'s scan, then the broker's own recovery
//! (open, which may cut or refuse) and a read of everything it kept.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata::log::format::{segment_file_name, LOG_SUFFIX};
use strata::log::verify::scan_segment;
use strata::log::{IndexConfig, Log, LogConfig};

fuzz_target!(|data: &[u8]| {
    let read = |pos: u64, len: usize| Ok(Bytes::copy_from_slice(&data[pos as usize..pos as usize + len]));
    let report = scan_segment(0, data.len() as u64, true, read, |_| Ok(())).expect("reads within the bytes");
    assert!(report.batches.keys().all(|&p| p < data.len() as u64));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(segment_file_name(0, LOG_SUFFIX)), data).unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: u64::MAX,
        index: IndexConfig { interval_bytes: 64, max_bytes: 4096 },
        log_append_time: false,
        flush_records: 0,
        direct_io: false,
        truncate_damage: data.first().is_some_and(|b| b & 1 == 1),
        clean_stop: false,
    };
    let Ok((log, _)) = Log::open(dir.path(), "f/0".into(), config) else { return };
    let mut offset = log.log_start();
    let mut reads = 0;
    while offset < log.end_offset() && reads < 10_000 {
        match log.read(offset, 1 << 16) {
            Ok(r) => {
                assert!(r.next_offset > offset, "a read always moves on");
                offset = r.next_offset;
            }
            Err(_) => break,
        }
        reads += 1;
    }
});
