//! Strata: an event broker. See README.md and docs/.

pub mod log;
