//! Which partition a record goes to when the producer does not say: the
//! client crate's partitioner (murmur2, as Kafka's default), so the broker
//! and a client that picks partitions itself (the idempotent producer) put
//! a key on the same partition.

pub use strata_client::partitioner::{murmur2, partition_for_key};
