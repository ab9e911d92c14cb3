//! Batches as a test finds them on disk, and bit flips in them (the
//! header layout of docs/storage-format.md, version 2).

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_client::proto::*;
use strata_client::Client;

/// One batch as the test finds it on disk.
#[derive(Debug, Clone)]
pub struct OnDisk {
    pub file: PathBuf,
    pub pos: u64,
    pub len: u64,
    pub base: u64,
    pub next: u64,
}

/// Every batch of the partition in `dir`, in offset order (the header
/// layout of docs/storage-format.md, version 2).
pub fn batches(dir: &Path) -> Vec<OnDisk> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let mut pos = 0usize;
        while pos + 61 <= data.len() && data[pos + 12] == 2 {
            let base = u64::from_le_bytes(data[pos..pos + 8].try_into().unwrap());
            let len = u32::from_le_bytes(data[pos + 8..pos + 12].try_into().unwrap()) as usize;
            let delta = u32::from_le_bytes(data[pos + 19..pos + 23].try_into().unwrap()) as u64;
            out.push(OnDisk { file: f.clone(), pos: pos as u64, len: len as u64, base, next: base + delta + 1 });
            pos += len;
        }
    }
    out
}

pub fn flip(file: &Path, pos: u64, bit: u8) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(file).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, pos).unwrap();
    b[0] ^= 1 << bit;
    f.write_all_at(&b, pos).unwrap();
}

pub async fn fetch(
    c: &mut Client,
    topic: &str,
    offset: u64,
    skip_damaged: bool,
) -> Result<PartitionRecords, tonic::Status> {
    let req = FetchRequest {
        partitions: vec![FetchPartition {
            topic: topic.into(),
            partition: 0,
            offset,
            max_bytes: 1 << 20,
            skip_damaged,
        }],
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
    };
    Ok(c.broker.fetch(req).await?.into_inner().partitions.remove(0))
}

/// Produces `batches` batches of 5 records with keys, values and a header.
pub async fn fill(c: &mut Client, topic: &str, batches: u64) -> BTreeMap<u64, (Bytes, Bytes)> {
    let mut original = BTreeMap::new();
    for b in 0..batches {
        let records: Vec<Record> = (0..5)
            .map(|i| Record {
                offset: 0,
                timestamp_ms: 1_700_000_000_000 + (b * 5 + i) as i64,
                key: Some(Bytes::from(format!("key-{b}-{i}"))),
                value: Some(Bytes::from(format!("value {b}/{i} {}", "x".repeat(40)))),
                headers: vec![Header { key: "h".into(), value: Bytes::from_static(b"hv") }],
            })
            .collect();
        let reply = c.produce(topic, Some(0), records.clone(), Acks::Written).await.unwrap();
        let base = reply.ranges[0].base_offset;
        for (i, r) in records.into_iter().enumerate() {
            original.insert(base + i as u64, (r.key.unwrap(), r.value.unwrap()));
        }
    }
    original
}

/// Every record served equals what was produced at its offset.
pub fn check_served(got: &PartitionRecords, original: &BTreeMap<u64, (Bytes, Bytes)>, what: &str) {
    for r in &got.records {
        let (k, v) = &original[&r.offset];
        assert_eq!((r.key.as_ref(), r.value.as_ref()), (Some(k), Some(v)), "{what}: offset {} served wrong", r.offset);
    }
}
