//! Strata: an event broker. See README.md and docs/.

pub mod config;
pub mod error;
pub mod log;
pub mod partition;
