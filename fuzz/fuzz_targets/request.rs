//! Request validation: arbitrary bytes as protobuf Produce, Fetch and
//! Subscribe requests, and a decoded Produce's records through the batch
//! encoder and back; arbitrary topic settings through their validation.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata::config::TopicSettings;
use strata::log::batch::{encode_batch, stored_record_size, BatchHeader, RecordIter, RecordSource, Stamp};
use strata_proto::v1::{FetchRequest, ProduceRequest, Record, SubscribeRequest};

struct Rec<'a>(&'a Record);

impl RecordSource for Rec<'_> {
    fn timestamp_ms(&self) -> i64 {
        self.0.timestamp_ms
    }
    fn key(&self) -> Option<&[u8]> {
        self.0.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.0.value.as_deref()
    }
    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.headers.iter().map(|h| (h.key.as_str(), &h.value[..]))
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = FetchRequest::decode(data);
    let _ = SubscribeRequest::decode(data);
    if let Ok(req) = ProduceRequest::decode(data) {
        let records: Vec<Rec> = req.records.iter().map(Rec).collect();
        let bound: usize = records.iter().map(stored_record_size).sum();
        if !records.is_empty() && bound < 1 << 20 && records.iter().all(|r| r.timestamp_ms() >= 0) {
            let mut buf = BytesMut::new();
            let meta = encode_batch(&mut buf, 5, &records, Stamp { append_time_ms: 1, log_append_time: false });
            assert!(buf.len() <= bound + 61, "the stored size bound holds");
            let h = BatchHeader::parse_verified(&buf).expect("an encoded batch verifies");
            assert_eq!(h.meta, meta);
            let back: Vec<_> = RecordIter::new(&buf[h.header_len()..]).collect();
            assert_eq!(back.len(), records.len());
            for (r, b) in records.iter().zip(&back) {
                assert_eq!((r.key(), r.value()), (b.key, b.value));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some((k, v)) = text.split_once('=') {
            let mut s = TopicSettings::default();
            if s.set(k, v).is_ok() {
                let shown = s.get(k).expect("a key that was set reads back");
                let mut t = TopicSettings::default();
                t.set(k, &shown).expect("what get shows, set takes");
                assert_eq!(s, t);
            }
        }
    }
});
