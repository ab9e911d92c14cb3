//! Strata's gRPC contract, package `strata.v1`.
//!
//! - [`v1`]: the protobuf messages and tonic clients, generated from `proto/`.
//! - [`server`]: the tonic service traits the broker implements.
//! - [`raw`]: the fetch-side replies as the broker builds them, splicing record
//!   bytes kept in storage; on the wire they are exactly `v1::FetchResponse` and
//!   `v1::SubscribeResponse`.
//! - [`codec`]: the servers' codec (decode errors, produce request limits).
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, for server reflection.

pub mod codec;
pub mod raw;

use std::collections::BTreeSet;

/// A topic partition as (topic, partition).
pub type Tp = (String, u32);

/// Flattens `TopicPartitions` lists into a set of (topic, partition).
pub fn tp_set(tps: Vec<v1::TopicPartitions>) -> BTreeSet<Tp> {
    tps.into_iter().flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.clone(), p))).collect()
}

/// Groups (topic, partition) pairs, sorted by topic, into `TopicPartitions`.
pub fn tp_list<'a>(tps: impl IntoIterator<Item = &'a Tp>) -> Vec<v1::TopicPartitions> {
    let mut out: Vec<v1::TopicPartitions> = Vec::new();
    for (topic, p) in tps {
        match out.last_mut() {
            Some(last) if &last.topic == topic => last.partitions.push(*p),
            _ => out.push(v1::TopicPartitions { topic: topic.clone(), partitions: vec![*p] }),
        }
    }
    out
}

/// Messages and clients of `strata.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/client/strata.v1.rs"));
}

/// Server traits of `strata.v1` (messages come from [`v1`] and [`raw`]).
#[allow(clippy::all, missing_docs)]
pub mod server {
    include!(concat!(env!("OUT_DIR"), "/server/strata.v1.rs"));
}

/// `grpc.health.v1`: the health server trait and messages, decoded with
/// [`codec::StrataCodec`] (clients can use any health client).
#[allow(clippy::all, missing_docs)]
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/health/grpc.health.v1.rs"));
}

/// Encoded `FileDescriptorSet` of every Strata proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));

/// Field number of `Record` entries inside `PartitionRecords`. Stored batches
/// keep their records already framed with this field number (see
/// docs/storage-format.md), which is what lets the broker splice them.
pub const PARTITION_RECORDS_RECORDS_FIELD: u32 = 15;
