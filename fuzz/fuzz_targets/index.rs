//! The index readers: arbitrary bytes as a sealed and as an active offset
//! and time index, then lookups, and the offline checks of `strata verify`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::log::index::{OffsetIndex, TimeIndex};
use strata::log::verify::{check_offset_index, check_time_index, SegmentReport};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let (ix, tx) = (dir.path().join("0.index"), dir.path().join("0.timeindex"));
    for capacity in [None, Some(4096)] {
        std::fs::write(&ix, data).unwrap();
        std::fs::write(&tx, data).unwrap();
        let offsets = OffsetIndex::open(&ix, capacity, 1 << 20).unwrap();
        let times = TimeIndex::open(&tx, capacity).unwrap();
        for probe in [0u32, 1, 100, u32::MAX] {
            if let Some((rel, _)) = offsets.lookup(probe) {
                assert!(rel <= probe);
            }
            let _ = offsets.entries_after(probe);
        }
        for ts in [i64::MIN, 0, 1_700_000_000_000, i64::MAX] {
            if let Some((t, _)) = times.last_before(ts) {
                assert!(t < ts);
            }
        }
        let _ = (offsets.consistent(), times.consistent(), offsets.last(), times.last());
    }
    let report = SegmentReport::default();
    let _ = check_offset_index(0, Some(data), &report);
    let _ = check_time_index(0, Some(data), &report);
});
