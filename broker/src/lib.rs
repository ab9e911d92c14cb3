//! Strata: an event broker. See README.md and docs/.

pub mod cleaner;
pub mod compaction;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod failpoint;
pub mod log;
pub mod metrics;
pub mod partition;
pub mod retention;
pub mod server;
pub mod shutdown;

pub use error::{Error, Result};
