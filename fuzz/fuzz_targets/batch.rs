//! The batch decoder: headers, verification and record iteration over
//! arbitrary bytes, and over arbitrary bodies behind a valid header (so the
//! record parser is reached past the CRC).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::log::batch::{position_of_offset, write_header, BatchHeader, BatchMeta, RecordIter};
use strata::log::format::BATCH_HEADER_LEN;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = BatchHeader::parse(data) {
        assert!(h.header_len() <= h.batch_len as usize);
        if let Some(batch) = data.get(..h.batch_len as usize) {
            if h.verify(batch).is_ok() {
                let body = &batch[h.header_len()..];
                let n = RecordIter::new(body).count();
                assert!(n <= body.len());
                let _ = position_of_offset(body, h.meta.base_offset.saturating_add(1));
            }
        }
    }
    // The same bytes as the records of a batch with a valid header.
    let mut buf = vec![0u8; BATCH_HEADER_LEN];
    buf.extend_from_slice(data);
    let meta =
        BatchMeta { base_offset: 7, last_offset_delta: 3, record_count: 4, first_timestamp: 1, max_timestamp: 2 };
    write_header(&mut buf, &meta, 0);
    let h = BatchHeader::parse_verified(&buf).expect("a header just written verifies");
    assert_eq!(h.meta, meta);
    let mut last_end = 0;
    for r in RecordIter::new(&buf[BATCH_HEADER_LEN..]) {
        assert!(r.entry.start >= last_end && r.entry.end <= data.len());
        last_end = r.entry.end;
    }
});
