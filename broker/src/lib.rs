//! Strata: an event broker. See README.md and docs/.

pub mod config;
pub mod error;
pub mod log;
pub mod partition;
pub mod server;

pub use error::{Error, Result};
