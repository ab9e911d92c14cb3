//! Micro-benchmarks of the storage hot paths, so regressions show:
//! batch encoding (records → stored bytes, CRC included), CRC verification,
//! record iteration and trimming of a stored batch, and offset index lookup.
//!
//! `cargo bench -p strata --bench storage`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::log::batch::{encode_batch, position_of_offset, BatchHeader, RecordIter, RecordSource, Stamp};
use strata::log::format::BATCH_HEADER_LEN;
use strata::log::index::OffsetIndex;

struct Rec {
    key: [u8; 16],
    value: Vec<u8>,
}

impl RecordSource for Rec {
    fn timestamp_ms(&self) -> i64 {
        1_700_000_000_000
    }
    fn key(&self) -> Option<&[u8]> {
        Some(&self.key)
    }
    fn value(&self) -> Option<&[u8]> {
        Some(&self.value)
    }
    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        std::iter::empty()
    }
}

fn records(n: usize, size: usize) -> Vec<Rec> {
    (0..n).map(|i| Rec { key: (i as u128).to_le_bytes(), value: vec![(i % 251) as u8; size] }).collect()
}

fn batch_benches(c: &mut Criterion) {
    let stamp = Stamp { append_time_ms: 1, log_append_time: false, producer: None };
    for (n, size) in [(1000usize, 1000usize), (1000, 100)] {
        let recs = records(n, size);
        let mut buf = BytesMut::new();
        encode_batch(&mut buf, 0, &recs, stamp);
        let batch = buf.clone().freeze();
        let mut g = c.benchmark_group(format!("batch {n}x{size}B"));
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_function("encode (with CRC)", |b| {
            b.iter(|| encode_batch(&mut buf, black_box(42), black_box(&recs), stamp))
        });
        g.bench_function("verify CRC", |b| b.iter(|| BatchHeader::parse_verified(black_box(&batch)).unwrap()));
        g.bench_function("iterate records", |b| {
            b.iter(|| RecordIter::new(black_box(&batch[BATCH_HEADER_LEN..])).count())
        });
        g.bench_function("trim to middle offset", |b| {
            b.iter(|| position_of_offset(black_box(&batch[BATCH_HEADER_LEN..]), n as u64 / 2))
        });
        g.finish();
    }
}

fn index_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let entries = 100_000u32;
    let mut idx = OffsetIndex::open(&dir.path().join("bench.index"), Some(entries as usize * 8), u64::MAX).unwrap();
    for i in 0..entries {
        idx.push(i * 10, i * 4096);
    }
    let mut probe = 0u32;
    c.bench_function("offset index lookup (100k entries)", |b| {
        b.iter(|| {
            probe = probe.wrapping_mul(1_103_515_245).wrapping_add(12_345) % (entries * 10);
            idx.lookup(black_box(probe))
        })
    });
}

criterion_group!(benches, batch_benches, index_benches);
criterion_main!(benches);
