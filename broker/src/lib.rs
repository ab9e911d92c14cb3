//! Strata: an event broker. See README.md and docs/architecture.md.
//!
//! The crate, from the top down (an arrow means "uses"; nothing uses
//! upwards, and `tests/architecture.rs` keeps it so):
//!
//! - [`node`]: the composition root. Opens storage, the coordinator, the
//!   cleaner and metrics; runs the listeners it is given; stops all of it
//!   in order. → everything below.
//! - [`server`]: the gRPC listener, the only module that knows tonic and
//!   prost; [`server::status`] is the one map from errors to gRPC codes and
//!   `google.rpc.ErrorInfo`. → node, coordinator, partition, security,
//!   writers, tls.
//! - [`metrics`]: the Prometheus endpoint. → coordinator, partition.
//! - [`cleaner`]: retention and compaction passes on timers. → partition.
//! - [`writers`]: producer ids (issued and bound to their owner) and
//!   writer ids with their epochs, kept in an internal topic. → partition.
//! - [`security`]: ACLs and their decision, API tokens, users and
//!   passwords, quotas, kept in an internal topic. → partition.
//! - [`coordinator`]: consumer groups (pure state machine, assignors) and
//!   committed offsets kept in an internal topic. → partition.
//! - [`partition`]: topics and their [`partition::Partition`] handles (high
//!   watermark apart from the log end), topic metadata, the internal-topic
//!   rule. → log, config, retention.
//! - [`retention`]: which closed segments retention deletes (pure).
//! - [`config`]: the configuration and the one table of topic settings.
//! - [`error`]: the error enum every layer returns, and each error's
//!   machine-readable [`error::Reason`]. → log (its errors).
//! - [`log`]: a partition's on-disk log — segments, indexes, batches, the
//!   on-disk format, recovery policy, compaction's rewriting. A leaf: it
//!   knows no topic, config, protocol or policy type.
//! - [`failpoint`], [`locks`] (taking a lock whose holder panicked),
//!   [`shutdown`], [`net`], [`memory`], [`tls`] (rustls
//!   configuration, reloaded from its files), [`logging`] (log lines to
//!   stderr without ever failing or blocking): small helpers.

pub mod cleaner;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod failpoint;
pub mod locks;
pub mod log;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod node;
pub mod partition;
pub mod retention;
pub mod security;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod writers;

pub use error::{Error, Result};
